"""The built-in identity provider: accounts in davbox's own database (argon2id hashes).

Only accounts whose ``source`` is "local" are verified here: an account made
by an LDAP login has no usable hash, and even one set by mistake is ignored.
"""

from __future__ import annotations

from sqlalchemy import select

from davbox.db import Database
from davbox.db.models import User
from davbox.passwords import dummy_verify, verify_password
from davbox.providers.identity import Identity, IdentityProvider


class SqlIdentityProvider(IdentityProvider):
    name = "sql"

    def __init__(self, db: Database) -> None:
        self.db = db

    def verify(self, username: str, password: str) -> Identity | None:
        with self.db.session() as session:
            row = session.execute(
                select(
                    User.id,
                    User.name,
                    User.is_admin,
                    User.password_hash,
                    User.disabled,
                    User.source,
                ).where(User.name == username)
            ).first()
        if row is None:
            dummy_verify(password)
            return None
        ok = verify_password(row.password_hash, password)
        if not ok or row.disabled or row.source != "local":
            return None
        return Identity(row.id, row.name, row.is_admin)
