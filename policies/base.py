"""The vocabulary every policy speaks.

Contract:
- ``Operation`` names what a request wants to do to one path. Recursive
  operations (moving a folder, deleting a tree) are asked once per item.
- ``AccessRequest`` carries the resolved principal, mailbox, path inside the
  mailbox (always starting with ``/``), the operation and, where known, the
  size in bytes.
- ``Policy.check`` returns ``None`` for "no opinion" or a ``Decision``.
  A policy that raises is treated as a deny (fail closed).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Operation(enum.StrEnum):
    READ = "read"  # GET/HEAD of file content; COPY source
    LIST = "list"  # see names inside a folder, PROPFIND below the mailbox root
    CREATE = "create"  # a new file (PUT, LOCK on an unmapped URL, COPY/MOVE destination)
    OVERWRITE = "overwrite"  # replace an existing file's content
    DELETE = "delete"  # remove a file or folder
    MOVE = "move"  # take a file or folder away from its place (MOVE source)
    MKCOL = "mkcol"  # create a folder (MKCOL, COPY/MOVE of a folder)
    LOCK = "lock"  # LOCK an existing resource
    PROPPATCH = "proppatch"  # change dead properties


WRITE_OPERATIONS = frozenset(
    {
        Operation.CREATE,
        Operation.OVERWRITE,
        Operation.DELETE,
        Operation.MOVE,
        Operation.MKCOL,
        Operation.LOCK,
        Operation.PROPPATCH,
    }
)


@dataclass(frozen=True)
class Principal:
    """Who is asking: an authenticated account (later also share links)."""

    kind: str  # "user"
    name: str
    user_id: int | None = None
    groups: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class AccessRequest:
    principal: Principal
    mailbox: str
    path: str
    operation: Operation
    roles: frozenset[str]
    size: int | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    status: int = 403
    rule: str = ""

    @classmethod
    def allow(cls) -> Decision:
        return cls(True)

    @classmethod
    def deny(cls, reason: str, status: int = 403, rule: str = "") -> Decision:
        return cls(False, reason, status, rule)


class Policy:
    """Base class of all policies. Subclasses override ``check``."""

    #: Short name used in YAML (``type: name``).
    name = "base"

    def check(self, request: AccessRequest) -> Decision | None:
        """Return a Decision, or None for "no opinion" (the default)."""
        return None
