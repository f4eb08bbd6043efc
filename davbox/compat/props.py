"""The ownCloud/Nextcloud WebDAV properties sync clients ask for, by name.

Contract (``OcProperties.value(resource, name)``; unknown names raise 404,
which WsgiDAV reports per property):
- ``oc:fileid`` / ``oc:id``: stable ids (``davbox.compat.fileids``), looked up
  for a whole folder at once and kept for the request.
- ``oc:permissions``: letters from the caller's rights in the mailbox (role,
  read-only app password): files ``G`` read, ``W`` write, ``D`` delete,
  ``N``/``V`` rename/move; folders also ``C`` add files and ``K`` add folders.
  A mailbox's top folder can be neither deleted nor moved (no ``D``/``N``/``V``),
  the top level holds only mailboxes (no letters). Policies that judge names,
  types or sizes still refuse single uploads with their reason.
- ``oc:size``: a file's size, a folder's total (a mailbox's top folder: its usage).
- ``oc:owner-id`` / ``oc:owner-display-name``: the account asking (mailboxes
  are shared spaces without one owner).
- ``oc:checksums``: SHA1 and MD5 of a file's content as it was uploaded
  through WebDAV (computed while it arrived), as long as the file on disk is
  still that version; else 404 (clients then compare sizes and times).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from wsgidav.dav_error import HTTP_NOT_FOUND, DAVError

from davbox.compat.fileids import FileIds, oc_id
from davbox.policies.base import Operation
from davbox.policies.membership import rights_of
from davbox.providers.storage.filesystem import tree_size, version_tag

OC = "{http://owncloud.org/ns}"
NAMES = [
    f"{OC}id",
    f"{OC}fileid",
    f"{OC}permissions",
    f"{OC}size",
    f"{OC}owner-id",
    f"{OC}owner-display-name",
    f"{OC}checksums",
]
NAME_SET = frozenset(NAMES)


def folder_etag(path: Path, memo: dict[str, tuple[int, int]] | None = None) -> str:
    """A folder's ETag: it changes whenever anything below it changes.

    Every change davbox makes renames an entry into or out of a folder (an
    upload's commit, a move, a delete), which sets that folder's time: the
    newest time of the folders below, with their number, names the state.
    ``memo`` (one per request) keeps each folder's state, so a listing walks
    its tree once, not once more for every subfolder it shows.
    """
    memo = {} if memo is None else memo
    top = os.stat(path)
    newest, count = _state(str(path), top, memo)
    return hashlib.sha1(
        f"{top.st_ino}:{newest}:{count}".encode(), usedforsecurity=False
    ).hexdigest()[:20]


def _state(path: str, st: os.stat_result, memo: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(newest folder time, folders) of the tree at ``path`` (its own ``st`` given)."""
    found = memo.get(path)
    if found is not None:
        return found
    newest, count = st.st_mtime_ns, 1
    try:
        with os.scandir(path) as entries:
            subfolders = [e for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        subfolders = []
    for entry in subfolders:
        try:
            below = _state(entry.path, entry.stat(follow_symlinks=False), memo)
        except OSError:
            continue
        newest, count = max(newest, below[0]), count + below[1]
    memo[path] = (newest, count)
    return newest, count


class OcProperties:
    def __init__(self, fileids: FileIds, instance: str) -> None:
        self.fileids = fileids
        self.instance = instance

    def value(self, resource: Any, name: str) -> Any:
        environ = resource.environ
        principal = environ["davbox.principal"]
        if name in (f"{OC}owner-id", f"{OC}owner-display-name"):
            return principal.name
        box = getattr(resource, "box", None)
        if box is None:  # the top level: only mailboxes, nothing to change
            if name == f"{OC}permissions":
                return ""
            raise DAVError(HTTP_NOT_FOUND)
        if name in (f"{OC}fileid", f"{OC}id"):
            fileid = self.fileid(environ, box, resource.rel, resource.fs_path)
            return str(fileid) if name == f"{OC}fileid" else oc_id(fileid, self.instance)
        if name == f"{OC}permissions":
            return self._permissions(resource, box, principal)
        if name == f"{OC}checksums" and not resource.is_collection and resource.st is not None:
            stamp = version_tag(resource.st, resource.get_content_length())
            found = self.fileids.checksums(box.id, resource.rel, stamp)
            if found:
                element = ET.Element(f"{OC}checksums")
                ET.SubElement(element, f"{OC}checksum").text = found
                return element
        if name == f"{OC}size":
            storage = resource.provider.storage
            if resource.is_collection:
                if resource.rel == "/":
                    return str(storage.usage(box.storage_key).bytes)
                return str(tree_size(resource.fs_path, storage.content_size)[0])
            return str(resource.get_content_length())
        raise DAVError(HTTP_NOT_FOUND)

    def _permissions(self, resource: Any, box: Any, principal: Any) -> str:
        engine = resource.provider.engine
        rights = rights_of(box.roles, principal.read_only, engine.members_may_share)
        if principal.scope is not None and box.name not in principal.scope:
            rights = frozenset()
        letters = ""
        if Operation.READ in rights:
            letters += "G"
        top = resource.rel == "/"
        if Operation.DELETE in rights and not top:
            letters += "D"
        if Operation.MOVE in rights and not top:
            letters += "NV"
        if resource.is_collection:
            if Operation.CREATE in rights:
                letters += "C"
            if Operation.MKCOL in rights:
                letters += "K"
        elif Operation.OVERWRITE in rights:
            letters += "W"
        return letters

    def oc_id(self, environ: dict[str, Any], box: Any, rel: str, fs_path: Path) -> str:
        return oc_id(self.fileid(environ, box, rel, fs_path), self.instance)

    def fileid(self, environ: dict[str, Any], box: Any, rel: str, fs_path: Path) -> int:
        cache: dict[tuple[int, str], int] = environ.setdefault("davbox.fileids", {})
        key = (box.id, rel)
        if key not in cache:
            # Asked for one item of a listing: look up the whole folder at once.
            parent = rel.rstrip("/").rpartition("/")[0] or "/"
            paths = {rel, parent}
            if rel != "/":
                try:
                    names = os.listdir(fs_path.parent)
                except OSError:
                    names = []
                base = parent.rstrip("/")
                paths.update(f"{base}/{n}" for n in names)
            for path, fileid in self.fileids.lookup(box.id, sorted(paths)).items():
                cache[(box.id, path)] = fileid
        return cache[key]


def instance_id(db: Any) -> str:
    """The installation's id in ``oc:id`` ("oc" and ten hex digits, from its secret)."""
    digest = hmac.new(db.server_secret(), b"oc:instanceid", hashlib.sha256).hexdigest()
    return "oc" + digest[:10]
