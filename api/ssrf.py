"""Which addresses a webhook may reach: default-deny for everything but public unicast.

A webhook URL comes from a client; without this check a client could make the
leader call its own admin ports, the cloud metadata service (169.254.169.254) or
hosts on the private network. So a URL's host must resolve only to globally
routable addresses, unless the operator lists the host (or an address or network)
with `--webhook-allow-hosts` (tests and `minoots up` allow 127.0.0.1 and localhost).

The check runs twice: when a timer is created (a clear INVALID_ARGUMENT) and again
when the dispatcher connects (`PolicyResolver`, so a DNS answer that changed since
creation — DNS rebinding — cannot reach a refused address either).
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from minoots.kernel import InvalidArgument

__all__ = ["AddressPolicy", "RefusedAddress", "PolicyResolver"]

MAX_ALLOW_ENTRIES = 256


class RefusedAddress(OSError):
    """A webhook host resolved to an address the policy refuses."""


class AddressPolicy:
    """Allowed: globally routable unicast addresses, plus the operator's hosts and networks."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.hosts: set[str] = set()
        self.networks: list = []
        for entry in allow:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.rstrip("."))
        if len(self.hosts) + len(self.networks) > MAX_ALLOW_ENTRIES:
            raise ValueError(f"--webhook-allow-hosts: at most {MAX_ALLOW_ENTRIES} entries")

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def ip_allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.networks):
            return True
        return addr.is_global and not addr.is_multicast

    async def check_url(self, field: str, url: str) -> None:
        """InvalidArgument unless `url` is http(s) with a host that resolves only to allowed addresses."""
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise InvalidArgument(field, "must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise InvalidArgument(field, "must not carry credentials (put a token in a header instead)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidArgument(field, "has an invalid port") from None
        if self.host_allowed(host):
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise InvalidArgument(field, f"host {host!r} does not resolve ({exc})") from None
        refused = sorted({info[4][0] for info in infos if not self.ip_allowed(info[4][0])})
        if refused or not infos:
            raise InvalidArgument(field, f"host {host!r} resolves to {', '.join(refused) or 'nothing'}: a loopback, "
                                         "private, link-local or otherwise non-public address is refused "
                                         "(a node allows such hosts with --webhook-allow-hosts)")


class PolicyResolver(AbstractResolver):
    """aiohttp resolver that refuses a host whose addresses the policy does not allow."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        if self._policy.host_allowed(host):
            return infos
        refused = [i["host"] for i in infos if not self._policy.ip_allowed(i["host"])]
        if refused or not infos:
            raise RefusedAddress(f"webhook host {host!r} resolves to a refused address {', '.join(refused)}")
        return infos

    async def close(self) -> None:
        await self._inner.close()
