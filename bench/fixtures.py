"""Test data: one large file, one small file and a folder of many small files.

The large file is written once (a random 1 MiB block repeated, so nothing can
compress it) and hard-linked into every server's storage folder; GETs and PUTs
then all read the same bytes, which the page cache holds after the first pass.
"""

from __future__ import annotations

import os
from pathlib import Path

BIG_NAME = "big.bin"
SMALL_NAME = "small.bin"
SMALL_SIZE = 4096
MANY_FOLDER = "many"
MANY_FILE_SIZE = 256
_BLOCK = 1024 * 1024


def write_big_file(path: Path, size: int) -> None:
    block = os.urandom(_BLOCK)
    with open(path, "wb") as out:
        remaining = size
        while remaining > 0:
            remaining -= out.write(block[: min(_BLOCK, remaining)])


def populate(storage: Path, big_source: Path, many: int) -> None:
    """Put the big file (hard link), the small file and ``many`` files into ``storage``."""
    os.link(big_source, storage / BIG_NAME)
    (storage / SMALL_NAME).write_bytes(os.urandom(SMALL_SIZE))
    folder = storage / MANY_FOLDER
    folder.mkdir()
    content = b"x" * MANY_FILE_SIZE
    for index in range(many):
        (folder / f"file-{index:05d}.txt").write_bytes(content)
