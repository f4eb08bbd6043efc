"""Run the WSGI app on cheroot with the limits from ``server.*``.

Contract: ``build_server`` binds nothing; ``run`` binds, prints the URL (with
the real port when 0 was asked for), serves until SIGINT/SIGTERM and then
gives requests in flight ``server.shutdown_timeout`` seconds to finish.
SIGXFSZ is ignored so a file-size limit surfaces as EFBIG (answered 507)
instead of killing the process.

Two adjustments to cheroot, both through its documented extension points
(``gateway`` and ``ConnectionClass``):
- an app response with ``Connection: close`` really closes the connection, so
  cheroot does not first read (drain) an upload that was refused unread;
- response bodies go to the socket with ``sendall`` instead of through
  cheroot's pure-Python buffered writer, which copied every block twice.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from cheroot import wsgi
from cheroot.makefile import StreamWriter
from cheroot.server import HTTPConnection
from cheroot.ssl.builtin import BuiltinSSLAdapter

from davbox.config.schema import Settings, parse_listen
from davbox.paths import base_url


class _Gateway(wsgi.Gateway_10):
    """Honour ``Connection: close`` set by the app (cheroot only honours it for 413)."""

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None):  # type: ignore[no-untyped-def]
        if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
            self.req.close_connection = True
        return super().start_response(status, headers, exc_info)


class _DirectWriter(StreamWriter):
    """Write each block straight to the socket (no copy into a bytearray buffer)."""

    def write(self, val: Any, *args: Any, **kwargs: Any) -> int:  # type: ignore[override]
        self._checkClosed()
        view = memoryview(val)
        with self._write_lock:  # type: ignore[attr-defined]
            if self._write_buf:  # type: ignore[attr-defined]
                self._flush_unlocked()  # type: ignore[attr-defined]
            self.raw._sock.sendall(view)  # type: ignore[attr-defined]
        self.bytes_written += len(view)
        return len(view)


class _Connection(HTTPConnection):
    def __init__(self, server: Any, sock: Any, makefile: Any = None) -> None:
        if makefile is None:
            super().__init__(server, sock)
        else:
            super().__init__(server, sock, makefile)
        if type(self.wfile) is StreamWriter:
            self.wfile = _DirectWriter(sock, "wb", self.wbufsize)


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
    server.gateway = _Gateway
    server.ConnectionClass = _Connection
    if settings.server.tls:
        server.ssl_adapter = BuiltinSSLAdapter(settings.server.tls.cert, settings.server.tls.key)
    return server


def public_url(server: wsgi.Server, settings: Settings) -> str:
    host, port = server.bind_addr[:2]
    return base_url(settings, (host, port))


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
