"""The clients, identical for every server: curl for transfers and PROPFIND, wrk for load.

Every function checks the HTTP status and raises ``ClientError`` on anything
unexpected, so a failing server never yields a fast-looking number. Times are
curl's own ``time_total`` (from connect to the last byte, without process
start-up). Credentials reach curl through a config on standard input and wrk
through a header, never through files.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from servers import Credentials

PROPS_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<D:propfind xmlns:D="DAV:"><D:prop>'
    "<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/><D:creationdate/>"
    "</D:prop></D:propfind>\n"
)
_RESPONSE_END = re.compile(rb"</(?:[A-Za-z0-9_]+:)?response>")


class ClientError(RuntimeError):
    """A request failed or answered something unexpected."""


@dataclass(frozen=True)
class Timed:
    status: int
    size: int
    seconds: float


def _curl_command(args: list[str], timeout: float) -> list[str]:
    return [
        "curl",
        "--silent",
        "--show-error",
        "--config",
        "-",
        "--max-time",
        str(int(timeout)),
        "--write-out",
        "%{http_code} %{size_download} %{size_upload} %{time_total}",
        *args,
    ]


def _curl_config(creds: Credentials) -> str:
    return f'user = "{creds.user}:{creds.password}"\n'


def _curl(args: list[str], creds: Credentials, timeout: float) -> Timed:
    config = _curl_config(creds)
    command = _curl_command(args, timeout)
    try:
        result = subprocess.run(
            command, input=config, capture_output=True, text=True, timeout=timeout + 10
        )
    except subprocess.TimeoutExpired as exc:
        raise ClientError(f"curl did not finish within {timeout:.0f} s") from exc
    if result.returncode != 0:
        raise ClientError(f"curl failed ({result.returncode}): {result.stderr.strip()}")
    code, down, up, total = result.stdout.split()
    return Timed(int(code), max(int(down), int(up)), float(total))


def _expect(what: str, timed: Timed, statuses: tuple[int, ...]) -> Timed:
    if timed.status not in statuses:
        raise ClientError(f"{what}: HTTP {timed.status}, expected {statuses}")
    return timed


def get_file(url: str, creds: Credentials, size: int, timeout: float) -> float:
    """GET ``url`` to /dev/null; seconds taken."""
    timed = _expect("GET", _curl(["--output", "/dev/null", url], creds, timeout), (200,))
    if timed.size != size:
        raise ClientError(f"GET {url}: received {timed.size} of {size} bytes")
    return timed.seconds


def put_file(url: str, source: Path, creds: Credentials, timeout: float) -> float:
    """PUT ``source`` to ``url`` (Content-Length known, no Expect: 100-continue); seconds."""
    args = ["--upload-file", str(source), "--header", "Expect:", "--output", "/dev/null", url]
    timed = _expect("PUT", _curl(args, creds, timeout), (200, 201, 204))
    if timed.size != source.stat().st_size:
        raise ClientError(f"PUT {url}: sent {timed.size} of {source.stat().st_size} bytes")
    return timed.seconds


def propfind(url: str, creds: Credentials, body: str | None, out: Path, timeout: float) -> float:
    """PROPFIND Depth 1 (``body`` None: no body, i.e. allprop); the reply goes to ``out``."""
    args = ["--request", "PROPFIND", "--header", "Depth: 1", "--output", str(out)]
    if body is not None:
        args += ["--header", "Content-Type: application/xml", "--data-binary", body]
    return _expect("PROPFIND", _curl([*args, url], creds, timeout), (207,)).seconds


def count_responses(path: Path) -> int:
    """How many ``<response>`` elements a multistatus reply holds."""
    return len(_RESPONSE_END.findall(path.read_bytes()))


def parallel_gets(url: str, creds: Credentials, count: int, timeout: float) -> list[int]:
    """``count`` GETs of ``url`` at once, one curl each; their statuses."""
    command = _curl_command(["--output", "/dev/null", url], timeout)
    procs = []
    try:
        for _ in range(count):
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            if proc.stdin is not None:
                proc.stdin.write(_curl_config(creds))
                proc.stdin.close()
        statuses = []
        for proc in procs:
            proc.wait(timeout=timeout + 10)  # its few bytes of output fit in the pipe
            out = proc.stdout.read() if proc.stdout else ""
            if proc.returncode != 0:
                err = proc.stderr.read() if proc.stderr else ""
                raise ClientError(f"curl failed ({proc.returncode}): {err.strip()}")
            statuses.append(int(out.split()[0]))
        return statuses
    except subprocess.TimeoutExpired as exc:
        raise ClientError(f"parallel GETs did not finish within {timeout:.0f} s") from exc
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    requests: int


def wrk(url: str, creds: Credentials, *, connections: int, threads: int, seconds: int) -> WrkResult:
    command = [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        "--header",
        f"Authorization: {creds.header}",
        url,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired as exc:
        raise ClientError("wrk did not finish in time") from exc
    if result.returncode != 0:
        raise ClientError(f"wrk failed ({result.returncode}): {result.stderr.strip()}")
    text = result.stdout
    if "Non-2xx or 3xx responses" in text:
        raise ClientError(f"wrk: the server answered errors:\n{text}")
    errors = re.search(r"Socket errors: connect (\d+), read \d+, write \d+, timeout (\d+)", text)
    if errors and (int(errors.group(1)) or int(errors.group(2))):
        raise ClientError(f"wrk: connections failed or timed out:\n{text}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if not rate or not total:
        raise ClientError(f"wrk: cannot read its output:\n{text}")
    return WrkResult(float(rate.group(1)), int(total.group(1)))
