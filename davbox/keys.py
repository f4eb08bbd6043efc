"""The key ring of encryption at rest: key-encryption keys (KEKs) under a master key.

Three levels: the master key (32 bytes, 64 hex digits in a file or an
environment variable; davbox never stores it), the KEKs (random, kept in the
``encryption_keys`` table sealed by the master key with AES-256-GCM) and one
data key per file (in the file's header, wrapped by a KEK; see
``davbox.providers.storage.sealed``).

Contract:
- ``KeyRing.open(db, master)`` unwraps every live KEK and makes the first one
  if there is none; a master key that does not open them raises
  ``WrongMasterKey`` (the server refuses to start, saying so).
- ``current()`` is the KEK new files are wrapped with. Each process looks at
  most every ``REFRESH`` seconds whether the ring changed (one query), so a
  rotation reaches running servers within that time. ``get(id)`` looks again
  at once for an id it does not know.
- ``rotate()`` makes a new current KEK; ``retire(id)`` destroys a KEK's wrapped
  material (the row stays, with its dates, for ``davbox keys status``). Only
  ``davbox.encryption.rotate`` calls it, once no file uses that KEK.
- The master key and the KEKs never reach a log line or an exception text.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from davbox.db import Database
from davbox.db.models import EncryptionKey, Setting, utcnow
from davbox.providers.storage.sealed import KeyUnavailable

EPOCH_KEY = "keys_epoch"
REFRESH = 1.0
_HEX = re.compile(r"[0-9a-fA-F]{64}")


class WrongMasterKey(Exception):
    """The master key does not open the key-encryption keys in the database."""


class BadMasterKey(ValueError):
    """The master key text is not 64 hexadecimal digits."""


def new_master_key() -> str:
    """A fresh master key as 64 hex digits (for a file or an environment variable)."""
    return secrets.token_hex(32)


def parse_master_key(text: str) -> bytes:
    value = text.strip()
    if not _HEX.fullmatch(value):
        raise BadMasterKey(
            "the master key must be 64 hexadecimal digits (as made by davbox keys generate);"
            f" this one has {len(value)} characters"
        )
    return bytes.fromhex(value)


@dataclass(frozen=True)
class KekInfo:
    id: str
    current: bool
    created_at: datetime
    retired_at: datetime | None


def _aad(kek_id: str) -> bytes:
    return b"davbox-kek:" + kek_id.encode("ascii")


class KeyRing:
    def __init__(self, db: Database, master: bytes) -> None:
        self.db = db
        self._master = AESGCM(master)
        self._keys: dict[str, AESGCM] = {}
        self._current = ""
        self._epoch = -1
        self._checked = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the keys
        return f"KeyRing(current={self._current!r}, keys={len(self._keys)})"

    @classmethod
    def open(cls, db: Database, master: bytes) -> KeyRing:
        ring = cls(db, master)
        ring._load()
        if not ring._current:
            ring._create_first()
            ring._load()
        return ring

    # -- what the storage asks ------------------------------------------------------------

    def current(self) -> tuple[str, AESGCM]:
        now = time.monotonic()
        if now - self._checked > REFRESH:
            self._checked = now
            if self._read_epoch() != self._epoch:
                self._load()
        return self._current, self._keys[self._current]

    def get(self, kek_id: str) -> AESGCM:
        key = self._keys.get(kek_id)
        if key is None:
            self._load()
            key = self._keys.get(kek_id)
            if key is None:
                raise KeyUnavailable(f"key-encryption key {kek_id!r} is not in the key ring")
        return key

    # -- changes ---------------------------------------------------------------------------

    def rotate(self) -> str:
        """Make a new KEK the current one; returns its id."""
        kek_id = secrets.token_hex(8)
        wrapped = self._wrap(kek_id)
        with self.db.session() as session:
            session.execute(update(EncryptionKey).values(current=False))
            session.add(EncryptionKey(id=kek_id, wrapped=wrapped, current=True))
            _bump(session)
        self._load()
        return kek_id

    def retire(self, kek_id: str) -> None:
        """Destroy a (not current) KEK; files wrapped by it can no longer be opened."""
        with self.db.session() as session:
            row = session.get(EncryptionKey, kek_id)
            if row is None or row.current:
                raise ValueError(f"key {kek_id} cannot be retired")
            row.wrapped = None
            row.retired_at = utcnow()
            _bump(session)
        self._load()

    def kek_list(self) -> list[KekInfo]:
        with self.db.session() as session:
            rows = session.execute(select(EncryptionKey).order_by(EncryptionKey.created_at))
            return [KekInfo(r.id, r.current, r.created_at, r.retired_at) for r in rows.scalars()]

    def live_ids(self) -> set[str]:
        return set(self._keys)

    # -- inside ------------------------------------------------------------------------------

    def _wrap(self, kek_id: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._master.encrypt(
            nonce, AESGCM.generate_key(bit_length=256), _aad(kek_id)
        )

    def _create_first(self) -> None:
        kek_id = secrets.token_hex(8)
        try:
            with self.db.session() as session:
                if session.execute(select(EncryptionKey.id).limit(1)).first() is not None:
                    return  # another process made it a moment ago
                session.add(EncryptionKey(id=kek_id, wrapped=self._wrap(kek_id), current=True))
                _bump(session)
        except IntegrityError:
            pass

    def _read_epoch(self) -> int:
        with self.db.session() as session:
            row = session.get(Setting, EPOCH_KEY)
            return int(row.value) if row else 0

    def _load(self) -> None:
        with self._lock:
            epoch = self._read_epoch()
            with self.db.session() as session:
                rows = list(
                    session.execute(
                        select(EncryptionKey).where(EncryptionKey.wrapped.is_not(None))
                    ).scalars()
                )
                keys: dict[str, AESGCM] = {}
                current = ""
                for row in rows:
                    assert row.wrapped is not None
                    nonce, sealed = row.wrapped[:12], row.wrapped[12:]
                    try:
                        keys[row.id] = AESGCM(self._master.decrypt(nonce, sealed, _aad(row.id)))
                    except InvalidTag:
                        raise WrongMasterKey(
                            f"the master key does not open key-encryption key {row.id}:"
                            " it is not the key this storage was encrypted with"
                        ) from None
                    if row.current:
                        current = row.id
            self._keys, self._current, self._epoch = keys, current, epoch
            self._checked = time.monotonic()


def _bump(session: Session) -> None:
    row = session.get(Setting, EPOCH_KEY)
    if row is None:
        session.add(Setting(key=EPOCH_KEY, value="1"))
    else:
        row.value = str(int(row.value) + 1)
