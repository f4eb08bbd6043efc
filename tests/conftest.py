"""Shared fixtures: real davbox servers on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.davserver import DavboxServer

# Debian's Chromium, as Playwright drives it here (no browser download).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[object]:
    """Factory: ``make_server(name="srv", **kwargs)`` starts a server; all are stopped after."""
    servers: list[DavboxServer] = []

    def factory(name: str = "srv", start: bool = True, **kwargs: object) -> DavboxServer:
        server = DavboxServer(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start() if start else server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    """One server for a whole test module (tests must use their own mailboxes)."""
    server = DavboxServer(tmp_path_factory.mktemp("shared") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One Chromium for a test module (tests open their own contexts)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
