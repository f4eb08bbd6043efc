"""The client's address behind trusted reverse proxies (``server.trusted_proxies``).

Problem: behind a reverse proxy every request comes from the proxy's address,
so login throttling, sessions and the audit trail would all name the proxy.
Proxies tell the real client in ``X-Forwarded-For``, but anyone can send that
header: it is believed only when the connection itself comes from a proxy
the configuration names.

Contract (``ClientAddress.apply(environ)``, called by the dispatcher first):
- Reads ``REMOTE_ADDR``, ``HTTP_X_FORWARDED_FOR`` and ``HTTP_X_FORWARDED_PROTO``.
- With no trusted proxies configured, or a connection from an address that
  is not one, nothing changes (the headers are ignored).
- Otherwise the client is found by walking ``X-Forwarded-For`` from the right
  (the hop nearest to us) past addresses of trusted proxies; the first one
  that is not trusted is the client. A hop that is not an IP address stops
  the walk: the last trusted hop is then taken as the client (never a
  made-up value). ``REMOTE_ADDR`` becomes that address (the proxy's is kept
  in ``davbox.proxy_addr``) and ``wsgi.url_scheme`` the forwarded scheme
  when it is ``http`` or ``https``.
Addresses are parsed with the ``ipaddress`` module, never by hand.
"""

from __future__ import annotations

import ipaddress
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    def __init__(self, trusted: list[str]) -> None:
        self.trusted: list[Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return address is not None and any(address in network for network in self.trusted)

    def apply(self, environ: dict[str, Any]) -> None:
        """Put the real client's address into ``REMOTE_ADDR`` (see the module contract)."""
        if not self.trusted:
            return
        remote = environ.get("REMOTE_ADDR", "")
        current = _address(remote)
        if not self.is_trusted(current):
            return
        hops = [h for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        client = current
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break
            client = address
            if not self.is_trusted(address):
                break
        environ["davbox.proxy_addr"] = remote
        environ["REMOTE_ADDR"] = str(client)
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip().lower()
        if scheme in ("http", "https"):
            environ["wsgi.url_scheme"] = scheme
