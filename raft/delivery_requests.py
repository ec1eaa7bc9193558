"""Requested deliveries resolved from committed data, when a create is applied.

A create (CreateDeliveryTimersV3) carries each timer's delivery as the client asked for
it: policy fields it did not give are None, and a timer for a managed endpoint names the
endpoint instead of a URL. Applying the command fills them in from the replicated
tables — the tenant's delivery defaults (raft/delivery_defaults.py) and the endpoint
(raft/endpoints.py: URL, headers, attempt timeout) — so every replica resolves the same
timer, and the kernel only ever sees complete deliveries.
"""
from __future__ import annotations

import dataclasses

from minoots.kernel import InvalidArgument
from minoots.kernel.delivery import Delivery, Webhook

from .delivery_defaults import DeliveryDefaults, resolve_policy
from .endpoints import EndpointNotFound, EndpointTable

__all__ = ["resolve_specs"]


def resolve_specs(specs, endpoints: EndpointTable, defaults: DeliveryDefaults) -> list:
    """The specs with complete deliveries; EndpointNotFound for an endpoint the tenant lacks."""
    out = []
    for i, spec in enumerate(specs):
        d = spec.delivery
        if d is None:
            out.append(spec)
            continue
        policy_defaults = defaults.effective(spec.tenant)[0]
        if d.endpoint is not None:
            if d.webhook is not None or d.queue is not None:
                raise InvalidArgument(f"specs[{i}].endpoint", "an endpoint delivery names no URL and no queue")
            ep = endpoints.find(spec.tenant, d.endpoint)
            if ep is None:
                raise EndpointNotFound(f"specs[{i}].endpoint: endpoint {d.endpoint!r} of tenant {spec.tenant!r} "
                                       "does not exist")
            d = Delivery(Webhook(ep.url, ep.headers), resolve_policy(tuple(d.policy), policy_defaults, ep.timeout_ms),
                         None, ep.id)
        else:
            d = d._replace(policy=resolve_policy(tuple(d.policy), policy_defaults))
        out.append(dataclasses.replace(spec, delivery=d))
    return out
