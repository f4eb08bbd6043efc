"""Mailbox folders on a local filesystem, with writes that never lose a byte.

Layout under the storage root::

    mailboxes/<storage_key>/...   one folder per mailbox (key from the database)
    tmp/                          uploads and copies in progress, trash being removed

Guarantees:
- ``AtomicWriter`` writes to a temp file in ``tmp/`` (same filesystem), counts
  the bytes, and on ``commit()`` checks the count against the expected length,
  fsyncs, ``os.replace``-s the temp onto the target and fsyncs the folder. Until
  then the previous version is untouched; on any failure ``abort()`` removes the
  temp. Concurrent writers to one path each commit whole files; the last
  rename wins.
- Disk full, quota (EDQUOT) and file-size limits (EFBIG) raise ``StorageFull``;
  a body shorter or longer than announced raises ``LengthMismatch``.
- ``commit(keep_previous=True)`` keeps a hard link of the replaced version
  in ``tmp/`` so that ``undo()`` can put it back (an upload whose audit
  record cannot be written); ``release()`` drops it.
- ``sweep_temps()`` (at start) removes temps whose writer process is gone.
- Replacing an existing folder (MOVE/COPY with overwrite) first renames the old
  one into ``tmp/`` and removes it only after the new one is in place.
- Content goes through ``open_content`` (a seekable file of the plaintext),
  ``content_size`` (plaintext size from ``st_size``) and ``writer``; files
  leave through ``discard_file`` and the tree operations. ``SealedStorage``
  (``davbox.providers.storage.encrypted``) overrides exactly these to keep
  every file encrypted; callers never open mailbox files themselves.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from davbox.policies.base import Usage
from davbox.providers.storage.sealed import HEADER_SIZE, Kek, SegmentSealer

_NUMBERED = re.compile(r"^(.*) \((\d+)\)$")

_log = logging.getLogger("davbox.storage")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_HOST = socket.gethostname().replace(".", "_")
USAGE_TTL = 5.0
WRITE_SLICE = 64 * 1024


def version_tag(st: os.stat_result, size: int) -> str:
    """What names one stored version of a file: inode, time and content size.

    The ETag of WebDAV and link downloads, and the stamp kept with its checksums.
    """
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{size:x}"


def tree_size(path: Path, content_size: Callable[[int], int]) -> tuple[int, int]:
    """(content bytes, files) below ``path``; files that vanish meanwhile are skipped."""
    total = files = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += content_size(st.st_size)
                files += 1
    return total, files


class StorageFull(Exception):
    """No room to store the data (disk full, quota or file-size limit)."""


class LengthMismatch(Exception):
    def __init__(self, received: int, expected: int) -> None:
        super().__init__(f"received {received} of {expected} announced bytes")
        self.received = received
        self.expected = expected


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStorage:
    #: The key ring writers seal with (``SealedStorage``); None: plain files.
    ring: Kek | None = None

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.mailboxes = self.root / "mailboxes"
        self.tmp = self.root / "tmp"
        self.mailboxes.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._known: set[str] = set()  # mailbox folders known to exist
        self._usage: dict[str, tuple[Usage, float]] = {}
        self._commit_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def mailbox_dir(self, storage_key: str) -> Path:
        """The mailbox's folder (created on first use)."""
        path = self.mailboxes / storage_key
        if storage_key not in self._known:
            path.mkdir(exist_ok=True)
            self._known.add(storage_key)
        return path

    def usage(self, storage_key: str) -> Usage:
        """Bytes and files a mailbox holds (walked at most every USAGE_TTL seconds).

        Changes made through this process drop the cached figure at once
        (``usage_changed``); changes by other processes show within the TTL.
        """
        now = time.monotonic()
        cached = self._usage.get(storage_key)
        if cached is not None and now - cached[1] < USAGE_TTL:
            return cached[0]
        usage = Usage(*tree_size(self.mailbox_dir(storage_key), self.content_size))
        self._usage[storage_key] = (usage, now)
        return usage

    # -- content: what the encrypted storage overrides ---------------------------------

    def content_size(self, stored_size: int) -> int:
        """The size clients see of a file that takes ``stored_size`` bytes on disk."""
        return stored_size

    def open_content(self, path: Path, alarm: Callable[[str], None] | None = None) -> BinaryIO:
        """The file's content, seekable. ``alarm(reason)``: called if it fails its integrity
        check (encrypted storage), before the read raises ``ContentTampered``."""
        return open(path, "rb", buffering=0)

    def discard_file(self, path: Path) -> None:
        """Remove one file for good (no error if it is gone already)."""
        path.unlink(missing_ok=True)

    def _replace_file(self, source: Path, target: Path) -> None:
        """``os.replace``; the encrypted storage also destroys the replaced file's key."""
        os.replace(source, target)

    def _remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def _copy_one(self, source: str, target: str) -> None:
        """Copy one file of a tree (``shutil.copytree``'s ``copy_function``)."""
        shutil.copy2(source, target)

    def commit_lock(self, storage_key: str) -> threading.Lock:
        """A lock per mailbox, held across a final quota check and the commit it guards."""
        with self._locks_guard:
            return self._commit_locks.setdefault(storage_key, threading.Lock())

    def usage_changed(self, *storage_keys: str) -> None:
        for key in storage_keys:
            self._usage.pop(key, None)

    def remove_mailbox(self, storage_key: str) -> None:
        path = self.mailboxes / storage_key
        self._known.discard(storage_key)
        if path.exists():
            trash = self.temp_path("trash")
            os.rename(path, trash)
            self._remove_tree(trash)

    def temp_path(self, kind: str) -> Path:
        """A fresh name in tmp/ that records which process made it."""
        return self.tmp / f"{_HOST}.{os.getpid()}.{secrets.token_hex(8)}.{kind}"

    def sweep_temps(self, max_age: float = 86400.0, *, now: float | None = None) -> int:
        """Remove temps left by dead processes of this host, and any untouched for ``max_age``
        seconds (before ``now``, default the current time)."""
        removed = 0
        now = time.time() if now is None else now
        for entry in self.tmp.iterdir():
            host, _, rest = entry.name.partition(".")
            pid_text = rest.partition(".")[0]
            stale = False
            if host == _HOST and pid_text.isdigit():
                stale = not _pid_alive(int(pid_text))
            try:
                stale = stale or now - entry.lstat().st_mtime > max_age
            except FileNotFoundError:
                continue
            if stale:
                if entry.is_dir() and not entry.is_symlink():
                    self._remove_tree(entry)
                else:
                    self.discard_file(entry)
                removed += 1
        if removed:
            _log.info("removed %d unfinished upload(s) left by an earlier run", removed)
        return removed

    def writer(
        self, target: Path, expected_length: int | None, *, exclusive: bool = False
    ) -> AtomicWriter:
        """A sink for ``target``; ``exclusive``: never replace a file, take a free name instead."""
        return AtomicWriter(
            self.temp_path("part"),
            target,
            expected_length,
            exclusive=exclusive,
            replace=self._replace_file,
            discard=self.discard_file,
            ring=self.ring,
        )

    def create_empty(self, target: Path) -> None:
        """Create a zero-byte file (LOCK on an unmapped URL); FileExistsError if taken."""
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)

    def copy_file(self, source: Path, target: Path, block_size: int) -> None:
        """Copy atomically: the target is replaced only by a complete copy."""
        writer = self.writer(target, None)
        try:
            with self.open_content(source) as src:
                while chunk := src.read(block_size):
                    writer.write(chunk)
            writer.commit()
            shutil.copystat(source, target)
        except BaseException:
            writer.abort()
            raise

    def copy_tree(self, source: Path, target: Path) -> None:
        """Copy a folder tree; an existing target is swapped out only when the copy is whole."""
        staging = self.temp_path("copy")
        try:
            shutil.copytree(source, staging, symlinks=False, copy_function=self._copy_one)
        except BaseException as exc:
            self._remove_tree(staging)
            if isinstance(exc, OSError):
                _raise_full(exc)
            raise
        self.replace_tree(staging, target)

    def replace_tree(self, source: Path, target: Path) -> None:
        """Put ``source`` (file or folder) at ``target``; an old target is removed last."""
        replaces_folder = target.is_dir() and not target.is_symlink()
        if replaces_folder or (source.is_dir() and target.exists()):
            trash = self.temp_path("trash")
            os.rename(target, trash)
            try:
                os.rename(source, target)
            except BaseException:
                os.rename(trash, target)
                raise
            if replaces_folder:
                self._remove_tree(trash)
            else:
                self.discard_file(trash)
        else:
            self._replace_file(source, target)
        _fsync_dir(target.parent)

    def delete(self, target: Path) -> None:
        if target.is_dir() and not target.is_symlink():
            trash = self.temp_path("trash")
            os.rename(target, trash)
            self._remove_tree(trash)
        else:
            if not target.exists():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(target))
            self.discard_file(target)
        _fsync_dir(target.parent)


class AtomicWriter:
    """A file-like sink that becomes visible at ``target`` only when ``commit()`` succeeds."""

    def __init__(
        self,
        temp: Path,
        target: Path,
        expected_length: int | None,
        *,
        exclusive: bool = False,
        replace: Callable[[Path, Path], None] = os.replace,
        discard: Callable[[Path], None] = lambda path: path.unlink(missing_ok=True),
        ring: Kek | None = None,
    ) -> None:
        self.temp = temp
        self.target = target
        self.expected_length = expected_length
        # Create-only (uploads by people who may not see the folder): the file
        # is linked in under a name nobody has, never replacing one.
        self.exclusive = exclusive
        self.received = 0  # bytes of content (plaintext) so far
        self.committed = False
        self.mtime: float | None = None  # the file's time, if the client gave one
        self._replace = replace
        self._discard = discard
        self._previous: Path | None = None  # the replaced version, kept until release()
        self._file = open(temp, "xb", buffering=0)  # noqa: SIM115 (closed in commit/abort)
        # Encrypted storage: the content goes through the sealer; room for the
        # header (written at commit, with the data key) is kept at the start.
        self._ring = ring
        self._sealer: SegmentSealer | None = None
        if ring is not None:
            self._store(bytes(HEADER_SIZE))
            self._sealer = SegmentSealer(self._store)

    def write(self, data: bytes) -> int:
        self.received += len(data)
        if self._sealer is not None:
            self._sealer.write(data)
        else:
            self._store(data)
        return len(data)

    def _store(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        try:
            # The file is unbuffered (raw): write() may store only part of the data
            # (disk filling up, file-size limit) and return the count. Ignoring it
            # would let a truncated upload pass the length check in commit();
            # write the rest, so a full disk surfaces as ENOSPC/EFBIG here.
            # Slices of 64 KiB: copying 1 MiB at once into the page cache cost
            # several times the CPU per byte here (bench/README.md).
            while view:
                view = view[self._file.write(view[:WRITE_SLICE]) :]
        except OSError as exc:
            _raise_full(exc)
            raise

    def writelines(self, chunks: object) -> None:
        for chunk in chunks:  # type: ignore[attr-defined]
            self.write(chunk)

    def commit(self, *, keep_previous: bool = False) -> None:
        """Make the file visible; ``keep_previous``: keep what it replaced for ``undo()``."""
        if self.committed:
            return
        if self.expected_length is not None and self.received != self.expected_length:
            raise LengthMismatch(self.received, self.expected_length)
        try:
            if self._sealer is not None and self._ring is not None:
                self._sealer.finish()
                os.pwrite(self._file.fileno(), self._sealer.header(self._ring), 0)
            if self.mtime is not None:
                os.utime(self._file.fileno(), (self.mtime, self.mtime))
            os.fsync(self._file.fileno())
            self._file.close()
            if keep_previous and not self.exclusive and self.target.is_file():
                self._previous = self.temp.with_name(self.temp.name + ".prev")
                os.link(self.target, self._previous)
            if self.exclusive:
                self._link_free()
            else:
                self._replace(self.temp, self.target)
            _fsync_dir(self.target.parent)
        except OSError as exc:
            _raise_full(exc)
            raise
        self.committed = True

    def _link_free(self) -> None:
        """Link the finished file in at ``target`` or, if taken, at "name (2).ext" and so on."""
        for candidate in free_names(self.target):
            try:
                os.link(self.temp, candidate)
            except FileExistsError:
                continue
            self.target = candidate
            self.temp.unlink()
            return
        raise FileExistsError(f"no free name for {self.target.name}")

    def undo(self) -> None:
        """Take a committed file back: the replaced version returns, a new file goes away.

        For the moment between the commit and its audit record: if the record
        cannot be written, the upload must not stay.
        """
        if not self.committed:
            return
        if self._previous is not None:
            self._replace(self._previous, self.target)
            self._previous = None
        else:
            self._discard(self.target)
        _fsync_dir(self.target.parent)
        self.committed = False

    def release(self) -> None:
        """Forget the replaced version kept by ``commit(keep_previous=True)``."""
        if self._previous is not None:
            self._discard(self._previous)
            self._previous = None

    def close(self) -> None:
        """WsgiDAV closes the sink after the last block: that is the commit point."""
        self.commit()

    def abort(self) -> None:
        if self.committed:
            return
        with contextlib.suppress(OSError):
            self._file.close()
        self.temp.unlink(missing_ok=True)


def free_names(target: Path, limit: int = 10000) -> Iterator[Path]:
    """``target``, then "stem (2).ext", "stem (3).ext", ... (names within 255 bytes).

    A target already numbered ("stem (2).ext") goes on from its number, so
    racing uploads of one name end up as (2), (3), ... not "stem (2) (2).ext".
    """
    yield target
    name = target.name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    start = 2
    if numbered := _NUMBERED.match(stem):
        stem, start = numbered.group(1), int(numbered.group(2)) + 1
    for number in range(start, limit):
        tail = f" ({number}){suffix}"
        room = 255 - len(tail.encode())
        short = stem.encode()[:room].decode("utf-8", "ignore")
        yield target.with_name(short + tail)


def _raise_full(exc: OSError) -> None:
    if exc.errno in _FULL_ERRNOS:
        raise StorageFull(os.strerror(exc.errno or errno.ENOSPC)) from exc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
