"""Identity providers: turn a user name and password into a verified account.

A provider subclasses ``IdentityProvider`` and implements ``verify``. It must
return ``None`` for an unknown user, a wrong password and a disabled account
alike, and spend about the same time on each (no account enumeration).

When a provider cannot give an answer at all (its directory is down, times
out, or refuses its TLS handshake) it raises ``ProviderUnavailable`` instead:
an outage must never look like a wrong password, and never like a right one.
``AccessService`` asks the providers in order, lets a later provider verify
its own accounts, and raises the outage if none did; the WebDAV front answers
503 with ``Retry-After``. The provider logs the cause itself (logger
``davbox.auth``), once per outage rather than once per login.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    user_id: int
    name: str
    is_admin: bool
    # Seconds this login may stay in the credential cache, at most
    # ``auth.cache_ttl``; None: ``auth.cache_ttl``.
    cache_ttl: float | None = None


class ProviderUnavailable(Exception):
    """The provider cannot check passwords now; ``str()`` is the admin's log line.

    ``retry_after`` is the number of seconds clients are told to wait.
    """

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdentityProvider:
    name = "base"

    def verify(self, username: str, password: str) -> Identity | None:
        """Return the identity for valid credentials, else None; raise ProviderUnavailable."""
        return None
