"""``davbox serve``, ``davbox cert``, ``davbox db upgrade`` and ``davbox config check``."""

from __future__ import annotations

from pathlib import Path

import click

from davbox import __version__, accounts, app_passwords
from davbox.cli import Context, fail, main, setup_logging
from davbox.config.schema import parse_listen
from davbox.passwords import generate_password

FIRST_MAILBOX = "inbox"


@main.command()
@click.option("--listen", metavar="HOST:PORT", help="Override server.listen.")
@click.pass_obj
def serve(ctx: Context, listen: str | None) -> None:
    """Start the server (creates the database and an admin account on first start)."""
    from davbox.app import Runtime
    from davbox.server import build_server, run

    settings = ctx.settings
    if listen:
        try:
            parse_listen(listen)
        except ValueError as exc:
            fail(f"--listen: {exc}")
    setup_logging(settings.logging.level, queued=True)
    runtime = Runtime.create(settings, ctx.data_dir, ctx.config_path)
    runtime.storage.sweep_temps()
    banner = _first_start(runtime.db)
    try:
        server = build_server(runtime.wsgi_app(), settings, listen)
    except OSError as exc:
        fail(f"cannot use TLS files: {exc}")
    host = parse_listen(listen or settings.server.listen)[0]
    if not settings.server.tls and host not in ("127.0.0.1", "::1", "localhost"):
        banner.append(
            "davbox: WARNING: passwords travel unencrypted over plain HTTP; configure"
            " server.tls or put a TLS proxy in front (Windows refuses Basic over HTTP)"
        )
    banner += [
        f"davbox {__version__}: WebDAV at {{url}}/dav/ (data in {ctx.data_dir.resolve()})",
        "davbox: map {url}/dav/ as a network drive or use any WebDAV client. Ctrl+C stops.",
    ]
    if ctx.config_path is not None:
        from davbox.reload import PolicyReloader

        PolicyReloader(ctx.config_path, runtime.engine, settings, events=runtime.events).start()
    runtime.start_background()
    try:
        run(server, settings, banner)
    except OSError as exc:
        fail(f"cannot listen on {listen or settings.server.listen}: {exc.strerror or exc}")
    finally:
        runtime.stop_background()


def _first_start(db: object) -> list[str]:
    """On an empty database: an admin account with a one-time password and a first mailbox."""
    if accounts.count_users(db) > 0:  # type: ignore[arg-type]
        return []
    password = generate_password()
    accounts.add_user(db, "admin", password, is_admin=True, display_name="Administrator")  # type: ignore[arg-type]
    accounts.create_mailbox(db, FIRST_MAILBOX, "first mailbox, made at first start")  # type: ignore[arg-type]
    accounts.grant(db, FIRST_MAILBOX, "admin", "manager")  # type: ignore[arg-type]
    app_password = app_passwords.create(db, "admin", "first-start")  # type: ignore[arg-type]
    return [
        f"davbox: first start: created account 'admin' with password {password}",
        "davbox: this password is shown only once; change it with"
        " 'davbox user passwd admin --password-stdin'",
        f"davbox: created mailbox '{FIRST_MAILBOX}' with 'admin' as its manager",
        "davbox: accounts use two-factor login, so WebDAV clients log in with app passwords;",
        f"davbox: log in as 'admin' with app password {app_password} (shown once; revoke it"
        " with 'davbox app-password revoke admin first-start')",
        "davbox: in a browser, log in at {url}/login as 'admin' with the password above and"
        " set up two-factor login with an authenticator app; make app passwords there",
    ]


@main.command()
@click.option("--self-signed", is_flag=True, required=True, help="Make a self-signed certificate.")
@click.option("--host", "hosts", multiple=True, required=True, help="Host name or IP (repeatable).")
@click.option("--cert", "cert_path", type=click.Path(path_type=Path), help="Output certificate.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Output private key.")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@click.pass_obj
def cert(
    ctx: Context,
    self_signed: bool,
    hosts: tuple[str, ...],
    cert_path: Path | None,
    key_path: Path | None,
    days: int,
) -> None:
    """Write a development TLS certificate and key (for server.tls)."""
    from davbox.certs import write_self_signed

    cert_path = cert_path or ctx.data_dir / "tls" / "cert.pem"
    key_path = key_path or ctx.data_dir / "tls" / "key.pem"
    write_self_signed(list(hosts), cert_path, key_path, days)
    click.echo(f"wrote {cert_path} and {key_path} (self-signed, for testing only)")
    click.echo(f"server:\n  tls:\n    cert: {cert_path.resolve()}\n    key: {key_path.resolve()}")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(ctx: Context) -> None:
    """Apply database migrations (also done at every server start)."""
    ctx.database()
    click.echo("database is up to date")


@main.group("config")
def config_group() -> None:
    """Configuration tools."""


@config_group.command("check")
@click.pass_obj
def config_check(ctx: Context) -> None:
    """Validate the configuration file (exit 0 when valid, 2 otherwise)."""
    ctx.settings  # noqa: B018 (loading reports the problems and exits 2)
    click.echo(f"{ctx.config_path or 'built-in defaults'}: configuration is valid")
