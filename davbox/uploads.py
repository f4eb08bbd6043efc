"""Resumable uploads in chunks: a file arrives piece by piece and appears whole or not at all.

Browsers send large files through share links as a series of bounded
requests instead of one huge form post, so a broken connection costs one
chunk, not the whole file. This service keeps the uploads in progress; the
web layer (``davbox.admin_ui.link_api``) maps HTTP onto it.

Contract:
- ``start(target, name, size, owner)`` judges the name, the declared size and
  the quota up front (``engine.check`` with ``Operation.CREATE``, exactly as a
  WebDAV PUT by the same principal is judged) and opens a temp file in the
  storage's ``tmp/`` (an ``AtomicWriter``). Nothing is written into the
  mailbox until ``finish``.
- ``append(id, owner, offset, blocks)`` adds bytes at ``offset``, which must
  be the number of bytes received so far (else ``OffsetMismatch`` with the
  right offset). While bytes arrive, the total is held to the declared size
  and to ``engine.upload_limit`` (size and quota rules): past either the
  upload is discarded whole and ``UploadRefused`` carries the policy's status
  and reason. Bytes of a chunk that broke off half-way stay (they are a
  correct prefix): ``status`` then tells where to go on (it waits a moment
  for a chunk still arriving, and says if one still is).
- ``finish(id, owner)`` needs every declared byte; it asks the policies once
  more with the real size and the first bytes (content checks), then commits
  under the mailbox's commit lock: fsync, linked in under the wanted name or,
  when taken, "name (2).ext" (never replacing a file), usage refreshed. It
  returns a ``Receipt`` (name as uploaded, size, SHA-256 computed while the
  bytes streamed) and emits ``LinkUploaded`` before the lock is released and
  the client answered; if that emit fails (the audit trail cannot write),
  the file is taken away again and the answer is 503. Refusals emit ``AccessRefused``
  (actor ``link-<id>``) and discard the upload. ``context`` is the event
  fields of the request (``request_id``, ``client``).
- An upload belongs to its ``owner`` (an opaque string, the page's CSRF
  token): anyone else gets ``UploadNotFound`` for its id, as for an unknown
  id. Uploads idle for ``idle_timeout`` seconds are discarded; at most
  ``per_target`` uploads per link and ``total`` overall are open at once.
- State lives in this process. Temp files of a process that ended (crash,
  restart) are removed by ``FilesystemStorage.sweep_temps`` at server start,
  like those of WebDAV uploads; their uploads are gone and must start again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from wsgidav.dav_error import DAVError

from davbox.access import MailboxAccess
from davbox.audit import AuditUnavailable
from davbox.dav.provider import MAX_PATH_BYTES, MailboxProvider
from davbox.dav.resources import UPLOAD_NOT_RECORDED
from davbox.events import AccessRefused, EventBus, LinkUploaded
from davbox.policies.base import AccessRequest, Decision, Operation, Principal
from davbox.policies.engine import PolicyEngine
from davbox.providers.storage.filesystem import (
    AtomicWriter,
    FilesystemStorage,
    LengthMismatch,
    StorageFull,
)

CHUNK_MAX = 8 * 1024 * 1024  # the most bytes one chunk request may carry
HEAD_BYTES = 8192  # first bytes kept for content checks (as for WebDAV uploads)


class UploadRefused(Exception):
    """A policy or a rule of this service said no; ``status`` and ``reason`` for the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UploadNotFound(UploadRefused):
    def __init__(self) -> None:
        super().__init__(404, "there is no such upload (it finished, was discarded or expired)")


class OffsetMismatch(UploadRefused):
    def __init__(self, offset: int) -> None:
        super().__init__(409, f"the upload goes on at byte {offset}")
        self.offset = offset


@dataclass(frozen=True)
class UploadTarget:
    """Where an upload goes and who sends it (a share link's principal and mailbox role)."""

    link_id: int
    principal: Principal
    box: MailboxAccess
    folder_rel: str  # the folder inside the mailbox, "/" for its top
    folder_fs: Path


@dataclass(frozen=True)
class Receipt:
    name: str  # as uploaded
    size: int
    sha256: str
    stored_name: str  # differs from ``name`` when that was taken


@dataclass
class _Upload:
    id: str
    owner: str
    target: UploadTarget
    name: str
    size: int
    writer: AtomicWriter
    hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    head: bytes = b""
    touched: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def rel(self) -> str:
        return self.target.folder_rel.rstrip("/") + "/" + self.name


def clean_name(name: str) -> str:
    """The file name in NFC; ``UploadRefused`` (400) for one no client could handle."""
    name = unicodedata.normalize("NFC", name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UploadRefused(400, "give the file a name without slashes")
    try:
        MailboxProvider.check_name(name)
    except DAVError as exc:
        raise UploadRefused(400, str(exc.context_info)) from None
    return name


class ResumableUploads:
    def __init__(
        self,
        storage: FilesystemStorage,
        engine: PolicyEngine,
        events: EventBus,
        *,
        idle_timeout: float = 3600.0,
        per_target: int = 32,
        total: int = 256,
    ) -> None:
        self.storage = storage
        self.engine = engine
        self.events = events
        self.idle_timeout = idle_timeout
        self.per_target = per_target
        self.total = total
        self._uploads: dict[str, _Upload] = {}
        self._guard = threading.Lock()

    # -- the steps ------------------------------------------------------------

    def start(
        self, target: UploadTarget, name: str, size: int, owner: str, context: dict[str, Any]
    ) -> str:
        """Judge the upload up front and open its temp file; return its id."""
        self.expire()
        name = clean_name(name)
        if size < 0:
            raise UploadRefused(400, "the size must be a number of bytes")
        rel = target.folder_rel.rstrip("/") + "/" + name
        if len(rel.encode()) > MAX_PATH_BYTES:
            raise UploadRefused(414, f"paths are limited to {MAX_PATH_BYTES} bytes")
        self._check(target, rel, context, size=size)
        with self._guard:
            mine = sum(1 for u in self._uploads.values() if u.target.link_id == target.link_id)
            if mine >= self.per_target or len(self._uploads) >= self.total:
                raise UploadRefused(429, "too many uploads at once; wait for some to finish")
            try:
                writer = self.storage.writer(target.folder_fs / name, size, exclusive=True)
            except OSError as exc:
                raise _storage_refusal(exc) from exc
            upload = _Upload(secrets.token_urlsafe(18), owner, target, name, size, writer)
            self._uploads[upload.id] = upload
        return upload.id

    def append(
        self,
        upload_id: str,
        owner: str,
        link_id: int,
        offset: int,
        blocks: Iterable[bytes],
        context: dict[str, Any],
    ) -> int:
        """Add the bytes of one chunk at ``offset``; return the new offset."""
        upload = self._get(upload_id, owner, link_id)
        if not upload.lock.acquire(blocking=False):
            raise UploadRefused(409, "another chunk of this upload is still arriving")
        try:
            if offset != upload.writer.received:
                raise OffsetMismatch(upload.writer.received)
            limit = self.engine.upload_limit(self._request(upload.target, upload.rel))
            for data in blocks:
                upload.touched = time.monotonic()
                total = upload.writer.received + len(data)
                if total > upload.size:
                    self._drop(upload)
                    raise UploadRefused(
                        400, "more bytes arrived than the upload announced; nothing was stored"
                    )
                if limit is not None and total > limit.max_bytes:
                    self._drop(upload)
                    decision = Decision.deny(
                        f"{limit.reason}; nothing was stored", limit.status, limit.rule
                    )
                    self._refused(upload.target, upload.rel, decision, context)
                if len(upload.head) < HEAD_BYTES:
                    upload.head += data[: HEAD_BYTES - len(upload.head)]
                try:
                    upload.writer.write(data)
                except (StorageFull, OSError) as exc:
                    self._drop(upload)
                    raise _storage_refusal(exc) from exc
                upload.hash.update(data)
            return upload.writer.received
        finally:
            upload.touched = time.monotonic()
            upload.lock.release()

    def status(
        self, upload_id: str, owner: str, link_id: int, settle: float = 2.0
    ) -> tuple[int, int, bool]:
        """(bytes received so far, declared size, whether a chunk is still arriving).

        A chunk whose connection broke off may still be read for a moment; the
        status waits up to ``settle`` seconds for it to end, so the offset it
        gives is where the client goes on. The flag says it has not ended yet.
        """
        upload = self._get(upload_id, owner, link_id)
        settled = upload.lock.acquire(timeout=settle)
        try:
            upload.touched = time.monotonic()
            return upload.writer.received, upload.size, not settled
        finally:
            if settled:
                upload.lock.release()

    def finish(self, upload_id: str, owner: str, link_id: int, context: dict[str, Any]) -> Receipt:
        """Judge the whole file once more, then make it appear in the mailbox."""
        upload = self._get(upload_id, owner, link_id)
        if not upload.lock.acquire(blocking=False):
            raise UploadRefused(409, "a chunk of this upload is still arriving")
        try:
            if upload.writer.received != upload.size:
                raise OffsetMismatch(upload.writer.received)
            target = upload.target
            with self.storage.commit_lock(target.box.storage_key):
                try:
                    self._check(target, upload.rel, context, size=upload.size, head=upload.head)
                    upload.writer.commit()
                except UploadRefused:
                    self._drop(upload)
                    raise
                except FileNotFoundError:
                    self._drop(upload)
                    raise UploadRefused(
                        409, "the folder was removed while the file arrived; nothing was stored"
                    ) from None
                except (StorageFull, LengthMismatch, OSError) as exc:
                    self._drop(upload)
                    raise _storage_refusal(exc) from exc
                stored = upload.writer.target.name
                digest = upload.hash.hexdigest()
                try:
                    # Recorded before anyone is told: without its record the file goes.
                    self.events.emit(
                        LinkUploaded(
                            **context,
                            actor=target.principal.name,
                            mailbox=target.box.name,
                            path=target.folder_rel.rstrip("/") + "/" + stored,
                            status=201,
                            link_id=target.link_id,
                            size=upload.size,
                            sha256=digest,
                        )
                    )
                except AuditUnavailable as exc:
                    upload.writer.undo()
                    self._drop(upload)
                    raise UploadRefused(503, UPLOAD_NOT_RECORDED) from exc
                finally:
                    self.storage.usage_changed(target.box.storage_key)
            with self._guard:
                self._uploads.pop(upload.id, None)
        finally:
            upload.lock.release()
        return Receipt(upload.name, upload.size, digest, stored)

    def discard(self, upload_id: str, owner: str, link_id: int) -> None:
        upload = self._get(upload_id, owner, link_id)
        with upload.lock:
            self._drop(upload)

    def expire(self) -> int:
        """Discard uploads idle longer than ``idle_timeout``; return how many."""
        now = time.monotonic()
        with self._guard:
            stale = [u for u in self._uploads.values() if now - u.touched > self.idle_timeout]
        for upload in stale:
            if upload.lock.acquire(blocking=False):
                try:
                    self._drop(upload)
                finally:
                    upload.lock.release()
        return len(stale)

    # -- helpers ----------------------------------------------------------------

    def _get(self, upload_id: str, owner: str, link_id: int) -> _Upload:
        with self._guard:
            upload = self._uploads.get(upload_id)
        if (
            upload is None
            or upload.target.link_id != link_id
            or not hmac.compare_digest(upload.owner.encode(), owner.encode())
        ):
            raise UploadNotFound()
        if time.monotonic() - upload.touched > self.idle_timeout:
            self.expire()
            raise UploadNotFound()
        return upload

    def _drop(self, upload: _Upload) -> None:
        with self._guard:
            self._uploads.pop(upload.id, None)
        upload.writer.abort()

    def _request(
        self, target: UploadTarget, rel: str, *, size: int | None = None, head: bytes | None = None
    ) -> AccessRequest:
        key = target.box.storage_key
        return AccessRequest(
            target.principal,
            target.box.name,
            rel,
            Operation.CREATE,
            target.box.roles,
            size=size,
            new_files=1,
            head=head,
            usage=lambda: self.storage.usage(key),
        )

    def _check(
        self,
        target: UploadTarget,
        rel: str,
        context: dict[str, Any],
        *,
        size: int,
        head: bytes | None = None,
    ) -> None:
        decision = self.engine.admit(target.principal, target.box.name, target.box.roles)
        if decision.allowed:
            decision = self.engine.check(self._request(target, rel, size=size, head=head))
        if not decision.allowed:
            self._refused(target, rel, decision, context)

    def _refused(
        self, target: UploadTarget, rel: str, decision: Decision, context: dict[str, Any]
    ) -> NoReturn:
        self.events.emit(
            AccessRefused(
                **context,
                actor=target.principal.name,
                mailbox=target.box.name,
                path=rel,
                operation=Operation.CREATE.value,
                status=decision.status,
                rule=decision.rule,
                reason=decision.reason,
            )
        )
        raise UploadRefused(decision.status, decision.reason)


def _storage_refusal(exc: Exception) -> UploadRefused:
    if isinstance(exc, StorageFull):
        return UploadRefused(507, "not enough storage space; nothing was stored")
    if isinstance(exc, OSError) and exc.errno == 36:  # ENAMETOOLONG
        return UploadRefused(414, "the path is too long")
    if isinstance(exc, LengthMismatch):
        return UploadRefused(400, f"{exc}; nothing was stored")
    raise exc
