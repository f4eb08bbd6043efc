"""Nextcloud's chunked upload (v2): big files sent in pieces, assembled by a MOVE.

Requests under ``/remote.php/dav/uploads/<account>/<transfer>/`` (the
account's own; authenticated like WebDAV)::

    MKCOL    .../<transfer>            start (Destination, OC-Total-Length: judged now)
    PUT      .../<transfer>/<n>        one piece (stored encrypted when the storage is)
    PROPFIND .../<transfer>            the pieces so far (to resume)
    MOVE     .../<transfer>/.file      assemble into Destination
    DELETE   .../<transfer>            give up

Contract:
- Pieces are kept in the storage's ``tmp/`` (``<host>.chunks.<key>``), each
  written atomically like any upload; a transfer untouched for a day is
  removed by the temp sweep (at start and by housekeeping).
- Policies judge the destination when the transfer starts if the client says
  where it goes (``Destination`` and ``OC-Total-Length`` on MKCOL or a piece):
  a file that would be refused is refused before any piece is sent. Pieces
  beyond ``OC-Total-Length`` are refused (413).
- The MOVE of ``.file`` is the upload: the pieces, in numeric order, are sent
  as the body of a PUT to the destination through the members' WebDAV app,
  so everything a PUT gets applies (name, size, type, content and quota
  rules, locks, ``OC-Checksum``, ``X-OC-Mtime``, the ``upload`` audit
  record, atomic commit, encryption); its answer is the MOVE's answer. The
  pieces are removed afterwards, whatever the outcome of a complete request.
- Every refusal here is an ``access-refused`` record (rule ``chunked-upload``,
  or the policy's own when a rule refused the destination).
"""

from __future__ import annotations

import hashlib
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

from wsgidav.dav_error import DAVError

from davbox.dav.errors import error_response
from davbox.events import AccessRefused, request_context
from davbox.http import status_line
from davbox.policies.base import Operation
from davbox.providers.storage.filesystem import FilesystemStorage, LengthMismatch, StorageFull

UPLOADS_PREFIX = "/remote.php/dav/uploads"
_PIECE = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
_HOST = socket.gethostname().replace(".", "_")
MAX_TOTAL = 1 << 40  # bytes of one transfer when the client does not say (1 TiB)
BLOCK = 1024 * 1024

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ChunkedUploads:
    """WSGI app for ``/remote.php/dav/uploads/<account>/...`` (behind authentication)."""

    def __init__(self, storage: FilesystemStorage, provider: Any, put_app: App) -> None:
        self.storage = storage
        self.provider = provider
        self.put_app = put_app  # the members' WebDAV app, inside authentication

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            return self._handle(environ, start_response)
        except DAVError as exc:
            if exc.value >= 400 and not environ.get("davbox.audited"):
                # A policy refusal was recorded by authorize(); the others here.
                self.provider.events.emit(
                    AccessRefused(
                        **request_context(environ),
                        path=environ.get("PATH_INFO", ""),
                        operation="chunked-upload",
                        status=exc.value,
                        rule="chunked-upload",
                        reason=exc.context_info or "",
                    )
                )
            status, headers, body = error_response(exc)
            start_response(status, headers)
            return [body]

    def _handle(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        account = environ["davbox.principal"].name
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        parts = [p for p in path.split("/") if p]
        method = environ.get("REQUEST_METHOD", "")
        if not parts:
            if method == "PROPFIND":
                return self._multistatus(environ, start_response, account, None)
            raise DAVError(405, "start a chunked upload with MKCOL .../uploads/<account>/<id>")
        transfer, piece = parts[0], "/".join(parts[1:])
        if not _PIECE.match(transfer) or (piece and not _PIECE.match(piece)):
            raise DAVError(400, "upload ids and piece names are letters, digits, '.', '_', '-'")
        folder = self._folder(account, transfer)
        if method == "MKCOL" and not piece:
            if folder.exists():
                raise DAVError(405, "this upload exists already")
            self._judge_destination(environ, total=_total(environ))
            folder.mkdir()
            return _empty(start_response, 201)
        if not folder.is_dir():
            raise DAVError(404, "no such upload (it may have expired; start again)")
        if method == "PUT" and piece:
            return self._piece(environ, start_response, folder, piece)
        if method == "PROPFIND":
            return self._multistatus(environ, start_response, account, transfer)
        if method == "DELETE" and not piece:
            self.storage._remove_tree(folder)
            return _empty(start_response, 204)
        if method == "MOVE" and piece == ".file":
            return self._assemble(environ, start_response, folder)
        raise DAVError(405, f"{method} is not used in chunked uploads here")

    # -- pieces --------------------------------------------------------------------------

    def _folder(self, account: str, transfer: str) -> Path:
        key = hashlib.sha256(f"{account}\0{transfer}".encode()).hexdigest()[:32]
        return self.storage.tmp / f"{_HOST}.chunks.{key}"

    def _piece(
        self, environ: dict[str, Any], start_response: Callable[..., Any], folder: Path, name: str
    ) -> Iterable[bytes]:
        if "HTTP_DESTINATION" in environ:
            self._judge_destination(environ, total=_total(environ))
        length = environ.get("CONTENT_LENGTH")
        if not length or not length.isdigit():
            raise DAVError(411, "pieces of a chunked upload need a Content-Length")
        size = int(length)
        held = sum(p.stat().st_size for p in folder.iterdir() if p.name != name)
        limit = _total(environ) or MAX_TOTAL
        if self.storage.content_size(held) + size > limit:
            raise DAVError(413, "the pieces are larger than the upload announced (OC-Total-Length)")
        writer = self.storage.writer(folder / name, size)
        stream = environ["wsgi.input"]
        try:
            left = size
            while left:
                data = stream.read(min(BLOCK, left))
                if not data:
                    break
                writer.write(data)
                left -= len(data)
            writer.commit()
        except (StorageFull, LengthMismatch) as exc:
            writer.abort()
            status = 507 if isinstance(exc, StorageFull) else 400
            raise DAVError(status, f"{exc}; the piece was not stored") from exc
        except BaseException:
            writer.abort()
            raise
        folder.touch()  # the transfer is alive: the sweep counts from here
        return _empty(start_response, 201)

    def _pieces(self, folder: Path) -> list[Path]:
        return sorted(
            (p for p in folder.iterdir() if p.is_file()),
            key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name),
        )

    # -- the end: a PUT of everything -------------------------------------------------------

    def _assemble(
        self, environ: dict[str, Any], start_response: Callable[..., Any], folder: Path
    ) -> Iterable[bytes]:
        destination = self._destination_path(environ)
        pieces = self._pieces(folder)
        total = sum(self.storage.content_size(p.stat().st_size) for p in pieces)
        declared = _total(environ)
        if declared is not None and declared != total:
            raise DAVError(
                400, f"the pieces hold {total} bytes, not the {declared} announced; nothing stored"
            )
        put = dict(environ)
        put.update(
            {
                "REQUEST_METHOD": "PUT",
                "PATH_INFO": destination.encode("utf-8").decode("latin-1"),
                "SCRIPT_NAME": "/dav",
                "CONTENT_LENGTH": str(total),
                "wsgi.input": _Joined(self.storage, pieces),
            }
        )
        for key in ("HTTP_DESTINATION", "HTTP_TRANSFER_ENCODING", "HTTP_OVERWRITE"):
            put.pop(key, None)
        answer: list[Any] = []

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, headers]
            return lambda _data: None

        body = self.put_app(put, keep)
        try:
            chunks = [bytes(c) for c in body]
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            self.storage._remove_tree(folder)
        status, headers = answer
        start_response(status, headers)
        return chunks

    def _destination_path(self, environ: dict[str, Any]) -> str:
        """``/<mailbox>/<path>`` of the Destination (under the caller's own files URL)."""
        raw = environ.get("HTTP_DESTINATION", "")
        path = unquote(urlsplit(raw).path)
        account = environ["davbox.principal"].name
        for prefix in (f"/remote.php/dav/files/{account}", "/remote.php/webdav", "/dav"):
            if path.startswith(prefix + "/"):
                return path[len(prefix) :]
        raise DAVError(400, "the Destination must be in your files (/remote.php/dav/files/...)")

    def _judge_destination(self, environ: dict[str, Any], total: int | None) -> None:
        """Refuse now what the final PUT would refuse for its name, type or size."""
        if "HTTP_DESTINATION" not in environ:
            return
        path = self._destination_path(environ)
        location = self.provider._resolve(path, environ)
        if location is None:
            raise DAVError(404, "the destination's mailbox does not exist or is not yours")
        box, rel, fs_path = location
        self.provider.check_name(rel.rpartition("/")[2])
        existing = fs_path.is_file()
        op = Operation.OVERWRITE if existing else Operation.CREATE
        self.provider.authorize(environ, box, rel, op, size=total, new_files=0 if existing else 1)

    # -- listing ------------------------------------------------------------------------------

    def _multistatus(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        account: str,
        transfer: str | None,
    ) -> Iterable[bytes]:
        base = f"{UPLOADS_PREFIX}/{quote(account)}/"
        root = ET.Element("{DAV:}multistatus")
        if transfer is None:
            _response(root, base, None, folder=True)
        else:
            folder = self._folder(account, transfer)
            _response(root, f"{base}{quote(transfer)}/", None, folder=True)
            if environ.get("HTTP_DEPTH", "1") != "0":
                for piece in self._pieces(folder):
                    size = self.storage.content_size(piece.stat().st_size)
                    _response(root, f"{base}{quote(transfer)}/{quote(piece.name)}", size)
        body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        start_response(
            status_line(207),
            [
                ("Content-Type", "application/xml; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]


class _Joined:
    """The pieces one after the other, read like a request body."""

    def __init__(self, storage: FilesystemStorage, pieces: list[Path]) -> None:
        self.storage = storage
        self.pieces = iter(pieces)
        self.current: BinaryIO | None = None

    def read(self, size: int = -1) -> bytes:
        while True:
            if self.current is None:
                piece = next(self.pieces, None)
                if piece is None:
                    return b""
                self.current = self.storage.open_content(piece)
            data = self.current.read(size if size and size > 0 else BLOCK)
            if data:
                return data
            self.current.close()
            self.current = None


def _response(root: ET.Element, href: str, size: int | None, *, folder: bool = False) -> None:
    response = ET.SubElement(root, "{DAV:}response")
    ET.SubElement(response, "{DAV:}href").text = href
    propstat = ET.SubElement(response, "{DAV:}propstat")
    prop = ET.SubElement(propstat, "{DAV:}prop")
    kind = ET.SubElement(prop, "{DAV:}resourcetype")
    if folder:
        ET.SubElement(kind, "{DAV:}collection")
    else:
        ET.SubElement(prop, "{DAV:}getcontentlength").text = str(size)
    ET.SubElement(propstat, "{DAV:}status").text = "HTTP/1.1 200 OK"


def _total(environ: dict[str, Any]) -> int | None:
    value = environ.get("HTTP_OC_TOTAL_LENGTH")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise DAVError(400, "OC-Total-Length must be a number of bytes")
    return int(value)


def _empty(start_response: Callable[..., Any], code: int) -> list[bytes]:
    start_response(status_line(code), [("Content-Length", "0")])
    return [b""]
