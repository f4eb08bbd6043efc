"""Serve a folder with plain WsgiDAV (FilesystemProvider) on cheroot: the benchmark baseline.

Run by ``servers.PlainWsgidav`` as its own process so its memory can be
measured alone::

    BENCH_PASSWORD=... python plain_wsgidav.py --root DIR --port PORT --threads 16 --user U

The share is ``/dav``; one user in ``simple_dc`` (Basic or Digest)
so authentication is on, as in davbox. Everything else is WsgiDAV's default
(8 KiB block size, in-memory locks, no dead-property store), except request
logging and the HTML directory browser, which are off. The cheroot settings
mirror ``davbox.server.build_server``. Prints ``ready`` once listening and
stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from cheroot import wsgi
from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp


def build_app(root: str, user: str, password: str) -> WsgiDAVApp:
    config: dict[str, Any] = {
        "provider_mapping": {"/dav": FilesystemProvider(root, readonly=False)},
        "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
        "http_authenticator": {"domain_controller": None, "accept_basic": True},
        "verbose": 1,
        "logging": {"enable": False},
        "dir_browser": {"enable": False},
    }
    return WsgiDAVApp(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--user", required=True)
    args = parser.parse_args()
    password = os.environ.get("BENCH_PASSWORD", "")
    if not password:
        sys.exit("plain_wsgidav: set BENCH_PASSWORD")

    logging.getLogger("wsgidav").setLevel(logging.ERROR)
    app = build_app(args.root, args.user, password)
    server = wsgi.Server(
        ("127.0.0.1", args.port),
        app,
        numthreads=args.threads,
        request_queue_size=128,
        timeout=60,
        shutdown_timeout=5,
        server_name="wsgidav",
    )

    def _stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.prepare()
    print("ready", flush=True)
    try:
        server.serve()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
