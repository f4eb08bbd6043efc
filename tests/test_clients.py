"""Real WebDAV clients against a real server: litmus (the WebDAV test suite) and cadaver."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from davbox import app_passwords
from tests.davserver import PASSWORD

pytestmark = pytest.mark.clients

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed (scripts/test.sh installs it)")
    return path


def run_litmus(server, mailbox: str, cwd: Path) -> tuple[int, int, int, str]:
    """(tests run, passed, failed, output) of litmus as a member of ``mailbox``."""
    litmus = _require("litmus")
    user = f"{mailbox}-member"
    server.add_user(user)
    server.mailbox(mailbox, **{user: "member"})
    password = app_passwords.create(server.database(), user, "litmus")
    result = subprocess.run(
        [litmus, "-k", server.dav(f"{mailbox}/"), user, password],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    # litmus -k exits 0 even when tests fail: the summary lines are the verdict.
    summaries = {m[0]: (int(m[1]), int(m[2]), int(m[3])) for m in SUMMARY.findall(result.stdout)}
    assert set(summaries) == {"basic", "copymove", "props", "locks", "http"}, result.stdout
    run = sum(s[0] for s in summaries.values())
    passed = sum(s[1] for s in summaries.values())
    failed = sum(s[2] for s in summaries.values())
    return run, passed, failed, result.stdout


def test_litmus_passes_all_104_tests_as_a_member(shared_server, tmp_path):
    run, passed, failed, out = run_litmus(shared_server, "litmus", tmp_path)
    assert (run, passed, failed) == (104, 104, 0), out


def test_litmus_passes_with_the_example_policies_active(make_server, tmp_path):
    server = make_server("policies", config=ROOT / "config.example.yaml")
    run, passed, failed, out = run_litmus(server, "litmus", tmp_path)
    assert (run, passed, failed) == (104, 104, 0), out


def test_cadaver_session(shared_server, tmp_path):
    cadaver = _require("cadaver")
    shared_server.add_user("cad")
    shared_server.mailbox("cadbox", cad="member")
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login cad password {PASSWORD}\n")
    netrc.chmod(0o600)
    work = tmp_path / "work"
    work.mkdir()
    (work / "local.txt").write_bytes(b"hello from cadaver\n" * 100)
    script = "\n".join(
        [
            "put local.txt a.txt",
            "get a.txt back.txt",
            "mkcol sub",
            "move a.txt sub/a.txt",
            "copy sub/a.txt b.txt",
            "lock b.txt",
            "unlock b.txt",
            "propset b.txt colour blue",
            "propget b.txt colour",
            "delete b.txt",
            "ls",
            "get b.txt gone.txt",
            "quit",
            "",
        ]
    )
    result = subprocess.run(
        [cadaver, shared_server.dav("cadbox/")],
        input=script,
        capture_output=True,
        text=True,
        cwd=work,
        timeout=60,
        env={**os.environ, "HOME": str(home)},
    )
    out = result.stdout
    # cadaver exits 0 even when a command fails: check what it printed.
    expected = [
        "Uploading local.txt to `/dav/cadbox/a.txt': [.. succeeded.",
        "Downloading `/dav/cadbox/a.txt' to back.txt: [.. succeeded.",
        "Creating `sub': succeeded.",
        "Moving `/dav/cadbox/a.txt' to `/dav/cadbox/sub/a.txt':  succeeded.",
        "Copying `/dav/cadbox/sub/a.txt' to `/dav/cadbox/b.txt':  succeeded.",
        "Locking `b.txt': succeeded.",
        "Unlocking `b.txt': succeeded.",
        "Setting property on `b.txt': succeeded.",
        "Value of colour is: blue",
        "Deleting `b.txt': succeeded.",
        "Listing collection `/dav/cadbox/': succeeded.",
    ]
    for line in expected:
        assert line in out, f"missing {line!r} in:\n{out}"
    assert re.search(r"Coll:\s+sub\s", out), out
    assert "Downloading `/dav/cadbox/b.txt' to gone.txt: [.. failed:\n404 Not Found" in out
    assert (work / "back.txt").read_bytes() == (work / "local.txt").read_bytes()
    # cadaver opens the local file before it asks; nothing may have been written to it.
    assert not Path(work / "gone.txt").exists() or (work / "gone.txt").read_bytes() == b""
