"""The replicated state machine as the Raft layer sees it: Apply, Snapshot, Restore.

In the spirit of hashicorp/raft's `FSM`: the consensus code (raft/machine.py)
calls these three methods and knows nothing else of the kernel. The state is the
kernel plus the cluster's replicated names (node id -> Raft and gRPC address),
API tokens, tenant quotas (raft/quotas.py: the kernel gets their limits as data
with every create), tenant retention (raft/retention.py: handed to the kernel as
its retention policy whenever it changes or a snapshot loads), and for delivery the
webhook secrets, managed endpoints and tenant delivery defaults (raft/endpoints.py,
raft/delivery_defaults.py: a create resolves its requested deliveries from them when
it applies, raft/delivery_requests.py).

`apply` never raises. A refused command (a KernelError, an unknown version, bad
bytes) yields its error as the result, identically on every replica, because an
exception escaping into PySyncObj would make it retry the same entry forever.
Listeners are called after each apply; a failing listener is logged, never
propagated, so telemetry cannot stop the log.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from minoots.kernel import FailedPrecondition, KernelError, SnapshotCapture, State, TimerState
from minoots.kernel import bulk
from minoots.kernel.endpoints import live_endpoint_refs

from . import commands as c
from .quotas import QuotaTable
from .subscriptions import SubscriptionTable
from .retention import RetentionTable
from .tokens import TokenRecord, TokenTable
from .webhook_secrets import WebhookSecrets
from .delivery_defaults import DeliveryDefaults
from .delivery_requests import resolve_specs
from .endpoints import EndpointTable

log = logging.getLogger("minoots.raft")

__all__ = ["TimerFSM", "FSMSnapshot"]


@dataclass(frozen=True)
class FSMSnapshot:
    """What a snapshot holds, taken at one applied index (the kernel part encodes off-thread)."""

    kernel: SnapshotCapture
    names: dict
    grpc: dict
    tokens: list                # TokenTable.to_json()
    quotas: list = ()           # QuotaTable.to_json()
    subscriptions: list = ()    # SubscriptionTable.to_json()
    webhook_secrets: list = ()  # WebhookSecrets.to_json()
    retention: list = ()        # RetentionTable.to_json()
    endpoints: list = ()        # EndpointTable.to_json()
    delivery_defaults: list = ()  # DeliveryDefaults.to_json()


class TimerFSM:
    def __init__(self, names: dict[str, str]) -> None:
        self.kernel = State()
        self.lock = threading.RLock()        # held while applying; readers take it too
        self.names = dict(names)             # node id -> Raft address (replicated)
        self.grpc: dict[str, str] = {}       # node id -> gRPC address (replicated, members only)
        self.tokens = TokenTable()           # API tokens (hashes only)
        self.quotas = QuotaTable()           # tenant quotas
        self.subscriptions = SubscriptionTable()   # durable event subscriptions
        self.webhook_secrets = WebhookSecrets()   # tenant webhook signing secrets
        self.retention = RetentionTable()    # tenant retention (the kernel holds its policy)
        self.endpoints = EndpointTable()     # managed webhook endpoints and their secrets
        self.delivery_defaults = DeliveryDefaults()   # tenant default delivery policies
        # Called after every apply, in the applying thread; see the module doc.
        self.event_listeners: list[Callable] = []                    # (events)
        self.apply_listeners: list[Callable[[str], None]] = []       # (command kind)
        self.result_listeners: list[Callable[[object, object], None]] = []  # (command record, result)
        self._dispatch = {
            c.CreateTimers: self._create,
            c.CreateTimersV2: self._create,
            c.Tick: self._tick,
            c.CancelTimers: self._cancel,
            c.RescheduleTimer: self._reschedule,
            c.AckTimer: self._ack,
            c.SetMemberName: self._set_name,
            c.SetMemberGrpc: self._set_grpc,
            c.PutToken: self._put_token,
            c.RevokeToken: self._revoke_token,
            c.SetQuota: self._set_quota,
            c.ClearQuota: self._clear_quota,
            c.CreateSubscription: self._create_subscription,
            c.CommitSubscription: self._commit_subscription,
            c.DeleteSubscription: self._delete_subscription,
            c.MarkSubscriptionOverrun: self._mark_overrun,
            c.CreateDeliveryTimers: self._create,
            c.DeliveryAttempt: self._delivery_attempt,
            c.DeliveryAttempts: self._delivery_attempts,
            c.RedriveTimer: self._redrive,
            c.PutWebhookSecret: self._put_webhook_secret,
            c.CreateDeliveryTimersV2: self._create,
            c.LeaseTimers: self._lease,
            c.AckLease: self._ack_lease,
            c.NackLease: self._nack_lease,
            c.ExtendLease: self._extend_lease,
            c.SetRetention: self._set_retention,
            c.DeleteTimers: self._delete,
            c.CreateGraphTimers: self._create,
            c.BulkCancelTimers: self._bulk_cancel,
            c.BulkRescheduleTimers: self._bulk_reschedule,
            c.CreateEndpoint: self._create_endpoint,
            c.RotateEndpointSecret: self._rotate_endpoint_secret,
            c.DeleteEndpoint: self._delete_endpoint,
            c.SetDeliveryDefaults: self._set_delivery_defaults,
            c.CreateDeliveryTimersV3: self._create_requested,
            c.ReplayDeadLetters: self._replay_dead_letters,
            c.PurgeDeadLetters: self._purge_dead_letters,
            c.CreateRecurringTimers: self._create,
            c.PauseTimer: self._pause,
            c.ResumeTimer: self._resume,
            c.TriggerTimer: self._trigger,
            c.CreateFullTimers: self._create_requested,
            c.CreatePlainTimers: self._create_plain,
        }

    # ---- Apply -----------------------------------------------------------------

    def apply(self, entry):
        """Apply one committed entry (command bytes, or a v0 tuple from an old log)."""
        command = None
        try:
            command = c.from_legacy(entry) if isinstance(entry, tuple) else c.decode(entry)
            with self.lock:
                result = self._dispatch[type(command)](command)
        except KernelError as exc:
            result = exc
        except Exception as exc:  # a kernel bug: same on every replica, keep the log moving
            log.critical("apply failed", extra={"command": getattr(command, "kind", None), "error": repr(exc)})
            result = exc
        if command is not None:
            if not isinstance(result, Exception):
                self._tell(self.apply_listeners, command.kind)
            self._tell(self.result_listeners, command, result)
        return result

    @staticmethod
    def _tell(listeners, *args) -> None:
        for listener in listeners:
            try:
                listener(*args)
            except Exception:
                log.exception("apply listener failed")

    def _emit(self, events) -> None:
        if events:
            self._tell(self.event_listeners, events)

    def _create(self, cmd: c.CreateTimers, prepare=list):
        """Each group applies or fails alone; `prepare` turns a group into the kernel's specs."""
        out = []
        quotas = self.quotas
        for group in cmd.groups:
            try:
                res = self.kernel.create(cmd.now_ms, prepare(group), quotas.kernel_limits, quotas.kernel_default)
                self._emit(res.events)
                out.append(res)
            except KernelError as exc:
                out.append(exc)
        return out

    def _create_plain(self, cmd: c.CreatePlainTimers):
        """CreateTimers of plain groups given as columns (raft/plain_record.py, kernel/plain.py)."""
        out = []
        quotas = self.quotas
        create = self.kernel.create_plain
        for g in cmd.groups:
            try:
                res = create(cmd.now_ms, g.tenant, g.ids, g.fire_at, g.flags, g.payloads, quotas.kernel_limits,
                             quotas.kernel_default)
                self._emit(res.events)
                out.append(res)
            except KernelError as exc:
                out.append(exc)
        return out

    def _tick(self, cmd: c.Tick):
        return self._emitted(self.kernel.tick(cmd.now_ms))

    def _cancel(self, cmd: c.CancelTimers):
        return self._emitted(self.kernel.cancel(cmd.now_ms, list(cmd.refs)))

    def _reschedule(self, cmd: c.RescheduleTimer):
        return self._emitted(self.kernel.reschedule(cmd.now_ms, cmd.tenant, cmd.id,
                                                    fire_at=cmd.fire_at, extend_by=cmd.extend_by))

    def _ack(self, cmd: c.AckTimer):
        return self._emitted(self.kernel.ack(cmd.now_ms, cmd.tenant, cmd.id, cmd.fire_id))

    def _delivery_attempt(self, cmd: c.DeliveryAttempt):
        return self._emitted(self.kernel.delivery_attempt(cmd.now_ms, cmd.tenant, cmd.id, cmd.fire_id, cmd.attempt,
                                                          cmd.status, cmd.latency_ms, cmd.error, cmd.body,
                                                          cmd.next_at))

    def _delivery_attempts(self, cmd: c.DeliveryAttempts):
        out = []
        for o in cmd.outcomes:
            try:
                out.append(self._delivery_attempt(o))
            except KernelError as exc:       # refused alone (e.g. stale); the others still apply
                out.append(exc)
        return out

    def _redrive(self, cmd: c.RedriveTimer):
        return self._emitted(self.kernel.redrive(cmd.now_ms, cmd.tenant, cmd.id))

    def _lease(self, cmd: c.LeaseTimers):
        return self._emitted(self.kernel.lease(cmd.now_ms, cmd.tenant, cmd.queue, cmd.max_timers, cmd.visibility_ms))

    def _ack_lease(self, cmd: c.AckLease):
        return self._emitted(self.kernel.ack_lease(cmd.now_ms, cmd.tenant, cmd.id, cmd.lease_id))

    def _nack_lease(self, cmd: c.NackLease):
        return self._emitted(self.kernel.nack_lease(cmd.now_ms, cmd.tenant, cmd.id, cmd.lease_id, cmd.next_at))

    def _extend_lease(self, cmd: c.ExtendLease):
        return self._emitted(self.kernel.extend_lease(cmd.now_ms, cmd.tenant, cmd.id, cmd.lease_id,
                                                      cmd.visibility_ms))

    def _put_webhook_secret(self, cmd: c.PutWebhookSecret):
        return self.webhook_secrets.put(cmd.tenant, cmd.secret, cmd.created_at_ms)
    def _delete(self, cmd: c.DeleteTimers):
        return self._emitted(self.kernel.delete(cmd.now_ms, list(cmd.refs)))

    def _bulk_cancel(self, cmd: c.BulkCancelTimers):
        return self._emitted(bulk.cancel_each(self.kernel, cmd.now_ms, cmd.tenant, cmd.ids, cmd.labels))

    def _bulk_reschedule(self, cmd: c.BulkRescheduleTimers):
        return self._emitted(bulk.reschedule_each(self.kernel, cmd.now_ms, cmd.tenant, cmd.ids, cmd.labels,
                                                  cmd.fire_at, cmd.extend_by))

    # ---- endpoints, delivery defaults, dead letters (records 33-39) ---------------

    def _create_endpoint(self, cmd: c.CreateEndpoint):
        return self.endpoints.create(cmd.tenant, cmd.id, cmd.url, cmd.headers, cmd.timeout_ms, cmd.secret,
                                     cmd.created_at_ms)

    def _rotate_endpoint_secret(self, cmd: c.RotateEndpointSecret):
        return self.endpoints.rotate(cmd.tenant, cmd.id, cmd.secret, cmd.at_ms)

    def _delete_endpoint(self, cmd: c.DeleteEndpoint):
        self.endpoints.get(cmd.tenant, cmd.id)          # NOT_FOUND first
        using = live_endpoint_refs(self.kernel, cmd.tenant, cmd.id, limit=3)
        if using:
            raise FailedPrecondition(
                f"endpoint {cmd.id!r} of tenant {cmd.tenant!r} is used by timers that have not ended "
                f"({', '.join(using)}{', ...' if len(using) == 3 else ''}): cancel them or let them finish first")
        return self.endpoints.delete(cmd.tenant, cmd.id)

    def _set_delivery_defaults(self, cmd: c.SetDeliveryDefaults):
        return cmd.tenant, self.delivery_defaults.set(cmd.tenant, cmd.policy)

    def _create_requested(self, cmd: c.CreateDeliveryTimersV3):
        """Resolve each group's requested deliveries from committed data, then create it."""
        return self._create(cmd, lambda group: resolve_specs(group, self.endpoints, self.delivery_defaults))

    def _replay_dead_letters(self, cmd: c.ReplayDeadLetters):
        """Per timer: its DeliveryResult, or the KernelError that refused it."""
        out = []
        for tenant, timer_id in cmd.refs:
            try:
                ep = self.kernel.get(tenant, timer_id).delivery
                if ep is not None and ep.endpoint is not None and self.endpoints.find(tenant, ep.endpoint) is None:
                    raise FailedPrecondition(f"timer {timer_id!r} in tenant {tenant!r} uses endpoint "
                                             f"{ep.endpoint!r}, which was removed: it cannot be replayed")
                out.append(self._emitted(self.kernel.redrive(cmd.now_ms, tenant, timer_id)))
            except KernelError as exc:
                out.append(exc)
        return out

    def _purge_dead_letters(self, cmd: c.PurgeDeadLetters):
        """(the DeleteResult of the timers dead-lettered now, the refs skipped)."""
        dead, skipped = [], []
        for ref in cmd.refs:
            try:
                st = self.kernel.get(*ref).state
            except KernelError:
                st = None
            (dead if st == TimerState.DEAD_LETTERED and tuple(ref) not in dead else skipped).append(tuple(ref))
        if not dead:
            return None, skipped
        return self._emitted(self.kernel.delete(cmd.now_ms, dead)), skipped

    def _pause(self, cmd: c.PauseTimer):
        return self._emitted(self.kernel.pause(cmd.now_ms, cmd.tenant, cmd.id))

    def _resume(self, cmd: c.ResumeTimer):
        return self._emitted(self.kernel.resume(cmd.now_ms, cmd.tenant, cmd.id))

    def _trigger(self, cmd: c.TriggerTimer):
        return self._emitted(self.kernel.trigger(cmd.now_ms, cmd.tenant, cmd.id))

    def _emitted(self, res):
        self._emit(res.events)
        return res

    def _set_name(self, cmd: c.SetMemberName):
        if cmd.address is None:
            self.names.pop(cmd.node_id, None)
            self.grpc.pop(cmd.node_id, None)
        else:
            self.names[cmd.node_id] = cmd.address
        return None

    def _set_grpc(self, cmd: c.SetMemberGrpc):
        if cmd.node_id in self.names:
            if cmd.address is None:
                self.grpc.pop(cmd.node_id, None)
            else:
                self.grpc[cmd.node_id] = cmd.address
        return None

    def _put_token(self, cmd: c.PutToken):
        return self.tokens.put(TokenRecord(cmd.token_id, cmd.sha256, cmd.name, cmd.role, cmd.tenants,
                                           cmd.created_at_ms, cmd.expires_at_ms))

    def _revoke_token(self, cmd: c.RevokeToken):
        return self.tokens.revoke(cmd.token_id)

    def _set_quota(self, cmd: c.SetQuota):
        return cmd.tenant, self.quotas.set(cmd.tenant, cmd.max_timers, cmd.max_payload_bytes, cmd.create_rate,
                                           cmd.create_burst)

    def _clear_quota(self, cmd: c.ClearQuota):
        return cmd.tenant, self.quotas.clear(cmd.tenant)

    # The newest event is the kernel's sequence: subscriptions may start or commit up to
    # the one after it, never past (the same bound on every replica).

    def _create_subscription(self, cmd: c.CreateSubscription):
        return self.subscriptions.create(cmd.now_ms, cmd.tenant, cmd.name, cmd.all_tenants, cmd.kinds, cmd.start,
                                         self.kernel.seq)

    def _commit_subscription(self, cmd: c.CommitSubscription):
        return self.subscriptions.commit(cmd.tenant, cmd.name, cmd.cursor, self.kernel.seq)

    def _delete_subscription(self, cmd: c.DeleteSubscription):
        return self.subscriptions.delete(cmd.tenant, cmd.name)

    def _mark_overrun(self, cmd: c.MarkSubscriptionOverrun):
        return self.subscriptions.mark_overrun(cmd.tenant, cmd.name, cmd.expected, cmd.resume)

    def _set_retention(self, cmd: c.SetRetention):
        ms = self.retention.set(cmd.tenant, cmd.retention_ms)
        self.kernel.retention = self.retention.policy
        return cmd.tenant, ms

    # ---- Snapshot / Restore ------------------------------------------------------

    def snapshot(self) -> FSMSnapshot:
        """A consistent capture at the last applied entry (memcpy-fast; encode it elsewhere)."""
        with self.lock:
            return FSMSnapshot(self.kernel.capture(), dict(self.names), dict(self.grpc), self.tokens.to_json(),
                               self.quotas.to_json(), self.subscriptions.to_json(), self.webhook_secrets.to_json(),
                               self.retention.to_json(), self.endpoints.to_json(), self.delivery_defaults.to_json())

    def restore(self, kernel_bytes: bytes, names: dict, grpc: dict, tokens=(), quotas=(), subscriptions=(),
                webhook_secrets=(), retention=(), endpoints=(), delivery_defaults=()) -> State:
        """Replace the whole state with a snapshot's (raises KernelError on bad bytes, changing nothing)."""
        state = State.from_bytes(kernel_bytes)
        table = TokenTable.from_json(tokens)
        quota_table = QuotaTable.from_json(quotas)
        subs = SubscriptionTable.from_json(subscriptions)
        secrets = WebhookSecrets.from_json(webhook_secrets)
        retention_table = RetentionTable.from_json(retention)
        endpoint_table = EndpointTable.from_json(endpoints)
        defaults = DeliveryDefaults.from_json(delivery_defaults)
        state.retention = retention_table.policy
        with self.lock:
            self.kernel = state
            self.names = dict(names)
            self.grpc = dict(grpc)
            self.tokens = table
            self.quotas = quota_table
            self.subscriptions = subs
            self.webhook_secrets = secrets
            self.retention = retention_table
            self.endpoints = endpoint_table
            self.delivery_defaults = defaults
        return state
