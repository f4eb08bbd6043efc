"""Encryption at rest: which storage a server gets, conversion, key rotation and status.

Contract:
- ``open_storage(settings, data_dir, db, alarm)`` returns the plain
  ``FilesystemStorage`` or, with ``storage.encryption``, a ``SealedStorage``
  on the key ring the master key opens. It raises ``EncryptionRefused`` (the
  server does not start; the message says what to do) when the master key is
  wrong, or when the storage is encrypted and no key is configured.
- The first start with a key encrypts the files already stored (one process,
  under a lease; others wait for it), then the database marks the storage
  encrypted for good: from then on every process needs the key.
- ``rotate(storage, ring)`` makes a new KEK current, waits until running
  servers wrap new files with it (they look every ``REFRESH`` seconds), rewraps
  every file's data key (segments untouched), sweeps again after ``grace``
  seconds for files that were being written meanwhile, and retires the old
  KEKs only when a sweep finds none left on them.
- ``status(storage, ring)`` counts files per KEK (and files not encrypted).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from davbox.accounts import AdminError
from davbox.config.schema import Settings
from davbox.db import Database
from davbox.db.models import Mailbox, Setting
from davbox.events import EventBus, IntegrityFailed
from davbox.jobs import JobLeases
from davbox.keys import REFRESH, BadMasterKey, KeyRing, WrongMasterKey, parse_master_key
from davbox.paths import storage_root
from davbox.providers.storage.encrypted import SealedStorage
from davbox.providers.storage.filesystem import FilesystemStorage
from davbox.providers.storage.sealed import ContentTampered, KeyUnavailable, kek_of

SEALED_KEY = "storage_sealed"
_log = logging.getLogger("davbox.encryption")


class EncryptionRefused(AdminError):
    """The storage cannot be opened as configured (the message tells the admin why)."""


def is_sealed(db: Database) -> bool:
    with db.session() as session:
        return session.get(Setting, SEALED_KEY) is not None


def open_ring(settings: Settings, db: Database) -> KeyRing:
    encryption = settings.storage.encryption
    if encryption is None:
        raise EncryptionRefused("storage.encryption is not configured")
    try:
        return KeyRing.open(db, parse_master_key(encryption.master_key.get_secret_value()))
    except (BadMasterKey, WrongMasterKey) as exc:
        raise EncryptionRefused(f"storage.encryption.master_key: {exc}") from None


def open_storage(
    settings: Settings,
    data_dir: Path,
    db: Database,
    alarm: Callable[[Path, str], None] | None = None,
) -> FilesystemStorage:
    root = storage_root(settings, data_dir)
    if settings.storage.encryption is None:
        if is_sealed(db):
            raise EncryptionRefused(
                "the storage is encrypted, but no key is configured: set"
                " storage.encryption.master_key to the master key ({$file: PATH} or"
                " {$env: NAME}); see README, 'Encryption at rest'"
            )
        return FilesystemStorage(root)
    storage = SealedStorage(root, open_ring(settings, db), alarm)
    if not is_sealed(db):
        _seal_existing(storage, db)
    return storage


def _seal_existing(storage: SealedStorage, db: Database) -> None:
    """Encrypt what was stored before encryption was on; one process does it, once."""
    leases = JobLeases(db)
    while not is_sealed(db):
        if leases.acquire("seal-storage", hold=3600):
            count = 0
            for path in list(storage.files()):
                if path.parent == storage.tmp or storage.tmp in path.parents:
                    continue  # unfinished uploads of a stopped server: swept at start
                if storage.seal_in_place(path):
                    count += 1
            with db.session() as session:
                if session.get(Setting, SEALED_KEY) is None:
                    session.add(Setting(key=SEALED_KEY, value="1"))
            if count:
                _log.warning(
                    "encrypted %d file(s) stored before encryption was turned on; their old"
                    " plaintext may remain in free disk blocks (see README)",
                    count,
                )
            return
        time.sleep(0.5)  # another process is encrypting the storage


@dataclass
class Rotation:
    new_kek: str
    rewrapped: int = 0
    retired: list[str] = field(default_factory=list)
    left: Counter[str] = field(default_factory=Counter)


def rotate(
    storage: SealedStorage,
    ring: KeyRing,
    *,
    grace: float = 5.0,
    rounds: int = 5,
    progress: Callable[[str], None] = lambda _line: None,
) -> Rotation:
    """New current KEK, every data key rewrapped, old KEKs retired once unused."""
    old = ring.live_ids()
    report = Rotation(ring.rotate())
    progress(f"new key-encryption key {report.new_kek}; waiting for servers to use it")
    time.sleep(2 * REFRESH + 0.5)
    for _round in range(rounds):
        moved = _rewrap_all(storage, report)
        progress(f"rewrapped {moved} data key(s)")
        time.sleep(grace)
        left = status(storage).by_kek
        report.left = Counter({k: n for k, n in left.items() if k in old})
        if not report.left:
            for kek_id in sorted(old):
                ring.retire(kek_id)
                report.retired.append(kek_id)
            return report
    return report  # something keeps writing with an old key: retire later (rotate again)


def _rewrap_all(storage: SealedStorage, report: Rotation) -> int:
    moved = 0
    for path in storage.files():
        try:
            if storage.rewrap(path) is not None:
                moved += 1
        except FileNotFoundError:
            continue  # deleted meanwhile
        except (ContentTampered, KeyUnavailable) as exc:
            if kek_of(path) is None:
                continue  # a temp of an upload in progress: no header yet
            _log.error("cannot rewrap %s: %s", path, exc)
    report.rewrapped += moved
    return moved


@dataclass
class StorageStatus:
    by_kek: Counter[str] = field(default_factory=Counter)
    not_encrypted: int = 0
    in_progress: int = 0


def status(storage: SealedStorage) -> StorageStatus:
    """How many stored files each KEK wraps (temps of uploads in progress apart)."""
    result = StorageStatus()
    for path in storage.files():
        kek_id = kek_of(path)
        if kek_id is not None:
            result.by_kek[kek_id] += 1
        elif storage.tmp in path.parents:
            result.in_progress += 1
        else:
            result.not_encrypted += 1
    return result


class IntegrityAlarm:
    """Records a stored file failing its integrity check where no request tells more
    (a COPY's source, a job): actor "system", the mailbox and path of the file."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.events: EventBus | None = None  # set once the bus exists
        self.mailboxes: Path | None = None

    def __call__(self, path: Path, reason: str) -> None:
        mailbox, rel = self.locate(path)
        _log.error("stored file %s%s failed its integrity check: %s", mailbox, rel, reason)
        if self.events is not None:
            self.events.emit(
                IntegrityFailed(actor="system", mailbox=mailbox, path=rel, reason=reason)
            )

    def locate(self, path: Path) -> tuple[str, str]:
        """(mailbox name, path inside it) of a stored file; ("", path) outside mailboxes."""
        if self.mailboxes is None or self.mailboxes not in path.parents:
            return "", str(path)
        key, *rest = path.relative_to(self.mailboxes).parts
        with self.db.session() as session:
            name = session.execute(
                select(Mailbox.name).where(Mailbox.storage_key == key)
            ).scalar_one_or_none()
        return name or key, "/" + "/".join(rest)


def request_alarm(
    events: EventBus, context: dict[str, Any], mailbox: str, path: str
) -> Callable[[str], None]:
    """An ``open_content`` alarm that records the failure with the request's event fields."""

    def alarm(reason: str) -> None:
        _log.error("stored file %s%s failed its integrity check: %s", mailbox, path, reason)
        events.emit(
            IntegrityFailed(**context, mailbox=mailbox, path=path, status=500, reason=reason)
        )

    return alarm
