"""Durations as admins type them: "30m", "12h", "5d", "2w" (a number and one unit)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def is_duration(text: str) -> bool:
    return _DURATION_RE.match(text) is not None


def parse_duration(text: str) -> timedelta:
    """ "5d" -> 5 days; raise ValueError with a readable text otherwise."""
    found = _DURATION_RE.match(text)
    if not found:
        raise ValueError(f"cannot read {text!r} as a duration; use e.g. 30m, 12h, 5d or 2w")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
