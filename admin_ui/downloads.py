"""Responses that send stored files to a browser: one file, or a folder as one streamed zip.

Contract:
- ``file_response`` sends an open file's content (from the storage's
  ``open_content``: decrypted when the storage is encrypted) as an attachment
  with its UTF-8 name (``filename*`` per RFC 6266, an ASCII ``filename`` for
  old browsers), with ETag, Last-Modified and byte ranges; it closes the file.
- ``zip_response`` streams a zip (zipstream-ng, stored, zip64 when needed)
  of the files it is given: each file is opened and read while the zip is
  sent, so neither memory nor disk holds the archive; there is no
  Content-Length and the server sends it chunked. Which files go in is the
  caller's decision.
- Both say ``Cache-Control: private, no-store``: a link may be revoked, and
  shared caches must not keep what it showed.
"""

from __future__ import annotations

import mimetypes
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO
from urllib.parse import quote

import zipstream
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wrappers import Response
from werkzeug.wsgi import wrap_file

from davbox.providers.storage.filesystem import version_tag

NO_STORE = "private, no-store"


def disposition(name: str) -> dict[str, str]:
    """Content-Disposition parameters for ``name``: ASCII ``filename`` and UTF-8 ``filename*``."""
    simple = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    simple = "".join(ch for ch in simple if ch.isprintable() and ch not in '"\\') or "download"
    if simple == name:
        return {"filename": name}
    return {"filename": simple, "filename*": "UTF-8''" + quote(name, safe="!#$&+^`|~")}


def file_response(
    content: BinaryIO, size: int, st: os.stat_result, name: str, environ: dict[str, Any]
) -> Response:
    """``content`` (``size`` bytes; ``st``: the stored file's stat) as the attachment ``name``."""
    mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = Response(wrap_file(environ, content), mimetype=mimetype, direct_passthrough=True)
    response.headers.set("Content-Disposition", "attachment", **disposition(name))
    response.content_length = size
    response.last_modified = st.st_mtime  # type: ignore[assignment]
    response.set_etag(version_tag(st, size))
    suffix = re.fullmatch(r"\s*bytes\s*=\s*-\s*(\d+)\s*", environ.get("HTTP_RANGE", ""))
    if suffix and size and int(suffix.group(1)) >= size:
        # A suffix at least as long as the file is all of it (RFC 9110 section
        # 14.1.1); werkzeug 3.1 answers 416.
        environ = {**environ, "HTTP_RANGE": "bytes=0-"}
    try:
        response = response.make_conditional(environ, accept_ranges=True, complete_length=size)
    except RequestedRangeNotSatisfiable:
        content.close()
        raise
    response.headers["Cache-Control"] = NO_STORE
    return response


#: A file for the zip: how to open its content, its size and its name in the zip.
ZipFile = tuple[Callable[[], BinaryIO], int, str]


def zip_response(files: Iterable[ZipFile], folders: Iterable[str], name: str) -> Response:
    """A zip named ``name`` of ``files`` and empty ``folders``."""
    archive = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED)
    for folder in folders:
        archive.mkdir(folder)
    for opener, size, arcname in files:
        archive.add(_read(opener), arcname, size=size)
    response = Response(archive, mimetype="application/zip", direct_passthrough=True)
    response.headers.set("Content-Disposition", "attachment", **disposition(name))
    response.headers["Cache-Control"] = NO_STORE
    return response


def _read(opener: Callable[[], BinaryIO], block: int = 1024 * 1024) -> Iterator[bytes]:
    """The content of one zipped file, opened only when the zip reaches it."""
    with opener() as content:
        while chunk := content.read(block):
            yield chunk
