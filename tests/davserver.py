"""A real davbox server for tests: ``davbox serve`` in a subprocess on a free loopback port.

``DavboxServer`` starts the installed ``davbox`` command with its own data
directory, reads the URL and the one-time admin password and app password from
what it prints, and offers helpers to run admin commands and make accounts.
Tests talk to it with real HTTP clients (requests, litmus, cadaver).

Two-factor login is on for every account by default; most tests are about
other things and log in with account passwords, so servers here run with
``auth.two_factor_for: []`` unless the test's own config sets that key
(tests/test_twofactor.py and the README test run with the default).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from davbox import accounts
from davbox.db import Database

DAVBOX = [sys.executable, "-m", "davbox"]
PASSWORD = "correct-horse-battery-staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DavboxServer:
    def __init__(
        self,
        data_dir: Path,
        *,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        preexec_fn: Any = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self.port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[str] | None = None
        self.admin_password: str | None = None
        self.admin_app_password: str | None = None
        self.output: list[str] = []
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self._db: Database | None = None

    url_scheme = "http"

    @property
    def url(self) -> str:
        return f"{self.url_scheme}://127.0.0.1:{self.port}"

    def dav(self, path: str = "") -> str:
        return f"{self.url}/dav/{path.lstrip('/')}"

    def base_args(self) -> list[str]:
        return [*DAVBOX, "--data-dir", str(self.data_dir), "--config", str(self._config_file())]

    def _config_file(self) -> Path:
        """The test's config, or a copy with two-factor login off if it does not say."""
        text = self.config.read_text() if self.config else ""
        if "two_factor_for" in text and self.config is not None:
            return self.config
        data = yaml.safe_load(text) or {}
        data.setdefault("auth", {})["two_factor_for"] = []
        path = self.data_dir.parent / f"{self.data_dir.name}-config.yaml"
        text = yaml.safe_dump(data)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)  # only on a change: the server reloads a touched file
        return path

    def log_text(self, until: str | None = None, timeout: float = 10) -> str:
        """The server's log; with ``until``, once a line matches that regex (or at the timeout).

        The server writes log lines from a queue on its own thread, so a line may
        reach the file a moment after the response that caused it.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text()
            if until is None or re.search(until, text) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def start(self, timeout: float = 30) -> DavboxServer:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [*self.base_args(), "serve", "--listen", f"127.0.0.1:{self.port}"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=self.env,
                preexec_fn=self.preexec_fn,
            )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self._close()
                raise RuntimeError(f"server exited early; log:\n{self.log_path.read_text()}")
            self.output.append(line)
            match = re.search(r"created account 'admin' with password (\S+)", line)
            if match:
                self.admin_password = match.group(1)
            match = re.search(r"log in as 'admin' with app password (\S+)", line)
            if match:
                self.admin_app_password = match.group(1)
            if "WebDAV at" in line:
                break
        else:
            raise RuntimeError("server did not report its URL in time")
        self._wait_ready(deadline)
        return self

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not answer in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        if self._db is not None:
            self._db.dispose()
            self._db = None

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.base_args(), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"davbox {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def database(self) -> Database:
        """The server's own database (the admin API; the CLI has its own tests)."""
        if self._db is None:
            self._db = Database(f"sqlite:///{self.data_dir.resolve() / 'davbox.db'}")
        return self._db

    def add_user(self, name: str, password: str = PASSWORD) -> tuple[str, str]:
        accounts.add_user(self.database(), name, password)
        return name, password

    def storage_dir(self, mailbox: str) -> Path:
        """The folder holding ``mailbox``'s files (embedded SQLite database only)."""
        from sqlalchemy import select

        from davbox.db.models import Mailbox

        with self.database().session() as session:
            key = session.execute(
                select(Mailbox.storage_key).where(Mailbox.name == mailbox)
            ).scalar_one()
        return self.data_dir / "storage" / "mailboxes" / key

    def mailbox(self, name: str, **grants: str) -> str:
        """Create mailbox ``name`` and grant ``user=role`` (``@group=role``) for each keyword."""
        accounts.create_mailbox(self.database(), name)
        for principal, role in grants.items():
            accounts.grant(self.database(), name, principal, role)
        return name

    def remove_data(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
