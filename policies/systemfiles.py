"""The ``system_files`` policy: files operating systems make for themselves.

Finder writes ``._name`` (AppleDouble) and ``.DS_Store`` next to what is
copied, Explorer ``Thumbs.db`` and ``desktop.ini``. Options (besides the
matching keys)::

    - type: system_files
      names: ["._*", ".DS_Store", "Thumbs.db", "desktop.ini"]   # the default
      action: discard      # store | hide | refuse | discard

- ``store``: kept like any file (what happens without a rule).
- ``hide``: kept, but left out of folder listings (WebDAV and link pages);
  a client that asks for one by name still gets it.
- ``refuse``: uploads are refused (403, with the reason).
- ``discard``: the upload is answered as stored, the bytes are dropped and
  the refusal is an audit record ("quietly refused": the copy in Finder or
  Explorer goes on).

Through a drop link such files are discarded unless a rule says otherwise:
a drop box is for what someone means to send.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field, StrictStr

from davbox.policies.base import AccessRequest, Decision, Operation, Policy, Principal
from davbox.policies.matching import MatchOptions, glob_match

DEFAULT_NAMES = ["._*", ".DS_Store", "Thumbs.db", "desktop.ini"]
Action = Literal["store", "hide", "refuse", "discard"]


def is_system_file(name: str, patterns: list[str] | None = None) -> bool:
    return any(fnmatchcase(name, p) for p in (patterns or DEFAULT_NAMES))


class SystemFilesOptions(MatchOptions):
    names: list[StrictStr] = Field(default_factory=lambda: list(DEFAULT_NAMES))
    action: Action = "discard"


class SystemFilesPolicy(Policy):
    name = "system_files"
    Options = SystemFilesOptions
    options: SystemFilesOptions
    default_operations = frozenset({Operation.CREATE, Operation.OVERWRITE})

    def check(self, request: AccessRequest) -> Decision | None:
        if self.options.action != "refuse" or not is_system_file(request.name, self.options.names):
            return None
        return Decision.deny(
            f"'{request.name}' is a file the operating system makes for itself;"
            f" mailbox '{request.mailbox}' does not keep such files",
            403,
            self.label,
        )

    def action_for(self, name: str, path: str) -> Action | None:
        """This rule's action for a file ``name`` at ``path``, or None if it does not cover it."""
        if not glob_match(path, self.options.paths) or not is_system_file(name, self.options.names):
            return None
        return self.options.action


def system_file_action(
    policies: list[Policy], principal: Principal, mailbox: str, path: str, *, drop: bool
) -> tuple[Action, str] | None:
    """(action, rule) for the file at ``path``, or None: the first rule that covers it,
    else ``discard`` through a drop link."""
    name = path.rstrip("/").rpartition("/")[2]
    for policy in policies:
        if isinstance(policy, SystemFilesPolicy) and glob_match(mailbox, policy.options.mailboxes):
            action = policy.action_for(name, path)
            if action is not None:
                return action, policy.label
    if drop and is_system_file(name):
        return "discard", "drop-link-system-files"
    return None
