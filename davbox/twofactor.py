"""Two-factor login: TOTP (RFC 6238, pyotp) and single-use recovery codes.

Contract:
- ``enroll`` makes a new TOTP secret for an account (replacing any), stores it
  encrypted (Fernet, with a key derived from the installation's secret) and
  returns the ``otpauth://`` URI and ten recovery codes, shown once and stored
  only as HMACs.
- ``verify_code`` accepts a 6-digit code for the current time step ±1 (clock
  drift) **once**: the accepted step is recorded in the same UPDATE that
  checks it is newer than the last one, so a replay (also by another server
  process) is refused. ``use_recovery_code`` marks a code used in the same
  way. Comparisons are constant-time (pyotp) or by HMAC look-up.
- ``confirm`` installs a secret set up on the web once a code from it is
  right. Any change of the second factor (``enroll``, ``confirm``, ``reset``)
  ends the account's other web sessions.
- ``reset`` removes TOTP and recovery codes; ``required_for`` tells whether
  the ``auth.two_factor_for`` setting puts an account under two-factor login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import pyotp
from cryptography.fernet import Fernet
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from davbox.accounts import _user
from davbox.db import Database, bump_epoch
from davbox.db.models import Group, Mailbox, MailboxGrant, RecoveryCode, User, utcnow
from davbox.sessions import end_for_user

ISSUER = "davbox"
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


@dataclass(frozen=True)
class Enrollment:
    uri: str
    recovery_codes: list[str]


def _fernet(db: Database) -> Fernet:
    key = hashlib.sha256(b"davbox totp key\0" + db.server_secret()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _digest(db: Database, code: str) -> str:
    normalised = code.replace("-", "").replace(" ", "").lower()
    return hmac.new(db.server_secret(), normalised.encode(), hashlib.sha256).hexdigest()


def _recovery_code() -> str:
    chars = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(10))
    return f"{chars[:5]}-{chars[5:]}"


def new_secret() -> str:
    """A fresh random TOTP secret (base32, 160 bits, from ``secrets`` via pyotp)."""
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (from a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def seal(db: Database, secret: str) -> str:
    """Encrypt a TOTP secret for storage."""
    return _fernet(db).encrypt(secret.encode()).decode()


def unseal(db: Database, sealed: str) -> str:
    return _fernet(db).decrypt(sealed.encode()).decode()


def _install(
    db: Database, session: Session, user: User, secret: str, last_step: int | None
) -> list[str]:
    """Make ``secret`` the account's TOTP secret with ten new recovery codes; return them.

    Ends the account's web sessions (the caller's own is passed on by the
    callers that keep one) and bumps the access epoch.
    """
    codes = [_recovery_code() for _ in range(10)]
    user.totp_secret = seal(db, secret)
    user.totp_last_step = last_step
    session.query(RecoveryCode).filter(RecoveryCode.user_id == user.id).delete()
    session.add_all(RecoveryCode(user_id=user.id, digest=_digest(db, c)) for c in codes)
    bump_epoch(session)
    return codes


def enroll(db: Database, username: str) -> Enrollment:
    """Admin enrollment (CLI): a new secret at once; every web session of the account ends."""
    secret = new_secret()
    with db.session() as session:
        user = _user(session, username)
        codes = _install(db, session, user, secret, None)
        end_for_user(session, user.id)
    return Enrollment(provisioning_uri(secret, username), codes)


def confirm(
    db: Database,
    username: str,
    secret: str,
    code: str,
    *,
    keep_session: int | None = None,
    now: float | None = None,
) -> list[str] | None:
    """Web enrollment: install ``secret`` if ``code`` proves the app has it; else None.

    Returns the new recovery codes (to be shown once). The confirming code's
    step counts as used, so it cannot log in again. Other sessions end.
    """
    matched = _matching_step(secret, code, time.time() if now is None else now)
    if matched is None:
        return None
    with db.session() as session:
        user = _user(session, username)
        codes = _install(db, session, user, secret, matched)
        end_for_user(session, user.id, keep=keep_session)
    return codes


def _matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (now ±1, for clock drift) whose code equals ``code``, else None."""
    code = code.strip()
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    step = int(now // totp.interval)
    return next(
        (s for s in (step - 1, step, step + 1) if totp.verify(code, for_time=s * totp.interval)),
        None,
    )


def remaining_recovery_codes(db: Database, username: str) -> int:
    with db.session() as session:
        user = _user(session, username)
        return len(
            session.execute(
                select(RecoveryCode.id).where(
                    RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
                )
            ).all()
        )


def reset(db: Database, username: str) -> None:
    with db.session() as session:
        user = _user(session, username)
        user.totp_secret = None
        user.totp_last_step = None
        session.query(RecoveryCode).filter(RecoveryCode.user_id == user.id).delete()
        end_for_user(session, user.id)
        bump_epoch(session)


def is_enrolled(db: Database, username: str) -> bool:
    with db.session() as session:
        return _user(session, username).totp_secret is not None


def verify_code(db: Database, username: str, code: str, now: float | None = None) -> bool:
    """True once for a valid current code; a replayed or old code is refused."""
    now = time.time() if now is None else now
    with db.session() as session:
        user = _user(session, username)
        if user.totp_secret is None:
            return False
        matched = _matching_step(unseal(db, user.totp_secret), code, now)
        if matched is None:
            return False
        claimed = session.execute(
            update(User)
            .where(
                User.id == user.id,
                (User.totp_last_step.is_(None)) | (User.totp_last_step < matched),
            )
            .values(totp_last_step=matched)
        )
        return claimed.rowcount == 1  # type: ignore[attr-defined]


def use_recovery_code(db: Database, username: str, code: str) -> bool:
    """True once per recovery code."""
    with db.session() as session:
        user = _user(session, username)
        claimed = session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user.id,
                RecoveryCode.digest == _digest(db, code),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
        )
        return claimed.rowcount == 1  # type: ignore[attr-defined]


def required_for(
    db: Database, username: str, user_id: int, groups: frozenset[str], rules: list[str]
) -> bool:
    """Whether ``auth.two_factor_for`` puts this account under two-factor login.

    Entries: ``*`` (every account), ``@group``, ``mailbox:NAME`` (members of a
    mailbox, directly or through a group), or an account name.
    """
    mailboxes = [rule[8:] for rule in rules if rule.startswith("mailbox:")]
    if any(rule in ("*", username) or (rule[:1] == "@" and rule[1:] in groups) for rule in rules):
        return True
    if not mailboxes:
        return False
    with db.session() as session:
        query = (
            select(MailboxGrant.id)
            .join(Mailbox)
            .outerjoin(Group, Group.id == MailboxGrant.group_id)
            .where(
                Mailbox.name.in_(mailboxes),
                (MailboxGrant.user_id == user_id) | Group.name.in_(groups),
            )
        )
        return session.execute(query).first() is not None
