"""Benchmark davbox against plain WsgiDAV and Apache mod_dav on loopback; print a table.

Usage::

    python bench/run.py                 # 1 GiB transfers, 10,000-file PROPFIND (~3 min)
    python bench/run.py --quick         # 256 MiB, 2,000 files (~1 min)
    python bench/run.py --only davbox,wsgidav
    python bench/run.py --encryption    # also davbox with encryption at rest (davbox-enc)
    python bench/run.py --encryption --only davbox --transfers-only   # just GET/PUT, both

The servers run side by side in a fresh temporary folder, listening on
127.0.0.1 only, and are measured in interleaved rounds (see suite.py). They
are stopped, and the folder removed, at the end, also on Ctrl+C or SIGTERM.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import fixtures
import report
import suite
from servers import (
    Apache,
    BenchServer,
    Credentials,
    Davbox,
    EncryptedDavbox,
    PlainWsgidav,
    ServerError,
)

MiB = 1024 * 1024
RESULTS = Path(__file__).resolve().parent / "results"  # ignored by git
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PACKAGES = {"curl": "curl", "wrk": "wrk", "apache2": "apache2", "htpasswd": "apache2-utils"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark davbox, plain WsgiDAV and Apache mod_dav on 127.0.0.1."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: 256 MiB transfers, 2,000 files, fewer and shorter runs",
    )
    parser.add_argument(
        "--only",
        default=",".join(report.DEFAULT_SERVERS),
        help=f"comma-separated servers to run, of {', '.join(report.SERVERS)}"
        f" (default: {','.join(report.DEFAULT_SERVERS)})",
    )
    parser.add_argument(
        "--encryption",
        action="store_true",
        help="also run davbox-enc (davbox with encryption at rest) and davbox, and compare"
        " the two (target: GET and PUT of the large file >= 0.6x davbox)",
    )
    parser.add_argument(
        "--transfers-only",
        action="store_true",
        help="measure only the large GET and PUT (no wrk, PROPFIND or password bursts)",
    )
    parser.add_argument("--size-mib", type=int, help="size of the large file (default 1024)")
    parser.add_argument("--files", type=int, help="files in the PROPFIND folder (default 10000)")
    parser.add_argument(
        "--runs", type=int, help="rounds of transfers and of PROPFINDs (default 5 and 7)"
    )
    parser.add_argument("--wrk-seconds", type=int, help="length of one wrk round (default 5)")
    parser.add_argument(
        "--threads",
        type=int,
        default=16,
        help="worker threads of every server (default 16, davbox's default)",
    )
    parser.add_argument("--tmp", type=Path, help="parent folder for the temporary data")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (server logs, configs) for inspection",
    )
    parser.add_argument(
        "--save", action="store_true", help="also write the report to bench/results/"
    )
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.servers) - set(report.SERVERS))
    if unknown or not args.servers:
        parser.error(
            f"--only: unknown server(s) {', '.join(unknown)}; choose from "
            + ", ".join(report.SERVERS)
        )
    if args.encryption:
        args.servers += [report.PLAIN, report.ENCRYPTED]
    args.servers = [name for name in report.SERVERS if name in args.servers]
    limits = {"size_mib": 65_536, "files": 100_000, "runs": 100, "wrk_seconds": 600}
    for name, limit in limits.items():
        value = getattr(args, name)
        if value is not None and not 1 <= value <= limit:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and {limit}")
    if not 1 <= args.threads <= 1024:
        parser.error("--threads must be between 1 and 1024")
    return args


def make_plan(args: argparse.Namespace) -> suite.Plan:
    quick = args.quick
    return suite.Plan(
        big_size=(args.size_mib or (256 if quick else 1024)) * MiB,
        # --transfers-only lists no folder: no need to make thousands of files
        files=args.files or (10 if args.transfers_only else 2000 if quick else 10_000),
        transfer_runs=args.runs or (3 if quick else 5),
        propfind_runs=args.runs or (3 if quick else 7),
        wrk_rounds=args.runs or (2 if quick else 3),
        wrk_seconds=args.wrk_seconds or (3 if quick else 5),
        wrk_warmup=1 if quick else 2,
        transfers_only=args.transfers_only,
    )


def find_programs(servers: list[str]) -> dict[str, str]:
    """Paths of the programs needed; exit with an install hint if any is missing."""
    wanted = ["curl", "wrk"] + (["apache2", "htpasswd"] if "apache" in servers else [])
    found = {name: shutil.which(name, path=SBIN_PATH) for name in wanted}
    missing = [name for name, path in found.items() if path is None]
    problems = []
    if missing:
        packages = " ".join(sorted({PACKAGES[name] for name in missing}))
        problems.append(
            f"missing program(s): {', '.join(missing)}; "
            f"install them with: apt-get install -y {packages}"
        )
    davboxes = {report.PLAIN, report.ENCRYPTED} & set(servers)
    if davboxes and importlib.util.find_spec("davbox") is None:
        problems.append("davbox is not importable; install it with: pip install -e .")
    if importlib.util.find_spec("wsgidav") is None and "wsgidav" in servers:
        problems.append("wsgidav is not importable; install davbox (it depends on wsgidav 4.4)")
    if problems:
        fail("\n".join(problems))
    return {name: path for name, path in found.items() if path}


def fail(message: str) -> NoReturn:
    print(f"bench: {message}", file=sys.stderr)
    sys.exit(2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_server(
    name: str, root: Path, threads: int, creds: Credentials, programs: dict[str, str]
) -> BenchServer:
    work = root / name
    if name == "davbox":
        return Davbox(work, free_port(), threads, creds)
    if name == "davbox-enc":
        return EncryptedDavbox(work, free_port(), threads, creds)
    if name == "wsgidav":
        return PlainWsgidav(work, free_port(), threads, creds)
    return Apache(
        work, free_port(), threads, creds, binary=programs["apache2"], htpasswd=programs["htpasswd"]
    )


def start(server: BenchServer, plan: suite.Plan, big_source: Path) -> bool:
    """Set up, fill and start one server; False (after saying why) if that fails."""
    print(f"bench: {server.name}: setting up ({plan.files:,} files)", flush=True)
    try:
        server.setup()
        fixtures.populate(server.storage, big_source, plan.files)
        server.start()
    except (ServerError, OSError) as exc:
        print(f"bench: {server.name} FAILED to start: {exc}\n{server.log_tail()}", flush=True)
        return False
    print(f"bench: {server.name}: listening at {server.base_url} (pid {server.pid})", flush=True)
    return True


def size_label(size: int) -> str:
    return f"{size // 1024**3} GiB" if size % 1024**3 == 0 else f"{size // MiB} MiB"


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def _terminate(signum: int, _frame: Any) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    programs = find_programs(args.servers)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    creds = Credentials("bench", secrets.token_hex(12))
    results = report.Results()
    started = time.monotonic()
    load_before = load_text()
    with contextlib.ExitStack() as cleanup:
        root = Path(tempfile.mkdtemp(prefix="davbox-bench-", dir=args.tmp))
        if args.keep:
            print(f"bench: keeping {root}")
        else:
            cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        print(f"bench: {load_before}")
        print(f"bench: writing the {size_label(plan.big_size)} test file in {root}", flush=True)
        big_source = root / fixtures.BIG_NAME
        fixtures.write_big_file(big_source, plan.big_size)
        running = []
        for name in args.servers:
            server = make_server(name, root, args.threads, creds, programs)
            cleanup.callback(server.stop)  # runs last-in first-out; stop() is idempotent
            if start(server, plan, big_source):
                running.append(server)
            else:
                results.note(name, "FAILED to start (see above)")
        suite.Suite(running, plan, big_source, root).run(results)
        for server in running:
            server.stop()
    elapsed = time.monotonic() - started
    label = size_label(plan.big_size)
    if plan.transfers_only:
        steps = f"{label} transfers x{plan.transfer_runs} only"
    else:
        steps = (
            f"{label} transfers x{plan.transfer_runs}, "
            f"{plan.files:,}-file PROPFIND x{plan.propfind_runs}, wrk {plan.connections} "
            f"connections {plan.wrk_rounds}x{plan.wrk_seconds} s"
        )
    main_ratios = [
        (report.PLAIN, other)
        for other in ("wsgidav", "apache")
        if report.PLAIN in args.servers and other in args.servers
    ]
    sections = [
        f"davbox benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}: {steps}, "
        f"{args.threads} server threads; medians (RSS: maxima); {elapsed:.0f} s",
        f"{load_before} before, {load_text()} after",
        "",
        report.table(results, report.metrics(label, plan.files), args.servers, main_ratios),
    ]
    if {report.PLAIN, report.ENCRYPTED} <= set(args.servers):
        sections += [
            "",
            "encryption at rest: davbox-enc (every file AES-256-GCM sealed) against davbox",
            report.table(
                results,
                report.encryption_metrics(label, plan.files),
                [report.PLAIN, report.ENCRYPTED],
                [(report.ENCRYPTED, report.PLAIN)],
            ),
        ]
    sections += ["", "all rounds:", report.details(results)]
    text = "\n".join(sections)
    print("\n" + text)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        saved = RESULTS / time.strftime("%Y%m%d-%H%M%S.txt")
        saved.write_text(text + "\n")
        print(f"\nbench: saved to {saved}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench: interrupted; servers stopped and temporary files removed", file=sys.stderr)
        sys.exit(130)
