"""Membership rules: what each mailbox role may do. Always active; the base of access.

Roles (a principal with several roles in one mailbox gets the union of rights):

==========  ==================================================================
manager     everything a member may, plus making share links
member      read, list, create, overwrite, delete, move, mkcol, lock, proppatch;
            share links too where ``links.members_may_share`` is on
reader      read and list
dropper     create new files (and LOCK them while creating); sees no names
==========  ==================================================================

Non-members never reach this check: the provider answers 404 for a mailbox the
caller has no role in, so its name is not revealed.
"""

from __future__ import annotations

from davbox.policies.base import AccessRequest, Decision, Operation, Policy

_ALL = frozenset(Operation)
RIGHTS: dict[str, frozenset[Operation]] = {
    "manager": _ALL,
    "member": _ALL - {Operation.SHARE},
    "reader": frozenset({Operation.READ, Operation.LIST}),
    "dropper": frozenset({Operation.CREATE}),
}

_VERBS = {
    Operation.READ: "read files",
    Operation.LIST: "see the contents",
    Operation.CREATE: "add files",
    Operation.OVERWRITE: "replace files",
    Operation.DELETE: "delete",
    Operation.MOVE: "move or rename",
    Operation.MKCOL: "create folders",
    Operation.LOCK: "lock files",
    Operation.PROPPATCH: "change properties",
    Operation.SHARE: "make share links",
}


READ_ONLY = frozenset({Operation.READ, Operation.LIST})


def rights_of(
    roles: frozenset[str], read_only: bool = False, members_may_share: bool = False
) -> frozenset[Operation]:
    rights: frozenset[Operation] = frozenset()
    for role in roles:
        rights |= RIGHTS.get(role, frozenset())
    if members_may_share and "member" in roles:
        rights |= {Operation.SHARE}
    return rights & READ_ONLY if read_only else rights


class MembershipPolicy(Policy):
    name = "membership"

    def __init__(self, members_may_share: bool = False) -> None:
        super().__init__()
        self.members_may_share = members_may_share

    def check(self, request: AccessRequest) -> Decision:
        read_only = request.principal.read_only
        if request.operation in rights_of(request.roles, read_only, self.members_may_share):
            return Decision.allow()
        if request.operation in rights_of(request.roles, False, self.members_may_share):
            return Decision.deny(
                f"this app password may only read; it cannot {_VERBS[request.operation]}",
                rule="membership",
            )
        roles = ", ".join(sorted(request.roles)) or "none"
        return Decision.deny(
            f"your role in mailbox '{request.mailbox}' ({roles}) does not allow you to "
            f"{_VERBS[request.operation]}",
            rule="membership",
        )
