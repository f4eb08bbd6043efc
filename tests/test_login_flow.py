"""Nextcloud Login Flow v2 in a real browser: a sync client gets an app password.

The client's side is done as nextcloudcmd's GUI sibling does it (POST to
start, poll until granted); the person's side in Debian's Chromium under
Playwright, with password and authenticator code; the app password the
poll hands out is then used by the real ``nextcloudcmd`` to sync.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
import requests

from tests.davserver import PASSWORD, DavboxServer

pytestmark = [pytest.mark.browser, pytest.mark.clients]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    config = tmp_path_factory.mktemp("cfg") / "davbox.yaml"
    config.write_text('auth:\n  two_factor_for: ["*"]\n')
    srv = DavboxServer(tmp_path_factory.mktemp("flow") / "data", config=config).start()
    yield srv
    srv.stop()


def _totp(server: DavboxServer, user: str) -> pyotp.TOTP:
    uri = re.search(r"otpauth://\S+", server.cli("2fa", "enroll", user, "--no-qr").stdout)
    assert uri is not None
    return pyotp.TOTP(parse_qs(urlparse(uri.group(0)).query)["secret"][0])


def _start(server: DavboxServer) -> dict:
    answer = requests.post(
        f"{server.url}/index.php/login/v2",
        headers={"User-Agent": "Mozilla/5.0 (Linux) mirall/3.7.3 (Nextcloud)"},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    return answer.json()


def _poll(flow: dict) -> requests.Response:
    return requests.post(
        flow["poll"]["endpoint"], data={"token": flow["poll"]["token"]}, timeout=10
    )


def test_login_flow_with_a_code_gives_nextcloudcmd_an_app_password(browser, server, tmp_path):
    server.add_user("noor")
    server.mailbox("noor-box", noor="member")
    totp = _totp(server, "noor")
    flow = _start(server)
    assert flow["login"].startswith(f"{server.url}/index.php/login/v2/flow/")
    assert flow["poll"]["endpoint"] == f"{server.url}/index.php/login/v2/poll"
    assert _poll(flow).status_code == 404, "nothing before the person grants access"

    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(flow["login"])
    assert page.url == f"{server.url}/login", "first the web login"
    page.fill("#username", "noor")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/login/code")
    assert _poll(flow).status_code == 404, "a password alone grants nothing"
    page.fill("#code", totp.now())
    page.click("form[action='/login/code'] button")
    page.wait_for_url(flow["login"])  # back to the app's page after the code
    assert "mirall/3.7.3" in page.content() and "noor" in page.content()
    page.click("button[value=grant]")
    assert "Access granted" in page.locator("h1").inner_text()
    assert errors == []
    context.close()

    granted = _poll(flow)
    assert granted.status_code == 200
    data = granted.json()
    assert data["server"] == server.url and data["loginName"] == "noor"
    password = data["appPassword"]
    assert re.fullmatch(r"[a-z2-9]{5}(-[a-z2-9]{5}){5}", password)
    assert _poll(flow).status_code == 404, "the password is handed out once"
    page_again = requests.get(flow["login"], timeout=10)
    assert page_again.status_code == 404, "a used login link is gone"
    assert password not in server.log_text(), "the app password never reaches the log"

    # The real client syncs with it (the account password alone would be refused).
    nextcloudcmd = shutil.which("nextcloudcmd")
    if nextcloudcmd is None:
        pytest.fail("nextcloudcmd is not installed (scripts/test.sh installs it)")
    local = tmp_path / "sync"
    local.mkdir()
    (local / "hallo.txt").write_text("via Login Flow v2\n")
    command = [nextcloudcmd, "--non-interactive", "-u", "noor", "-p", password]
    result = subprocess.run(
        [*command, "--path", "/noor-box", str(local), server.url],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stored = requests.get(server.dav("noor-box/hallo.txt"), auth=("noor", password), timeout=10)
    assert stored.status_code == 200 and stored.text == "via Login Flow v2\n"
    assert (
        requests.request(
            "PROPFIND", server.dav(), auth=("noor", PASSWORD), headers={"Depth": "0"}, timeout=10
        ).status_code
        == 401
    )
    records = server.cli("audit", "query", "--format", "json", "--event", "login-succeeded").stdout
    assert '"login-flow"' in records


def test_cancelled_and_unknown_flows_give_nothing(browser, server):
    server.add_user("bas")
    flow = _start(server)
    totp = _totp(server, "bas")
    context = browser.new_context()
    page = context.new_page()
    page.goto(flow["login"])
    page.fill("#username", "bas")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/login/code")
    page.fill("#code", totp.now())
    page.click("form[action='/login/code'] button")
    page.wait_for_url(flow["login"])
    page.click("button[value=cancel]")
    assert "Access not granted" in page.locator("h1").inner_text()
    context.close()
    assert _poll(flow).status_code == 404
    refused = server.cli("audit", "query", "--format", "json", "--event", "login-refused").stdout
    assert '"denied"' in refused and '"bas"' in refused, "the cancel is recorded"
    fake = {"poll": {"endpoint": flow["poll"]["endpoint"], "token": "x" * 43}}
    assert _poll(fake).status_code == 404
    assert (
        requests.get(f"{server.url}/index.php/login/v2/flow/{'y' * 43}", timeout=10).status_code
        == 404
    )


def test_getapppassword_trades_a_password_login_once(server):
    server.add_user("ria")  # accounts here need two-factor login
    headers = {"OCS-APIRequest": "true"}
    url = f"{server.url}/ocs/v2.php/core/getapppassword?format=json"
    refused = requests.get(url, auth=("ria", PASSWORD), headers=headers, timeout=10)
    assert refused.status_code == 401, "two-factor accounts need more than a password"
    missing = requests.get(url, auth=("ria", PASSWORD), timeout=10)
    assert missing.status_code == 412


def test_getapppassword_for_an_account_without_two_factor(make_server):
    srv = make_server("plain")  # the test servers' default: two-factor login off
    srv.add_user("tom")
    headers = {"OCS-APIRequest": "true"}
    url = f"{srv.url}/ocs/v2.php/core/getapppassword?format=json"
    first = requests.get(url, auth=("tom", PASSWORD), headers=headers, timeout=10)
    assert first.status_code == 200
    password = first.json()["ocs"]["data"]["apppassword"]
    assert (
        requests.request(
            "PROPFIND", srv.dav(), auth=("tom", password), headers={"Depth": "0"}, timeout=10
        ).status_code
        == 207
    )
    again = requests.get(url, auth=("tom", password), headers=headers, timeout=10)
    assert again.status_code == 403, "an app password is not traded for another"
    refused = srv.cli("audit", "query", "--format", "json", "--event", "login-refused").stdout
    assert '"is-app-password"' in refused
