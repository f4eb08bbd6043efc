"""The results tables: one row per measurement, one column per server, ratios and targets.

In the main table a ratio is always "davbox divided by the other server" in
the unit of the row, so for rates (MB/s, req/s) higher is better and for
times and memory lower is better; the target column says which way each one
must go. When ``davbox-enc`` (davbox with encryption at rest) ran, a second
table compares it with davbox: "davbox-enc divided by davbox".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SERVERS = ("davbox", "davbox-enc", "wsgidav", "apache")
DEFAULT_SERVERS = ("davbox", "wsgidav", "apache")
ENCRYPTED, PLAIN = "davbox-enc", "davbox"


@dataclass(frozen=True)
class Target:
    """``subject / against`` must be ``>= ratio`` (or ``<=`` when ``at_most``); or absolute."""

    against: str | None  # a server name, or None for an absolute limit on the subject's value
    limit: float
    at_most: bool
    text: str
    subject: str = "davbox"

    def met(self, values: dict[str, float]) -> bool | None:
        mine = values.get(self.subject)
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
        Metric("get_big_cpu", "  server CPU per GB sent (s)", 2),
        Metric("put_big", f"PUT {size_label} (MB/s)", 0),
        Metric("put_big_cpu", "  server CPU per GB received (s)", 2),
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


def encryption_metrics(size_label: str, files: int) -> list[Metric]:
    """The rows of the encryption table: davbox-enc against davbox."""

    def ratio(limit: float) -> Target:
        return Target(PLAIN, limit, False, f">= {limit}x davbox", subject=ENCRYPTED)

    def memory(limit: float) -> Target:
        return Target(None, limit, True, f"< {limit:.0f} MB", subject=ENCRYPTED)

    rows = {metric.key: metric for metric in metrics(size_label, files)}
    targets = {
        "get_big": ratio(0.6),
        "put_big": ratio(0.6),
        "rss_get": memory(150),
        "rss_put": memory(150),
    }
    keys = [
        "get_big",
        "get_big_cpu",
        "put_big",
        "put_big_cpu",
        "rss_get",
        "rss_put",
        "small_get",
        "small_get_cpu",
        "propfind_all",
        "propfind_props",
        "rss_idle",
    ]
    return [
        Metric(rows[key].key, rows[key].label, rows[key].digits, targets.get(key)) for key in keys
    ]


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(values: dict[str, float], other: str, mine: str = "davbox") -> str:
    top, theirs = values.get(mine), values.get(other)
    if top is None or not theirs:
        return "-"
    return f"{top / theirs:.2f}x"


def table(
    results: Results,
    rows: Sequence[Metric],
    servers: Sequence[str] = DEFAULT_SERVERS,
    ratios: Sequence[tuple[str, str]] = (("davbox", "wsgidav"), ("davbox", "apache")),
) -> str:
    """Rows of ``servers``' figures; a column per (mine, other) in ``ratios``: mine / other."""
    header = ["measurement", *servers, *(f"{a}/{b}" for a, b in ratios), "target", "met"]
    lines = [header]
    for metric in rows:
        values = results.values.get(metric.key, {})
        if not any(name in values for name in servers):
            continue  # not measured in this run (--transfers-only)
        met = metric.target.met(values) if metric.target else None
        lines.append(
            [
                metric.label,
                *(_cell(values.get(name), metric.digits) for name in servers),
                *(_ratio(values, other, mine) for mine, other in ratios),
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
    width = max(len(server) for server in SERVERS)
    for server in SERVERS:
        for line in results.details.get(server, []):
            out.append(f"{server:{width}s} {line}")
    return "\n".join(out)
