"""Behind a reverse proxy: take the client's address and scheme from X-Forwarded-For and
X-Forwarded-Proto, but only when the request comes from a configured trusted proxy.

Anyone can send these headers; believing them from any peer would let a client pick the
address the logs (and any future per-address limit) see.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..config import Network, parse_networks

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _trusted(address: str | None, networks: list[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: list[str], networks: list[Network]) -> str | None:
    """The nearest address in the chain that is not one of our proxies.

    X-Forwarded-For lists client, proxy1, proxy2 ...; each proxy appends the peer it saw. Walk
    from the right while hops are trusted: the first untrusted hop is the client (anything left
    of it could have been written by the client itself).
    """
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    address = peer
    for hop in reversed(hops):
        if not _trusted(address, networks):
            break
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage in the header: keep the last address we could trust
        address = hop
    return address


def forwarded_middleware(trusted: Iterable[str]) -> Middleware:
    networks = parse_networks(trusted)

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not networks or not _trusted(request.remote, networks):
            return await handler(request)
        remote = client_address(request.remote, request.headers.getall("X-Forwarded-For", []), networks)
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        scheme = proto if proto in ("http", "https") else request.scheme
        if remote == request.remote and scheme == request.scheme:
            return await handler(request)
        return await handler(request.clone(remote=remote, scheme=scheme))  # type: ignore[arg-type]  # None: peer unknown

    return forwarded
