"""The policy engine: one place that answers "may this principal do this here?".

Contract:
- ``check(request)`` asks the membership rules, then every configured policy
  whose matching keys fit, in order, and returns the first deny: **any deny
  wins**; only when nobody denies is the answer "allow". A policy that raises
  counts as a deny (fail closed) and is logged.
- Which policies apply to a (principal, mailbox) pair is worked out once and
  cached, so a PROPFIND of 10,000 files does not match every rule per file;
  per item only the path and operation are compared.
- ``upload_limit(request)`` is the smallest byte limit any applicable policy
  sets (size, quota), for enforcing while an upload streams.
- ``replace(policies)`` swaps the whole rule set at once (hot reload): a
  request sees either the old or the new rules, never a mix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from davbox.policies.base import (
    AccessRequest,
    Decision,
    LinkRequest,
    Operation,
    Policy,
    Principal,
    UploadLimit,
)
from davbox.policies.matching import Matcher, glob_match
from davbox.policies.membership import MembershipPolicy

_log = logging.getLogger("davbox.policy")


@dataclass(frozen=True)
class _Rule:
    policy: Policy
    matcher: Matcher


@dataclass(frozen=True)
class Explanation:
    label: str
    applies: bool
    decision: Decision | None


class PolicyEngine:
    def __init__(
        self, policies: list[Policy] | None = None, *, members_may_share: bool = False
    ) -> None:
        self._membership = MembershipPolicy(members_may_share)
        # Rules and the cache derived from them change together, in one assignment.
        self._state: tuple[tuple[_Rule, ...], dict[tuple[object, ...], tuple[_Rule, ...]]]
        self.replace(policies or [])

    @property
    def members_may_share(self) -> bool:
        return self._membership.members_may_share

    @property
    def _rules(self) -> tuple[_Rule, ...]:
        return self._state[0]

    @property
    def _applicable(self) -> dict[tuple[object, ...], tuple[_Rule, ...]]:
        return self._state[1]

    @property
    def policies(self) -> list[Policy]:
        return [rule.policy for rule in self._rules]

    def replace(self, policies: list[Policy]) -> None:
        rules = tuple(
            _Rule(p, Matcher(p.options, getattr(p, "default_operations", frozenset(Operation))))  # type: ignore[arg-type]
            for p in policies
        )
        self._state = (rules, {})

    def _rules_for(self, request: AccessRequest) -> tuple[_Rule, ...]:
        return self._rules_of(request.principal, request.mailbox, request.roles)

    def _rules_of(
        self, principal: Principal, mailbox: str, roles: frozenset[str]
    ) -> tuple[_Rule, ...]:
        key = (principal, mailbox, roles)
        rules, cache = self._state
        found = cache.get(key)
        if found is None:
            found = tuple(r for r in rules if r.matcher.applies_to(principal, mailbox, roles))
            if len(cache) > 10000:
                cache.clear()
            cache[key] = found
        return found

    def check_link(self, request: LinkRequest) -> Decision:
        """May this share link be made? The creator needs the share right (an
        administrator at the command line does not), then any policy may refuse."""
        principal = request.principal
        if principal.kind != "admin":
            decision = self._membership.check(
                AccessRequest(
                    principal, request.mailbox, request.path, Operation.SHARE, request.roles
                )
            )
            if not decision.allowed:
                return decision
        rules = self._rules_of(principal, request.mailbox, request.roles)
        return _first_refusal(
            (r for r in rules if glob_match(request.path, r.matcher.paths)),
            lambda policy: policy.check_link(request),
        )

    def admit(self, principal: Principal, mailbox: str, roles: frozenset[str]) -> Decision:
        """Whether the principal may enter the mailbox at all; any refusal wins."""
        return _first_refusal(
            self._rules_of(principal, mailbox, roles),
            lambda policy: policy.admit(principal, mailbox, roles),
        )

    def check(self, request: AccessRequest) -> Decision:
        decision = self._membership.check(request)
        if not decision.allowed:
            return decision
        return _first_refusal(
            (r for r in self._rules_for(request) if r.matcher.matches(request)),
            lambda policy: policy.check(request),
        )

    def upload_limit(self, request: AccessRequest) -> UploadLimit | None:
        best: UploadLimit | None = None
        for rule in self._rules_for(request):
            if not rule.matcher.matches(request):
                continue
            limit = rule.policy.upload_limit(request)
            if limit is not None and (best is None or limit.max_bytes < best.max_bytes):
                best = limit
        return best

    def quota(self, request: AccessRequest) -> int | None:
        """The smallest byte quota that applies to the mailbox (RFC 4331 properties)."""
        quotas = [
            q
            for rule in self._rules_for(request)
            if (q := getattr(rule.policy, "quota", lambda: None)()) is not None
        ]
        return min(quotas) if quotas else None

    def explain(self, request: AccessRequest) -> tuple[list[Explanation], Decision]:
        """Every rule with whether it applies and what it says; then the final decision."""
        lines = [Explanation("membership", True, self._membership.check(request))]
        applicable = set(map(id, self._rules_for(request)))
        for rule in self._rules:
            applies = id(rule) in applicable and rule.matcher.matches(request)
            lines.append(
                Explanation(
                    rule.policy.label, applies, rule.policy.check(request) if applies else None
                )
            )
        return lines, self.check(request)


def _first_refusal(rules: Iterable[_Rule], ask: Callable[[Policy], Decision | None]) -> Decision:
    """Ask each rule's policy in order; the first refusal wins, a policy that raises refuses."""
    for rule in rules:
        try:
            decision = ask(rule.policy)
        except Exception:
            _log.exception("policy %s failed; denying", rule.policy.label)
            return Decision.deny("the server could not evaluate its access rules", 500)
        if decision is not None and not decision.allowed:
            return decision
    return Decision.allow()
