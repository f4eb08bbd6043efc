"""Password hashing with argon2id (argon2-cffi).

Contract: ``hash_password`` returns a self-describing argon2id hash;
``verify_password`` is constant-time in the password and never raises for a
wrong password or a malformed hash (it returns False). ``dummy_verify`` spends
the same time as a real check, so unknown accounts cannot be told apart by
timing. At most max(2, CPU count) hashes run at once, bounding memory and CPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile
# Each verification takes 64 MiB and ~0.1 s of one core. Without a bound, a
# burst of logins (or of wrong guesses, which are never cached) takes memory
# in proportion to the thread count: at most this many run at once.
_verifications = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    with _verifications:
        return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        dummy_verify(password)
        return False
    try:
        with _verifications:
            return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def dummy_verify(password: str) -> None:
    """Spend one verification's worth of time on a hash nobody's password matches."""
    with contextlib.suppress(VerificationError), _verifications:
        _hasher.verify(_dummy_hash(), password)


def generate_password() -> str:
    """A random password for accounts made by the server (about 120 bits)."""
    return secrets.token_urlsafe(15)


def validate_new_password(password: str) -> None:
    """Refuse passwords too weak to protect confidential files (raise ValueError)."""
    if len(password) < 10:
        raise ValueError("passwords must have at least 10 characters")
    if len(password) > 1024:
        raise ValueError("passwords must have at most 1024 characters")
    if password != password.strip() or "\n" in password:
        raise ValueError("passwords may not start or end with spaces or contain line breaks")
