"""The sender: a thread that hands due mails from the outbox to the SMTP server.

Contract:
- ``start()`` runs the thread; ``stop()`` asks it to finish the mail in hand
  and waits (at most ``timeout`` seconds). ``run_once()`` is one round (claim
  a batch, send it), for tests and ``davbox mail send``.
- Each round claims at most ``batch`` mails (``Outbox.claim``: never a mail
  another sender holds) and sends them over one connection. A sent mail is
  marked sent. A permanent refusal (5xx) marks it failed at once. Any other
  failure puts it back with a delay: ``retry_delay * 2**(tries-1)``, at most
  ``retry_max_delay``, of which a random half is taken off (jitter, so
  mails queued together do not retry in lockstep); a mail still failing
  ``give_up_after`` seconds after it was queued is marked failed.
  When the connection itself fails, every mail of the batch waits.
- The thread wakes when this process queues a mail (``Outbox.on_enqueue``)
  and otherwise every ``poll_interval`` seconds (mails queued by other
  processes), or earlier when a retry is due. It never raises: errors are
  logged (without the SMTP password) and the round is tried again later.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from davbox.config.schema import MailSettings
from davbox.mail import smtp
from davbox.mail.outbox import Claimed, Outbox

_log = logging.getLogger("davbox.mail")
BATCH = 20

Connect = Callable[[MailSettings], AbstractContextManager[Any]]


def backoff(
    settings: MailSettings, attempts: int, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after the ``attempts``-th failed try (with jitter)."""
    full = min(settings.retry_max_delay, settings.retry_delay * 2 ** min(attempts - 1, 30))
    return full / 2 + rand() * full / 2


class MailSender:
    def __init__(
        self,
        outbox: Outbox,
        settings: MailSettings,
        *,
        batch: int = BATCH,
        connect: Connect = smtp.SmtpConnection,
    ) -> None:
        self.outbox = outbox
        self.settings = settings
        self.batch = batch
        self.connect = connect
        # Long enough for a whole batch to time out mail by mail.
        self.lease = float(settings.timeout * (batch + 2))
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        outbox.on_enqueue(self._wake.set)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="davbox-mail", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            handled = 0
            try:
                handled = self.run_once()
            except Exception:  # the thread must live on; the next round tries again
                _log.exception("mail round failed")
            if handled >= self.batch:
                continue
            self._wake.wait(self._idle_time())
            self._wake.clear()

    def _idle_time(self) -> float:
        wait = self.settings.poll_interval
        try:
            due = self.outbox.next_due()
        except Exception:
            _log.exception("cannot read the mail queue")
            return wait
        if due is not None:
            wait = min(wait, max(0.05, due - time.time()))
        return wait

    def run_once(self, now: float | None = None) -> int:
        """Claim and send one batch; return how many mails were handled."""
        now = time.time() if now is None else now
        mails = self.outbox.claim(now, self.lease, self.batch)
        if not mails:
            return 0
        try:
            with self.connect(self.settings) as connection:
                for index, mail in enumerate(mails):
                    if self._stopping.is_set() and index:
                        self._later(mails[index:], "the server stopped", now, first_try_free=True)
                        break
                    if not self._send(connection, mail, now):
                        self._later(
                            mails[index + 1 :], "the connection failed", now, first_try_free=True
                        )
                        break
        except Exception as exc:  # connecting or logging in failed: the whole batch waits
            error = smtp.describe(exc)
            _log.warning("cannot reach SMTP server %s: %s", self.settings.host, error)
            # Mails already marked sent or failed are no longer held: retry passes them by.
            self._later(mails, error, now)
        return len(mails)

    def _send(self, connection: Any, mail: Claimed, now: float) -> bool:
        """Send one mail and record the outcome; False when the connection is gone."""
        message = smtp.build_message(
            self.settings,
            to=mail.recipient,
            subject=mail.subject,
            text=mail.text,
            html=mail.html,
            message_id=mail.message_id,
            created_at=mail.created_at,
        )
        try:
            connection.send(message)
        except Exception as exc:
            error = smtp.describe(exc)
            if smtp.is_permanent(exc):
                _log.warning("mail %d to %s refused for good: %s", mail.id, mail.recipient, error)
                self.outbox.failed(mail, error)
                return True
            self._later([mail], error, now)
            return not smtp.is_connection_problem(exc)
        self.outbox.sent(mail)
        _log.info("mail %d sent to %s", mail.id, mail.recipient)
        return True

    def _later(
        self, mails: list[Claimed], error: str, now: float, first_try_free: bool = False
    ) -> None:
        for mail in mails:
            attempts = mail.attempts
            if first_try_free:
                # Not tried in this round: due again soon, and not counted as a try.
                self.outbox.retry(mail, error, now + 1.0, uncount=True)
                continue
            delay = backoff(self.settings, attempts)
            if now + delay - mail.created_at > self.settings.give_up_after:
                _log.warning(
                    "mail %d to %s given up after %d tries: %s",
                    mail.id,
                    mail.recipient,
                    attempts,
                    error,
                )
                self.outbox.failed(mail, f"gave up after {attempts} tries: {error}")
            else:
                _log.info(
                    "mail %d to %s: try %d failed, next in %.0fs: %s",
                    mail.id,
                    mail.recipient,
                    attempts,
                    delay,
                    error,
                )
                self.outbox.retry(mail, error, now + delay)
