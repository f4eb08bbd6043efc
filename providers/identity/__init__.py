"""Identity providers: turn a user name and password into a verified account.

A provider subclasses ``IdentityProvider`` and implements ``verify``. It must
return ``None`` for an unknown user, a wrong password and a disabled account
alike, and spend about the same time on each (no account enumeration). A
provider that cannot reach its backend raises ``ProviderUnavailable``.
"""

from __future__ import annotations

from dataclasses import dataclass


class ProviderUnavailable(Exception):
    """The provider cannot answer now (its directory is unreachable): nobody logs in through it.

    Callers answer 503; they never fall back to another way in.
    """


@dataclass(frozen=True)
class Identity:
    user_id: int
    name: str
    is_admin: bool


class IdentityProvider:
    name = "base"

    def verify(self, username: str, password: str) -> Identity | None:
        """Return the identity for valid credentials, else None."""
        return None
