"""What one durable journal write costs on this disk (docs/bench/perfsingle.md): an LMDB commit
as the journal does it (sync + metasync: two fdatasyncs), with metasync off (one; NOT durable
for the last commit), and a plain append + fdatasync. 300 writes of 700 bytes each."""
import os
import shutil
import tempfile
import time

import lmdb


def report(name, ts):
    ts.sort()
    print(f"{name}: P50 {ts[len(ts) // 2] * 1e3:.2f} ms, P90 {ts[len(ts) * 9 // 10] * 1e3:.2f} ms")


root = tempfile.mkdtemp(prefix="ps-fsync-", dir="/tmp")
try:
    for name, metasync in (("LMDB commit, sync + metasync", True), ("LMDB commit, metasync off", False)):
        env = lmdb.open(os.path.join(root, name[-4:]), map_size=1 << 28, sync=True, metasync=metasync, max_dbs=4)
        db, ts = env.open_db(b"log"), []
        for i in range(300):
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(i.to_bytes(8, "big"), b"x" * 700, append=True, db=db)
            ts.append(time.perf_counter() - t0)
        env.close()
        report(name, ts)
    fd, ts = os.open(os.path.join(root, "wal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND), []
    for i in range(300):
        t0 = time.perf_counter()
        os.write(fd, b"x" * 700)
        os.fdatasync(fd)
        ts.append(time.perf_counter() - t0)
    os.close(fd)
    report("append + fdatasync", ts)
finally:
    shutil.rmtree(root, ignore_errors=True)
