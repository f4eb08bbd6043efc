"""The web login driven end to end in a real browser: Debian's Chromium under Playwright.

Covers what only a browser shows: that it keeps the ``__Host-`` Secure
cookie on loopback and sends it back, follows the login steps, renders the
QR code, and that the app password it creates works in a WebDAV client.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
import requests
import zxingcpp
from PIL import Image
from playwright.sync_api import expect

from tests.davserver import PASSWORD, DavboxServer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    config = tmp_path_factory.mktemp("cfg") / "davbox.yaml"
    config.write_text('auth:\n  two_factor_for: ["*"]\n')
    srv = DavboxServer(tmp_path_factory.mktemp("browser") / "data", config=config).start()
    yield srv
    srv.stop()


def _secret(uri: str) -> str:
    return parse_qs(urlparse(uri).query)["secret"][0]


def _fresh_code(totp: pyotp.TOTP, used: set[str]) -> str:
    """A code not used before (a code is accepted once: wait for the next step if needed)."""
    while (code := totp.now()) in used:
        time.sleep(1)
    used.add(code)
    return code


def test_login_with_totp_and_an_app_password_for_webdav(browser, server, tmp_path):
    server.add_user("ilse")
    server.mailbox("ilse-box", ilse="member")
    uri = re.search(r"otpauth://\S+", server.cli("2fa", "enroll", "ilse", "--no-qr").stdout)
    assert uri is not None
    totp = pyotp.TOTP(_secret(uri.group(0)))
    context = browser.new_context(locale="nl-NL")
    page = context.new_page()

    page.goto(f"{server.url}/account")
    assert page.url == f"{server.url}/login", "the account page needs a login"
    assert page.locator("h1").inner_text() == "Inloggen", "a Dutch browser gets Dutch pages"
    page.fill("#username", "ilse")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/login/code")
    cookies = {c["name"]: c for c in context.cookies()}
    half = cookies["__Host-davbox"]
    assert half["secure"] and half["httpOnly"] and half["sameSite"] == "Strict"

    # Half-way (password only): the browser session opens nothing.
    page.goto(f"{server.url}/account/app-passwords")
    assert page.url == f"{server.url}/login/code"

    page.fill("#code", "000000" if totp.now() != "000000" else "111111")
    page.click("form[action='/login/code'] button")
    assert "Die code klopt niet" in page.locator("[role=alert]").inner_text()

    used: set[str] = set()
    page.fill("#code", _fresh_code(totp, used))
    page.click("form[action='/login/code'] button")
    page.wait_for_url(f"{server.url}/account")
    assert "ilse" in page.locator("h1").inner_text()
    full = {c["name"]: c for c in context.cookies()}["__Host-davbox"]
    assert full["value"] != half["value"], "a new session id after the code step"

    page.click("a[href='/account/app-passwords']")
    page.fill("#label", "Verkenner laptop")
    page.click("form[action='/account/app-passwords'] button[type=submit] >> nth=-1")
    app_password = page.locator("#new-app-password").inner_text().strip()
    assert re.fullmatch(r"[a-z2-9]{5}(-[a-z2-9]{5}){5}", app_password)
    page.screenshot(path=str(tmp_path / "app-passwords.png"), full_page=True)

    dav = requests.request(
        "PROPFIND",
        server.dav("ilse-box/"),
        auth=("ilse", app_password),
        headers={"Depth": "1"},
        timeout=10,
    )
    assert dav.status_code == 207, "the app password made in the browser works in WebDAV"
    refused = requests.request(
        "PROPFIND", server.dav(), auth=("ilse", PASSWORD), headers={"Depth": "0"}, timeout=10
    )
    assert refused.status_code == 401, "the account password alone does not open WebDAV"

    page.reload()
    row = page.locator("tr", has_text="Verkenner laptop")
    assert "127.0.0.1" in row.inner_text(), "last use and address are shown"
    assert app_password not in page.content(), "the password is shown only once"
    row.locator("button").click()
    assert page.locator("tr", has_text="Verkenner laptop").count() == 0
    revoked = requests.request(
        "PROPFIND", server.dav(), auth=("ilse", app_password), headers={"Depth": "0"}, timeout=10
    )
    assert revoked.status_code == 401

    page.click("header button")  # log out
    page.goto(f"{server.url}/account")
    assert page.url == f"{server.url}/login"
    context.close()


def test_first_login_sets_up_two_factor_with_the_qr_code(browser, server, tmp_path):
    server.add_user("joost")
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.goto(f"{server.url}/login")
    page.fill("#username", "joost")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/login/setup")
    qr = page.locator("figure.qr svg")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None and box["width"] > 100, "the QR code is drawn large enough to scan"
    secret = page.locator("code.secret").inner_text().strip()
    # Read the QR code as a phone would: from the rendered pixels.
    shot = tmp_path / "qr.png"
    qr.screenshot(path=str(shot))
    decoded = zxingcpp.read_barcodes(Image.open(shot))
    assert [d.text for d in decoded] == [
        f"otpauth://totp/davbox:joost?secret={secret}&issuer=davbox"
    ]
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("form[action='/login/setup'] button")
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10 and len(set(codes)) == 10
    page.click("text=I have stored them: continue")
    page.wait_for_url(f"{server.url}/account")
    assert "on" in page.locator("dl.facts dd").first.inner_text()
    context.close()

    # The next login takes a recovery code instead of the phone's code, once.
    for attempt in range(2):
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/login")
        page.fill("#username", "joost")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.fill("#code", codes[0])
        page.click("form[action='/login/code'] button")
        if attempt == 0:
            assert page.url == f"{server.url}/account"
        else:
            assert page.url == f"{server.url}/login/code", "a recovery code works once"
        context.close()
