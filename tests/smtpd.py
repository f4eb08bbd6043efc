"""A real SMTP server for tests: aiosmtpd's Controller on a loopback port.

``SmtpServer`` keeps every message it accepts (parsed, with the envelope
recipients and the raw bytes) and can be stopped and started again on the
same port, as an SMTP server that goes down and comes back. Recipients whose
address starts with "refuse" get a permanent 550, "busy" a temporary 450.
Optional STARTTLS (required then) with a given certificate, and AUTH
LOGIN/PLAIN with one user and password (only after STARTTLS).
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.davserver import free_port


@dataclass
class Received:
    envelope_to: list[str]
    raw: bytes
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        assert body is not None
        return str(body.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("refuse"):
            return "550 5.1.1 no such mailbox here"
        if address.startswith("busy"):
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self.server.lock:
            self.server.messages.append(Received(list(envelope.rcpt_tos), raw, message))  # type: ignore[arg-type]
        return "250 Message accepted"


class SmtpServer:
    def __init__(
        self, auth: tuple[str, str] | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.port = free_port()
        self.auth = auth
        self.tls = tls  # (certificate, key)
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.controller: Controller | None = None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.auth is not None
            and (data.login.decode(), data.password.decode()) == self.auth
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpServer:
        kwargs: dict[str, Any] = {}
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            kwargs.update(tls_context=context, require_starttls=True)
        if self.auth is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The messages once at least ``count`` have arrived (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        with self.lock:
            raise AssertionError(f"{len(self.messages)} of {count} mails arrived: {self.messages}")

    def settle(self, seconds: float = 1.0) -> list[Received]:
        """The messages after ``seconds`` more (to see that nothing else arrives)."""
        time.sleep(seconds)
        with self.lock:
            return list(self.messages)
