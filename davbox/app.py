"""Assemble davbox from its settings: database, storage, access, policies, WSGI apps.

Contract: ``Runtime.create(settings, data_dir)`` builds every long-lived
service (nothing listens yet); ``Runtime.wsgi_app()`` returns the dispatcher
that the server runs. The embedded default needs nothing but the data
directory: SQLite at ``<data_dir>/davbox.db``, storage at ``<data_dir>/storage``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from davbox import codes
from davbox.access import AccessService
from davbox.admin_ui.link_access import LinkGate
from davbox.admin_ui.link_pages import LinkPages
from davbox.admin_ui.loginflow_pages import LoginFlowPages
from davbox.admin_ui.notify_pages import NotifyPages
from davbox.admin_ui.register_pages import RegisterPages
from davbox.admin_ui.report_pages import ReportPages
from davbox.admin_ui.web import WebApp
from davbox.audit import AuditSink, AuditStore
from davbox.compat.chunking import ChunkedUploads
from davbox.compat.fileids import FileIdSink
from davbox.compat.loginflow import LoginFlows
from davbox.compat.uploads import ResponseHeaders
from davbox.config import Settings
from davbox.config.schema import LdapProviderSettings
from davbox.dav.audit import AuditMiddleware
from davbox.dav.authn import BasicAuthMiddleware
from davbox.dav.errors import DavErrorMiddleware, install_response_pages
from davbox.dav.links import LinkDavMiddleware
from davbox.dav.locks import SqlLockStorage
from davbox.dav.props import SqlPropertyManager
from davbox.dav.provider import MailboxProvider
from davbox.db import Database
from davbox.dispatcher import DAV_PREFIX, Dispatcher
from davbox.encryption import IntegrityAlarm, open_storage
from davbox.events import EventBus, LogSink, Sink
from davbox.expiry import ExpiryJob, ExpiryScheduler, ExpiryWarnings
from davbox.file_index import FileIndexSink
from davbox.housekeeping import Housekeeping
from davbox.jobs import JobLeases
from davbox.mail import Outbox
from davbox.mail.sender import MailSender
from davbox.notify.digest import DigestScheduler
from davbox.notify.sink import NotificationSink
from davbox.notify.subscriptions import SubscriptionIndex
from davbox.ocs import OcsApp
from davbox.paths import base_url, database_url
from davbox.policies.engine import PolicyEngine
from davbox.policies.registry import build_policies
from davbox.providers.identity import IdentityProvider
from davbox.providers.identity.ldap import LdapIdentityProvider
from davbox.providers.identity.sql import SqlIdentityProvider
from davbox.providers.storage.filesystem import FilesystemStorage
from davbox.sessions import SessionStore
from davbox.sharing import ShareService
from davbox.throttle import LoginThrottle
from davbox.uploads import ResumableUploads


def identity_providers(settings: Settings, db: Database) -> list[IdentityProvider]:
    """The providers of ``auth.providers``, in order (the first that verifies wins)."""
    return [
        LdapIdentityProvider(db, entry)
        if isinstance(entry, LdapProviderSettings)
        else SqlIdentityProvider(db)
        for entry in settings.auth.providers
    ]


@dataclass
class Runtime:
    settings: Settings
    data_dir: Path
    db: Database
    storage: FilesystemStorage
    access: AccessService
    sessions: SessionStore
    engine: PolicyEngine
    events: EventBus
    shares: ShareService
    audit: AuditStore | None = None
    outbox: Outbox | None = None
    mail_sender: MailSender | None = None
    digests: DigestScheduler | None = None
    expiry: ExpiryScheduler | None = None

    @classmethod
    def create(cls, settings: Settings, data_dir: Path, config_path: Path | None = None) -> Runtime:
        data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(database_url(settings, data_dir))
        db.upgrade()
        alarm = IntegrityAlarm(db)
        storage = open_storage(settings, data_dir, db, alarm)
        sessions = SessionStore(
            db,
            idle_timeout=settings.web.session_idle_timeout,
            absolute_timeout=settings.web.session_max_age,
            step_timeout=settings.web.login_step_timeout,
        )
        access = AccessService(
            db,
            identity_providers(settings, db),
            cache_ttl=settings.auth.cache_ttl,
            refresh_interval=settings.auth.refresh_interval,
            throttle=LoginThrottle(
                db,
                account_limit=settings.auth.throttle_account_failures,
                address_limit=settings.auth.throttle_address_failures,
                window=settings.auth.throttle_window,
                max_delay=settings.auth.throttle_max_delay,
            ),
            two_factor_for=list(settings.auth.two_factor_for),
            sessions=sessions,
            basic_code_idle=(
                settings.auth.basic_code_idle if settings.auth.basic_password_code else None
            ),
        )
        policies, _ = build_policies(settings.policies, {}, str(config_path or "defaults"))
        engine = PolicyEngine(policies, members_may_share=settings.links.members_may_share)
        audit = AuditStore(db)
        # The audit sink first: if it cannot write, emit raises before anything
        # else has heard of the event, and the operation is refused.
        sinks: list[Sink] = [AuditSink(audit), LogSink(), FileIndexSink(db), FileIdSink(db)]
        outbox = Outbox(db, sender_domain=settings.mail.from_address.rpartition("@")[2])
        if settings.mail.active:
            # Last: it never raises, and it only hears of what was recorded.
            sinks.append(NotificationSink(db, outbox, SubscriptionIndex(db), settings))
        events = EventBus(sinks)
        alarm.events, alarm.mailboxes = events, storage.mailboxes
        shares = ShareService(db, storage, engine, access, events)
        return cls(
            settings, data_dir, db, storage, access, sessions, engine, events, shares, audit, outbox
        )

    def expiry_job(self) -> ExpiryJob:
        warnings = None
        if self.outbox is not None and self.settings.mail.active:
            login = f"{base_url(self.settings)}/login"
            warnings = ExpiryWarnings(self.db, self.outbox, self.settings.mail.language, login)
        return ExpiryJob(
            self.db, self.storage, self.engine, self.events, self.audit, warnings=warnings
        )

    def housekeeping(self) -> Housekeeping:
        return Housekeeping(
            self.db,
            self.storage,
            self.sessions,
            throttle_window=float(self.settings.auth.throttle_window),
            audit=self.audit,
            audit_keep_days=self.settings.audit.keep_days,
            events=self.events,
        )

    def start_background(self) -> None:
        """Start the server's own threads: the expiry job; mail sender and digests (mail on)."""
        if self.settings.expiry.enabled and self.expiry is None:
            self.expiry = ExpiryScheduler(
                self.expiry_job(),
                self.settings.expiry.interval,
                self.housekeeping(),
                JobLeases(self.db),
            )
            self.expiry.start()
        if self.outbox is None or not self.settings.mail.active or self.mail_sender is not None:
            return
        self.mail_sender = MailSender(self.outbox, self.settings.mail)
        self.mail_sender.start()
        self.digests = DigestScheduler(self.db, self.outbox, self.settings)
        self.digests.start()

    def stop_background(self) -> None:
        """Stop what ``start_background`` started (the mail in hand is finished)."""
        if self.expiry is not None:
            self.expiry.stop()
            self.expiry = None
        if self.digests is not None:
            self.digests.stop()
            self.digests = None
        if self.mail_sender is not None:
            self.mail_sender.stop()
            self.mail_sender = None

    def dav_config(
        self,
        mount_path: str | None = DAV_PREFIX,
        lock_storage: SqlLockStorage | None = None,
        property_manager: SqlPropertyManager | None = None,
    ) -> dict[str, Any]:
        """WsgiDAV's configuration; the link app mounts at "" and shares locks and properties."""
        provider = MailboxProvider(
            self.storage,
            self.engine,
            self.access,
            block_size=int(self.settings.storage.block_size),
            events=self.events,
        )
        return {
            "provider_mapping": {"/": provider},
            "mount_path": mount_path,
            "lock_storage": lock_storage or SqlLockStorage(self.db),
            "property_manager": property_manager or SqlPropertyManager(self.db),
            "middleware_stack": [DavErrorMiddleware, RequestResolver],
            "block_size": int(self.settings.storage.block_size),
            "verbose": 1,
            "logging": {"enable": False},
            "dir_browser": {"enable": False},
            "add_header_MS_Author_Via": True,
            "suppress_version_info": True,
            "hotfixes": {"re_encode_path_info": True, "emulate_win32_lastmod": True},
        }

    def report_pages(self) -> ReportPages:
        """The delivery report pages, reading this runtime's audit trail."""
        from davbox.report_access import ReportAccess

        store = self.audit or AuditStore(self.db)
        return ReportPages(
            store,
            ReportAccess(self.db, self.access, self.shares),
            self.events,
            self.settings.server.public_url,
        )

    def register_pages(self) -> RegisterPages | None:
        """The self-registration pages, if ``web.registration`` is on (mail is on then too)."""
        settings = self.settings.web.registration
        if not settings.enabled or self.outbox is None:
            return None
        from davbox.registration import Registrations

        registrations = Registrations(self.db, self.outbox, settings, base_url(self.settings))
        return RegisterPages(registrations, self.events)

    def wsgi_app(self) -> Dispatcher:
        logging.getLogger("wsgidav").setLevel(logging.ERROR)
        install_response_pages()
        locks, props = SqlLockStorage(self.db), SqlPropertyManager(self.db)
        dav = WsgiDAVApp(self.dav_config(DAV_PREFIX, locks, props))
        realm = self.settings.auth.realm
        members_dav = AuditMiddleware(ResponseHeaders(dav), self.events, self.audit)
        authenticated = BasicAuthMiddleware(members_dav, self.access, realm, self.events)
        # Nextcloud's chunked uploads end in a PUT through the same app.
        uploads = BasicAuthMiddleware(
            ChunkedUploads(self.storage, dav.provider_map["/"], members_dav),
            self.access,
            realm,
            self.events,
        )
        link_config = self.dav_config(None, locks, props)
        link_config["lock_storage"] = False  # it uses the member app's lock manager:
        link_app = WsgiDAVApp(link_config)
        # one manager, so a member's and a link user's LOCK of a file are
        # decided under one lock (and one storage, which a manager closes on exit).
        link_app.lock_manager = dav.lock_manager
        for share_provider in link_app.provider_map.values():
            share_provider.set_lock_manager(dav.lock_manager)
        link_dav = LinkDavMiddleware(
            AuditMiddleware(link_app, self.events, self.audit), self.shares, self.events, realm
        )
        pages = WebApp(
            self.db,
            self.access,
            self.sessions,
            self.events,
            max_age=self.settings.web.session_max_age,
            links=LinkPages(
                self.shares,
                ResumableUploads(self.storage, self.engine, self.events),
                LinkGate(self.db, self.storage),
                self.engine,
                codes.from_settings(self.settings, self.db, self.outbox),
                self.audit,
            ),
            reports=self.report_pages(),
            registration=self.register_pages(),
            loginflow=LoginFlowPages(
                LoginFlows(self.db), self.events, self.settings.server.public_url
            ),
            notifications=NotifyPages(
                self.events,
                audit=self.audit,
                mail_active=self.settings.mail.active,
                mail_language=self.settings.mail.language,
            ),
        )
        return Dispatcher(
            authenticated,
            pages,
            link_dav=link_dav,
            ocs=OcsApp(self.shares, self.access, self.settings, self.events),
            uploads=uploads,
            access_log=self.settings.logging.access_log,
            trusted_proxies=list(self.settings.server.trusted_proxies),
        )
