"""What ownCloud/Nextcloud clients ask of a PUT: keep my file's time, check my checksum.

Contract (``ClientUpload.from_environ``; None when the request asks neither):
- ``X-OC-Mtime: <seconds since 1970>`` (fractions allowed) becomes the
  stored file's modification time; the answer then says
  ``X-OC-MTime: accepted``. A value that is not a number is a 400.
- ``OC-Checksum: <TYPE>:<hex>`` (SHA1, MD5, ADLER32, SHA256; case of the
  type ignored; several separated by spaces: the first supported one) is
  computed over the body as it arrives and compared when it is complete: a
  mismatch is a 400 and nothing is stored. An unsupported type is a 400 too
  (a client that sends a checksum expects it checked).
- Response headers for the request go to ``environ["davbox.response_headers"]``;
  ``ResponseHeaders`` (a WSGI middleware) adds them to the answer.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from wsgidav.dav_error import HTTP_BAD_REQUEST, DAVError

HEADERS_KEY = "davbox.response_headers"


class _Adler32:
    def __init__(self) -> None:
        self.value = 1

    def update(self, data: bytes) -> None:
        self.value = zlib.adler32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


_HASHERS: dict[str, Callable[[], Any]] = {
    "SHA1": lambda: hashlib.sha1(usedforsecurity=False),
    "MD5": lambda: hashlib.md5(usedforsecurity=False),
    "SHA256": hashlib.sha256,
    "ADLER32": _Adler32,
}


def add_header(environ: dict[str, Any], name: str, value: str) -> None:
    environ.setdefault(HEADERS_KEY, []).append((name, value))


class ClientUpload:
    def __init__(self, mtime: float | None, checksum: tuple[str, str] | None) -> None:
        self.mtime = mtime
        self.checksum = checksum
        self._hasher = _HASHERS[checksum[0]]() if checksum else None

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> ClientUpload | None:
        mtime_text = environ.get("HTTP_X_OC_MTIME")
        checksum_text = environ.get("HTTP_OC_CHECKSUM")
        if mtime_text is None and checksum_text is None:
            return None
        mtime = None
        if mtime_text is not None:
            try:
                mtime = float(mtime_text)
            except ValueError:
                raise DAVError(HTTP_BAD_REQUEST, "X-OC-Mtime must be seconds since 1970") from None
            if not 0 <= mtime < 2**40:
                raise DAVError(HTTP_BAD_REQUEST, "X-OC-Mtime is out of range")
        checksum = None
        if checksum_text:
            checksum = _parse_checksum(checksum_text)
        return cls(mtime, checksum)

    def update(self, data: bytes) -> None:
        if self._hasher is not None:
            self._hasher.update(data)

    def verify(self) -> None:
        """Raise 400 if the body does not have the checksum the client sent."""
        if self.checksum is None or self._hasher is None:
            return
        kind, expected = self.checksum
        if not hmac.compare_digest(self._hasher.hexdigest(), expected):
            raise DAVError(
                HTTP_BAD_REQUEST,
                f"the uploaded bytes do not have the {kind} checksum the client sent"
                " (OC-Checksum); nothing was stored",
            )


def _parse_checksum(text: str) -> tuple[str, str]:
    for item in text.split():
        kind, sep, value = item.partition(":")
        kind = kind.upper()
        if sep and kind in _HASHERS:
            return kind, value.strip().lower()
    raise DAVError(
        HTTP_BAD_REQUEST,
        f"OC-Checksum: no supported checksum type in {text[:80]!r} (SHA1, MD5, ADLER32, SHA256)",
    )


class ResponseHeaders:
    """Adds the headers a request's handlers left in ``environ`` to its answer."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        def adding(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            extra = environ.get(HEADERS_KEY)
            if extra and status[:1] == "2":
                known = {name.lower() for name, _ in headers}
                headers = headers + [(k, v) for k, v in extra if k.lower() not in known]
            return start_response(status, headers, exc_info)

        return self.app(environ, adding)
