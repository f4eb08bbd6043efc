"""Policy edits apply without a restart; broken edits keep the rules in force; explain."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.davserver import PASSWORD

ROOT = Path(__file__).resolve().parent.parent
AUTH = ("rel", PASSWORD)


def rules(limit: str, key: str = "max_file_size") -> str:
    return (
        "auth:\n  two_factor_for: []\n"
        f"policies:\n  - name: r-size\n    type: size\n    mailboxes: [r]\n    {key}: {limit}\n"
    )


def put_status(server, size: int) -> int:
    return requests.put(server.dav("r/f.bin"), data=b"x" * size, auth=AUTH, timeout=30).status_code


def test_edits_apply_within_two_seconds_and_broken_edits_keep_the_old_rules(make_server, tmp_path):
    config = tmp_path / "davbox.yaml"
    config.write_text(rules("1MB"))
    server = make_server("reload", config=config)
    server.add_user("rel")
    server.mailbox("r", rel="member")
    assert put_status(server, 2_000_000) == 413

    config.write_text(rules("3MB"))
    edited = time.monotonic()
    while put_status(server, 2_000_000) != 201:
        assert time.monotonic() - edited < 2.0, "the edit did not apply within 2 seconds"
        time.sleep(0.1)

    config.write_text(rules("5MB", key="max_fil_size"))
    time.sleep(2.5)
    assert put_status(server, 4_000_000) == 413, "the broken edit must not apply"
    assert put_status(server, 2_000_000) in (201, 204), "the last good rules stay in force"
    log = server.log_text(until="keeping the current policies")
    assert (
        f"policy reload refused: {config}:7: policies[0].max_fil_size: unknown key 'max_fil_size'"
        " (did you mean 'max_file_size'?)" in log
    )
    assert "keeping the current policies" in log

    config.write_text(rules("5MB"))
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 2.0
    while put_status(server, 4_000_000) not in (201, 204):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "policies reloaded from" in server.log_text(until="policies reloaded from")

    # Every reload is in the audit trail: applied (with its rule count) or refused.
    def reloads() -> list[tuple[str, str, int, int]]:
        out = server.cli("audit", "query", "--event", "config-reload", "--format", "json")
        return [
            (r["outcome"], r["trigger"], r["rules"], r["problems"]) for r in json.loads(out.stdout)
        ]

    deadline = time.monotonic() + 5
    while not any(trigger == "signal" for _, trigger, _, _ in reloads()):
        assert time.monotonic() < deadline, reloads()
        time.sleep(0.2)
    found = reloads()
    assert found[0] == ("applied", "file", 1, 0), found
    assert found[1][:3] == ("refused", "file", 0) and found[1][3] >= 1, found
    assert all(outcome == "applied" for outcome, *_ in found[2:]), found
    record = json.loads(
        server.cli("audit", "query", "--event", "config-reload", "--format", "json").stdout
    )[0]
    assert record["actor"] == "system" and record["path"] == str(config)


def test_policy_check_and_explain(tmp_path):
    def davbox(*args, input=None):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "davbox",
                "--data-dir",
                str(tmp_path / "d"),
                "--config",
                str(ROOT / "config.example.yaml"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            input=input,
        )

    assert davbox("user", "add", "alice", "--password-stdin", input=PASSWORD + "\n").returncode == 0
    assert davbox("mailbox", "create", "extern").returncode == 0
    assert davbox("mailbox", "grant", "extern", "alice", "member").returncode == 0
    check = davbox("policy", "check")
    assert check.returncode == 0 and "valid, 6 policies" in check.stdout
    explain = davbox(
        "policy",
        "explain",
        "--user",
        "alice",
        "--path",
        "/extern/x.pdf",
        "--op",
        "write",
        "--size",
        "300MB",
    )
    assert explain.returncode == 0, explain.stderr
    out = explain.stdout
    assert "roles in 'extern': member" in out
    assert (
        "  bestandenpostbus-size: refuses (413): files larger than 200 MB are not accepted in"
        " mailbox 'extern' (this file has 300 MB)" in out
    )
    assert "  securetransfer-types: does not apply" in out
    assert out.strip().endswith(
        "decision: refused (413): files larger than 200 MB are not accepted in mailbox 'extern'"
        " (this file has 300 MB)"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - type: size\n    max_file_size: big\n")
    result = davbox("policy", "check", str(bad))
    assert result.returncode == 2
    assert f"{bad}:3: policies[0].max_file_size: could not parse value and unit" in result.stderr
