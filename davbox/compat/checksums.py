"""The checksums sync clients compare (``oc:checksums``), computed while an upload arrives.

Contract: ``UploadChecksums.update(data)`` takes the body's pieces in order;
``value()`` (after the last piece) is ``"SHA1:<hex> MD5:<hex>"`` — SHA1 for
Nextcloud clients and rclone's nextcloud vendor, MD5 for rclone's owncloud
vendor. For a large body (``threaded``) MD5 runs on a thread of its own,
beside the request thread's reading, SHA1 and writing (hashlib lets go of
the GIL for large pieces), with at most ``AHEAD`` pieces waiting for it, so
memory stays bounded; small bodies are hashed inline.
"""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

THREADED_FROM = 8 * 1024 * 1024  # bytes: below, a thread costs more than it saves
AHEAD = 4  # pieces (of up to the storage's block size) waiting for the MD5 thread


class UploadChecksums:
    def __init__(self, *, threaded: bool = False) -> None:
        self._sha1 = hashlib.sha1(usedforsecurity=False)
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._worker = ThreadPoolExecutor(1, "checksums") if threaded else None
        self._pending: deque[Future[None]] = deque()

    def update(self, data: bytes) -> None:
        self._sha1.update(data)
        if self._worker is None:
            self._md5.update(data)
            return
        if len(self._pending) >= AHEAD:
            self._pending.popleft().result()
        self._pending.append(self._worker.submit(self._md5.update, bytes(data)))

    def value(self) -> str:
        self.close()
        return f"SHA1:{self._sha1.hexdigest()} MD5:{self._md5.hexdigest()}"

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
            self._pending.clear()
