"""Mailbox folders whose every file is stored encrypted (``storage.encryption``).

``SealedStorage`` is ``FilesystemStorage`` with the content seams overridden
(see ``davbox.providers.storage.sealed`` for the format):

- ``writer`` seals while the bytes arrive, in ``tmp/`` as before: a temp file
  holds only ciphertext, and no key until its commit writes the header.
- ``open_content`` gives the plaintext, seekable; each segment is
  authenticated before a byte of it is returned. ``content_size`` derives the
  plaintext size from the stored size (no read).
- A file that leaves (delete, overwrite, replaced by MOVE/COPY, expiry, a
  removed mailbox, a swept temp) first has its data key destroyed on disk
  (``shred``): what stays in free disk blocks can never be read again.
- COPY makes a new file with its own data key.
- ``alarm(path, reason)`` hears of a file that fails its integrity check (the
  runtime records it) unless the caller of ``open_content`` gave its own
  (which records it with the request's context).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from davbox.providers.storage.filesystem import FilesystemStorage
from davbox.providers.storage.sealed import (
    MAGIC,
    ContentTampered,
    Kek,
    SealedReader,
    plain_size,
    rewrap,
    shred,
)

COPY_BLOCK = 1024 * 1024


class SealedStorage(FilesystemStorage):
    def __init__(
        self, root: Path, ring: Kek, alarm: Callable[[Path, str], None] | None = None
    ) -> None:
        super().__init__(root)
        self.ring: Kek = ring  # writers seal with it
        self.alarm = alarm or (lambda _path, _reason: None)

    def content_size(self, stored_size: int) -> int:
        return plain_size(stored_size)

    def open_content(self, path: Path, alarm: Callable[[str], None] | None = None) -> BinaryIO:
        def report(reason: str) -> None:
            self.alarm(path, reason)

        for _attempt in range(3):
            try:
                return cast(BinaryIO, SealedReader(path, self.ring, alarm or report))
            except FileNotFoundError:
                # Replaced between the open and the header read (an overwrite):
                # the name now holds the new version, unless it was deleted.
                if not path.exists():
                    raise
        return cast(BinaryIO, SealedReader(path, self.ring, alarm or report))

    def create_empty(self, target: Path) -> None:
        """An encrypted empty file (LOCK on an unmapped URL); FileExistsError if taken."""
        writer = self.writer(target, 0, exclusive=False)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)  # claim the name first, as the plain storage does
        try:
            writer.commit()
        except BaseException:
            writer.abort()
            target.unlink(missing_ok=True)
            raise

    def discard_file(self, path: Path) -> None:
        shred(path)

    def _replace_file(self, source: Path, target: Path) -> None:
        old: Path | None = None
        if target.is_file() and not target.is_symlink():
            old = self.temp_path("old")
            try:
                os.link(target, old)
            except FileNotFoundError:
                old = None
        os.replace(source, target)
        if old is not None:
            self.discard_file(old)

    def _remove_tree(self, path: Path) -> None:
        for folder, _dirs, names in os.walk(path):
            for name in names:
                with contextlib.suppress(OSError):
                    shred(Path(folder, name))
        shutil.rmtree(path, ignore_errors=True)

    def _copy_one(self, source: str, target: str) -> None:
        """A copy in a tree is a new file with a data key of its own."""
        self.copy_file(Path(source), Path(target), COPY_BLOCK)

    # -- for davbox.encryption: conversion, rotation, status --------------------------------

    def files(self) -> Iterator[Path]:
        """Every stored file: the mailboxes and the temps (kept previous versions)."""
        for top in (self.mailboxes, self.tmp):
            for folder, _dirs, names in os.walk(top):
                for name in names:
                    yield Path(folder, name)

    def rewrap(self, path: Path) -> str | None:
        """Wrap one file's data key with the current KEK; the KEK it had, or None."""
        return rewrap(path, self.ring)

    def seal_in_place(self, path: Path) -> bool:
        """Encrypt a file stored before encryption was on; False if it is sealed already."""
        with open(path, "rb") as handle:
            if handle.read(len(MAGIC)) == MAGIC:
                try:
                    SealedReader(path, self.ring, lambda _reason: None).close()
                    return False
                except ContentTampered:
                    pass  # plaintext that happens to start like a header
            handle.seek(0)
            st = os.fstat(handle.fileno())
            writer = self.writer(path, None)
            try:
                while chunk := handle.read(COPY_BLOCK):
                    writer.write(chunk)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # its date stays the upload's
        return True
