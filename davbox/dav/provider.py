"""The one root provider: ``/`` lists the caller's mailboxes, ``/<mailbox>/...`` their files.

Contract:
- Mounted once at share ``/`` so MOVE/COPY between mailboxes stay inside one
  provider; locks and dead properties are keyed by the path below the mount
  (``/<mailbox>/<path>``), the one canonical URL of every stored object.
- A mailbox the caller has no role in does not exist for them: 404, never 403.
- ``authorize`` is the authorization seam: it builds an ``AccessRequest`` and
  on deny emits an ``AccessRefused`` event and raises ``DAVError`` with the
  policy's status and reason (``may`` asks without emitting: internal probes).
- ``custom_request_handler`` answers request-level refusals before the body is
  read: PROPFIND with ``Depth: infinity``, content a caller may not read or
  list, LOCK of existing resources without the lock right, and uploads of a
  drop link below its own folder (the same 403 whether such a folder exists).
- A caller who cannot list only adds files: a taken name goes to a free one
  ("a (2).pdf"), and refusal reasons keep naming the name the caller sent.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, unquote

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
)
from wsgidav.dav_provider import DAVProvider

from davbox.access import AccessService, MailboxAccess
from davbox.compat.fileids import FileIds
from davbox.compat.props import OcProperties, instance_id
from davbox.dav.audit import mark_audited
from davbox.dav.resources import (
    TOP_LEVEL_READ_ONLY,
    MailboxFile,
    MailboxFolder,
    RootCollection,
)
from davbox.events import AccessRefused, EventBus, request_context
from davbox.policies.base import AccessRequest, Decision, Operation, Principal
from davbox.policies.engine import PolicyEngine
from davbox.policies.systemfiles import SystemFilesPolicy, system_file_action
from davbox.providers.storage.filesystem import FilesystemStorage, free_names

Location = tuple[MailboxAccess, str, Path]
NON_LISTER_LOCK_SECONDS = 600
DROP_LINK_FOLDER_ONLY = (
    "files dropped through a link go into its folder, not into folders inside it"
)
# Below the mailbox folder's own path, well inside the 4096 bytes of PATH_MAX.
MAX_PATH_BYTES = 3072


class MailboxProvider(DAVProvider):
    def __init__(
        self,
        storage: FilesystemStorage,
        engine: PolicyEngine,
        access: AccessService,
        *,
        block_size: int,
        events: EventBus | None = None,
    ) -> None:
        super().__init__()
        self.storage = storage
        self.engine = engine
        self.access = access
        self.events = events or EventBus()
        self.block_size = block_size
        self.oc = OcProperties(FileIds(access.db), instance_id(access.db))

    def __repr__(self) -> str:
        return "MailboxProvider"

    def is_readonly(self) -> bool:
        return False

    # --- resolution -----------------------------------------------------------

    @staticmethod
    def mailboxes(environ: dict[str, Any]) -> dict[str, MailboxAccess]:
        return environ.get("davbox.mailboxes") or {}

    def _resolve(self, path: str, environ: dict[str, Any]) -> Location | None:
        """Map ``/<mailbox>/<rel>`` to (mailbox, rel, file path); None if not visible."""
        mount = environ.get("davbox.link")
        if mount is not None and not (path.rstrip("/") + "/").startswith(mount.root + "/"):
            return None  # outside the share link's folder
        parts = [p for p in path.split("/") if p]
        box = self.mailboxes(environ).get(parts[0]) if parts else None
        user = environ["davbox.principal"].kind == "user"
        if box is None and parts and user and self.access.refresh(force=True):
            environ["davbox.mailboxes"] = self.access.mailboxes_for(environ["davbox.principal"])
            box = self.mailboxes(environ).get(parts[0])
        if box is None or any(p in (".", "..") or "\x00" in p for p in parts):
            return None
        rel = "/" + "/".join(parts[1:])
        return box, rel, self.storage.mailbox_dir(box.storage_key).joinpath(*parts[1:])

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        self._count_get_resource_inst += 1
        if path.strip("/") == "":
            return RootCollection(environ)
        location = self._resolve(path, environ)
        if location is None:
            return None
        box, rel, fs_path = location
        try:
            st = os.lstat(fs_path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == 36:  # ENAMETOOLONG
                return None
            raise
        if stat.S_ISDIR(st.st_mode):
            return MailboxFolder(path, environ, box, rel, fs_path, st)
        if stat.S_ISREG(st.st_mode):
            found = MailboxFile(path, environ, box, rel, fs_path, st)
            if environ.get("REQUEST_METHOD") in ("GET", "HEAD") and path == environ.get(
                "PATH_INFO"
            ):
                found.pin()  # headers and body from one version of the file
            return found
        return None  # symlinks, sockets, devices are never served

    def locate(self, path: str, environ: dict[str, Any]) -> Location:
        """Resolve a COPY/MOVE destination (as WsgiDAV hands it over) or refuse it."""
        if len(path.encode()) > MAX_PATH_BYTES:
            raise DAVError(414, f"paths are limited to {MAX_PATH_BYTES} bytes")
        for part in path.split("/"):
            if part:
                self.check_name(part)
        location = self._resolve(path, environ)
        if location is None:
            raise DAVError(HTTP_FORBIDDEN, "the destination must be inside one of your mailboxes")
        self.check_name(location[1].rpartition("/")[2] or location[0].name)
        return location

    @staticmethod
    def check_name(name: str) -> None:
        """Refuse names no desktop client can handle (400 with the reason)."""
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise DAVError(HTTP_BAD_REQUEST, "file names may not contain control characters")
        if name.endswith((".", " ")):
            raise DAVError(HTTP_BAD_REQUEST, "file names may not end with a dot or a space")
        if len(name.encode("utf-8")) > 255:
            raise DAVError(HTTP_BAD_REQUEST, "file names may have at most 255 bytes")
        if unicodedata.normalize("NFC", name) != name:
            raise DAVError(HTTP_BAD_REQUEST, "file names must be in Unicode NFC form")

    # --- authorization seam ---------------------------------------------------

    def request(
        self,
        environ: dict[str, Any],
        box: MailboxAccess,
        rel: str,
        op: Operation,
        *,
        size: int | None = None,
        replaced: int = 0,
        new_files: int = 0,
        head: bytes | None = None,
    ) -> AccessRequest:
        principal: Principal = environ["davbox.principal"]
        return AccessRequest(
            principal,
            box.name,
            rel,
            op,
            box.roles,
            size=size,
            replaced=replaced,
            new_files=new_files,
            head=head,
            usage=lambda: self.storage.usage(box.storage_key),
        )

    def authorize(
        self,
        environ: dict[str, Any],
        box: MailboxAccess,
        rel: str,
        op: Operation,
        **details: Any,
    ) -> None:
        """Raise the policy's refusal as a DAVError (status and reason) unless allowed."""
        decision = self.engine.check(self.request(environ, box, rel, op, **details))
        if not decision.allowed:
            self.refuse(environ, box, rel, op, decision)

    def refuse(
        self,
        environ: dict[str, Any],
        box: MailboxAccess,
        rel: str,
        op: Operation,
        decision: Decision,
    ) -> NoReturn:
        """Emit the refusal as an event, then raise it as the client's answer."""
        mark_audited(environ)
        self.events.emit(
            AccessRefused(
                **request_context(environ),
                mailbox=box.name,
                path=rel,
                operation=op.value,
                status=decision.status,
                rule=decision.rule,
                reason=decision.reason,
            )
        )
        reason = decision.reason
        if renamed := environ.get("davbox.renamed"):
            reason = reason.replace(*renamed)  # the free name would tell the other existed
        raise DAVError(decision.status, reason)

    def _admit(self, environ: dict[str, Any], box: MailboxAccess, rel: str) -> None:
        """Refuse every method in a mailbox the caller may not enter (e.g. without 2FA)."""
        principal: Principal = environ["davbox.principal"]
        decision = self.engine.admit(principal, box.name, box.roles)
        if not decision.allowed:
            mark_audited(environ)
            self.events.emit(
                AccessRefused(
                    **request_context(environ),
                    mailbox=box.name,
                    path=rel,
                    operation=environ["REQUEST_METHOD"].lower(),
                    status=decision.status,
                    rule=decision.rule,
                    reason=decision.reason,
                )
            )
            raise DAVError(decision.status, decision.reason)

    def may(self, environ: dict[str, Any], box: MailboxAccess, rel: str, op: Operation) -> bool:
        return self.engine.check(self.request(environ, box, rel, op)).allowed

    # --- state that follows the bytes -----------------------------------------

    def forget_tree(self, path: str) -> None:
        if self.prop_manager:
            self.prop_manager.remove_tree(path)
        if self.lock_manager:
            self.lock_manager.remove_all_locks_from_url(path, recursive=True)

    def moved_tree(self, src: str, dest: str) -> None:
        if self.prop_manager:
            self.prop_manager.move_tree(src, dest)
        if self.lock_manager:
            self.lock_manager.remove_all_locks_from_url(src, recursive=True)

    def copied_tree(self, src: str, dest: str, *, with_children: bool) -> None:
        if self.prop_manager:
            if with_children:
                self.prop_manager.copy_tree(src, dest)
            else:
                self.prop_manager.copy_properties(src, dest)

    # --- request-level checks -------------------------------------------------

    def custom_request_handler(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        default_handler: Callable[..., Iterable[bytes]],
    ) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"]
        if method == "PUT" and "HTTP_OC_CHUNKED" in environ:
            # A plain WebDAV server would store each piece as a file of its own.
            raise DAVError(
                HTTP_BAD_REQUEST,
                "ownCloud's old chunked upload (OC-Chunked) is not supported; this server"
                " takes files whole or in Nextcloud's chunked upload (dav.chunking 1.0)",
            )
        if len(path.encode()) > MAX_PATH_BYTES:
            raise DAVError(414, f"paths are limited to {MAX_PATH_BYTES} bytes")
        if method == "PROPFIND" and environ.get("HTTP_DEPTH", "infinity").lower() not in (
            "0",
            "1",
        ):
            raise DAVError(
                HTTP_FORBIDDEN,
                "PROPFIND with Depth: infinity is not supported; use Depth 0 or 1",
                err_condition=PRECONDITION_CODE_PropfindFiniteDepth,
            )
        location = self._resolve(path, environ) if path.strip("/") else None
        if location is not None:
            box, rel, fs_path = location
            self._admit(environ, box, rel)
            lists = self.may(environ, box, rel, Operation.LIST)
            if method == "LOCK" and not lists:
                # Callers who cannot see the mailbox's files (droppers) hold locks
                # only while they create a file, not for weeks.
                environ["HTTP_TIMEOUT"] = f"Second-{NON_LISTER_LOCK_SECONDS}"
            top = rel == _top(environ)
            if method in ("PUT", "UNLOCK") and self.system_file(environ, box, rel, "discard"):
                if method == "PUT":
                    return self._discard(environ, start_response, box, rel)
                # The empty file a LOCK made for it goes when the lock does.
                answer = list(default_handler(environ, start_response))
                if fs_path.is_file() and self.storage.content_size(fs_path.stat().st_size) == 0:
                    self.storage.discard_file(fs_path)
                    self.storage.usage_changed(box.storage_key)
                return answer
            if method == "OPTIONS" and not top and not lists:
                # The same answer whatever exists there: a dropper learns no names.
                return _fixed_options(start_response)
            if not lists and method in ("PUT", "LOCK") and _below_link_folder(environ, rel):
                raise DAVError(HTTP_FORBIDDEN, DROP_LINK_FOLDER_ONLY)
            if not lists and (method == "PUT" or (method == "LOCK" and not _is_refresh(environ))):
                box, rel, fs_path = self._create_only(environ, box, rel, fs_path)
            elif not lists and method in ("LOCK", "UNLOCK"):  # a refresh, or the unlock
                box, rel, fs_path = self._own_lock_target(environ, box, rel, fs_path)
            self._gate(environ, method, box, rel, fs_path, lists=lists)
            if method == "PUT":
                self._check_upload_up_front(environ, box, rel, fs_path)
        elif "/" not in path.strip("/") and method in ("PUT", "MKCOL", "LOCK"):
            raise DAVError(HTTP_FORBIDDEN, TOP_LEVEL_READ_ONLY)
        elif path.strip("/"):
            raise DAVError(HTTP_NOT_FOUND)
        if method in ("COPY", "MOVE"):
            start_response = _created_when_new(environ, start_response)
        if method == "LOCK" and "davbox.renamed" in environ:
            return _lock_root_as_sent(environ, start_response, default_handler)
        return default_handler(environ, start_response)

    # --- files operating systems make for themselves (policies.systemfiles) -----------

    @property
    def hides_system_files(self) -> bool:
        return any(
            isinstance(p, SystemFilesPolicy) and p.options.action == "hide"
            for p in self.engine.policies
        )

    def system_file(
        self, environ: dict[str, Any], box: MailboxAccess, rel: str, action: str
    ) -> str | None:
        """The rule that gives the file at ``rel`` this ``action`` (store/hide/discard), if any.

        Only for a caller who may create files there: others get their usual refusal.
        """
        mount = environ.get("davbox.link")
        drop = mount is not None and mount.link.permission == "drop"
        principal = environ["davbox.principal"]
        ruling = system_file_action(self.engine.policies, principal, box.name, rel, drop=drop)
        if ruling is None or ruling[0] != action:
            return None
        if action == "discard" and not self.may(environ, box, rel, Operation.CREATE):
            return None
        return ruling[1]

    def _discard(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        box: MailboxAccess,
        rel: str,
    ) -> Iterable[bytes]:
        """Answer a PUT of a system file as stored, drop its bytes, and record that."""
        rule = self.system_file(environ, box, rel, "discard") or "system_files"
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH") or ""
        left = int(length) if length.isdigit() else None
        while left is None or left > 0:
            data = stream.read(65536 if left is None else min(65536, left))
            if not data:
                break
            if left is not None:
                left -= len(data)
        environ["wsgidav.all_input_read"] = 1
        mark_audited(environ)
        self.events.emit(
            AccessRefused(
                **request_context(environ),
                mailbox=box.name,
                path=rel,
                operation=Operation.CREATE.value,
                status=201,
                rule=rule,
                reason="discarded: a file the operating system makes for itself is not kept",
            )
        )
        start_response("201 Created", [("Content-Length", "0")])
        return [b""]

    def _check_upload_up_front(
        self, environ: dict[str, Any], box: MailboxAccess, rel: str, fs_path: Path
    ) -> None:
        """Name, type, size and quota of a PUT, judged before its body is read.

        The size is the declared one: Content-Length, Finder's
        X-Expected-Entity-Length or Nextcloud's OC-Total-Length (the largest).
        """
        self.check_name(rel.rpartition("/")[2])
        try:
            existing = (
                self.storage.content_size(os.stat(fs_path).st_size)
                if os.path.isfile(fs_path)
                else None
            )
        except OSError:
            existing = None
        # Completing a LOCK-created file counts as creating it; the placeholder
        # is already one of the mailbox's files (max_files), so none is added.
        placeholder = existing is not None and self.is_own_placeholder(
            environ, environ["PATH_INFO"], existing
        )
        self.authorize(
            environ,
            box,
            rel,
            Operation.CREATE if existing is None or placeholder else Operation.OVERWRITE,
            size=declared_size(environ),
            replaced=existing or 0,
            new_files=1 if existing is None else 0,
        )

    def _create_only(
        self, environ: dict[str, Any], box: MailboxAccess, rel: str, fs_path: Path
    ) -> Location:
        """A caller who cannot list the folder (a dropper, a drop link) only adds files.

        A PUT to a name that is taken goes to a free name ("a (2).pdf") with the
        same answer as for a new name: nothing is replaced, and the caller does
        not learn that the name existed. Their own LOCK placeholder is theirs
        to fill. (The commit links the file in exclusively as well: see
        ``AtomicWriter``.)
        """
        try:
            st = os.lstat(fs_path)
        except (FileNotFoundError, NotADirectoryError):
            return box, rel, fs_path
        path = environ["PATH_INFO"]
        size = self.storage.content_size(st.st_size)
        if stat.S_ISREG(st.st_mode) and self.is_own_placeholder(environ, path, size):
            return box, rel, fs_path
        parent = path.rstrip("/").rpartition("/")[0]
        free = next(c for c in free_names(fs_path) if self._free_or_own(environ, parent, c))
        environ["PATH_INFO"] = parent + "/" + free.name
        environ["davbox.renamed"] = (free.name, fs_path.name)
        return box, rel.rstrip("/").rpartition("/")[0] + "/" + free.name, free

    def _free_or_own(self, environ: dict[str, Any], parent: str, candidate: Path) -> bool:
        """A name nobody has, or the caller's own LOCK placeholder (their LOCK went there)."""
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return True
        return stat.S_ISREG(st.st_mode) and self.is_own_placeholder(
            environ, parent + "/" + candidate.name, self.storage.content_size(st.st_size)
        )

    def _own_lock_target(
        self, environ: dict[str, Any], box: MailboxAccess, rel: str, fs_path: Path
    ) -> Location:
        """Send a non-lister's UNLOCK or lock refresh of a taken name to where their LOCK went.

        A LOCK of a taken name locked a free name instead ("a (2).pdf", see
        ``_create_only``); the client goes on using the name it sent, so the
        lock token (Lock-Token for UNLOCK, If for a refresh) leads the request
        to its lock, if that is the caller's, beside the sent name.
        """
        if self.lock_manager is None:
            return box, rel, fs_path
        header = environ.get("HTTP_LOCK_TOKEN", "")
        if not header:
            if "wsgidav.ifLockTokenList" not in environ:
                util.parse_if_header_dict(environ)
            tokens = list(environ.get("wsgidav.ifLockTokenList") or [])
        else:
            tokens = [header.strip().strip("<>")]
        path = environ["PATH_INFO"]
        parent, _, _name = path.rstrip("/").rpartition("/")
        siblings = {c.name for _, c in zip(range(100), free_names(fs_path), strict=False)}
        for token in tokens:
            lock = self.lock_manager.get_lock(token)
            if not lock or lock.get("principal") != environ.get("wsgidav.user_name"):
                continue
            root = unquote(lock["root"]).rstrip("/")
            lock_parent, _, lock_name = root.rpartition("/")
            if lock_parent == self.share_path.rstrip("/") + parent and lock_name in siblings:
                environ["PATH_INFO"] = parent + "/" + lock_name
                rel_parent = rel.rstrip("/").rpartition("/")[0]
                return box, rel_parent + "/" + lock_name, fs_path.with_name(lock_name)
        return box, rel, fs_path

    def is_own_placeholder(self, environ: dict[str, Any], path: str, size: int) -> bool:
        """A zero-byte file this caller created by LOCK and still holds the lock on.

        Explorer and Finder create files with LOCK, then PUT, then UNLOCK; a
        principal who may only create files must be allowed that PUT.
        """
        if size != 0 or self.lock_manager is None:
            return False
        if "wsgidav.ifLockTokenList" not in environ:
            util.parse_if_header_dict(environ)
        tokens = set(environ.get("wsgidav.ifLockTokenList") or [])
        user = environ.get("wsgidav.user_name")
        return any(
            lock["token"] in tokens and lock["principal"] == user
            # Lock roots are stored as WsgiDAV's quoted reference URLs.
            for lock in self.lock_manager.get_url_lock_list(quote(self.share_path + path))
        )

    def _gate(
        self,
        environ: dict[str, Any],
        method: str,
        box: MailboxAccess,
        rel: str,
        fs_path: Path,
        *,
        lists: bool,
    ) -> None:
        """Refuse early what the caller may never do here, without revealing what exists.

        A caller who may not list a mailbox (a dropper) gets the same answer for
        existing and missing names: 404 for reading, changing or probing items,
        403 for MKCOL; only PUT, LOCK and UNLOCK reach the resource checks.
        """
        if rel != _top(environ) and not lists:
            if method == "MKCOL":
                self.authorize(environ, box, rel, Operation.MKCOL)
            elif method not in ("PUT", "LOCK", "UNLOCK"):
                raise DAVError(HTTP_NOT_FOUND)
        if method in ("GET", "HEAD") and rel != _top(environ):
            self.authorize(environ, box, rel, Operation.READ)
        elif method == "PROPPATCH":
            self.authorize(environ, box, rel, Operation.PROPPATCH)
        elif method == "LOCK" and os.path.lexists(fs_path) and not _is_refresh(environ):
            self.authorize(environ, box, rel, Operation.LOCK)


def _top(environ: dict[str, Any]) -> str:
    """The folder a caller starts in: the mailbox root, or a share link's folder."""
    mount = environ.get("davbox.link")
    return "/" if mount is None else mount.link.path.rstrip("/") or "/"


def _below_link_folder(environ: dict[str, Any], rel: str) -> bool:
    """Whether ``rel`` is not directly in a share link's folder (always False for members).

    Drop links see no folders, so they put files only into the link's own
    folder (as on the link's page); uploading into subfolders would tell
    which of them exist (201 or 409).
    """
    if "davbox.link" not in environ:
        return False
    return rel.rstrip("/").rpartition("/")[0] != _top(environ).rstrip("/")


def _fixed_options(start_response: Callable[..., Any]) -> list[bytes]:
    start_response(
        "200 OK",
        [("DAV", "1, 2"), ("Allow", "OPTIONS, PUT, LOCK, UNLOCK"), ("Content-Length", "0")],
    )
    return [b""]


def declared_size(environ: dict[str, Any]) -> int | None:
    """The largest size a PUT announces, or None when it announces none (chunked)."""
    sizes = []
    for key, header in (
        ("CONTENT_LENGTH", "Content-Length"),
        ("HTTP_X_EXPECTED_ENTITY_LENGTH", "X-Expected-Entity-Length"),
        ("HTTP_OC_TOTAL_LENGTH", "OC-Total-Length"),
    ):
        value = environ.get(key, "").strip()
        if value:
            # isdigit() alone takes "²" (latin-1 superscript two), which int() refuses.
            if not (value.isascii() and value.isdigit()):
                raise DAVError(HTTP_BAD_REQUEST, f"invalid {header} header")
            sizes.append(int(value))
    return max(sizes) if sizes else None


def _lock_root_as_sent(
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    default_handler: Callable[..., Iterable[bytes]],
) -> Iterable[bytes]:
    """A LOCK that went to a free name answers with the name the client sent."""
    stored, sent = environ["davbox.renamed"]
    safe = "!*'(),$-_|."  # as WsgiDAV quotes hrefs
    swaps = [
        (quote(stored, safe=safe).encode(), quote(sent, safe=safe).encode()),
        (quote(stored).encode(), quote(sent).encode()),
        (stored.encode(), sent.encode()),
    ]

    def without_length(status: str, headers: list[Any], exc_info: Any = None) -> Any:
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        return start_response(status, headers, exc_info)

    body = default_handler(environ, without_length)
    try:
        for chunk in body:
            for old, new in swaps:
                chunk = chunk.replace(b"/" + old + b"<", b"/" + new + b"<")
            yield chunk
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _is_refresh(environ: dict[str, Any]) -> bool:
    """A LOCK without body that names a lock token refreshes an existing lock."""
    return util.get_content_length(environ) == 0 and "HTTP_IF" in environ


def _created_when_new(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Callable[..., Any]:
    """WsgiDAV answers natively handled COPY/MOVE with 204; RFC 4918 wants 201 for new targets."""

    def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if status.startswith("204") and environ.get("davbox.created"):
            status = "201 Created"
        return start_response(status, headers, exc_info)

    return wrapped
