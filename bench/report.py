"""The results table: one row per measurement, one column per server, davbox's ratios and targets.

A ratio is always "davbox divided by the other server" in the unit of the
row, so for rates (MB/s, req/s) higher is better and for times and memory
lower is better; the target column says which way each one must go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SERVERS = ("davbox", "wsgidav", "apache")


@dataclass(frozen=True)
class Target:
    """``davbox / against`` must be ``>= ratio`` (or ``<=`` when ``at_most``); or absolute."""

    against: str | None  # a server name, or None for an absolute limit on davbox's value
    limit: float
    at_most: bool
    text: str

    def met(self, values: dict[str, float]) -> bool | None:
        mine = values.get("davbox")
        if mine is None:
            return None
        if self.against is None:
            actual = mine
        else:
            other = values.get(self.against)
            if not other:
                return None
            actual = mine / other
        return actual <= self.limit if self.at_most else actual >= self.limit


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    digits: int
    target: Target | None = None


@dataclass
class Results:
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, list[str]] = field(default_factory=dict)

    def put(self, server: str, key: str, value: float) -> None:
        self.values.setdefault(key, {})[server] = value

    def note(self, server: str, line: str) -> None:
        self.details.setdefault(server, []).append(line)


def metrics(size_label: str, files: int) -> list[Metric]:
    limit = f"{150:d} MB"
    return [
        Metric(
            "get_big", f"GET {size_label} (MB/s)", 0, Target("apache", 0.8, False, ">= 0.8x apache")
        ),
        Metric("put_big", f"PUT {size_label} (MB/s)", 0),
        Metric(
            "rss_get",
            f"peak RSS during GET {size_label} (MB)",
            0,
            Target(None, 150, True, f"< {limit}"),
        ),
        Metric(
            "rss_put",
            f"peak RSS during PUT {size_label} (MB)",
            0,
            Target(None, 150, True, f"< {limit}"),
        ),
        Metric(
            "small_get",
            "GET 4 KiB, 16 connections (req/s)",
            0,
            Target("wsgidav", 1.0, False, ">= 1.0x wsgidav"),
        ),
        Metric("small_get_cpu", "  server CPU per 4 KiB GET (us)", 0),
        Metric(
            "propfind_all",
            f"PROPFIND depth 1, {files:,} files, allprop (s)",
            3,
            Target("wsgidav", 1.0, True, "<= 1.0x wsgidav"),
        ),
        Metric(
            "propfind_props",
            f"PROPFIND depth 1, {files:,} files, 5 props (s)",
            3,
            Target("wsgidav", 1.0, True, "<= 1.0x wsgidav"),
        ),
        Metric("rss_propfind", "peak RSS during PROPFIND (MB)", 0),
        Metric("auth_burst", "16 parallel wrong-password GETs (s)", 2),
        Metric("rss_auth", "peak RSS during those (MB)", 0),
        Metric("rss_idle", "RSS after start (MB)", 0),
    ]


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(values: dict[str, float], other: str) -> str:
    mine, theirs = values.get("davbox"), values.get(other)
    if mine is None or not theirs:
        return "-"
    return f"{mine / theirs:.2f}x"


def table(results: Results, rows: Sequence[Metric]) -> str:
    header = ["measurement", *SERVERS, "davbox/wsgidav", "davbox/apache", "target", "met"]
    lines = [header]
    for metric in rows:
        values = results.values.get(metric.key, {})
        met = metric.target.met(values) if metric.target else None
        lines.append(
            [
                metric.label,
                *(_cell(values.get(name), metric.digits) for name in SERVERS),
                _ratio(values, "wsgidav"),
                _ratio(values, "apache"),
                metric.target.text if metric.target else "",
                "" if metric.target is None else {True: "yes", False: "NO", None: "?"}[met],
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = []
    for number, row in enumerate(lines):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def details(results: Results) -> str:
    out = []
    for server in SERVERS:
        for line in results.details.get(server, []):
            out.append(f"{server:8s} {line}")
    return "\n".join(out)
