"""The ``links`` policy: rules for making share links.

Options (besides the matching keys; ``principals`` names the creators,
``mailboxes``/``paths`` what is shared)::

    - type: links
      name: links-need-password-and-expire
      require_password: true     # no link without a password (or, for a link sent
                                 # to a person, a one-time code: davbox send)
      max_expiry: 14d            # every link expires, at most 14 days out
      permissions: [read, drop]  # no read-write links

Refusals are 403 with a sentence naming the rule's limit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import StrictBool, StrictStr, field_validator

from davbox.durations import parse_duration
from davbox.policies.base import Decision, LinkRequest, Operation, Policy
from davbox.policies.matching import MatchOptions


class LinkOptions(MatchOptions):
    require_password: StrictBool = False
    max_expiry: StrictStr | None = None
    permissions: list[Literal["read", "drop", "write"]] | None = None

    @field_validator("max_expiry")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)  # raises ValueError with the reason
        return value


class LinkPolicy(Policy):
    name = "links"
    Options = LinkOptions
    options: LinkOptions
    default_operations: frozenset[Operation] = frozenset()  # judges link creation only

    def check_link(self, request: LinkRequest) -> Decision | None:
        opts = self.options
        where = f"in mailbox '{request.mailbox}'"
        if opts.permissions is not None and request.permission not in opts.permissions:
            allowed = ", ".join(opts.permissions) or "none"
            return Decision.deny(
                f"{request.permission} links are not allowed {where} (allowed: {allowed})",
                rule=self.label,
            )
        if opts.require_password and not (request.has_password or request.has_code):
            return Decision.deny(
                f"links {where} need a password (or a one-time code)", rule=self.label
            )
        if opts.max_expiry is not None:
            limit = parse_duration(opts.max_expiry)
            if request.expires_in is None or request.expires_in > limit:
                return Decision.deny(
                    f"links {where} must expire within {opts.max_expiry}", rule=self.label
                )
        return None
