"""The ``davbox`` command: global options and the command groups.

Contract: every command takes ``--config FILE`` (``DAVBOX_CONFIG``) and
``--data-dir DIR`` (``DAVBOX_DATA``, default ``./var``). A configuration
problem prints one ``file:line: key.path: message`` line per problem on
stderr and exits 2 without a traceback; a refused admin action prints
``davbox: error: ...`` and exits 1. Nothing prompts: passwords come from
``--password-stdin``.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from davbox import __version__
from davbox.accounts import AdminError
from davbox.config import ConfigError, Settings, load_settings


@dataclass
class Context:
    config_path: Path | None
    data_dir: Path
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_path)
            except ConfigError as exc:
                config_failed(exc)
        return self._settings

    def database(self) -> Any:
        from davbox.db import Database
        from davbox.paths import database_url

        self.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(database_url(self.settings, self.data_dir))
        db.upgrade()
        return db

    def storage(self, db: Any = None) -> Any:
        """The storage as the server opens it (encrypted if so configured)."""
        from davbox.encryption import open_storage

        return open_storage(self.settings, self.data_dir, db or self.database())


def config_failed(exc: ConfigError) -> NoReturn:
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    click.echo(f"davbox: {len(exc.problems)} configuration problem(s); nothing started", err=True)
    sys.exit(2)


def fail(message: str) -> NoReturn:
    click.echo(f"davbox: error: {message}", err=True)
    sys.exit(1)


class AdminGroup(click.Group):
    """Turns AdminError into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdminError as exc:
            fail(str(exc))


@click.group(cls=AdminGroup)
@click.version_option(__version__, prog_name="davbox")
@click.option(
    "--config",
    "config_path",
    envvar="DAVBOX_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML configuration file (env DAVBOX_CONFIG).",
)
@click.option(
    "--data-dir",
    envvar="DAVBOX_DATA",
    default="var",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the embedded database and storage (env DAVBOX_DATA).",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, data_dir: Path) -> None:
    """davbox: a secure file-mailbox server over WebDAV."""
    ctx.obj = Context(config_path, data_dir)


def read_password_stdin() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("no password on standard input")
    return password


def setup_logging(level: str, *, queued: bool = False) -> None:
    """Log lines to standard error at ``level``.

    ``queued`` (the server): request threads only format their line and put
    it on a queue; one thread writes the lines out (and the rest at exit), so
    sixteen busy threads do not queue up for the stream's lock.
    """
    line = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream = logging.StreamHandler(sys.stderr)
    handler: logging.Handler = stream
    if queued:
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(lines, stream)
        listener.start()
        atexit.register(listener.stop)
        handler = logging.handlers.QueueHandler(lines)  # formats the whole line (prepare)
        stream.setFormatter(logging.Formatter("%(message)s"))
    handler.setFormatter(line)
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)


from davbox.cli import admin, audit, mail, notify, policy, serve, share  # noqa: E402  (registers the commands)

__all__ = ["admin", "audit", "mail", "main", "notify", "policy", "serve", "share"]
from davbox.cli import (  # noqa: E402
    expiry,  # noqa: F401  (registers ``davbox expiry``)
    keys,  # noqa: F401  (registers ``davbox keys``)
    registration,  # noqa: F401  (registers ``davbox registration``)
    report,  # noqa: F401  (registers ``davbox report``)
    transfer,  # noqa: F401  (registers ``davbox send`` and ``davbox request``)
)
