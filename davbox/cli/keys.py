"""``davbox keys``: the master key, key rotation and what each key protects.

- ``generate --out PATH`` writes a new master key (64 hex digits, mode 0600;
  an existing file is never overwritten); ``--stdout`` prints it instead,
  for a secret store. The key is shown nowhere else.
- ``rotate`` makes a new key-encryption key, rewraps every file's data key to
  it (the content is not re-encrypted) and destroys the old keys once no file
  uses them. Exit status 1 if an old key is still in use afterwards.
- ``status`` lists the key-encryption keys (current, in use, retired) with the
  number of files each protects, and files not encrypted.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from davbox.cli import Context, fail, main


@main.group()
def keys() -> None:
    """Encryption at rest: master key, key-encryption keys, rotation."""


@keys.command("generate")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="File to write the key to."
)
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the key instead.")
def keys_generate(out: Path | None, to_stdout: bool) -> None:
    """Make a new master key (for storage.encryption.master_key)."""
    from davbox.keys import new_master_key

    if (out is None) == (not to_stdout):
        fail("give --out PATH or --stdout")
    key = new_master_key()
    if to_stdout:
        click.echo(key)
        return
    assert out is not None
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{out} exists already; a master key is never overwritten")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    click.echo(f"wrote a new master key to {out} (readable by its owner only)")
    where = out.resolve()
    click.echo(f"configure it:  storage: {{encryption: {{master_key: {{$file: {where}}}}}}}")
    click.echo("keep a copy in a safe place: without it no stored file can be read")


@keys.command("rotate")
@click.option(
    "--grace",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds to wait for uploads finishing under the old key before it is retired.",
)
@click.pass_obj
def keys_rotate(ctx: Context, grace: float) -> None:
    """New key-encryption key; every data key rewrapped; old keys destroyed when unused."""
    from davbox.app import Runtime
    from davbox.encryption import rotate
    from davbox.events import KeysRotated
    from davbox.providers.storage.encrypted import SealedStorage

    runtime = Runtime.create(ctx.settings, ctx.data_dir, ctx.config_path)
    storage = runtime.storage
    if not isinstance(storage, SealedStorage):
        fail("encryption at rest is not configured (storage.encryption)")
    done = rotate(storage, storage.ring, grace=grace, progress=click.echo)
    runtime.events.emit(
        KeysRotated(
            actor="admin",
            actor_kind="admin",
            kek=done.new_kek,
            rewrapped=done.rewrapped,
            retired=",".join(done.retired),
        )
    )
    for kek_id in done.retired:
        click.echo(f"retired key-encryption key {kek_id}")
    if done.left:
        still = ", ".join(f"{k} ({n} files)" for k, n in sorted(done.left.items()))
        fail(f"still in use, not retired: {still}; run davbox keys rotate again")
    click.echo(f"current key-encryption key: {done.new_kek}")


@keys.command("status")
@click.pass_obj
def keys_status(ctx: Context) -> None:
    """Key-encryption keys and how many files each protects."""
    from davbox.encryption import status
    from davbox.providers.storage.encrypted import SealedStorage

    storage = ctx.storage()
    if not isinstance(storage, SealedStorage):
        click.echo("encryption at rest: off (storage.encryption is not configured)")
        return
    counts = status(storage)
    click.echo("encryption at rest: on (AES-256-GCM, a data key per file)")
    for info in storage.ring.kek_list():
        if info.retired_at is not None:
            state = f"retired {info.retired_at:%Y-%m-%dT%H:%M:%SZ}"
        else:
            state = "current" if info.current else "in use"
        click.echo(
            f"{info.id}\t{state}\tcreated {info.created_at:%Y-%m-%dT%H:%M:%SZ}"
            f"\t{counts.by_kek.get(info.id, 0)} file(s)"
        )
    unknown = sorted(set(counts.by_kek) - {info.id for info in storage.ring.kek_list()})
    for kek_id in unknown:
        click.echo(f"{kek_id}\tunknown\t\t{counts.by_kek[kek_id]} file(s)")
    click.echo(f"files not encrypted: {counts.not_encrypted}")
    click.echo(f"uploads in progress: {counts.in_progress}")
