"""The README's two set-up commands work as written.

The serve command is run verbatim in a copy of the repository with a new
virtual environment; CI runs the test command verbatim (checked here too).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.davserver import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from readme_command import readme_command  # noqa: E402


def test_ci_runs_the_readme_test_command():
    assert "scripts/readme_command.py test" in (ROOT / ".ci" / "run").read_text()
    command = readme_command("test")
    assert "python3 -m venv" in command and "scripts/test.sh" in command


def _copy_of_repository(target: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.slow
def test_readme_serve_command_starts_a_working_server(tmp_path):
    clone = tmp_path / "clone"
    _copy_of_repository(clone)
    port = free_port()
    config = tmp_path / "port.yaml"
    config.write_text(f'server:\n  listen: "127.0.0.1:{port}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "DAVBOX_DATA")}
    env["DAVBOX_CONFIG"] = str(config)  # only to pick a free port; the command is unchanged
    command = readme_command("serve")
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=clone,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "WebDAV at" in line:
                break
        output = "".join(lines)
        assert f"WebDAV at http://127.0.0.1:{port}/dav/" in output, output[-3000:]
        password = re.search(r"created account 'admin' with password (\S+)", output).group(1)
        app_password = re.search(r"log in as 'admin' with app password (\S+)", output).group(1)
        assert (clone / "var" / "davbox.db").exists()
        # Two-factor login is on by default: WebDAV takes the printed app password only.
        url = f"http://127.0.0.1:{port}/dav/inbox/"
        refused = requests.request(
            "PROPFIND", url, headers={"Depth": "0"}, auth=("admin", password), timeout=10
        )
        assert refused.status_code == 401
        assert "app password" in refused.text
        response = requests.request(
            "PROPFIND", url, headers={"Depth": "0"}, auth=("admin", app_password), timeout=10
        )
        assert response.status_code == 207
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
