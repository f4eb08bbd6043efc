"""Which requests a policy rule applies to: the matching keys every rule shares.

YAML keys (all optional)::

    name: a label shown in refusals, logs and `davbox policy explain`
    mailboxes: ["*"]          # globs on the mailbox name; "!glob" excludes
    paths: ["*"]              # globs on the path inside the mailbox ("/in/*")
    principals: ["*"]         # "alice", "@group", "role:dropper", "user", "link",
                              # "anonymous", "*"
    operations: [create, overwrite]   # default: what the policy is about

Globs are ``fnmatch`` patterns, case-sensitive; ``*`` also matches ``/``. A
value matches when at least one positive pattern matches and no ``!``
pattern does (a list of only exclusions starts from "everything").
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from davbox.policies.base import AccessRequest, Operation, Principal


class MatchOptions(BaseModel):
    """The keys every policy rule has; policies subclass this with their own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: StrictStr
    name: StrictStr | None = None
    mailboxes: list[StrictStr] = Field(default_factory=lambda: ["*"])
    paths: list[StrictStr] = Field(default_factory=lambda: ["*"])
    principals: list[StrictStr] = Field(default_factory=lambda: ["*"])
    operations: list[Operation] | None = None


def glob_match(value: str, patterns: list[str]) -> bool:
    positive = [p for p in patterns if not p.startswith("!")] or ["*"]
    negative = [p[1:] for p in patterns if p.startswith("!")]
    return any(fnmatchcase(value, p) for p in positive) and not any(
        fnmatchcase(value, p) for p in negative
    )


def principal_match(principal: Principal, roles: frozenset[str], patterns: list[str]) -> bool:
    def one(pattern: str) -> bool:
        if pattern == "*":
            return True
        if pattern in ("user", "link", "anonymous"):
            return principal.kind == pattern
        if pattern.startswith("@"):
            return pattern[1:] in principal.groups
        if pattern.startswith("role:"):
            return pattern[5:] in roles
        return principal.kind == "user" and principal.name == pattern

    positive = [p for p in patterns if not p.startswith("!")] or ["*"]
    negative = [p[1:] for p in patterns if p.startswith("!")]
    return any(one(p) for p in positive) and not any(one(p) for p in negative)


class Matcher:
    """Whether a rule applies: per (principal, mailbox) once, then per path and operation."""

    def __init__(
        self, options: MatchOptions | None, default_operations: frozenset[Operation]
    ) -> None:
        self.options = options
        ops = options.operations if options and options.operations is not None else None
        self.operations = frozenset(ops) if ops is not None else default_operations

    @property
    def paths(self) -> list[str]:
        return self.options.paths if self.options is not None else ["*"]

    def applies_to(self, principal: Principal, mailbox: str, roles: frozenset[str]) -> bool:
        if self.options is None:
            return True
        return glob_match(mailbox, self.options.mailboxes) and principal_match(
            principal, roles, self.options.principals
        )

    def matches(self, request: AccessRequest) -> bool:
        if request.operation not in self.operations:
            return False
        return self.options is None or glob_match(request.path, self.options.paths)
