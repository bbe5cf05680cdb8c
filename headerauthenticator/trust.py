"""Decide which network peer sent a request, and whether that peer is a trusted front proxy.

The deployment chain is ``browser -> front proxy (nginx/Apache) -> the hub's own proxy
(configurable-http-proxy, CHP) -> hub``. The hub's TCP peer is CHP, so the address that
matters is the one CHP saw: CHP (``xfwd``, on by default) *appends* its own TCP peer to
``X-Forwarded-For``. Measured at the hub:

* request straight to CHP:                      ``X-Forwarded-For: <client>``
* same, with a client-forged X-Forwarded-For:   ``X-Forwarded-For: <forged>,<client>``
* through nginx (``$proxy_add_x_forwarded_for``): ``X-Forwarded-For: <...>, <browser>,<nginx>``

Only the right-most entry was written by a party we trust (CHP); everything to its left
came from the client or from the front proxy and is ignored for the trust decision. When
the hub's TCP peer is *not* one of ``hub_proxy_ips`` (someone connected to the hub port
directly), X-Forwarded-For is ignored altogether and that peer itself is judged.

``X-Real-IP`` and tornado's ``request.remote_ip`` are never used: CHP passes ``X-Real-IP``
through untouched, so a client can set it to anything.
"""

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_EVERYONE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def parse_networks(entries, option: str) -> list[Network]:
    """Parse IPs and CIDRs (``"10.0.0.5"``, ``"10.0.0.0/24"``, ``"::1"``); raise ValueError
    naming ``option`` and the bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{option}: {entry!r} is not an IP address or CIDR network") from None
    return networks


def trusts_everyone(networks) -> bool:
    """True if ``networks`` is empty or contains all of IPv4 or all of IPv6."""
    return not networks or any(net in _EVERYONE for net in networks)


def parse_address(text: str) -> Address | None:
    """Parse an address as proxies write it; IPv4-mapped IPv6 becomes IPv4. None if garbage."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:1234" or "[::1]"
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def contains(networks, address: Address | None) -> bool:
    return address is not None and any(address in net for net in networks)


@dataclass(frozen=True)
class Peer:
    """The result of :func:`resolve_peer`.

    ``address``: the peer that is judged (the front proxy candidate), as text.
    ``trusted``: whether it is in the trusted networks.
    ``client``: the address the trusted proxy reports for the browser, for logs only ("" if
    unknown or the peer is untrusted).
    ``reason``: a short explanation when not trusted.
    """

    address: str
    trusted: bool
    client: str = ""
    reason: str = ""


def resolve_peer(direct_peer: str, forwarded_for: list[str], hub_proxies, trusted) -> Peer:
    """Judge a request.

    ``direct_peer``: the hub's TCP peer (``request.connection.context.address[0]``).
    ``forwarded_for``: every ``X-Forwarded-For`` header line, in order.
    ``hub_proxies``: networks of the hub's own proxy (CHP), whose X-Forwarded-For is believed.
    ``trusted``: networks of the trusted front proxies.
    """
    peer = parse_address(direct_peer)
    entries = [e for line in forwarded_for for e in line.split(",") if e.strip()]
    if contains(hub_proxies, peer):
        if not entries:
            return Peer(direct_peer, False, reason="request reached the hub without passing its proxy")
        judged_text = entries[-1].strip()
        judged = parse_address(judged_text)
        if judged is None:
            return Peer(judged_text[:64], False, reason="unreadable X-Forwarded-For entry")
        client = entries[-2].strip()[:64] if len(entries) > 1 else ""
    else:
        judged, judged_text, client = peer, direct_peer, ""
    if contains(trusted, judged):
        return Peer(str(judged), True, client=client)
    return Peer(str(judged) if judged else judged_text, False, reason="not a trusted proxy")
