"""Third-party policies for the tests (loaded as ``tests.sample_policies:Class``)."""

from __future__ import annotations

from pydantic import StrictStr

from davbox.policies.base import AccessRequest, Decision, Operation, Policy
from davbox.policies.matching import MatchOptions


class WordOptions(MatchOptions):
    word: StrictStr


class NoWordInNames(Policy):
    """Refuses files whose name contains ``word``."""

    name = "no-word"
    Options = WordOptions
    default_operations = frozenset({Operation.CREATE, Operation.OVERWRITE})

    def check(self, request: AccessRequest) -> Decision | None:
        if self.options.word in request.name:  # type: ignore[union-attr]
            return Decision.deny(f"names with '{self.options.word}' are not accepted", 403)  # type: ignore[union-attr]
        return None


class Broken(Policy):
    name = "broken"
    Options = MatchOptions

    def check(self, request: AccessRequest) -> Decision | None:
        raise RuntimeError("this policy always fails")


class AllowEverything(Policy):
    name = "allow"
    Options = MatchOptions

    def check(self, request: AccessRequest) -> Decision:
        return Decision.allow()
