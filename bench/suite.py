"""The measurements, interleaved over all running servers; results go into a ``report.Results``.

All servers run at once (idle while another is measured) and every
measurement is taken in rounds: round *r* measures each server once, in an
order rotated by *r*. On a shared or noisy machine a slow minute then hurts
all servers alike instead of whichever happened to run in it. A figure is the
median over the rounds (peak RSS: the maximum).

Steps, in order: RSS after start; large GET and large PUT (each sampling the
server's peak RSS and CPU time); small GETs under wrk load (after one warm-up run per
server); PROPFIND Depth 1 on the big folder, allprop and five named
properties (after one warm-up request that also checks the entry count).
Last, bursts of ``connections`` parallel GETs with a wrong password (the
cost of password verification that no cache can absorb: time and peak RSS).
Uploaded files are removed from disk and ``sync`` is called after each PUT,
outside the timed part, so dirty pages of one upload do not slow the next one.
``Plan.transfers_only`` stops after the large GET and PUT.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import clients
from fixtures import BIG_NAME, MANY_FOLDER, SMALL_NAME
from procs import PeakRss, tree_cpu_seconds, tree_rss
from report import Results
from servers import BenchServer, Credentials, ServerError

MB = 1_000_000
GB = 1_000_000_000
PEAK_KEYS = ("rss_get", "rss_put", "rss_propfind", "rss_auth")


@dataclass(frozen=True)
class Plan:
    big_size: int
    files: int
    transfer_runs: int
    propfind_runs: int
    wrk_rounds: int
    wrk_seconds: int
    wrk_warmup: int
    connections: int = 16
    wrk_threads: int = 2
    transfers_only: bool = False


Measure = Callable[[BenchServer], dict[str, float]]


class Suite:
    def __init__(self, servers: list[BenchServer], plan: Plan, big_source: Path, scratch: Path):
        self.servers = list(servers)
        self.plan = plan
        self.big_source = big_source
        self.scratch = scratch
        self.samples: dict[str, dict[str, list[float]]] = {s.name: {} for s in servers}
        self.failed: dict[str, str] = {}
        self.timeout = max(120.0, plan.big_size / (5 * MB))

    # --- driving ----------------------------------------------------------------

    def run(self, results: Results) -> None:
        plan = self.plan
        for server in self.alive():
            self._guard(server, self.check_auth)
            self._add(server, {"rss_idle": tree_rss(server.pid) / MB})
        self._rounds(f"GET {BIG_NAME}", plan.transfer_runs, self.get_big)
        self._rounds("PUT", plan.transfer_runs, self.put_big)
        if plan.transfers_only:
            self._summarise(results)
            return
        self._rounds(f"wrk warm-up {plan.wrk_warmup} s", 1, self.small_get_warmup)
        self._rounds(
            f"wrk {plan.connections} connections, {plan.wrk_seconds} s",
            plan.wrk_rounds,
            self.small_get,
        )
        for key, body in (("propfind_all", None), ("propfind_props", clients.PROPS_BODY)):
            self._rounds(f"{key} check", 1, self.propfind_check(key, body))
            self._rounds(key, plan.propfind_runs, self.propfind(key, body))
        self._rounds(
            f"{plan.connections} parallel wrong-password GETs", plan.transfer_runs, self.auth_burst
        )
        self._summarise(results)

    def alive(self) -> list[BenchServer]:
        return [s for s in self.servers if s.name not in self.failed]

    def _rounds(self, label: str, rounds: int, measure: Measure) -> None:
        print(f"bench: {label} (x{rounds})", flush=True)
        for index in range(rounds):
            order = self.alive()
            shift = index % len(order) if order else 0
            for server in order[shift:] + order[:shift]:
                self._guard(server, measure)

    def _guard(self, server: BenchServer, measure: Measure) -> None:
        if server.name in self.failed:
            return
        try:
            self._add(server, measure(server))
        except (clients.ClientError, ServerError, OSError) as exc:
            self.failed[server.name] = str(exc)
            print(f"bench: {server.name} FAILED: {exc}\n{server.log_tail()}", flush=True)

    def _add(self, server: BenchServer, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.samples[server.name].setdefault(key, []).append(value)

    def _summarise(self, results: Results) -> None:
        for name, by_key in self.samples.items():
            if name in self.failed:
                results.note(name, f"FAILED: {self.failed[name]}")
                continue
            for key, values in by_key.items():
                if key in PEAK_KEYS:
                    results.put(name, key, max(values))
                else:
                    results.put(name, key, statistics.median(values))
                results.note(name, f"{key}: " + ", ".join(f"{v:,.3f}" for v in values))

    # --- the measurements ---------------------------------------------------------

    def check_auth(self, server: BenchServer) -> dict[str, float]:
        server.check_auth_required()
        return {}

    def get_big(self, server: BenchServer) -> dict[str, float]:
        cpu = tree_cpu_seconds(server.pid)
        with PeakRss(server.pid) as peak:
            seconds = clients.get_file(
                server.base_url + BIG_NAME, server.creds, self.plan.big_size, self.timeout
            )
        cpu = tree_cpu_seconds(server.pid) - cpu
        return {
            "get_big": self.plan.big_size / seconds / MB,
            "get_big_cpu": cpu / (self.plan.big_size / GB),
            "rss_get": peak.bytes / MB,
        }

    def put_big(self, server: BenchServer) -> dict[str, float]:
        target = "upload.bin"
        cpu = tree_cpu_seconds(server.pid)
        with PeakRss(server.pid) as peak:
            seconds = clients.put_file(
                server.base_url + target, self.big_source, server.creds, self.timeout
            )
        cpu = tree_cpu_seconds(server.pid) - cpu
        uploaded = server.storage / target
        try:
            server.verify_stored(uploaded, self.plan.big_size)
        finally:
            uploaded.unlink(missing_ok=True)
            os.sync()
        return {
            "put_big": self.plan.big_size / seconds / MB,
            "put_big_cpu": cpu / (self.plan.big_size / GB),
            "rss_put": peak.bytes / MB,
        }

    def _wrk(self, server: BenchServer, seconds: int) -> clients.WrkResult:
        return clients.wrk(
            server.base_url + SMALL_NAME,
            server.creds,
            connections=self.plan.connections,
            threads=self.plan.wrk_threads,
            seconds=seconds,
        )

    def small_get_warmup(self, server: BenchServer) -> dict[str, float]:
        self._wrk(server, self.plan.wrk_warmup)
        return {}

    def small_get(self, server: BenchServer) -> dict[str, float]:
        cpu = tree_cpu_seconds(server.pid)
        load = self._wrk(server, self.plan.wrk_seconds)
        cpu = tree_cpu_seconds(server.pid) - cpu
        return {
            "small_get": load.requests_per_second,
            "small_get_cpu": cpu / max(load.requests, 1) * 1e6,
        }

    def _folder(self, server: BenchServer) -> str:
        return server.base_url + MANY_FOLDER + "/"

    def propfind_check(self, key: str, body: str | None) -> Measure:
        def check(server: BenchServer) -> dict[str, float]:
            reply = self.scratch / f"{server.name}-{key}.xml"
            clients.propfind(self._folder(server), server.creds, body, reply, self.timeout)
            found = clients.count_responses(reply)
            size = reply.stat().st_size
            reply.unlink()
            if found != self.plan.files + 1:
                raise clients.ClientError(
                    f"PROPFIND listed {found} entries, expected {self.plan.files + 1}"
                )
            return {f"{key}_reply_mb": size / MB}

        return check

    def propfind(self, key: str, body: str | None) -> Measure:
        def measure(server: BenchServer) -> dict[str, float]:
            reply = self.scratch / f"{server.name}-{key}.xml"
            url = self._folder(server)
            with PeakRss(server.pid) as peak:
                seconds = clients.propfind(url, server.creds, body, reply, self.timeout)
            reply.unlink()
            return {key: seconds, "rss_propfind": peak.bytes / MB}

        return measure

    def auth_burst(self, server: BenchServer) -> dict[str, float]:
        wrong = Credentials(server.creds.user, server.creds.password + "-wrong")
        started = time.monotonic()
        with PeakRss(server.pid) as peak:
            statuses = clients.parallel_gets(
                server.base_url + SMALL_NAME, wrong, self.plan.connections, self.timeout
            )
        seconds = time.monotonic() - started
        # 429: the server throttles repeated failures (davbox does, after 10 per account).
        if not set(statuses) <= {401, 429}:
            raise clients.ClientError(f"wrong-password GETs answered {sorted(set(statuses))}")
        return {"auth_burst": seconds, "rss_auth": peak.bytes / MB}
