"""Outgoing mail: templates, the outbox queue in the database, and the SMTP sender.

Contract:
- ``Outbox(db).enqueue(to=..., template=..., language=..., context=...)``
  renders ``templates/<template>.<language>.txt`` (and ``.html`` if there is
  one) at once, so a missing template or context value raises there, and
  stores the mail; it returns the mail's id. Nothing waits on SMTP.
- ``MailSender`` (a thread of the server process) takes due mails from the
  outbox with an atomic claim, sends them with smtplib and retries failures
  with exponential backoff and jitter; a permanent refusal (5xx) is not
  retried. Several processes can send from one database: a mail is claimed by
  one of them at a time.
- Mails never carry passwords or file content; callers put neither in a
  context. The SMTP password is never logged.
"""

from davbox.mail.outbox import Outbox
from davbox.mail.render import MailTemplates, Rendered, TemplateProblem

__all__ = ["MailTemplates", "Outbox", "Rendered", "TemplateProblem"]
