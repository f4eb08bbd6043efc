"""Who may see which delivery report (``davbox.reports``): denied unless a rule allows.

Contract:
- A **link report**: the link's creator, a manager of the link's mailbox, or
  an administrator (``User.is_admin``); the same people who may change or
  revoke the link (``ShareService.may_manage``).
- A **file report**: a manager of the file's mailbox, an administrator, an
  account that placed the file itself (as a user or with an app password),
  or the creator of a share link through which it was placed or fetched
  (who asked for the file, or sent it).
- Disabled and unknown accounts see nothing. Callers answer a refusal
  exactly as a report that does not exist (404), so ids and names cannot
  be probed.
"""

from __future__ import annotations

from sqlalchemy import select

from davbox import links
from davbox.access import AccessService
from davbox.db import Database
from davbox.db.models import User
from davbox.links import Link
from davbox.reports import FileReport
from davbox.sharing import ShareService


class ReportAccess:
    def __init__(self, db: Database, access: AccessService, shares: ShareService) -> None:
        self.db = db
        self.access = access
        self.shares = shares

    def is_admin(self, username: str) -> bool:
        with self.db.session() as session:
            return bool(
                session.execute(
                    select(User.is_admin).where(User.name == username, User.disabled.is_(False))
                ).scalar_one_or_none()
            )

    def may_see_link(self, username: str, link: Link) -> bool:
        principal = self.access.principal_for(username)
        if principal is None:
            return False
        return self.is_admin(username) or self.shares.may_manage(principal, link)

    def may_see_file(self, username: str, report: FileReport) -> bool:
        principal = self.access.principal_for(username)
        if principal is None:
            return False
        box = self.access.mailboxes_for(principal).get(report.mailbox)
        if (box is not None and "manager" in box.roles) or self.is_admin(username):
            return True
        if username in {e.actor for e in report.placements}:
            return True
        through = {e.actor for e in report.events if e.category in ("placed", "fetched")}
        mine = {f"link-{link.id}" for link in links.list_links(self.db, created_by=username)}
        return bool(through & mine)
