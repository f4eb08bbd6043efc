"""The servers under test, each started on 127.0.0.1 in its own folder.

Every server exposes the same thing: a WebDAV folder at ``base_url`` that is
the on-disk folder ``storage`` (so test files can be made directly on disk),
protected by HTTP Basic auth for one user, with ``threads`` worker threads.

- ``Davbox``: ``davbox serve`` with built-in defaults; a user who is a
  ``member`` of mailbox ``bench``; ``storage`` is that mailbox's folder.
- ``EncryptedDavbox`` (``davbox-enc``): the same with encryption at rest
  (``storage.encryption`` with a fresh master key): every stored file is
  AES-256-GCM sealed. The test files are put on disk in plaintext like for the
  others; ``start`` first has davbox encrypt them (its one-off conversion of a
  storage that was not encrypted), outside any timed part.
- ``PlainWsgidav``: ``plain_wsgidav.py`` (WsgiDAV FilesystemProvider on cheroot).
- ``Apache``: ``apache2 -DFOREGROUND`` with a generated minimal config:
  mpm_event (one child with ``threads`` threads), mod_dav + mod_dav_fs, Basic
  auth against an htpasswd file in htpasswd's default format (apr1-MD5, which
  Apache verifies on every request; bcrypt would cost milliseconds each, and
  mod_authn_socache caches only the hash, not the verification), unlimited
  keep-alive requests (as cheroot) and an access log like davbox's.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import re
import signal
import sqlite3
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from procs import tree_pids

HERE = Path(__file__).resolve().parent
APACHE_MODULES = Path("/usr/lib/apache2/modules")
APACHE_MODULE_FILES = {
    "mpm_event_module": "mod_mpm_event.so",
    "authn_core_module": "mod_authn_core.so",
    "authn_file_module": "mod_authn_file.so",
    "authz_core_module": "mod_authz_core.so",
    "authz_user_module": "mod_authz_user.so",
    "auth_basic_module": "mod_auth_basic.so",
    "dav_module": "mod_dav.so",
    "dav_fs_module": "mod_dav_fs.so",
}


class ServerError(RuntimeError):
    """A server could not be set up or did not come up."""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    @property
    def header(self) -> str:
        token = b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}"


class BenchServer(ABC):
    """One server in its own work folder; ``setup`` then ``start``, always ``stop``."""

    name: str

    def __init__(self, work: Path, port: int, threads: int, creds: Credentials) -> None:
        self.work = work
        self.port = port
        self.threads = threads
        self.creds = creds
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work / "server.log"

    @property
    def base_url(self) -> str:
        """URL of the WebDAV folder that is ``storage`` on disk (ends with ``/``)."""
        return f"http://127.0.0.1:{self.port}/dav/"

    @property
    @abstractmethod
    def storage(self) -> Path:
        """The folder on disk behind ``base_url``."""

    @abstractmethod
    def setup(self) -> None:
        """Create the work folder, accounts and configuration (the server is not running)."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError(f"{self.name} is not running")
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.environment(),
                cwd=self.work,
            )
        self._wait_ready(time.monotonic() + timeout)

    def _wait_ready(self, deadline: float) -> None:
        """Poll until an authenticated PROPFIND of ``base_url`` answers 207."""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                status = self.request("PROPFIND", self.base_url, {"Depth": "0"})
            except OSError:
                time.sleep(0.1)
                continue
            if status == 207:
                return
            raise ServerError(f"{self.name}: PROPFIND {self.base_url} answered {status}")
        raise ServerError(f"{self.name} did not answer within the time limit; see {self.log_path}")

    def request(self, method: str, url: str, headers: dict[str, str], auth: bool = True) -> int:
        """One small request; returns the status (the body is read and dropped)."""
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        try:
            all_headers = {**headers, "Content-Length": "0"}
            if auth:
                all_headers["Authorization"] = self.creds.header
            conn.request(method, parts.path, headers=all_headers)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def verify_stored(self, path: Path, plain_size: int) -> None:
        """Check that ``path`` holds an upload of ``plain_size`` bytes as this server stores it."""
        stored = path.stat().st_size
        if stored != plain_size:
            raise ServerError(f"{self.name}: PUT stored {stored} of {plain_size} bytes")

    def check_auth_required(self) -> None:
        status = self.request("PROPFIND", self.base_url, {"Depth": "0"}, auth=False)
        if status != 401:
            raise ServerError(f"{self.name}: unauthenticated PROPFIND answered {status}, not 401")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        family = tree_pids(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in family[1:]:  # workers that outlived their parent
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Davbox(BenchServer):
    name = "davbox"
    mailbox = "bench"

    def __init__(self, work: Path, port: int, threads: int, creds: Credentials) -> None:
        super().__init__(work, port, threads, creds)
        self.data_dir = work / "data"
        self.config: Path | None = None  # a configuration file for the server, if any
        self._storage: Path | None = None

    @property
    def storage(self) -> Path:
        if self._storage is None:
            raise ServerError("davbox: setup() has not run")
        return self._storage

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dav/{self.mailbox}/"

    def _cli(
        self, *args: str, stdin: str | None = None, config: Path | None = None, timeout: float = 120
    ) -> str:
        options = ["--data-dir", str(self.data_dir)]
        if config is not None:
            options = ["--config", str(config), *options]
        result = subprocess.run(
            [sys.executable, "-m", "davbox", *options, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise ServerError(f"davbox {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def setup(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        password = self.creds.password + "\n"
        self._cli("user", "add", self.creds.user, "--password-stdin", stdin=password)
        self._cli("mailbox", "create", self.mailbox)
        self._cli("mailbox", "grant", self.mailbox, self.creds.user, "member")
        # Two-factor login is on by default, so WebDAV clients use app passwords:
        # the benchmark does too (its account password is refused over Basic).
        made = self._cli("app-password", "create", self.creds.user, "--label", "bench")
        found = re.search(r"\(shown once\): (\S+)", made)
        if found is None:
            raise ServerError(f"davbox: no app password in {made!r}")
        self.creds = Credentials(self.creds.user, found.group(1))
        with sqlite3.connect(self.data_dir / "davbox.db") as db:
            row = db.execute(
                "SELECT storage_key FROM mailboxes WHERE name = ?", (self.mailbox,)
            ).fetchone()
        if row is None:
            raise ServerError("davbox: the bench mailbox is missing from the database")
        self._storage = self.data_dir / "storage" / "mailboxes" / row[0]
        self._storage.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        config = [] if self.config is None else ["--config", str(self.config)]
        return [
            sys.executable,
            "-m",
            "davbox",
            *config,
            "--data-dir",
            str(self.data_dir),
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
        ]


class EncryptedDavbox(Davbox):
    """``davbox serve`` as ``Davbox``, with every stored file encrypted (AES-256-GCM)."""

    name = "davbox-enc"

    def setup(self) -> None:
        # Accounts and mailbox are made without the key: the storage is still
        # plain when the fixtures are written into it; start() encrypts them.
        super().setup()
        from davbox.keys import new_master_key

        key = self.work / "master.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_master_key() + "\n")
        settings = {"storage": {"encryption": {"master_key": {"$file": str(key)}}}}
        config = self.work / "config.yaml"
        config.write_text(json.dumps(settings, indent=2) + "\n")  # JSON is YAML
        self.config = config

    def start(self, timeout: float = 60) -> None:
        """Encrypt the fixtures (``davbox keys status`` opens the storage as the server
        would, which converts it), check that they are, then start the server."""
        total = sum(entry.stat().st_size for entry in self.storage.rglob("*") if entry.is_file())
        print(
            f"bench: {self.name}: encrypting the test files ({total / 1e6:,.0f} MB, once)",
            flush=True,
        )
        started = time.monotonic()
        status = self._cli("keys", "status", config=self.config, timeout=120 + total / 5e6)
        print(f"bench: {self.name}: encrypted in {time.monotonic() - started:.1f} s", flush=True)
        left = re.search(r"files not encrypted: (\d+)", status)
        if left is None or left.group(1) != "0":
            raise ServerError(f"{self.name}: storage not encrypted after conversion:\n{status}")
        for entry in self.storage.rglob("*"):
            if entry.is_file():
                self._check_sealed(entry)
        super().start(timeout)

    def verify_stored(self, path: Path, plain_size: int) -> None:
        from davbox.providers.storage.sealed import sealed_size

        stored = path.stat().st_size
        if stored != sealed_size(plain_size):
            raise ServerError(
                f"{self.name}: PUT stored {stored} bytes, not {sealed_size(plain_size)}"
                f" (sealed {plain_size})"
            )
        self._check_sealed(path)

    def _check_sealed(self, path: Path) -> None:
        from davbox.providers.storage.sealed import MAGIC

        with open(path, "rb") as stored:
            if stored.read(len(MAGIC)) != MAGIC:
                raise ServerError(f"{self.name}: {path} is not stored encrypted")


class PlainWsgidav(BenchServer):
    name = "wsgidav"

    @property
    def storage(self) -> Path:
        return self.work / "share"

    def setup(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(HERE / "plain_wsgidav.py"),
            "--root",
            str(self.storage),
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--user",
            self.creds.user,
        ]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "BENCH_PASSWORD": self.creds.password}


class Apache(BenchServer):
    name = "apache"

    def __init__(
        self,
        work: Path,
        port: int,
        threads: int,
        creds: Credentials,
        *,
        binary: str,
        htpasswd: str,
    ) -> None:
        super().__init__(work, port, threads, creds)
        self.binary = binary
        self.htpasswd = htpasswd
        self.conf = work / "httpd.conf"

    @property
    def storage(self) -> Path:
        return self.work / "htdocs" / "dav"

    def setup(self) -> None:
        missing = [f for f in APACHE_MODULE_FILES.values() if not (APACHE_MODULES / f).exists()]
        if missing:
            raise ServerError(f"apache: modules missing in {APACHE_MODULES}: {', '.join(missing)}")
        for folder in (self.storage, self.work / "run", self.work / "locks"):
            folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [self.htpasswd, "-c", "-i", str(self.work / "htpasswd"), self.creds.user],
            input=self.creds.password,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise ServerError(f"htpasswd failed: {result.stderr.strip()}")
        user = self._run_as()
        if user is not None:
            # Root starts Apache, which then serves as this user: it must be able
            # to reach the work folder and write the share, lock DB and runtime files.
            os.chmod(self.work, 0o755)
            os.chmod(self.work.parent, 0o755)
            for folder in (self.storage, self.work / "run", self.work / "locks"):
                os.chown(folder, user.pw_uid, user.pw_gid)
        self.conf.write_text(self.config_text(user))

    @staticmethod
    def _run_as() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        for name in ("www-data", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise ServerError("apache: running as root, but there is no www-data or nobody user")

    def config_text(self, user: pwd.struct_passwd | None) -> str:
        work = self.work
        modules = "\n".join(
            f"LoadModule {name} {APACHE_MODULES / path}"
            for name, path in APACHE_MODULE_FILES.items()
        )
        identity = ""
        if user is not None:
            group = user.pw_gid
            identity = f"User #{user.pw_uid}\nGroup #{group}\n"
        return f"""# Generated by davbox bench/servers.py: a minimal mod_dav server on loopback.
ServerRoot "{work}"
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
PidFile "{work}/run/httpd.pid"
DefaultRuntimeDir "{work}/run"
ErrorLog "{work}/error.log"
LogLevel warn
LogFormat "%h %u %t \\"%r\\" %>s %b %D" bench
CustomLog "{work}/access.log" bench
{modules}
{identity}
StartServers 1
ServerLimit 1
ThreadLimit {self.threads}
ThreadsPerChild {self.threads}
MaxRequestWorkers {self.threads}
MinSpareThreads 1
MaxSpareThreads {self.threads}
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 5
Timeout 60

DocumentRoot "{work}/htdocs"
DavLockDB "{work}/locks/DavLock"

<Directory />
    Require all denied
    AllowOverride None
</Directory>

<Directory "{self.storage}">
    Dav On
    AuthType Basic
    AuthName "bench"
    AuthBasicProvider file
    AuthUserFile "{work}/htpasswd"
    Require valid-user
</Directory>
"""

    def command(self) -> list[str]:
        return [self.binary, "-f", str(self.conf), "-DFOREGROUND"]

    def start(self, timeout: float = 60) -> None:
        check = subprocess.run(
            [self.binary, "-f", str(self.conf), "-t"], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise ServerError(f"apache: config test failed: {check.stderr.strip()}")
        super().start(timeout)

    def log_tail(self, lines: int = 20) -> str:
        text = super().log_tail(lines)
        try:
            errors = (self.work / "error.log").read_text(errors="replace").splitlines()
        except OSError:
            errors = []
        return "\n".join([text, *errors[-lines:]]).strip()
