"""Share links driven in a real browser: Debian's Chromium under Playwright.

Covers what only a browser shows: that drop.js runs under the page's
Content-Security-Policy, sends files picked in the file picker and dropped on
the drop zone in chunks, shows the policy's refusal next to the refused file
and a receipt whose SHA-256 is the file's; and that a read link with a
password opens (the remembered-password cookie is kept on loopback) and its
download button and zip button deliver the stored bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from davbox import file_index, links
from tests.davserver import DavboxServer
from tests.test_link_pages import mailbox, put

pytestmark = pytest.mark.browser

LINK_PASSWORD = "a-link-password-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    config = tmp_path_factory.mktemp("cfg") / "davbox.yaml"
    config.write_text(
        "policies:\n"
        "  - name: drop-types\n"
        "    type: extensions\n"
        '    mailboxes: ["drop*"]\n'
        "    allow: [pdf, txt, bin]\n"
    )
    srv = DavboxServer(tmp_path_factory.mktemp("browser") / "data", config=config).start()
    yield srv
    srv.stop()


def _problems(page: object) -> list[str]:
    """Script errors and Content-Security-Policy violations seen on the page.

    (Chromium also logs every 4xx answer as a console error: the refused
    upload's 415 is expected, so those are not counted.)
    """
    seen: list[str] = []
    page.on("pageerror", lambda error: seen.append(str(error)))  # type: ignore[attr-defined]
    page.on(  # type: ignore[attr-defined]
        "console",
        lambda message: (
            seen.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    return seen


def test_drop_page_sends_files_and_shows_refusals_and_receipts(browser, server):
    box, folder = mailbox(server, "drop")
    put(folder, "already-here.txt", b"not for the sender's eyes")
    _link, token = links.create(
        server.database(), mailbox=box, path="/", is_folder=True, permission="drop", note="Graag"
    )
    notes = b"meeting notes\n" * 100
    large = os.urandom(9 * 1024 * 1024 + 12345)  # two chunks of the upload API
    context = browser.new_context(locale="nl-NL")
    page = context.new_page()
    problems = _problems(page)

    page.goto(f"{server.url}/s/{token}")
    assert page.locator("h1").inner_text() == "Bestanden versturen"
    assert "already-here" not in page.content()
    page.set_input_files(
        "#upload-files",
        files=[
            {"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ" * 50},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": notes},
            {"name": "large.bin", "mimeType": "application/octet-stream", "buffer": large},
        ],
    )
    receipts = page.locator("#receipt tbody tr")
    receipts.nth(1).wait_for(timeout=60_000)
    refused = page.locator("#upload-list li.refused")
    assert refused.count() == 1
    assert refused.locator(".name").inner_text() == "tool.exe"
    assert refused.locator(".state").inner_text() == (
        f"Geweigerd: files of type .exe are not accepted in mailbox '{box}'; allowed: pdf, txt, bin"
    )
    done = page.locator("#upload-list li.done .state")
    assert done.all_inner_texts() == ["Aangekomen", "Aangekomen"]
    shown = {
        row.locator("td").nth(0).inner_text(): row.locator("code.sha256").inner_text()
        for row in receipts.all()
    }
    assert shown == {
        "notes.txt": hashlib.sha256(notes).hexdigest(),
        "large.bin": hashlib.sha256(large).hexdigest(),
    }
    assert page.locator("#upload-list progress").nth(2).get_attribute("aria-label") == (
        "Voortgang van large.bin"
    )

    # Dropped on the drop zone rather than picked.
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["dropped bytes"], "dropped.txt", {type: "text/plain"}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true,
                                                      cancelable: true}));
        }"""
    )
    receipts.nth(2).wait_for(timeout=30_000)
    assert receipts.nth(2).locator("code.sha256").inner_text() == (
        hashlib.sha256(b"dropped bytes").hexdigest()
    )
    assert (folder / "notes.txt").read_bytes() == notes
    assert (folder / "large.bin").read_bytes() == large
    assert (folder / "dropped.txt").read_bytes() == b"dropped bytes"
    assert not (folder / "tool.exe").exists()

    # The sender says when their file may go: the date field of the page.
    soon = (datetime.now(UTC) + timedelta(days=3)).date()
    page.fill("#upload-until", soon.isoformat())
    page.set_input_files(
        "#upload-files", files=[{"name": "brief.txt", "mimeType": "text/plain", "buffer": b"b"}]
    )
    receipts.nth(3).wait_for(timeout=30_000)
    until = file_index.available_until(server.database(), box, "/brief.txt")
    assert until == datetime(soon.year, soon.month, soon.day, 23, 59, 59, tzinfo=UTC)
    assert file_index.available_until(server.database(), box, "/notes.txt") is None
    assert problems == []
    context.close()


def test_read_link_with_a_password_downloads_in_the_browser(browser, server, tmp_path):
    box, folder = mailbox(server, "read")
    report = put(folder, "stukken/Verslag März.pdf", b"%PDF-1.4\n" + os.urandom(200_000))
    put(folder, "stukken/bijlagen/b.txt", b"bijlage")
    _link, token = links.create(
        server.database(),
        mailbox=box,
        path="/stukken",
        is_folder=True,
        permission="read",
        password=LINK_PASSWORD,
        label="Stukken voor de zitting",
    )
    context = browser.new_context(locale="en-GB", accept_downloads=True)
    page = context.new_page()
    problems = _problems(page)

    page.goto(f"{server.url}/s/{token}")
    assert page.locator("h1").inner_text() == "Password needed"
    page.fill("#link-password", LINK_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/s/{token}")
    assert page.locator("h1").inner_text() == "Stukken voor de zitting"

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Verslag März.pdf").click()
    download = download_info.value
    assert download.suggested_filename == "Verslag März.pdf"
    assert download.path().read_bytes() == report

    page.get_by_role("link", name="Folder bijlagen").click()
    assert page.locator(".crumbs [aria-current=page]").inner_text() == "bijlagen"
    page.go_back()
    with page.expect_download() as zip_info:
        page.click("#download-zip")
    with zipfile.ZipFile(io.BytesIO(zip_info.value.path().read_bytes())) as archive:
        assert archive.read("stukken/Verslag März.pdf") == report
        assert archive.read("stukken/bijlagen/b.txt") == b"bijlage"
    assert problems == []
    context.close()
