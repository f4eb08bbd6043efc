"""Responses that send stored files to a browser: one file, or a folder as one streamed zip.

Contract:
- ``file_response`` sends a file as an attachment with its UTF-8 name
  (``filename*`` per RFC 6266, an ASCII ``filename`` for old browsers),
  with ETag, Last-Modified and byte ranges (werkzeug's ``send_file``).
- ``zip_response`` streams a zip (zipstream-ng, stored, zip64 when needed)
  of the files it is given: each file is read while the zip is sent, so
  neither memory nor disk holds the archive; there is no Content-Length and
  the server sends it chunked. Which files go in is the caller's decision.
- Both say ``Cache-Control: private, no-store``: a link may be revoked, and
  shared caches must not keep what it showed.
"""

from __future__ import annotations

import mimetypes
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import zipstream
from werkzeug.utils import send_file
from werkzeug.wrappers import Response

NO_STORE = "private, no-store"


def disposition(name: str) -> dict[str, str]:
    """Content-Disposition parameters for ``name``: ASCII ``filename`` and UTF-8 ``filename*``."""
    simple = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    simple = "".join(ch for ch in simple if ch.isprintable() and ch not in '"\\') or "download"
    if simple == name:
        return {"filename": name}
    return {"filename": simple, "filename*": "UTF-8''" + quote(name, safe="!#$&+^`|~")}


def file_response(path: Path, name: str, environ: dict[str, Any]) -> Response:
    mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = send_file(
        path, environ, mimetype=mimetype, as_attachment=True, download_name=name, conditional=True
    )
    response.headers["Cache-Control"] = NO_STORE
    return response


def zip_response(files: Iterable[tuple[Path, str]], folders: Iterable[str], name: str) -> Response:
    """A zip named ``name`` of ``files`` ((path on disk, name in the zip)) and empty ``folders``."""
    archive = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED)
    for folder in folders:
        archive.mkdir(folder)
    for path, arcname in files:
        archive.add_path(str(path), arcname, recurse=False)
    response = Response(archive, mimetype="application/zip", direct_passthrough=True)
    response.headers.set("Content-Disposition", "attachment", **disposition(name))
    response.headers["Cache-Control"] = NO_STORE
    return response
