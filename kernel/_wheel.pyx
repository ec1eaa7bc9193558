# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The hierarchical timing wheel at the heart of every MINOOTS node.

After Varghese & Lauck (1987) and tokio's wheel: time is an int64 count of
milliseconds, and the wheel has LEVELS levels of 64 slots. Level L slot s holds
the timers whose deadline differs from the wheel's current time (`elapsed`)
first in bits [6L, 6L+6) and has s there. With 8 levels the wheel spans 2**48 ms
(about 8,900 years), which covers every deadline we accept (up to the end of
year 9999), so there is no separate overflow list: the top level is the
overflow, and it is exact.

Why this shape:
- A 64-bit occupancy word per level finds the next non-empty slot with one
  count-trailing-zeros, so `next_deadline()` and `advance()` across an idle
  stretch of years cost O(levels), never O(ticks).
- Firing is exact: level-0 slots are 1 ms wide, and when time reaches the start
  of a higher-level slot its timers are either due (emitted) or re-placed
  relative to the new time, so they land on lower levels. A timer never fires
  before its deadline and always fires in the first advance(now >= deadline).
- Timers live in one array of C structs threaded into intrusive doubly linked
  lists (one per slot, plus one for timers already due at insert); freed
  structs go on a free list, and an open-addressing table of uint32 indices maps
  the caller's uint64 key to its struct. Insert, cancel and reschedule are O(1)
  and allocate nothing in the common path.
- Output order is deterministic: expired keys are sorted by (deadline, key).
  Nothing here reads a clock, draws a random number or depends on hash order
  for anything it returns.

Per-slot minimum deadlines are cached (invalidated when the minimum leaves the
slot) so that `next_deadline()` is exact without scanning a coarse slot on every
call: the Raft leader sleeps until exactly that time.
"""

from cpython.buffer cimport PyObject_CheckBuffer
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.stdlib cimport qsort
from libc.string cimport memset

cdef extern from *:
    """
    static inline int minoots_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    static inline int minoots_clz64(unsigned long long x) { return __builtin_clzll(x); }
    """
    int minoots_ctz64(unsigned long long x) nogil
    int minoots_clz64(unsigned long long x) nogil

cdef enum:
    LEVELS = 8
    SLOT_BITS = 6
    SLOTS = 64
    PENDING = 512          # list index of timers already due when inserted
    NLISTS = 513

cdef uint32_t NIL = 0xFFFFFFFF
cdef int64_t _MAX_TIME = 253402300799999  # 9999-12-31T23:59:59.999Z
cdef int64_t NO_MIN = 0x7FFFFFFFFFFFFFFF

MAX_TIME = _MAX_TIME
MAX_KEY = 0xFFFFFFFFFFFFFFFF


cdef struct Entry:
    int64_t deadline
    uint64_t key
    uint32_t prev
    uint32_t next
    uint32_t loc           # list index; NIL while the struct is on the free list


cdef struct Expired:
    int64_t deadline
    uint64_t key


cdef int _cmp_expired(const void* a, const void* b) noexcept nogil:
    cdef const Expired* x = <const Expired*>a
    cdef const Expired* y = <const Expired*>b
    if x.deadline != y.deadline:
        return -1 if x.deadline < y.deadline else 1
    if x.key != y.key:
        return -1 if x.key < y.key else 1
    return 0


cdef inline uint64_t _mix(uint64_t k) noexcept nogil:
    # splitmix64 finaliser: fixed arithmetic, the same on every machine.
    k ^= k >> 30
    k *= 0xbf58476d1ce4e5b9ULL
    k ^= k >> 27
    k *= 0x94d049bb133111ebULL
    k ^= k >> 31
    return k


cdef inline uint64_t _key_arg(object key) except? 0:
    if not isinstance(key, int) or isinstance(key, bool):
        raise TypeError(f"timer key must be an int, not {type(key).__name__}")
    if key < 0 or key > MAX_KEY:
        raise ValueError(f"timer key {key} is outside 0..2**64-1")
    return <uint64_t>key


cdef inline int64_t _time_arg(object t, str what) except? -1:
    if not isinstance(t, int) or isinstance(t, bool):
        raise TypeError(f"{what} must be an int of milliseconds, not {type(t).__name__}")
    if t < 0 or t > _MAX_TIME:
        raise ValueError(f"{what} {t} is outside 0..{_MAX_TIME} ms (year 9999)")
    return <int64_t>t


cdef class Wheel:
    """Hierarchical timing wheel over int64 milliseconds; see the module docstring."""

    cdef Entry* ents
    cdef uint32_t ecap          # structs allocated
    cdef uint32_t eused         # structs ever handed out (high-water mark)
    cdef uint32_t free_head
    cdef uint32_t* table        # open addressing: entry index or NIL
    cdef uint64_t tmask         # table capacity - 1 (capacity is a power of two)
    cdef uint64_t count
    cdef int64_t elapsed
    cdef uint32_t heads[NLISTS]
    cdef int64_t slot_min[NLISTS]   # cached min deadline per list, NO_MIN if unknown
    cdef uint64_t occupied[LEVELS]
    cdef Expired* out
    cdef uint64_t out_cap
    cdef uint64_t out_len

    def __cinit__(self, now=0):
        cdef int i
        self.ents = NULL
        self.table = NULL
        self.out = NULL
        self.ecap = 0
        self.eused = 0
        self.free_head = NIL
        self.count = 0
        self.out_cap = 0
        self.out_len = 0
        for i in range(NLISTS):
            self.heads[i] = NIL
            self.slot_min[i] = NO_MIN
        for i in range(LEVELS):
            self.occupied[i] = 0
        self._alloc_table(1024)
        self._reserve(1024)

    def __init__(self, now=0):
        self.elapsed = _time_arg(now, "now")

    def __dealloc__(self):
        PyMem_Free(self.ents)
        PyMem_Free(self.table)
        PyMem_Free(self.out)

    # ---- storage ---------------------------------------------------------

    cdef int _alloc_table(self, uint64_t cap) except -1:
        cdef uint32_t* t = <uint32_t*>PyMem_Malloc(cap * sizeof(uint32_t))
        if t == NULL:
            raise MemoryError()
        memset(t, 0xFF, cap * sizeof(uint32_t))
        PyMem_Free(self.table)
        self.table = t
        self.tmask = cap - 1
        return 0

    cdef int _reserve(self, uint64_t n) except -1:
        """Make room for n live timers: entry structs and a table at load <= 1/2."""
        cdef uint64_t cap
        cdef Entry* e
        cdef uint32_t* old
        cdef uint64_t oldcap, i, h
        if n > 0xFFFFFFF0:
            raise MemoryError("a wheel holds at most 2**32 - 16 timers")
        if n > self.ecap:
            cap = self.ecap if self.ecap else 1024
            while cap < n:
                cap = cap + (cap >> 1)
            if cap > 0xFFFFFFF0:
                cap = 0xFFFFFFF0
            e = <Entry*>PyMem_Realloc(self.ents, cap * sizeof(Entry))
            if e == NULL:
                raise MemoryError()
            self.ents = e
            self.ecap = <uint32_t>cap
        if n * 2 > self.tmask + 1:
            cap = self.tmask + 1
            while n * 2 > cap:
                cap <<= 1
            old = self.table
            oldcap = self.tmask + 1
            self.table = NULL
            try:
                self._alloc_table(cap)
            except MemoryError:
                self.table = old
                raise
            for i in range(oldcap):
                if old[i] != NIL:
                    h = _mix(self.ents[old[i]].key) & self.tmask
                    while self.table[h] != NIL:
                        h = (h + 1) & self.tmask
                    self.table[h] = old[i]
            PyMem_Free(old)
        return 0

    cdef inline uint64_t _find_pos(self, uint64_t key) noexcept nogil:
        """Table position holding key, or the empty position where it would go."""
        cdef uint64_t h = _mix(key) & self.tmask
        cdef uint32_t i
        while True:
            i = self.table[h]
            if i == NIL or self.ents[i].key == key:
                return h
            h = (h + 1) & self.tmask

    cdef inline uint32_t _find(self, uint64_t key) noexcept nogil:
        return self.table[self._find_pos(key)]

    cdef void _table_delete(self, uint64_t pos) noexcept nogil:
        # Backward-shift deletion keeps probe chains intact without tombstones.
        cdef uint64_t j = pos
        cdef uint64_t k
        while True:
            j = (j + 1) & self.tmask
            if self.table[j] == NIL:
                break
            k = _mix(self.ents[self.table[j]].key) & self.tmask
            if pos <= j:
                if pos < k <= j:
                    continue
            else:
                if k > pos or k <= j:
                    continue
            self.table[pos] = self.table[j]
            pos = j
        self.table[pos] = NIL

    cdef inline uint32_t _new_entry(self) noexcept nogil:
        cdef uint32_t i
        if self.free_head != NIL:
            i = self.free_head
            self.free_head = self.ents[i].next
        else:
            i = self.eused
            self.eused += 1
        return i

    cdef inline void _free_entry(self, uint32_t i) noexcept nogil:
        self.ents[i].loc = NIL
        self.ents[i].next = self.free_head
        self.free_head = i

    # ---- lists -----------------------------------------------------------

    cdef inline void _link(self, uint32_t i, uint32_t loc) noexcept nogil:
        cdef uint32_t h = self.heads[loc]
        cdef int64_t d = self.ents[i].deadline
        self.ents[i].prev = NIL
        self.ents[i].next = h
        self.ents[i].loc = loc
        if h != NIL:
            self.ents[h].prev = i
            if self.slot_min[loc] != NO_MIN and d < self.slot_min[loc]:
                self.slot_min[loc] = d
        else:
            self.slot_min[loc] = d
            if loc < PENDING:
                self.occupied[loc >> SLOT_BITS] |= (<uint64_t>1) << (loc & (SLOTS - 1))
        self.heads[loc] = i

    cdef inline void _unlink(self, uint32_t i) noexcept nogil:
        cdef uint32_t loc = self.ents[i].loc
        cdef uint32_t p = self.ents[i].prev
        cdef uint32_t n = self.ents[i].next
        if p != NIL:
            self.ents[p].next = n
        else:
            self.heads[loc] = n
        if n != NIL:
            self.ents[n].prev = p
        if self.heads[loc] == NIL:
            self.slot_min[loc] = NO_MIN
            if loc < PENDING:
                self.occupied[loc >> SLOT_BITS] &= ~((<uint64_t>1) << (loc & (SLOTS - 1)))
        elif self.ents[i].deadline == self.slot_min[loc]:
            self.slot_min[loc] = NO_MIN   # recomputed lazily by next_deadline()

    cdef inline void _place(self, uint32_t i) noexcept nogil:
        cdef int64_t d = self.ents[i].deadline
        cdef uint64_t x
        cdef int level
        if d <= self.elapsed:
            self._link(i, PENDING)
            return
        x = <uint64_t>(d ^ self.elapsed)
        level = (63 - minoots_clz64(x)) // SLOT_BITS
        self._link(i, level * SLOTS + <uint32_t>((d >> (level * SLOT_BITS)) & (SLOTS - 1)))

    cdef int64_t _list_min(self, uint32_t loc) noexcept nogil:
        cdef int64_t m = self.slot_min[loc]
        cdef uint32_t i
        if m == NO_MIN and self.heads[loc] != NIL:
            i = self.heads[loc]
            while i != NIL:
                if self.ents[i].deadline < m:
                    m = self.ents[i].deadline
                i = self.ents[i].next
            self.slot_min[loc] = m
        return m

    # ---- core operations ------------------------------------------------

    cdef int _insert(self, uint64_t key, int64_t deadline) except -1:
        cdef uint64_t pos
        cdef uint32_t i
        self._reserve(self.count + 1)
        pos = self._find_pos(key)
        if self.table[pos] != NIL:
            raise KeyError(f"timer key {key} is already in the wheel")
        i = self._new_entry()
        self.ents[i].key = key
        self.ents[i].deadline = deadline
        self.table[pos] = i
        self.count += 1
        self._place(i)
        return 0

    cdef bint _cancel(self, uint64_t key) noexcept nogil:
        cdef uint64_t pos = self._find_pos(key)
        cdef uint32_t i = self.table[pos]
        if i == NIL:
            return False
        self._unlink(i)
        self._table_delete(pos)
        self._free_entry(i)
        self.count -= 1
        return True

    cdef int _emit(self, uint32_t i) except -1:
        cdef Expired* o
        cdef uint64_t cap
        if self.out_len == self.out_cap:
            cap = self.out_cap * 2 if self.out_cap else 256
            o = <Expired*>PyMem_Realloc(self.out, cap * sizeof(Expired))
            if o == NULL:
                raise MemoryError()
            self.out = o
            self.out_cap = cap
        self.out[self.out_len].deadline = self.ents[i].deadline
        self.out[self.out_len].key = self.ents[i].key
        self.out_len += 1
        self._table_delete(self._find_pos(self.ents[i].key))
        self._free_entry(i)
        self.count -= 1
        return 0

    cdef int _advance(self, int64_t now) except -1:
        """Move every timer with deadline <= now into self.out, sorted."""
        cdef uint32_t i, nxt, loc
        cdef int level, s, shift
        cdef uint64_t occ
        cdef int64_t start
        self.out_len = 0
        i = self.heads[PENDING]
        self.heads[PENDING] = NIL
        self.slot_min[PENDING] = NO_MIN
        while i != NIL:
            nxt = self.ents[i].next
            self._emit(i)
            i = nxt
        while now > self.elapsed:
            level = 0
            while level < LEVELS and self.occupied[level] == 0:
                level += 1
            if level == LEVELS:
                break
            occ = self.occupied[level]
            s = minoots_ctz64(occ)
            shift = level * SLOT_BITS
            start = (self.elapsed & ~((<int64_t>1 << (shift + SLOT_BITS)) - 1)) | (<int64_t>s << shift)
            if start > now:
                break
            # Everything left in the wheel lies at or after this slot's start, so
            # time may jump there; the slot's timers are due or move down.
            self.elapsed = start
            loc = level * SLOTS + s
            i = self.heads[loc]
            self.heads[loc] = NIL
            self.slot_min[loc] = NO_MIN
            self.occupied[level] &= ~((<uint64_t>1) << s)
            while i != NIL:
                nxt = self.ents[i].next
                if self.ents[i].deadline <= now:
                    self._emit(i)
                else:
                    self._place(i)
                i = nxt
        if now > self.elapsed:
            self.elapsed = now
        if self.out_len > 1:
            qsort(self.out, self.out_len, sizeof(Expired), _cmp_expired)
        return 0

    # ---- Python surface ---------------------------------------------------

    @property
    def now(self):
        """Time of the last advance (or the start time)."""
        return self.elapsed

    def __len__(self):
        return self.count

    def __contains__(self, key):
        if not isinstance(key, int) or isinstance(key, bool) or key < 0 or key > MAX_KEY:
            return False
        return self._find(<uint64_t>key) != NIL

    def insert(self, key, deadline):
        """Add a timer; KeyError if the key is present, ValueError if the deadline is out of range."""
        self._insert(_key_arg(key), _time_arg(deadline, "deadline"))

    def cancel(self, key):
        """Remove a timer; True if it was present."""
        return self._cancel(_key_arg(key))

    def reschedule(self, key, deadline):
        """Move a timer to a new deadline in O(1); KeyError if absent."""
        cdef uint64_t k = _key_arg(key)
        cdef int64_t d = _time_arg(deadline, "deadline")
        cdef uint32_t i = self._find(k)
        if i == NIL:
            raise KeyError(f"timer key {key} is not in the wheel")
        self._unlink(i)
        self.ents[i].deadline = d
        self._place(i)

    def deadline(self, key):
        """The deadline of a timer held; KeyError if absent."""
        cdef uint32_t i = self._find(_key_arg(key))
        if i == NIL:
            raise KeyError(f"timer key {key} is not in the wheel")
        return self.ents[i].deadline

    def next_deadline(self):
        """Earliest deadline held (exact), or None when empty."""
        cdef int level
        cdef int s
        if self.count == 0:
            return None
        if self.heads[PENDING] != NIL:
            return self._list_min(PENDING)
        for level in range(LEVELS):
            if self.occupied[level]:
                s = minoots_ctz64(self.occupied[level])
                return self._list_min(level * SLOTS + s)
        return None  # unreachable while count > 0

    def advance(self, now):
        """Advance time to now; return expired keys ordered by (deadline, key)."""
        cdef int64_t t = _time_arg(now, "now")
        cdef uint64_t j
        self._advance(t)
        return [self.out[j].key for j in range(self.out_len)]

    def advance_items(self, now):
        """Like advance(), as (key, deadline) pairs."""
        cdef int64_t t = _time_arg(now, "now")
        cdef uint64_t j
        self._advance(t)
        return [(self.out[j].key, self.out[j].deadline) for j in range(self.out_len)]

    def insert_many(self, keys, deadlines):
        """Insert pairs; all-or-nothing (a bad pair leaves the wheel as it was).

        Fast path: when both arguments are one-dimensional contiguous buffers of
        uint64 keys and int64 deadlines (array('Q') and array('q'), or
        memoryviews of those formats), they are read in place with no Python
        object per timer. Any other input (lists, iterables, buffers of another
        format) goes through the generic path; both behave the same.
        """
        cdef const uint64_t[::1] kv
        cdef const int64_t[::1] dv
        if PyObject_CheckBuffer(keys) and PyObject_CheckBuffer(deadlines):
            try:
                kv = keys
                dv = deadlines
            except (ValueError, TypeError, BufferError):
                pass   # wrong format, dimensions or strides: take the generic path
            else:
                self._insert_buffers(kv, dv)
                return None
        cdef list ks = [_key_arg(k) for k in keys]
        cdef list ds = [_time_arg(d, "deadline") for d in deadlines]
        cdef Py_ssize_t n = len(ks)
        cdef Py_ssize_t j, j2
        if len(ds) != n:
            raise ValueError(f"insert_many got {n} keys but {len(ds)} deadlines")
        self._reserve(self.count + n)
        for j in range(n):
            try:
                self._insert(<uint64_t>ks[j], <int64_t>ds[j])
            except KeyError:
                for j2 in range(j):
                    self._cancel(<uint64_t>ks[j2])
                raise
        return None

    cdef int _insert_buffers(self, const uint64_t[::1] ks, const int64_t[::1] ds) except -1:
        """insert_many over typed buffers: validate every deadline, reserve once,
        insert; on a duplicate key undo this call's inserts and raise KeyError."""
        cdef Py_ssize_t n = ks.shape[0]
        cdef Py_ssize_t j, j2
        cdef int64_t d
        cdef uint64_t key, pos
        cdef uint32_t i
        if ds.shape[0] != n:
            raise ValueError(f"insert_many got {n} keys but {ds.shape[0]} deadlines")
        for j in range(n):
            d = ds[j]
            if d < 0 or d > _MAX_TIME:
                raise ValueError(f"deadline {d} is outside 0..{_MAX_TIME} ms (year 9999)")
        # After this there are at least n free structs (free list + unused tail)
        # and the table stays at load <= 1/2, so nothing below can fail but a
        # duplicate key.
        self._reserve(self.count + n)
        for j in range(n):
            key = ks[j]
            pos = self._find_pos(key)
            if self.table[pos] != NIL:
                for j2 in range(j):
                    self._cancel(ks[j2])
                raise KeyError(f"timer key {key} is already in the wheel")
            i = self._new_entry()
            self.ents[i].key = key
            self.ents[i].deadline = ds[j]
            self.table[pos] = i
            self.count += 1
            self._place(i)
        return 0

    def cancel_many(self, keys):
        """Cancel each key; return how many were present. A contiguous uint64
        buffer (array('Q'), memoryview 'Q') is read in place."""
        cdef const uint64_t[::1] kv
        cdef uint64_t removed = 0
        cdef Py_ssize_t j
        if PyObject_CheckBuffer(keys):
            try:
                kv = keys
            except (ValueError, TypeError, BufferError):
                pass
            else:
                for j in range(kv.shape[0]):
                    if self._cancel(kv[j]):
                        removed += 1
                return removed
        cdef list ks = [_key_arg(k) for k in keys]
        for k in ks:
            if self._cancel(<uint64_t>k):
                removed += 1
        return removed

    def items(self):
        """(key, deadline) of every timer held, sorted by key: the wheel's snapshot."""
        cdef list res = []
        cdef uint32_t i
        for i in range(self.eused):
            if self.ents[i].loc != NIL:
                res.append((self.ents[i].key, self.ents[i].deadline))
        res.sort()
        return res

    def memory_bytes(self):
        """Bytes held by the wheel's C arrays (structs, key table, output buffer)."""
        return (self.ecap * sizeof(Entry) + (self.tmask + 1) * sizeof(uint32_t)
                + self.out_cap * sizeof(Expired) + NLISTS * (sizeof(uint32_t) + sizeof(int64_t))
                + LEVELS * sizeof(uint64_t))

    def __repr__(self):
        return f"<Wheel now={self.elapsed} timers={self.count}>"
