"""The policy engine: one place that answers "may this principal do this here?".

Contract: ``PolicyEngine.check(request)`` asks the membership rules and then
every configured policy in order and returns the first deny it meets; only
when nobody denies is the answer "allow". A policy that raises counts as a
deny (fail closed) and is logged without the request's secrets.
"""

from __future__ import annotations

import logging

from davbox.policies.base import AccessRequest, Decision, Policy
from davbox.policies.membership import MembershipPolicy

_log = logging.getLogger("davbox.policy")


class PolicyEngine:
    def __init__(self, policies: list[Policy] | None = None) -> None:
        self.policies: list[Policy] = [MembershipPolicy(), *(policies or [])]

    def check(self, request: AccessRequest) -> Decision:
        for policy in self.policies:
            try:
                decision = policy.check(request)
            except Exception:
                _log.exception("policy %s failed; denying", policy.name)
                return Decision.deny("the server could not evaluate its access rules", 500)
            if decision is not None and not decision.allowed:
                return decision
        return Decision.allow()
