"""SMTP delivery with smtplib: one connection for a batch of mails.

Contract:
- ``SmtpConnection(settings)`` is a context manager that connects to
  ``mail.host`` (TLS from the start for ``security: tls``, STARTTLS for
  ``starttls``; the certificate is checked unless ``verify_tls`` is off) and
  logs in when ``username`` is set. ``send`` hands one ``EmailMessage`` over.
- ``is_permanent(exc)`` tells a refusal that retrying cannot fix (a 5xx
  answer to the sender, a recipient or the data) from one that may pass
  later (connection problems, 4xx answers). A refused login is not
  permanent: it is the server's configuration, not the mail's.
- ``describe(exc)`` is a one-line text for logs and the outbox; it holds the
  server's answer, never the SMTP password (smtplib's debug output, which
  would show the AUTH exchange, stays off).
"""

from __future__ import annotations

import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate
from types import TracebackType

from davbox.config.schema import MailSettings


def tls_context(settings: MailSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.ca_file)
    if not settings.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def build_message(
    settings: MailSettings,
    *,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    created_at: float | None = None,
) -> EmailMessage:
    """The MIME message: plain text, with an HTML alternative when there is one."""
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(created_at if created_at is not None else time.time())
    message["Message-ID"] = message_id
    # RFC 3834: out-of-office responders and the like do not answer these.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


class SmtpConnection:
    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpConnection:
        s = self.settings
        if s.host is None:
            raise smtplib.SMTPConnectError(421, b"mail.host is not set")
        smtp: smtplib.SMTP
        if s.security == "tls":
            smtp = smtplib.SMTP_SSL(s.host, s.smtp_port, timeout=s.timeout, context=tls_context(s))
        else:
            smtp = smtplib.SMTP(s.host, s.smtp_port, timeout=s.timeout)
        try:
            smtp.ehlo()
            if s.security == "starttls":
                smtp.starttls(context=tls_context(s))
                smtp.ehlo()
            if s.username is not None and s.password is not None:
                smtp.login(s.username, s.password.get_secret_value())
        except BaseException:
            smtp.close()
            raise
        self.smtp = smtp
        return self

    def send(self, message: EmailMessage) -> None:
        assert self.smtp is not None, "send inside the with block"
        self.smtp.send_message(message)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.smtp is None:
            return
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()
        self.smtp = None


def is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(code >= 500 for code in codes)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    return False


def is_connection_problem(exc: BaseException) -> bool:
    """Whether the connection is unusable after ``exc`` (the rest of a batch waits)."""
    return isinstance(exc, smtplib.SMTPServerDisconnected | OSError) and not isinstance(
        exc, smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused
    )


def describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, answer = next(iter(exc.recipients.values()), (0, b""))
        return f"recipient refused: {code} {_text(answer)}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}"


def _text(answer: bytes | str) -> str:
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer
    return " ".join(text.split())[:300]
