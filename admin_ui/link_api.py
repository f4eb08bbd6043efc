"""The JSON upload API of share links: resumable uploads in chunks from the browser.

::

    POST   /s/<token>/uploads            {"name", "size", "folder"[, "available_until"]}
                                         -> 201 {"id", "offset": 0, "chunk_size"}
    PUT    /s/<token>/uploads/<id>?offset=N   body: the next bytes (<= chunk_size)
                                         -> 200 {"offset"}
    GET    /s/<token>/uploads/<id>       -> 200 {"offset", "size"}  (where to go on)
    POST   /s/<token>/uploads/<id>       finish -> 201 {"name", "size", "sha256"}
    DELETE /s/<token>/uploads/<id>       discard -> 204

Contract:
- Every request carries the header ``X-Davbox-CSRF`` with the page's CSRF
  token (bound to this browser's cookie). A cross-site form can send
  neither, and a cross-origin ``fetch`` with a custom header needs a CORS
  preflight this server never grants. Missing or wrong: 403.
- Uploads are judged by ``davbox.uploads.ResumableUploads`` as the link's
  principal in its mailbox role, like WebDAV uploads: refusals come back as
  ``{"error": reason}`` with the policy's status (413 size, 415 type, 507
  quota, 403 other rules), 409 ``{"error", "offset"}`` for a chunk at the
  wrong offset, 401 while the link's password is due, 403 outside the
  link's upload window (checked at every step) and for read links.
- ``folder`` is a path below the link: always "" for drop links (they see
  no folders); for write links an existing folder the link may list.
- The receipt names the file as uploaded; ``stored_as`` is added for write
  links when the name was taken and the file got a free one ("a (2).pdf").
  Drop links never learn whether a name existed.
- ``available_until`` (optional): a date ("2026-12-31": the end of that day,
  UTC) or time in the future when the uploader wants the file deleted (see
  ``davbox.file_index``; a retention rule may delete it sooner). Set when
  the upload finishes; a time that has passed or cannot be read is a 400.
- Chunks are at most ``CHUNK_MAX`` bytes (the only requests of the web app
  allowed more than 64 KiB) and need a Content-Length.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import ClientDisconnected
from werkzeug.wrappers import Response

from davbox import file_index
from davbox.admin_ui.link_access import LinkGate, Visit
from davbox.policies.base import Operation
from davbox.uploads import (
    CHUNK_MAX,
    OffsetMismatch,
    ResumableUploads,
    UploadRefused,
    UploadTarget,
)

if TYPE_CHECKING:
    from davbox.admin_ui.link_pages import LinkPages
    from davbox.admin_ui.web import Page

CSRF_HEADER = "X-Davbox-CSRF"
BLOCK = 64 * 1024


def _json(status: int, body: dict[str, Any] | None = None) -> Response:
    if body is None:
        return Response(status=status)
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _error(status: int, reason: str, **extra: Any) -> Response:
    return _json(status, {"error": reason, **extra})


class LinkUploadApi:
    def __init__(self, uploads: ResumableUploads, gate: LinkGate, pages: LinkPages) -> None:
        self.uploads = uploads
        self.gate = gate
        self.pages = pages
        # upload id -> (mailbox, folder, end of availability) until it finishes
        self._ends: dict[str, tuple[str, str, datetime]] = {}

    def _refusal(self, page: Page, visit: Visit | None) -> Response | None:
        """Why this request may not upload at all, or None."""
        sent = page.request.headers.get(CSRF_HEADER, "")
        if not page.csrf or not hmac.compare_digest(sent.encode(), page.csrf.encode()):
            return _error(403, page._("This page has expired. Reload it and try again."))
        if visit is None:
            return _error(401, page._("This link needs its password. Reload the page."))
        if visit.link.permission not in ("drop", "write"):
            return _error(403, page._("This link does not accept files."))
        if not visit.link.accepts_uploads():
            return _error(403, page._("This link no longer accepts files."))
        return None

    def start(self, page: Page, visit: Visit | None) -> Response:
        if (refused := self._refusal(page, visit)) is not None:
            return refused
        assert visit is not None
        body = page.request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, page._("Send the upload as JSON: name, size and folder."))
        name, size, folder = body.get("name"), body.get("size"), body.get("folder", "")
        if not isinstance(name, str) or not isinstance(folder, str):
            return _error(400, page._("Send the upload as JSON: name, size and folder."))
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return _error(400, page._("The size must be a number of bytes."))
        until = body.get("available_until")
        end = None
        if until is not None:
            if not isinstance(until, str):
                return _error(400, page._("The end of availability must be a date or time."))
            try:
                end = file_index.parse_moment(until + ("T23:59:59Z" if len(until) == 10 else ""))
            except ValueError as exc:
                return _error(400, str(exc))
        target = self._target(visit, folder)
        if target is None:
            return _error(404, page._("There is no such folder."))
        try:
            upload_id = self.uploads.start(target, name, size, page.csrf, visit.context)
        except UploadRefused as exc:
            return _error(exc.status, exc.reason)
        if end is not None:
            self._ends[upload_id] = (target.box.name, target.folder_rel, end)
        return _json(201, {"id": upload_id, "offset": 0, "chunk_size": CHUNK_MAX})

    def step(self, page: Page, visit: Visit | None, upload_id: str) -> Response:
        """Status (GET), a chunk (PUT), finish (POST) or discard (DELETE) of one upload."""
        if (refused := self._refusal(page, visit)) is not None:
            return refused
        assert visit is not None
        method = page.request.method
        link_id = visit.link.id
        try:
            if method in ("GET", "HEAD"):
                offset, size, receiving = self.uploads.status(upload_id, page.csrf, link_id)
                return _json(200, {"offset": offset, "size": size, "receiving": receiving})
            if method == "PUT":
                return self._chunk(page, visit, upload_id)
            if method == "DELETE":
                self.uploads.discard(upload_id, page.csrf, link_id)
                return _json(204)
            receipt = self.uploads.finish(upload_id, page.csrf, link_id, visit.context)
            ending = self._ends.pop(upload_id, None)
            if ending is not None:
                mailbox, folder_rel, end = ending
                stored = folder_rel.rstrip("/") + "/" + receipt.stored_name
                file_index.set_available_until(self.gate.db, mailbox, stored, end)
        except OffsetMismatch as exc:
            return _error(409, exc.reason, offset=exc.offset)
        except UploadRefused as exc:
            return _error(exc.status, exc.reason)
        answer: dict[str, Any] = {
            "name": receipt.name,
            "size": receipt.size,
            "sha256": receipt.sha256,
        }
        if visit.link.permission == "write" and receipt.stored_name != receipt.name:
            answer["stored_as"] = receipt.stored_name
        return _json(201, answer)

    def _chunk(self, page: Page, visit: Visit, upload_id: str) -> Response:
        request = page.request
        offset = request.args.get("offset", type=int)
        length = request.content_length
        if offset is None or offset < 0:
            return _error(400, page._("Say where the chunk goes: ?offset=N."))
        if length is None:
            return _error(411, page._("Send chunks with a Content-Length."))
        if length > CHUNK_MAX:
            return _error(413, page._("A chunk may have at most 8 MiB."))
        request.max_content_length = CHUNK_MAX
        stream = request.stream

        def blocks() -> Iterator[bytes]:
            left = length
            while left > 0:
                data = stream.read(min(BLOCK, left))
                if not data:
                    raise ClientDisconnected()
                left -= len(data)
                yield data

        try:
            offset = self.uploads.append(
                upload_id, page.csrf, visit.link.id, offset, blocks(), visit.context
            )
        except ClientDisconnected:
            received, _size, _busy = self.uploads.status(upload_id, page.csrf, visit.link.id)
            return _error(400, page._("The chunk broke off."), offset=received)
        return _json(200, {"offset": offset})

    def _target(self, visit: Visit, folder: str) -> UploadTarget | None:
        link = visit.link
        if link.permission == "drop":
            if folder.strip("/"):
                return None
            item = self.gate.locate(link, "")
        else:
            item = self.gate.locate(link, folder)
            if item is not None and not self.pages.may(visit, item.rel, Operation.LIST):
                item = None
        if item is None or not item.is_dir:
            return None
        return UploadTarget(link.id, visit.principal, visit.box, item.rel, item.fs)
