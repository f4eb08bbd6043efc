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

from davbox.accounts import _user
from davbox.db import Database, bump_epoch
from davbox.db.models import Group, Mailbox, MailboxGrant, RecoveryCode, User, utcnow

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


def enroll(db: Database, username: str) -> Enrollment:
    secret = pyotp.random_base32()
    codes = [_recovery_code() for _ in range(10)]
    with db.session() as session:
        user = _user(session, username)
        user.totp_secret = _fernet(db).encrypt(secret.encode()).decode()
        user.totp_last_step = None
        session.query(RecoveryCode).filter(RecoveryCode.user_id == user.id).delete()
        session.add_all(RecoveryCode(user_id=user.id, digest=_digest(db, c)) for c in codes)
        bump_epoch(session)
    uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)
    return Enrollment(uri, codes)


def reset(db: Database, username: str) -> None:
    with db.session() as session:
        user = _user(session, username)
        user.totp_secret = None
        user.totp_last_step = None
        session.query(RecoveryCode).filter(RecoveryCode.user_id == user.id).delete()
        bump_epoch(session)


def is_enrolled(db: Database, username: str) -> bool:
    with db.session() as session:
        return _user(session, username).totp_secret is not None


def verify_code(db: Database, username: str, code: str, now: float | None = None) -> bool:
    """True once for a valid current code; a replayed or old code is refused."""
    code = code.strip()
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return False
    now = time.time() if now is None else now
    with db.session() as session:
        user = _user(session, username)
        if user.totp_secret is None:
            return False
        totp = pyotp.TOTP(_fernet(db).decrypt(user.totp_secret.encode()).decode())
        step = int(now // totp.interval)
        matched = next(
            (
                s
                for s in (step - 1, step, step + 1)
                if totp.verify(code, for_time=s * totp.interval)
            ),
            None,
        )
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
