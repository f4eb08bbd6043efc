"""HTTP Basic authentication in front of the WebDAV app.

Reads ``HTTP_AUTHORIZATION`` (and ``davbox.dav_user``: under Nextcloud's
``/remote.php/dav/files/<account>/`` only that account gets in, others 403);
sets ``wsgidav.auth.user_name`` (WsgiDAV's lock
principal), ``davbox.principal`` and ``davbox.mailboxes``. Missing, malformed
and wrong credentials all get 401 with a ``WWW-Authenticate`` challenge and a
one-line reason; a malformed header never causes a 500. Too many failed logins
for the account or from the client address get 429 with ``Retry-After``. When an
identity provider cannot answer (LDAP down) and none other verified the
password, the answer is 503 with ``Retry-After``: never a fallback that lets
anyone in, never a traceback (the provider logs the cause). Passwords are never
logged. Credentials are only accepted over TLS or loopback in a later release;
the README tells admins to enable ``server.tls`` (Windows insists on it).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from typing import Any

from davbox.access import AccessService, AppPasswordRequired
from davbox.events import AccessRefused, EventBus, LoginRefused, request_context
from davbox.http import plain_response
from davbox.providers.identity import ProviderUnavailable
from davbox.throttle import Throttled

WRONG = (
    "wrong user name or password; accounts with two-factor login sign in to WebDAV"
    " clients with an app password (create one on your account page, or ask an"
    " administrator: davbox app-password create NAME --label CLIENT)"
)
UNAVAILABLE = (
    "logging in is not possible right now (the account directory does not answer); try again later"
)


class BasicAuthMiddleware:
    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        access: AccessService,
        realm: str,
        events: EventBus | None = None,
    ) -> None:
        self.app = app
        self.access = access
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'
        self.events = events or EventBus()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not header:
            return self._refuse(environ, start_response, "authentication required")
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return self._refuse(environ, start_response, "only Basic authentication is supported")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return self._refuse(environ, start_response, "malformed Authorization header", "")
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            return self._refuse(environ, start_response, "malformed Authorization header", "")
        try:
            principal = self.access.authenticate(username, password, environ.get("REMOTE_ADDR", ""))
        except AppPasswordRequired:
            # The same answer as a wrong password: it must not confirm the password.
            self._emit(environ, username, "app-password-required", 401)
            return plain_response(
                environ, start_response, 401, WRONG, [("WWW-Authenticate", self.challenge)]
            )
        except Throttled as exc:
            self._emit(environ, username, "throttled", 429)
            return plain_response(
                environ, start_response, 429, str(exc), [("Retry-After", str(exc.retry_after))]
            )
        except ProviderUnavailable as exc:
            self._emit(environ, username, "unavailable", 503)
            return plain_response(
                environ, start_response, 503, UNAVAILABLE, [("Retry-After", str(exc.retry_after))]
            )
        if principal is None:
            return self._refuse(environ, start_response, WRONG, username)
        tree_of = environ.get("davbox.dav_user")
        if tree_of is not None and tree_of != principal.name:
            self.events.emit(
                AccessRefused(
                    **{**request_context(environ), "actor": principal.name},
                    path=environ.get("PATH_INFO", ""),
                    operation=environ.get("REQUEST_METHOD", "").lower(),
                    status=403,
                    rule="own-files-only",
                    reason="the file tree of another account",
                )
            )
            return plain_response(
                environ,
                start_response,
                403,
                f"this is the file tree of another account; yours is at"
                f" /remote.php/dav/files/{principal.name}/",
            )
        environ["wsgidav.auth.user_name"] = principal.name
        environ["davbox.principal"] = principal
        environ["davbox.mailboxes"] = self.access.mailboxes_for(principal)
        return self.app(environ, start_response)

    def _refuse(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        reason: str,
        username: str | None = None,
    ) -> list[bytes]:
        """401 with the challenge; a refused credential (``username`` given) is an event."""
        if username is not None:
            outcome = "wrong" if username else "malformed"
            self._emit(environ, username, outcome, 401)
        return plain_response(
            environ, start_response, 401, reason, [("WWW-Authenticate", self.challenge)]
        )

    def _emit(self, environ: dict[str, Any], username: str, outcome: str, status: int) -> None:
        context = request_context(environ)
        context["actor"] = username
        self.events.emit(LoginRefused(**context, outcome=outcome, status=status))
