"""The on-disk format of encrypted files: a header, then AES-256-GCM sealed segments.

A sealed file::

    header (128 bytes)
      0   7  magic b"DAVBOXS"          7   1  format version (1)
      8   1  segment size as a power of two (16: 64 KiB)
      9   7  zero
      16 16  file id (random)
      32 16  id of the key-encryption key (KEK) that wrapped the data key
      48 12  nonce of the wrap
      60 48  the file's data key (32 bytes) sealed by that KEK with AES-256-GCM;
             associated data: bytes 0-47 (so the key belongs to this file id)
      108 20 zero
    segment 0, 1, ... n-1: each ``SEGMENT`` bytes of plaintext (the last one
      0..SEGMENT bytes) sealed with AES-256-GCM under the data key: 16 bytes of
      tag each. Nonce: the segment index (11 bytes, big-endian) and a final flag
      (1 byte, 1 on the last segment only); associated data: the file id.

Contract:
- A file has at least one segment (an empty file: one empty final segment), so
  the plaintext size follows from the file's size alone (``plain_size``): no
  read is needed for sizes, listings or quotas.
- Reordered, swapped, truncated, extended or other files' segments fail
  authentication (index, final flag and file id are bound); so does a changed
  header. Nothing is returned from a segment that fails: ``SealedReader``
  raises ``ContentTampered`` (after calling its ``alarm``) instead.
- A data key is used for one file's segments once each: segments are written
  only when full, or as the final one at ``finish``, never rewritten.
- The header is written last (``SegmentSealer.header``), when the file is
  complete: a temp file of an unfinished upload holds no key at all.
- ``shred`` overwrites the wrapped data key in place and removes the file
  (crypto-shredding): the segments left in free disk blocks can never be
  decrypted again.
  ``rewrap`` replaces the wrap by one under another KEK in place, without
  touching the segments.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"DAVBOXS"
VERSION = 1
HEADER_SIZE = 128
SEGMENT_SHIFT = 16
SEGMENT = 1 << SEGMENT_SHIFT
TAG = 16
KEY_SIZE = 32
_WRAP_AAD = slice(0, 48)
_WRAP = slice(48, 108)  # nonce and wrapped key: what shredding destroys


class ContentTampered(Exception):
    """A sealed file failed authentication: it was changed, cut short or swapped on disk."""


class KeyUnavailable(Exception):
    """The key-encryption key a file names is not known (retired or from elsewhere)."""


class Kek(Protocol):
    """What the format needs of the key ring."""

    def current(self) -> tuple[str, AESGCM]:
        """(id, cipher) of the key-encryption key new files are wrapped with."""
        ...

    def get(self, kek_id: str) -> AESGCM:
        """The cipher of key-encryption key ``kek_id``; ``KeyUnavailable`` if unknown."""
        ...


@dataclass(frozen=True)
class Header:
    file_id: bytes
    kek_id: str
    segment_shift: int = SEGMENT_SHIFT

    @staticmethod
    def parse(raw: bytes) -> tuple[Header, bytes, bytes]:
        """(header, wrap nonce, wrapped key); ``ContentTampered`` if it is not a header."""
        if len(raw) < HEADER_SIZE or raw[:7] != MAGIC:
            raise ContentTampered("not a sealed file (no header)")
        if raw[7] != VERSION or raw[8] != SEGMENT_SHIFT:
            raise ContentTampered(f"unknown format version {raw[7]}/{raw[8]}")
        kek_id = raw[32:48].rstrip(b"\0").decode("ascii", "replace")
        return Header(raw[16:32], kek_id, raw[8]), raw[48:60], raw[60:108]

    def prefix(self) -> bytes:
        """Bytes 0-47: what the wrap of the data key authenticates."""
        kek = self.kek_id.encode("ascii")
        return (
            MAGIC
            + bytes([VERSION, self.segment_shift])
            + bytes(7)
            + self.file_id
            + kek.ljust(16, b"\0")
        )

    def seal(self, kek: AESGCM, data_key: bytes) -> bytes:
        """The whole 128-byte header with ``data_key`` wrapped by ``kek``."""
        prefix = self.prefix()
        nonce = secrets.token_bytes(12)
        wrapped = kek.encrypt(nonce, data_key, prefix)
        return (prefix + nonce + wrapped).ljust(HEADER_SIZE, b"\0")

    def unwrap(self, kek: AESGCM, nonce: bytes, wrapped: bytes) -> bytes:
        try:
            return kek.decrypt(nonce, wrapped, self.prefix())
        except InvalidTag:
            raise ContentTampered("the header's data key does not open") from None


def plain_size(stored_size: int) -> int:
    """Plaintext bytes of a sealed file of ``stored_size`` bytes (0 for a damaged one)."""
    body = stored_size - HEADER_SIZE
    if body < TAG:
        return 0
    segments = -(-body // (SEGMENT + TAG))
    return max(0, body - segments * TAG)


def sealed_size(plain: int) -> int:
    """Bytes on disk of a sealed file holding ``plain`` bytes."""
    segments = max(1, -(-plain // SEGMENT))
    return HEADER_SIZE + plain + segments * TAG


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


class SegmentSealer:
    """Encrypts a stream of plaintext into segments, handed to ``sink`` as they fill.

    The caller reserves ``HEADER_SIZE`` bytes at the start of the file, feeds
    ``write``, calls ``finish`` (the final segment) and then writes
    ``header(kek)`` at offset 0.
    """

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self.sink = sink
        self.file_id = secrets.token_bytes(16)
        self._key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(self._key)
        self._buffer = bytearray()
        self._index = 0
        self.finished = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if not view:
            return
        if self._buffer:
            room = SEGMENT - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if not view:
                return  # full or not: only more data tells that it is not the last
            self._seal(self._buffer, final=False)
            self._buffer = bytearray()
        while len(view) > SEGMENT:
            self._seal(view[:SEGMENT], final=False)
            view = view[SEGMENT:]
        self._buffer += view

    def finish(self) -> None:
        """Seal what is left as the final segment (empty for an empty file)."""
        if not self.finished:
            self._seal(self._buffer, final=True)
            self._buffer = bytearray()
            self.finished = True

    def header(self, ring: Kek) -> bytes:
        kek_id, kek = ring.current()
        return Header(self.file_id, kek_id).seal(kek, self._key)

    def _seal(self, plain: bytes | bytearray | memoryview, *, final: bool) -> None:
        self.sink(self._aead.encrypt(_nonce(self._index, final), plain, self.file_id))
        self._index += 1


def read_header(fd: int, ring: Kek) -> tuple[Header, bytes]:
    """(header, data key) of the sealed file open as ``fd``.

    Callers hold the file's lock (readers shared, ``rewrap`` exclusive), so a
    header is never read half rewritten.
    """
    header, nonce, wrapped = Header.parse(os.pread(fd, HEADER_SIZE, 0))
    return header, header.unwrap(ring.get(header.kek_id), nonce, wrapped)


class SealedReader(io.RawIOBase):
    """The plaintext of a sealed file: seekable, each segment authenticated before use.

    ``alarm(reason)`` is called once, before ``ContentTampered`` is raised. The
    header, the last and the first segment are checked when the file is
    opened, so a cut-off, extended or re-keyed file (and a small one damaged
    anywhere) fails before any byte is returned. There is no ``fileno()``: nothing
    may send the stored bytes past the decryption.
    """

    def __init__(
        self, path: os.PathLike[str] | str, ring: Kek, alarm: Callable[[str], None]
    ) -> None:
        super().__init__()
        self._fd = -1
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._alarm = alarm
        self._pos = 0
        self._cached: tuple[int, bytes] = (-1, b"")
        self._plain = bytearray()
        try:
            stored = os.fstat(self._fd).st_size
            # Shared with readers, exclusive to shred() and rewrap(): the header
            # is read whole, and a file shredded meanwhile is seen as gone.
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            try:
                header, key = read_header(self._fd, ring)
            except (KeyUnavailable, ContentTampered) as exc:
                if os.fstat(self._fd).st_nlink == 0:
                    # Deleted or replaced while it was being opened: not damage.
                    gone = FileNotFoundError(errno.ENOENT, "replaced while opening", str(path))
                    raise gone from None
                if isinstance(exc, KeyUnavailable):
                    self._fail(f"its key-encryption key is not available: {exc}")
                self._fail(str(exc))
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._file_id = header.file_id
            self._aead = AESGCM(key)
            body = stored - HEADER_SIZE
            if body < TAG:
                self._fail("the file is cut short (no final segment)")
            self._segments = -(-body // (SEGMENT + TAG))
            self._stored = stored
            self.size = plain_size(stored)
            last = self._segments - 1
            self._open(last, self._pread(last, last + 1))
            self._cached = (0, self._open(0, self._pread(0, 1)))
        except BaseException:
            self.close()  # once: the fd number may be someone else's right after
            raise

    # -- io.RawIOBase ---------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def stat(self) -> os.stat_result:
        """The stored file's stat (the one this reader has open)."""
        return os.fstat(self._fd)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        remaining = self.size - self._pos
        if size is None or size < 0 or size > remaining:
            size = remaining
        if size <= 0:
            return b""
        first = self._pos // SEGMENT
        last = (self._pos + size - 1) // SEGMENT
        skip = self._pos - first * SEGMENT
        if first == last and self._cached[0] == first:
            data = self._cached[1][skip : skip + size]
            self._pos += len(data)
            return data
        # Plaintext is decrypted into a private buffer (decrypt_into writes before
        # it checks the tag: nothing leaves it unless every segment passed).
        plain = self._buffer((last - first + 1) * SEGMENT)
        view = memoryview(plain)
        filled = 0
        index = first
        if self._cached[0] == first:
            cached = self._cached[1]
            view[: len(cached)] = cached
            filled, index = len(cached), first + 1
        if index <= last:
            ciphertext = self._pread(index, last + 1)
            step = SEGMENT + TAG
            for at, i in enumerate(range(index, last + 1)):
                piece = ciphertext[at * step : (at + 1) * step]
                filled += self._open_into(i, piece, view[filled : filled + len(piece) - TAG])
        last_start = (last - first) * SEGMENT
        self._cached = (last, bytes(view[last_start:filled]))
        data = bytes(view[skip : skip + size])
        view.release()
        self._pos += len(data)
        return data

    def _buffer(self, size: int) -> bytearray:
        if len(self._plain) < size:
            self._plain = bytearray(size)
        return self._plain

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        super().close()

    # -- segments ---------------------------------------------------------------------

    def _pread(self, first: int, end: int) -> memoryview:
        """The stored bytes of segments ``first`` up to (not including) ``end``."""
        start = HEADER_SIZE + first * (SEGMENT + TAG)
        length = min(self._stored, HEADER_SIZE + end * (SEGMENT + TAG)) - start
        data = os.pread(self._fd, length, start)
        if len(data) != length:
            self._fail("the file became shorter while it was read")
        return memoryview(data)

    def _open_into(self, index: int, ciphertext: memoryview, out: memoryview) -> int:
        final = index == self._segments - 1
        try:
            return int(
                self._aead.decrypt_into(_nonce(index, final), ciphertext, self._file_id, out)
            )
        except InvalidTag:
            self._fail(f"segment {index} of {self._segments} failed authentication")

    def _open(self, index: int, ciphertext: memoryview) -> bytes:
        final = index == self._segments - 1
        try:
            return self._aead.decrypt(_nonce(index, final), ciphertext, self._file_id)
        except InvalidTag:
            self._fail(f"segment {index} of {self._segments} failed authentication")

    def _fail(self, reason: str) -> NoReturn:
        with contextlib.suppress(Exception):  # the alarm's own trouble must not hide this
            self._alarm(reason)
        raise ContentTampered(reason)


def shred(path: os.PathLike[str] | str) -> bool:
    """Remove a file; if it is a sealed file's last link, destroy its data key on disk first.

    The key is overwritten in place and the name removed under the file's
    lock, so a ``rewrap`` running at the same moment cannot write it back.
    Returns whether a key was destroyed.
    """
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return False
    except (IsADirectoryError, PermissionError):
        os.unlink(path)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        destroyed = False
        if os.fstat(fd).st_nlink == 1 and os.pread(fd, 7, 0) == MAGIC:
            os.pwrite(fd, bytes(_WRAP.stop - _WRAP.start), _WRAP.start)
            os.fsync(fd)
            destroyed = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return destroyed
    finally:
        os.close(fd)


def rewrap(path: os.PathLike[str] | str, ring: Kek) -> str | None:
    """Wrap a sealed file's data key with the current KEK, in place; None if it was already.

    Returns the id of the KEK it was wrapped with before. Segments are not touched.
    """
    fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # against a shred of the same file
        if os.fstat(fd).st_nlink == 0:
            return None  # deleted meanwhile: its key is gone and stays gone
        header, key = read_header(fd, ring)
        kek_id, kek = ring.current()
        if header.kek_id == kek_id:
            return None
        os.pwrite(fd, Header(header.file_id, kek_id).seal(kek, key), 0)
        os.fsync(fd)
        return header.kek_id
    finally:
        os.close(fd)


def kek_of(path: os.PathLike[str] | str) -> str | None:
    """The KEK id a file's header names, or None for a file that is not sealed."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(HEADER_SIZE)
    except OSError:
        return None
    try:
        return Header.parse(raw)[0].kek_id
    except ContentTampered:
        return None
