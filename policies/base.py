"""The vocabulary every policy speaks.

Contract:
- ``Operation`` names what a request wants to do to one path. Recursive
  operations (moving a folder, deleting a tree) are asked once per item.
- ``AccessRequest`` carries the resolved principal, mailbox, path inside the
  mailbox (always starting with ``/``), the operation and, where known, the
  size in bytes.
- ``Policy.check`` returns ``None`` for "no opinion" or a ``Decision``;
  ``Policy.admit`` does the same for entering a mailbox at all, and
  ``Policy.check_link`` for making a share link.
  A policy that raises is treated as a deny (fail closed).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel


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
    SHARE = "share"  # create a share link to a folder or file (see LinkRequest)


WRITE_OPERATIONS = frozenset(
    {
        Operation.CREATE,
        Operation.OVERWRITE,
        Operation.DELETE,
        Operation.MOVE,
        Operation.MKCOL,
        Operation.LOCK,
        Operation.PROPPATCH,
        Operation.SHARE,
    }
)


@dataclass(frozen=True)
class Principal:
    """Who is asking: an authenticated account (later also share links)."""

    kind: str  # "user", "link" (a share link) or "anonymous"
    name: str
    user_id: int | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    #: Set when logged in with a limited app password: the mailboxes it reaches.
    scope: frozenset[str] | None = None
    #: Set when logged in with a read-only app password.
    read_only: bool = False
    #: Whether the login proved a second factor: an app password (made after
    #: a login with a code, or by an admin), password+code, a full web login.
    #: False for an account password alone (see the ``twofactor`` policy).
    second_factor: bool = False
    #: The app password's id when logged in with one (for the audit trail).
    credential_id: int | None = None
    #: For a link sent to or asked of a person (SecureTransfer): their address.
    email: str | None = None


@dataclass(frozen=True)
class Usage:
    """What a mailbox holds now."""

    bytes: int
    files: int


@dataclass(frozen=True)
class AccessRequest:
    """One operation on one path, as the provider resolved it.

    ``size`` is the size of the file being stored (declared or known),
    ``replaced`` the bytes it frees (the overwritten file; for a rename inside
    the mailbox also the moved file itself), ``new_files`` how many files the
    mailbox gains, ``head`` the file's first bytes where known (for content
    checks) and ``usage`` what the mailbox holds now (computed on demand).
    """

    principal: Principal
    mailbox: str
    path: str
    operation: Operation
    roles: frozenset[str]
    size: int | None = None
    replaced: int = 0
    new_files: int = 0
    head: bytes | None = field(default=None, repr=False)
    usage: Callable[[], Usage] | None = field(default=None, compare=False)

    @property
    def growth(self) -> int | None:
        """Bytes the mailbox gains (None while the size is unknown)."""
        return None if self.size is None else self.size - self.replaced

    @property
    def name(self) -> str:
        """The last path segment (the file or folder name)."""
        return self.path.rstrip("/").rpartition("/")[2]


@dataclass(frozen=True)
class LinkRequest:
    """Someone wants to make a share link to ``path`` in ``mailbox``.

    ``principal`` is the creator (kind "admin" for the command line without
    ``--as``); ``expires_in`` is None for a link that never expires.
    """

    principal: Principal
    mailbox: str
    path: str
    roles: frozenset[str]
    permission: str  # read, drop or write
    has_password: bool
    expires_in: timedelta | None
    has_code: bool = False  # its recipient must enter a one-time code first (SecureTransfer)


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


@dataclass(frozen=True)
class UploadLimit:
    """The most bytes an upload may have, and what to answer past that."""

    max_bytes: int
    status: int
    reason: str
    rule: str = ""


class Policy:
    """Base class of all policies.

    Subclasses set ``name`` (the YAML ``type``) and ``Options`` (a pydantic
    model of their settings; unknown keys are configuration errors) and
    override ``check`` and, if they limit upload sizes, ``upload_limit``.
    The matching rules common to all policies (mailboxes, paths, principals,
    operations) live in ``policies.matching`` and are applied by the engine
    before a policy is asked.
    """

    #: Short name used in YAML (``type: name``).
    name = "base"
    #: pydantic model of this policy's options (besides the matching keys).
    Options: type[BaseModel] | None = None

    def __init__(self, options: BaseModel | None = None, *, label: str = "") -> None:
        self.options = options
        self.label = label or self.name

    def check(self, request: AccessRequest) -> Decision | None:
        """Return a Decision, or None for "no opinion" (the default)."""
        return None

    def check_link(self, request: LinkRequest) -> Decision | None:
        """Judge a new share link (None: no opinion, the default)."""
        return None

    def admit(self, principal: Principal, mailbox: str, roles: frozenset[str]) -> Decision | None:
        """Whether ``principal`` may enter ``mailbox`` at all (None: no opinion, the default).

        Asked once per request, before any operation: a refusal answers every
        method in the mailbox alike (a PROPFIND too, which otherwise shows a
        caller who may not list an empty folder).
        """
        return None

    def upload_limit(self, request: AccessRequest) -> UploadLimit | None:
        """The largest upload allowed for ``request``, or None for no limit (the default)."""
        return None
