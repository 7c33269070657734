"""Which client a request is from: the peer, or the hop a trusted proxy names in X-Forwarded-For."""

from __future__ import annotations

import functools
import ipaddress

# Where a Space's (or any local) reverse proxy connects from.
PRIVATE_NETWORKS = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]


@functools.lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _in_networks(address: str, cidrs: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in _networks(cidrs) if ip.version == net.version)


def client_address(remote_ip: str, forwarded_for: str, trusted_proxies) -> str:
    """The address a request came from: the peer's, or, while the peer (then each hop before it)
    is a trusted proxy, the hop it names in X-Forwarded-For (right to left: what a client writes
    there itself is further left than what its proxy appended)."""
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    trusted = tuple(trusted_proxies)
    address = remote_ip
    while hops and _in_networks(address, trusted):
        address = hops.pop()
    return address
