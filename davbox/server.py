"""Run the WSGI app on cheroot with the limits from ``server.*``.

Contract: ``build_server`` binds nothing; ``run`` binds, prints the URL (with
the real port when 0 was asked for), serves until SIGINT/SIGTERM and then
gives requests in flight ``server.shutdown_timeout`` seconds to finish.
SIGXFSZ is ignored so a file-size limit surfaces as EFBIG (answered 507)
instead of killing the process.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from davbox.config.schema import Settings, parse_listen


def build_server(app: Any, settings: Settings, listen: str | None = None) -> wsgi.Server:
    host, port = parse_listen(listen or settings.server.listen)
    server = wsgi.Server(
        (host, port),
        app,
        numthreads=settings.server.threads,
        request_queue_size=128,
        timeout=settings.server.request_timeout,
        shutdown_timeout=settings.server.shutdown_timeout,
        server_name="davbox",
    )
    server.max_request_header_size = int(settings.server.max_header_size)
    if settings.server.tls:
        server.ssl_adapter = BuiltinSSLAdapter(settings.server.tls.cert, settings.server.tls.key)
    return server


def public_url(server: wsgi.Server, settings: Settings) -> str:
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/")
    host, port = server.bind_addr[:2]
    scheme = "https" if settings.server.tls else "http"
    if ":" in host:
        host = f"[{host}]"
    elif host in ("0.0.0.0", ""):  # noqa: S104 (only for display)
        host = "localhost"
    return f"{scheme}://{host}:{port}"


def run(server: wsgi.Server, settings: Settings, banner: list[str]) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.prepare()
    url = public_url(server, settings)
    for line in banner:
        print(line.format(url=url), flush=True)
    try:
        server.serve()
    finally:
        server.stop()
    sys.stdout.flush()
