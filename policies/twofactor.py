"""The ``twofactor`` policy: what it matches needs a login with a second factor.

``auth.two_factor_for`` decides at login who must use two-factor login at
all (their account password alone is refused everywhere). This policy guards
mailboxes, paths or groups from the other side, per operation: an account
that logged in with its password alone (allowed for it by
``auth.two_factor_for``) is refused in what the rule matches, so members of a
confidential mailbox need a second factor there even if nowhere else.

What counts as a second factor (``Principal.second_factor``): an app password
(made after a login with a code, or by an administrator), a password+code
credential (``auth.basic_password_code``) and a full web login. Share links
(issue: links) are not accounts and are left to their own rules.

YAML::

    - type: twofactor
      name: confidential-needs-2fa
      mailboxes: ["legal-*"]        # and/or principals: ["@legal"]
"""

from __future__ import annotations

from davbox.policies.base import AccessRequest, Decision, Operation, Policy, Principal
from davbox.policies.matching import MatchOptions


class TwoFactorPolicy(Policy):
    name = "twofactor"
    Options = MatchOptions
    options: MatchOptions | None
    default_operations = frozenset(Operation)

    def admit(self, principal: Principal, mailbox: str, roles: frozenset[str]) -> Decision | None:
        """A rule on whole mailboxes (no ``paths``/``operations``) keeps them closed entirely."""
        options = self.options
        if options is not None and (options.paths != ["*"] or options.operations is not None):
            return None  # narrowed to some paths or operations: judged per operation
        return self._judge(principal, mailbox)

    def check(self, request: AccessRequest) -> Decision | None:
        return self._judge(request.principal, request.mailbox)

    def _judge(self, principal: Principal, mailbox: str) -> Decision | None:
        if principal.kind != "user" or principal.second_factor:
            return None
        return Decision.deny(
            f"mailbox '{mailbox}' needs two-factor login: log in on the web with your code,"
            " make an app password for this program there, and use that",
            403,
            self.label,
        )
