"""The ``retention`` policy: files are deleted a set time after they were placed.

Options (besides the matching keys; ``mailboxes`` and ``paths`` say which
files, ``principals`` and ``operations`` do not apply)::

    - type: retention
      name: securetransfer-5-days
      mailboxes: ["transfer-*"]
      delete_after: 5d          # counted from the server-recorded upload time
      warn_before: 1d           # mail the uploader this long before (optional)

When several rules cover a file, the shortest ``delete_after`` wins. The
expiry job (``davbox.expiry``) does the deleting; this module only answers
"how long may this file stay".
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import StrictStr, field_validator

from davbox.durations import parse_duration
from davbox.policies.base import Operation, Policy
from davbox.policies.matching import MatchOptions, glob_match


class RetentionOptions(MatchOptions):
    delete_after: StrictStr
    warn_before: StrictStr | None = None

    @field_validator("delete_after", "warn_before")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)  # raises ValueError with the reason
        return value


class RetentionPolicy(Policy):
    name = "retention"
    Options = RetentionOptions
    options: RetentionOptions
    default_operations: frozenset[Operation] = frozenset()  # judges no request

    @property
    def delete_after(self) -> timedelta:
        return parse_duration(self.options.delete_after)

    @property
    def warn_before(self) -> timedelta | None:
        warn = self.options.warn_before
        return parse_duration(warn) if warn else None

    def covers_mailbox(self, mailbox: str) -> bool:
        return glob_match(mailbox, self.options.mailboxes)

    def covers(self, mailbox: str, path: str) -> bool:
        return glob_match(mailbox, self.options.mailboxes) and glob_match(path, self.options.paths)


def retention_for(
    policies: list[Policy], mailbox: str, path: str
) -> tuple[timedelta, RetentionPolicy] | None:
    """The shortest retention of the rules covering ``mailbox``/``path``, and its rule."""
    found = [
        (p.delete_after, p)
        for p in policies
        if isinstance(p, RetentionPolicy) and p.covers(mailbox, path)
    ]
    return min(found, key=lambda pair: pair[0]) if found else None
