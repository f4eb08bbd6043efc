"""DAV resources: the virtual root, mailbox folders and files.

Contract: every resource method that reads or changes data asks the policy
engine first (through ``provider.authorize``), once per affected item for
recursive operations, and raises ``DAVError`` with a readable reason when
refused. Writes go through ``FilesystemStorage`` so nothing partial is ever
visible and an overwrite keeps the old version until the new one is complete.
Recursive MOVE, COPY and DELETE are done natively (``handle_*``) so that
overwriting a destination is a swap, never delete-then-copy. Through a share
link (``davbox.link`` in the environ) the link's folder itself cannot be
deleted or moved, and neither the mailbox's name nor its usage is shown.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_INTERNAL_ERROR,
    HTTP_NOT_FOUND,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection

from davbox import file_index
from davbox.access import MailboxAccess
from davbox.audit import AuditUnavailable
from davbox.compat.checksums import THREADED_FROM, UploadChecksums
from davbox.compat.props import NAME_SET as OC_NAME_SET
from davbox.compat.props import NAMES as OC_NAMES
from davbox.compat.props import folder_etag
from davbox.compat.uploads import ClientUpload, add_header
from davbox.dav.audit import mark_audited
from davbox.dav.errors import TAMPERED, internal_error
from davbox.encryption import request_alarm
from davbox.events import Uploaded, request_context
from davbox.policies.base import Decision, Operation, UploadLimit
from davbox.providers.storage.filesystem import (
    AtomicWriter,
    LengthMismatch,
    StorageFull,
    version_tag,
)
from davbox.providers.storage.sealed import ContentTampered

if TYPE_CHECKING:
    from davbox.dav.provider import MailboxProvider

#: When the uploader wants a file gone (ISO 8601 UTC); PROPPATCH sets or removes it.
AVAILABLE_UNTIL = "{urn:davbox}available-until"


HEAD_BYTES = 8192  # leading bytes kept for content checks
UPLOAD_NOT_RECORDED = (
    "the audit trail cannot record this upload, so it was not stored; try again later"
)
TOP_LEVEL_READ_ONLY = (
    "the top level only lists your mailboxes; put files and folders inside a mailbox"
)
SHARED_FILES = "Shared files"  # a share link's name for a mailbox's top folder


def _native(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a natively handled DELETE/MOVE/COPY; map failures to clean DAV errors.

    WsgiDAV turns any exception raised here into a response without logging it,
    so unexpected ones are logged (with a request id) before becoming a 500.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except DAVError:
            raise
        except ContentTampered:  # recorded and logged by the storage's alarm
            raise DAVError(HTTP_INTERNAL_ERROR, TAMPERED) from None
        except (StorageFull, LengthMismatch) as exc:
            raise storage_error(exc) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise storage_error(StorageFull(str(exc))) from exc
            if exc.errno == errno.ENAMETOOLONG:
                raise storage_error(exc) from exc
            raise internal_error(self.environ, exc) from exc
        except Exception as exc:
            raise internal_error(self.environ, exc) from exc

    return wrapper


def content_stat(content: Any) -> os.stat_result:
    """The stat of an open stored file (plain: its descriptor; sealed: ``stat()``)."""
    stat_of = getattr(content, "stat", None)
    return stat_of() if stat_of is not None else os.fstat(content.fileno())


def as_requested(environ: dict[str, Any], href: str, mount: str) -> str:
    """An href under the WebDAV name the client used (``/remote.php/webdav``, ...)
    instead of the app's ``mount`` path (``/dav``)."""
    prefix = environ.get("davbox.href_prefix")
    if prefix is None or not href.startswith(mount + "/"):
        return href
    return quote(prefix.encode("latin-1").decode("utf-8")) + href[len(mount) :]


def storage_error(exc: Exception) -> DAVError:
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return DAVError(HTTP_BAD_REQUEST, "the path is too long")
    if isinstance(exc, StorageFull):
        return DAVError(HTTP_INSUFFICIENT_STORAGE, "not enough storage space; nothing was changed")
    if isinstance(exc, LengthMismatch):
        return DAVError(
            HTTP_BAD_REQUEST,
            f"the request body ended after {exc.received} of {exc.expected} announced bytes;"
            " nothing was stored",
        )
    raise exc


class RootCollection(DAVCollection):
    """``/``: lists the caller's mailboxes; read-only (admins create mailboxes)."""

    provider: MailboxProvider

    def __init__(self, environ: dict[str, Any]) -> None:
        super().__init__("/", environ)

    def get_display_name(self) -> str:
        return ""

    def get_href(self) -> str:
        return as_requested(self.environ, super().get_href(), self.provider.mount_path)

    def get_member_names(self) -> list[str]:
        return sorted(self.provider.mailboxes(self.environ))

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri("/", name), self.environ)

    def get_etag(self) -> str:
        """Changes whenever anything in one of the caller's mailboxes changes."""
        boxes = self.provider.mailboxes(self.environ)
        memo = self.environ.setdefault("davbox.folders", {})
        parts = [
            f"{name}={folder_etag(self.provider.storage.mailbox_dir(box.storage_key), memo)}"
            for name, box in sorted(boxes.items())
        ]
        return hashlib.sha1("/".join(parts).encode(), usedforsecurity=False).hexdigest()[:20]

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names: list[str] = super().get_property_names(is_allprop=is_allprop)
        return names if is_allprop else names + OC_NAMES

    def get_property_value(self, name: str) -> Any:
        if name in OC_NAME_SET:
            return self.provider.oc.value(self, name)
        return super().get_property_value(name)

    def get_last_modified(self) -> None:
        return None

    def get_creation_date(self) -> None:
        return None

    def _refuse(self, *_args: Any, **_kwargs: Any) -> Any:
        raise DAVError(HTTP_FORBIDDEN, TOP_LEVEL_READ_ONLY)

    create_empty_resource = create_collection = delete = _refuse
    handle_delete = handle_move = _refuse

    def handle_copy(self, dest_path: str, *, depth_infinity: bool) -> Any:
        return self._refuse()

    def set_property_value(self, name: str, value: Any, dry_run: bool = False) -> None:
        self._refuse()

    def support_recursive_delete(self) -> bool:
        return True


class _Stored:
    """What files and folders of a mailbox share: location, checks, native operations."""

    provider: MailboxProvider
    environ: dict[str, Any]
    path: str

    def __init__(
        self,
        path: str,
        environ: dict[str, Any],
        box: MailboxAccess,
        rel: str,
        fs_path: Path,
        st: os.stat_result | None,
    ) -> None:
        super().__init__(path, environ)  # type: ignore[call-arg]  # the DAV resource base
        self.box = box
        self.rel = rel  # path inside the mailbox, "/" for its top folder
        self.fs_path = fs_path
        self.st = st

    def get_href(self) -> str:
        """Under a share link, the link's URL (canonical paths stay internal)."""
        mount = self.environ.get("davbox.link")
        if mount is None:
            href = super().get_href()  # type: ignore[misc]
            return as_requested(self.environ, href, self.provider.mount_path)
        return quote(mount.href(self.get_preferred_path()), safe="/!*'(),$-_|.")  # type: ignore[attr-defined]

    def authorize(self, op: Operation, rel: str | None = None, **details: Any) -> None:
        self.provider.authorize(self.environ, self.box, rel or self.rel, op, **details)

    def set_last_modified(self, dest_path: str, time_stamp: Any, *, dry_run: bool) -> bool:
        """Explorer's Win32LastModifiedTime (WsgiDAV's emulation): the item's own time."""
        self.authorize(Operation.PROPPATCH)
        secs = time_stamp if isinstance(time_stamp, int) else util.parse_time_string(time_stamp)
        if secs is None:
            raise DAVError(HTTP_BAD_REQUEST, "Win32LastModifiedTime is not a valid time")
        if not dry_run:
            os.utime(self.fs_path, (secs, secs))
        return True

    # -- sync clients' properties (davbox.compat.props), asked for by name -----------

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names: list[str] = super().get_property_names(is_allprop=is_allprop)  # type: ignore[misc]
        if not is_allprop and "davbox.link" not in self.environ:
            names += OC_NAMES
        return names

    def get_property_value(self, name: str) -> Any:
        if name in OC_NAME_SET and "davbox.link" not in self.environ:
            return self.provider.oc.value(self, name)
        return super().get_property_value(name)  # type: ignore[misc]

    def _walk(self) -> list[tuple[str, bool]]:
        """(rel path, is folder) for this item and everything below it, top-down."""
        is_dir = self.st is not None and stat.S_ISDIR(self.st.st_mode)
        items = [(self.rel, is_dir)]
        if is_dir:
            base_rel = self.rel.rstrip("/")
            for folder, dirs, files in os.walk(self.fs_path):
                sub = Path(folder).relative_to(self.fs_path).as_posix()
                prefix = base_rel if sub == "." else f"{base_rel}/{sub}"
                items += [(f"{prefix}/{name}", True) for name in sorted(dirs)]
                items += [(f"{prefix}/{name}", False) for name in sorted(files)]
        return items

    def _open(self, fs_path: Path, rel: str) -> Any:
        """A stored file's content; one that fails its integrity check is recorded and
        answered 500 (a later segment failing cuts the answer off instead)."""
        events = self.provider.events
        alarm = request_alarm(events, request_context(self.environ), self.box.name, rel)
        try:
            return self.provider.storage.open_content(fs_path, alarm)
        except ContentTampered:
            raise DAVError(HTTP_INTERNAL_ERROR, TAMPERED) from None

    def _refuse_top(self, what: str) -> None:
        mount = self.environ.get("davbox.link")
        if mount is not None and self.rel == (mount.link.path.rstrip("/") or "/"):
            # A write link works inside its folder; the folder itself stays.
            raise DAVError(HTTP_FORBIDDEN, f"the shared folder itself cannot be {what}")
        if self.rel == "/":
            raise DAVError(
                HTTP_FORBIDDEN,
                f"a mailbox's top folder cannot be {what}; administrators manage mailboxes",
            )

    def _authorize_tree(self, op: Operation) -> list[tuple[str, bool]]:
        items = self._walk()
        for rel, _is_dir in items:
            self.authorize(op, rel)
        return items

    def _authorize_destination(
        self, items: list[tuple[str, bool]], dest: Any, *, moving: bool
    ) -> None:
        """Check every item as it will arrive under ``dest`` (a resolved location).

        Each file is judged with its own size and first bytes (size, type and
        content rules) and with the growth of the destination mailbox so far
        (quota rules): a folder that does not fit as a whole is refused.
        """
        dest_box, dest_rel, dest_fs = dest
        if dest_rel == "/":
            raise DAVError(HTTP_FORBIDDEN, "a mailbox's top folder cannot be replaced")
        same_box = moving and dest_box.id == self.box.id
        growth = new_files = 0
        self._authorize_replaced(dest, source_is_dir=items[0][1])
        for rel, is_dir in items:
            suffix = "" if rel == self.rel else rel[len(self.rel.rstrip("/")) :]
            target_rel = dest_rel.rstrip("/") + suffix if suffix else dest_rel
            target_fs = dest_fs / suffix.lstrip("/") if suffix else dest_fs
            if is_dir:
                self.provider.authorize(self.environ, dest_box, target_rel, Operation.MKCOL)
                continue
            source_fs = self.fs_path / suffix.lstrip("/") if suffix else self.fs_path
            storage = self.provider.storage
            size = storage.content_size(source_fs.stat().st_size)
            existing = (
                storage.content_size(target_fs.stat().st_size) if target_fs.is_file() else None
            )
            growth += (0 if same_box else size) - (existing or 0)
            new_files += (0 if same_box else 1) - (0 if existing is None else 1)
            with self._open(source_fs, rel) as handle:
                head = handle.read(HEAD_BYTES)
            self.provider.authorize(
                self.environ,
                dest_box,
                target_rel,
                Operation.CREATE if existing is None else Operation.OVERWRITE,
                size=size,
                replaced=size - growth,  # so that the request's growth is the total so far
                new_files=new_files,
                head=head,
            )

    def _authorize_replaced(self, dest: Any, *, source_is_dir: bool) -> None:
        """An existing destination that is not simply one file over another is deleted first.

        Everything in it must be deletable by the caller (as for DELETE): a
        COPY or MOVE onto a folder must not wipe what DELETE would refuse.
        """
        dest_box, dest_rel, dest_fs = dest
        if not dest_fs.exists() or (dest_fs.is_file() and not source_is_dir):
            return
        self.provider.authorize(self.environ, dest_box, dest_rel, Operation.DELETE)
        if dest_fs.is_dir():
            base = dest_rel.rstrip("/")
            for folder, dirs, files in os.walk(dest_fs):
                sub = Path(folder).relative_to(dest_fs).as_posix()
                prefix = base if sub == "." else f"{base}/{sub}"
                for name in [*dirs, *files]:
                    self.provider.authorize(
                        self.environ, dest_box, f"{prefix}/{name}", Operation.DELETE
                    )

    def _check_locks(self) -> None:
        """423 if this item or anything below it is locked by someone else.

        WsgiDAV checks only the parent before a native DELETE.
        """
        lock_manager = self.provider.lock_manager
        if lock_manager is not None:
            lock_manager.check_write_permission(
                url=self.get_ref_url(),  # type: ignore[attr-defined]
                depth="infinity",
                token_list=self.environ.get("wsgidav.ifLockTokenList") or [],
                principal=self.environ.get("wsgidav.user_name"),
            )

    @_native
    def handle_delete(self) -> bool:
        self._refuse_top("deleted")
        self._authorize_tree(Operation.DELETE)
        self._check_locks()
        self.provider.storage.delete(self.fs_path)
        self.provider.forget_tree(self.path)
        self.provider.storage.usage_changed(self.box.storage_key)
        return True

    def delete(self) -> None:
        self.handle_delete()

    @_native
    def handle_move(self, dest_path: str) -> bool:
        self._refuse_top("moved")
        dest = self.provider.locate(dest_path, self.environ)
        items = self._authorize_tree(Operation.MOVE)
        storage = self.provider.storage
        # Checked and done under the destination's commit lock, like uploads:
        # concurrent arrivals cannot together overrun its quota.
        with storage.commit_lock(dest[0].storage_key):
            self._authorize_destination(items, dest, moving=True)
            existed = dest[2].exists()
            storage.replace_tree(self.fs_path, dest[2])
            storage.usage_changed(self.box.storage_key, dest[0].storage_key)
        self.provider.moved_tree(self.path, dest_path)
        self.environ["davbox.created"] = not existed
        return True

    @_native
    def handle_copy(self, dest_path: str, *, depth_infinity: bool) -> bool:
        dest = self.provider.locate(dest_path, self.environ)
        is_dir = self.st is not None and stat.S_ISDIR(self.st.st_mode)
        items = self._walk() if depth_infinity else [(self.rel, is_dir)]
        for rel, is_dir in items:
            self.authorize(Operation.LIST if is_dir else Operation.READ, rel)
        storage = self.provider.storage
        with storage.commit_lock(dest[0].storage_key):
            self._authorize_destination(items, dest, moving=False)
            existed = dest[2].exists()
            if items[0][1] and depth_infinity:
                storage.copy_tree(self.fs_path, dest[2])
            elif items[0][1]:
                staging = storage.temp_path("copy")
                staging.mkdir()
                storage.replace_tree(staging, dest[2])
            elif dest[2].is_dir():
                # A file over a folder: copy beside it first, swap, and only then
                # remove the folder, so a failed copy destroys nothing.
                staging = storage.temp_path("copy")
                storage.copy_file(self.fs_path, staging, self.provider.block_size)
                storage.replace_tree(staging, dest[2])
            else:
                storage.copy_file(self.fs_path, dest[2], self.provider.block_size)
            storage.usage_changed(dest[0].storage_key)
        self.provider.copied_tree(self.path, dest_path, with_children=depth_infinity)
        self.environ["davbox.created"] = not existed
        return True

    def set_property_value(self, name: str, value: Any, dry_run: bool = False) -> None:
        self.authorize(Operation.PROPPATCH)
        super().set_property_value(name, value, dry_run=dry_run)  # type: ignore[misc]

    def support_recursive_delete(self) -> bool:
        return True

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def is_link(self) -> bool:
        return False

    def get_creation_date(self) -> float | None:
        return self.st.st_ctime if self.st else None

    def get_last_modified(self) -> float | None:
        return self.st.st_mtime if self.st else None


class MailboxFolder(_Stored, DAVCollection):
    def get_display_name(self) -> str:
        if self.rel != "/":
            return self.name
        # Through a share link a mailbox's name never shows (as on the link's pages).
        return self.box.name if "davbox.link" not in self.environ else SHARED_FILES

    def get_etag(self) -> str | None:
        """Changes whenever anything below changes (sync clients look here first);
        none for a caller who may not list the folder (a drop box tells nothing)."""
        if not self.provider.may(self.environ, self.box, self.rel, Operation.LIST):
            return None
        return folder_etag(self.fs_path, self.environ.setdefault("davbox.folders", {}))

    def get_member_names(self) -> list[str]:
        if not self.provider.may(self.environ, self.box, self.rel, Operation.LIST):
            return []
        names = []
        with os.scandir(self.fs_path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
                    names.append(entry.name)
        if self.provider.hides_system_files:  # a system_files rule with action: hide
            base = self.rel.rstrip("/")
            names = [
                n
                for n in names
                if not self.provider.system_file(self.environ, self.box, f"{base}/{n}", "hide")
            ]
        return sorted(names)

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    def create_empty_resource(self, name: str) -> MailboxFile:
        rel = util.join_uri(self.rel, name)
        path = util.join_uri(self.path, name)
        self.provider.check_name(name)
        self.authorize(Operation.CREATE, rel, size=0, new_files=1)
        fs_path = self.fs_path / name
        if self.environ.get("REQUEST_METHOD") == "PUT":
            # The upload itself creates the file, atomically, in begin_write().
            return MailboxFile(path, self.environ, self.box, rel, fs_path, None)
        try:
            self.provider.storage.create_empty(fs_path)
        except FileExistsError:
            pass
        except OSError as exc:
            raise storage_error(exc) from exc
        self.provider.storage.usage_changed(self.box.storage_key)
        return MailboxFile(path, self.environ, self.box, rel, fs_path, fs_path.stat())

    def create_collection(self, name: str) -> None:
        self.provider.check_name(name)
        self.authorize(Operation.MKCOL, util.join_uri(self.rel, name))
        try:
            (self.fs_path / name).mkdir()
        except OSError as exc:
            raise storage_error(exc) from exc
        if "davbox.link" not in self.environ:  # sync clients take the new folder's id
            rel = util.join_uri(self.rel, name)
            oc_id = self.provider.oc.oc_id(self.environ, self.box, rel, self.fs_path / name)
            add_header(self.environ, "OC-FileId", oc_id)

    def get_used_bytes(self) -> int | None:
        """RFC 4331: what the mailbox holds (not the disk); not told through a share link.

        The figure covers the whole mailbox, beyond a link's folder, and would
        let a drop link watch other people's uploads arrive.
        """
        if "davbox.link" in self.environ:
            return None
        return self._usage()

    def _usage(self) -> int:
        return self.provider.storage.usage(self.box.storage_key).bytes

    def get_available_bytes(self) -> int | None:
        """RFC 4331: what the mailbox's quota still allows (None without a quota)."""
        quota = self.provider.engine.quota(
            self.provider.request(self.environ, self.box, self.rel, Operation.CREATE)
        )
        return None if quota is None else max(0, quota - self._usage())


class MailboxFile(_Stored, DAVNonCollection):
    _writer: AtomicWriter | None = None
    _pinned: Any = None  # the open content of a GET/HEAD (pin)
    _sums: str | None = None  # "SHA1:... MD5:..." of the upload just written
    _sink: _DavSink | None = None

    # -- the uploader's end of availability: a live property ------------------------

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names: list[str] = super().get_property_names(is_allprop=is_allprop)  # type: ignore[misc]
        if not is_allprop:  # allprop stays one stat per file: ask for it by name
            names.append(AVAILABLE_UNTIL)
        return names

    def get_property_value(self, name: str) -> Any:
        if name != AVAILABLE_UNTIL:
            return super().get_property_value(name)  # type: ignore[misc]
        until = file_index.available_until(self.provider.access.db, self.box.name, self.rel)
        if until is None:
            raise DAVError(HTTP_NOT_FOUND)
        return until.strftime("%Y-%m-%dT%H:%M:%SZ")

    def set_property_value(self, name: str, value: Any, dry_run: bool = False) -> None:
        if name != AVAILABLE_UNTIL:
            super().set_property_value(name, value, dry_run=dry_run)
            return
        self.authorize(Operation.PROPPATCH)
        when = None
        if value is not None:
            try:
                when = file_index.parse_moment(value.text or "")
            except ValueError as exc:
                raise DAVError(HTTP_CONFLICT, f"available-until: {exc}") from None
        if not dry_run:
            file_index.set_available_until(self.provider.access.db, self.box.name, self.rel, when)

    def get_content_length(self) -> int:
        return self.provider.storage.content_size(self.st.st_size) if self.st else 0

    def get_content_type(self) -> str:
        return util.guess_mime_type(self.path, self.environ["wsgidav.config"])

    def get_display_name(self) -> str:
        return self.name

    def get_etag(self) -> str | None:
        st = self.st
        if st is None:
            return None
        return version_tag(st, self.provider.storage.content_size(st.st_size))

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def pin(self) -> None:
        """For a GET or HEAD of this file: open it now, so that the headers (size, ETag,
        date) and the body come from one version; an overwrite in between replaces
        the name, not what is open. Only for a caller who may read it."""
        if not self.provider.may(self.environ, self.box, self.rel, Operation.READ):
            return
        try:
            content = self._open(self.fs_path, self.rel)
        except (FileNotFoundError, IsADirectoryError):
            return
        self.st = content_stat(content)
        self._pinned = content

    def get_content(self) -> Any:
        pinned, self._pinned = self._pinned, None
        if pinned is not None:
            return pinned  # opened by pin(), for a caller who may read it
        self.authorize(Operation.READ)
        return self._open(self.fs_path, self.rel)

    def begin_write(self, *, content_type: str | None = None) -> _DavSink:
        """Start an upload: checked now, bounded while streaming, checked again at the end."""
        creating = self.st is None or self._own_lock_placeholder()
        op = Operation.CREATE if creating else Operation.OVERWRITE
        details: dict[str, Any] = {
            "replaced": self.get_content_length(),
            "new_files": 1 if self.st is None else 0,
        }
        self.authorize(op, **details)
        provider = self.provider
        limit = provider.engine.upload_limit(
            provider.request(self.environ, self.box, self.rel, op, **details)
        )
        expected = self.environ.get("CONTENT_LENGTH") or None
        # Someone who may not see the folder only adds files, never replaces one.
        exclusive = self.st is None and not provider.may(
            self.environ, self.box, self.rel, Operation.LIST
        )
        try:
            self._writer = provider.storage.writer(
                self.fs_path, int(expected) if expected is not None else None, exclusive=exclusive
            )
        except OSError as exc:
            raise storage_error(exc) from exc

        def verify(received: int, head: bytes) -> None:
            self.authorize(op, size=received, head=head, **details)
            if client is not None:
                client.verify()  # the sync client's checksum (OC-Checksum)

        started = time.monotonic()

        def commit(writer: AtomicWriter) -> None:
            # The final check and the rename happen under the mailbox's commit
            # lock, and the usage figure is refreshed before it is released, so
            # uploads that each fit cannot together overrun a quota.
            with provider.storage.commit_lock(self.box.storage_key):
                verify(writer.received, sink.head)
                replaced = not writer.exclusive and writer.target.is_file()
                writer.commit(keep_previous=True)
                self._sums = sink.sums.value()
                try:
                    self._record_upload(writer, sink, replaced, started)
                except AuditUnavailable as exc:
                    # No record, no file: the previous version (if any) returns.
                    writer.undo()
                    raise DAVError(HTTP_SERVICE_UNAVAILABLE, UPLOAD_NOT_RECORDED) from exc
                finally:
                    writer.release()
                    provider.storage.usage_changed(self.box.storage_key)

        def over_limit(limit: UploadLimit) -> None:
            reason = f"{limit.reason}; nothing was stored"
            decision = Decision.deny(reason, limit.status, limit.rule)
            provider.refuse(self.environ, self.box, self.rel, op, decision)

        client = ClientUpload.from_environ(self.environ)
        if client is not None and client.mtime is not None:
            self._writer.mtime = client.mtime
        sink = _DavSink(self._writer, limit, commit, over_limit, client)
        self._sink = sink
        return sink

    def _record_upload(
        self, writer: AtomicWriter, sink: _DavSink, replaced: bool, started: float
    ) -> None:
        """Emit the upload's event (its audit record) while the file can still be taken back."""
        stored = self.rel.rstrip("/").rpartition("/")[0] + "/" + writer.target.name
        requested = self.environ.get("davbox.requested", ("", ""))[1]
        mark_audited(self.environ)
        self.provider.events.emit(
            Uploaded(
                **request_context(self.environ),
                mailbox=self.box.name,
                path=stored,
                status=204 if replaced else 201,
                size=writer.received,
                sha256=sink.hash.hexdigest(),
                duration_ms=round((time.monotonic() - started) * 1000),
                replaced=replaced,
                requested=requested if requested and requested != stored else "",
            )
        )

    def end_write(self, *, with_errors: bool) -> None:
        writer = self._writer
        self._writer = None
        if self._sink is not None:
            self._sink.sums.close()  # its thread ends, also for an upload that failed
            self._sink = None
        if writer is None:
            return
        if with_errors or not writer.committed:
            writer.abort()
            return
        self.st = writer.target.stat()
        self.provider.storage.usage_changed(self.box.storage_key)
        if self._sums is not None and "davbox.link" not in self.environ:
            stored = self.rel.rstrip("/").rpartition("/")[0] + "/" + writer.target.name
            stamp = version_tag(self.st, writer.received)
            self.provider.oc.fileids.set_checksums(self.box.id, stored, self._sums, stamp)
        if writer.mtime is not None:
            add_header(self.environ, "X-OC-MTime", "accepted")
        if "davbox.link" not in self.environ:
            etag = f'"{self.get_etag()}"'
            add_header(self.environ, "OC-ETag", etag)
            add_header(self.environ, "OC-FileId", self.provider.oc.value(self, OC_NAMES[0]))
            add_header(self.environ, "OC-Perm", self.provider.oc.value(self, OC_NAMES[2]))

    def _own_lock_placeholder(self) -> bool:
        return self.st is not None and self.provider.is_own_placeholder(
            self.environ, self.path, self.get_content_length()
        )


class _DavSink:
    """The sink WsgiDAV writes an upload to.

    Counts bytes against the policies' upload limit (refusing at limit+1, so a
    chunked body over the limit stores nothing), keeps the first bytes for
    content checks, hashes everything (SHA-256, for the audit record), and on
    close hands the writer to ``commit`` (which asks the policies once more
    with the real size and those bytes, renames, and writes the audit
    record); storage errors become DAV errors.
    """

    def __init__(
        self,
        writer: AtomicWriter,
        limit: UploadLimit | None,
        commit: Callable[[AtomicWriter], None],
        over_limit: Callable[[UploadLimit], None],
        client: ClientUpload | None = None,
    ) -> None:
        self.writer = writer
        self.limit = limit
        self.commit = commit
        self.over_limit = over_limit
        self.client = client
        self.head = b""
        self.hash = hashlib.sha256()
        # For sync clients' oc:checksums (rclone, ownCloud/Nextcloud clients).
        expected = writer.expected_length or 0
        self.sums = UploadChecksums(threaded=expected >= THREADED_FROM)

    def write(self, data: bytes) -> int:
        limit = self.limit
        if limit is not None and self.writer.received + len(data) > limit.max_bytes:
            self.over_limit(limit)
        if len(self.head) < HEAD_BYTES:
            self.head += bytes(data[: HEAD_BYTES - len(self.head)])
        self.hash.update(data)
        self.sums.update(data)
        if self.client is not None:
            self.client.update(data)
        try:
            return self.writer.write(data)
        except StorageFull as exc:
            raise storage_error(exc) from exc

    def writelines(self, chunks: Iterable[bytes]) -> None:
        """Take the request body stream from WsgiDAV (it prefers this to write()).

        Reading the body happens here, so its errors do too. cheroot reports a
        chunked body that breaks off before its last chunk (client closed or
        half-closed the connection) as ValueError("Bad chunked transfer ..."),
        which WsgiDAV would answer 500 and log as a server failure. It is the
        client's fault: answer 400, as for a Content-Length body that ends early.
        """
        stream = iter(chunks)
        while True:
            try:
                data = next(stream)
            except StopIteration:
                return
            except ValueError as exc:
                raise DAVError(
                    HTTP_BAD_REQUEST,
                    "the chunked request body broke off before its last chunk; nothing was stored",
                ) from exc
            self.write(data)

    def close(self) -> None:
        writer = self.writer
        if writer.expected_length is not None and writer.received != writer.expected_length:
            raise storage_error(LengthMismatch(writer.received, writer.expected_length))
        try:
            self.commit(writer)
        except (StorageFull, LengthMismatch) as exc:
            raise storage_error(exc) from exc
