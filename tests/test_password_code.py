"""The optional password+code mode for Basic-only WebDAV clients (off by default).

Against a real server: the code appended to the password is checked once, the
exact credential then works from the same client address for an idle window,
and from nowhere else; with the mode off, password+code is just a wrong password.
"""

from __future__ import annotations

import base64
import http.client
import time

import pyotp
from sqlalchemy import update

from davbox import twofactor
from davbox.db.models import WebSession
from davbox.sessions import BASIC
from tests.davserver import PASSWORD
from tests.test_twofactor import secret_of


def propfind(server, user: str, password: str, source: str = "127.0.0.1") -> int:
    """PROPFIND Depth 0 of the user's mailbox from the given loopback source address."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=10, source_address=(source, 0)
    )
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    conn.request("PROPFIND", "/dav/", headers={"Depth": "0", "Authorization": f"Basic {token}"})
    status = conn.getresponse().status
    conn.close()
    return status


def _server(make_server, tmp_path, mode: bool):
    config = tmp_path / "davbox.yaml"
    mode_line = "  basic_password_code: true\n  basic_code_idle: 60\n" if mode else ""
    config.write_text('auth:\n  two_factor_for: ["*"]\n' + mode_line)  # off: the default
    server = make_server("pc", config=config)
    server.add_user("gijs")
    enrollment = twofactor.enroll(server.database(), "gijs")
    return server, pyotp.TOTP(secret_of(enrollment.uri))


def test_password_and_code_open_webdav_once_per_code(make_server, tmp_path):
    server, totp = _server(make_server, tmp_path, mode=True)
    credential = PASSWORD + totp.now()

    assert propfind(server, "gijs", PASSWORD) == 401, "the password alone still opens nothing"
    assert propfind(server, "gijs", credential) == 207
    assert propfind(server, "gijs", credential) == 207, "the same credential goes on working"
    assert propfind(server, "gijs", credential, source="127.0.0.2") == 401, (
        "from another address the credential is refused (its code was used already)"
    )
    assert propfind(server, "gijs", "wrong-password" + totp.now()) == 401
    later = PASSWORD + totp.at(time.time() + 30)
    assert propfind(server, "gijs", later, source="127.0.0.3") == 207, "a new code opens anew"


def test_the_credential_ends_when_unused_and_with_a_password_change(make_server, tmp_path):
    server, totp = _server(make_server, tmp_path, mode=True)
    credential = PASSWORD + totp.now()
    assert propfind(server, "gijs", credential) == 207
    with server.database().session() as session:
        session.execute(
            update(WebSession).where(WebSession.stage == BASIC).values(last_seen=time.time() - 61)
        )
    assert propfind(server, "gijs", credential) == 401, "idle longer than basic_code_idle"

    fresh = PASSWORD + totp.at(time.time() + 30)
    assert propfind(server, "gijs", fresh) == 207
    server.cli("user", "passwd", "gijs", "--password-stdin", input="another-long-password\n")
    assert propfind(server, "gijs", fresh) == 401, "a password change ends the credential"


def test_with_the_mode_off_password_and_code_is_a_wrong_password(make_server, tmp_path):
    server, totp = _server(make_server, tmp_path, mode=False)
    assert propfind(server, "gijs", PASSWORD + totp.now()) == 401
