"""Explorer and Finder request sequences, replayed against a real ``davbox serve``.

Each file in ``tests/fixtures/clients/`` is one user action of one client
(Windows Explorer through the WebClient service, ``Microsoft-WebDAV-MiniRedir``;
macOS Finder through ``WebDAVFS``): the requests that client sends, in order,
reconstructed from its documented behaviour and captures, with the sources
named at the top of the file. This module replays every file as one test, in a
mailbox of its own, and checks what the client depends on in each answer.

Fixture format (YAML)::

    client / action / sources / notes      documentation (sources are required)
    defaults: {headers: {...}}             sent with every step (a step's null drops one)
    setup: {folders: [...], files: {name: text}}   made by plain requests first;
                                           not part of the client's sequence
    steps:                                 the client's requests, in order
      - name, method
        path: mailbox-relative, unquoted ("" is the mailbox folder), sent
              percent-encoded as UTF-8;  or  url_path: an absolute path
        auth: false                        no Authorization (default: Basic)
        headers: {...}                     exact header lines; values take placeholders
        destination: name                  Destination: absolute URL of a mailbox name
        body: text | body_hex: hex         the exact body (Content-Length is added
                                           unless given or chunked)
        chunked: N                         Transfer-Encoding: chunked, N-byte chunks
        junk: true                         a ._*, .DS_Store, Thumbs.db, desktop.ini request
        xfail: reason                      a known davbox bug: this step must fail (strict)
        expect:
          status: 207 | [200, 204]
          headers: {Name: exact}  header_contains: {Name: text}
          header_present: [...]  header_absent: [...]
          body_contains: [...]  body_lacks: [...]
          capture: {placeholder: Header-Name}        angle brackets are stripped
          xml_text: {D:path/D:to: text}    an element below the answer's root element
          multistatus:
            count: n                       number of <response> elements
            listed_once: [names]           each appears once, whatever its normalisation
            not_listed: [names]
            hrefs: [paths]                 decoded absolute href paths, each once
            responses: {name: {status: n, found: [D:prop], values: {D:prop: text},
                                collection: bool, numeric: [D:prop],
                                one_of: [{D:prop: text, ...}, ...]}}
    after:                                 checked in the mailbox's storage folder
      files: {name: text | {hex: ...}}     exact bytes
      absent: [names]
      names: {folder: [names]}             the folder's exact entries (raw bytes, NFC)

Unknown keys are errors, and a request for a junk name must be marked ``junk``.

Placeholders: ``{mailbox}``, ``{mailbox_url}`` (absolute, ends in ``/``),
``{mailbox_path}``, ``{host}`` and whatever a step captured. Property names
use the prefixes D (``DAV:``), Z (``urn:schemas-microsoft-com:``) and A
(``http://www.apple.com/webdav_fs/props/``).

Junk files (``._*``, ``.DS_Store``, ``Thumbs.db``, ``desktop.ini``) are stored
like any file today; a configurable policy (store / hide / refuse) is planned.
Steps marked ``junk: true`` assert only what is certain today (a probe for a
name nobody created is 404; creating one succeeds as any file would), and the
``after`` checks never name junk files, so those steps are the ones to revisit
when the policy lands.

The server here speaks plain HTTP on loopback. The real Explorer refuses Basic
authentication over plain HTTP (davbox serves it over ``server.tls``); the
requests are otherwise what it sends over TLS. The mailboxes named
``finder-*`` have a quota, so Finder's RFC 4331 quota properties have values.
"""

from __future__ import annotations

import base64
import http.client
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests
import yaml

from tests.davserver import PASSWORD, DavboxServer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "clients"
USER = "replayer"
NAMESPACES = {
    "D": "DAV:",
    "Z": "urn:schemas-microsoft-com:",
    "A": "http://www.apple.com/webdav_fs/props/",
}
CONFIG = """
policies:
  - name: finder-quota
    type: quota
    mailboxes: ["finder-*"]
    max_bytes: 1GB
"""
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.yaml"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    base = tmp_path_factory.mktemp("replays")
    config = base / "config.yaml"
    config.write_text(CONFIG)
    srv = DavboxServer(base / "data", config=config).start()
    srv.add_user(USER)
    yield srv
    srv.stop()


# --- the replay ----------------------------------------------------------------


class StepFailed(AssertionError):
    pass


@dataclass
class Replay:
    server: DavboxServer
    mailbox: str
    values: dict[str, str] = field(default_factory=dict)
    conn: http.client.HTTPConnection | None = None

    def __post_init__(self) -> None:
        self.values.update(
            mailbox=self.mailbox,
            mailbox_path=self.mailbox_path,
            mailbox_url=self.server.url + self.mailbox_path,
            host=f"127.0.0.1:{self.server.port}",
        )

    @property
    def mailbox_path(self) -> str:
        return f"/dav/{quote(self.mailbox)}/"

    def fill(self, text: str) -> str:
        def value(match: re.Match[str]) -> str:
            if match.group(1) not in self.values:
                raise StepFailed(f"placeholder {{{match.group(1)}}} has no value yet")
            return self.values[match.group(1)]

        return PLACEHOLDER.sub(value, text)

    def url_of(self, name: str) -> str:
        """The absolute URL of a mailbox-relative name, percent-encoded as UTF-8."""
        return self.server.url + self.mailbox_path + quote(name)

    def connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def send(self, step: dict[str, Any], defaults: dict[str, Any]) -> http.client.HTTPResponse:
        """Send the step as written: its own header lines, its exact body."""
        if "url_path" in step:
            target = self.fill(step["url_path"])
        else:
            target = self.mailbox_path + quote(step["path"])
        headers: dict[str, str | None] = {"Host": self.values["host"]}
        if step.get("auth", True):
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        headers.update(defaults.get("headers") or {})
        headers.update(step.get("headers") or {})
        if "destination" in step:
            headers["Destination"] = self.url_of(step["destination"])
        body = body_of(step)
        chunked = step.get("chunked")
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        elif body and not any(k.lower() == "content-length" for k in headers):
            headers["Content-Length"] = str(len(body))
        conn = self.connection()
        conn.putrequest(step["method"], target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            if value is not None:
                conn.putheader(name, self.fill(str(value)))
        conn.endheaders()
        if chunked:
            for start in range(0, len(body), chunked):
                piece = body[start : start + chunked]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        elif body:
            conn.send(body)
        return conn.getresponse()

    def check(self, step: dict[str, Any], response: http.client.HTTPResponse, body: bytes) -> None:
        expect = step.get("expect") or {}
        status = expect.get("status")
        wanted = status if isinstance(status, list) else [status]
        if status is not None and response.status not in wanted:
            text = body[:600].decode(errors="replace")
            raise StepFailed(f"status {response.status}, expected {status}: {text}")
        for name, value in (expect.get("headers") or {}).items():
            got = response.getheader(name)
            if got != self.fill(str(value)):
                raise StepFailed(f"header {name}: {got!r}, expected {value!r}")
        for name, value in (expect.get("header_contains") or {}).items():
            got = response.getheader(name) or ""
            if self.fill(str(value)) not in got:
                raise StepFailed(f"header {name}: {got!r} does not contain {value!r}")
        for name in expect.get("header_present") or []:
            if response.getheader(name) is None:
                raise StepFailed(f"no {name} header")
        for name in expect.get("header_absent") or []:
            if response.getheader(name) is not None:
                raise StepFailed(f"header {name} present: {response.getheader(name)!r}")
        for name, header in (expect.get("capture") or {}).items():
            got = response.getheader(header)
            if not got:
                raise StepFailed(f"no {header} header to capture as {{{name}}}")
            self.values[name] = got.strip().strip("<>")
        text = body.decode("utf-8", errors="replace")
        for wanted_text in expect.get("body_contains") or []:
            if self.fill(wanted_text) not in text:
                raise StepFailed(f"body lacks {wanted_text!r}: {text[:600]}")
        for unwanted in expect.get("body_lacks") or []:
            if self.fill(unwanted) in text:
                raise StepFailed(f"body contains {unwanted!r}: {text[:600]}")
        if "xml_text" in expect:
            self.check_xml_text(expect["xml_text"], body)
        if "multistatus" in expect:
            self.check_multistatus(expect["multistatus"], body)

    def check_xml_text(self, expect: dict[str, str], body: bytes) -> None:
        root = parse_xml(body)
        for path, wanted in expect.items():
            element = root.find(path, NAMESPACES)
            got = None if element is None else (element.text or "").strip()
            if got != self.fill(wanted):
                raise StepFailed(f"{path}: {got!r}, expected {self.fill(wanted)!r}")

    def check_multistatus(self, expect: dict[str, Any], body: bytes) -> None:
        root = parse_xml(body)
        if root.tag != "{DAV:}multistatus":
            raise StepFailed(f"root element {root.tag}, expected DAV:multistatus")
        responses = parse_multistatus(root, self.mailbox_path)
        names = [name for name, _ in responses]
        if "count" in expect and len(responses) != expect["count"]:
            raise StepFailed(f"{len(responses)} responses, expected {expect['count']}: {names}")
        normalised = [unicodedata.normalize("NFC", name) for name in names]
        for name in expect.get("listed_once") or []:
            times = normalised.count(unicodedata.normalize("NFC", name))
            if times != 1:
                raise StepFailed(f"{name!r} listed {times} times: {names}")
        for name in expect.get("not_listed") or []:
            if unicodedata.normalize("NFC", name) in normalised:
                raise StepFailed(f"{name!r} is listed: {names}")
        hrefs = [
            unquote(urlsplit(r.findtext("{DAV:}href") or "").path)
            for r in root.findall("{DAV:}response")
        ]
        for href in expect.get("hrefs") or []:
            if hrefs.count(unquote(self.fill(href))) != 1:
                raise StepFailed(f"href {self.fill(href)!r} not listed once: {hrefs}")
        by_name = dict(responses)
        for name, checks in (expect.get("responses") or {}).items():
            if name not in by_name:
                raise StepFailed(f"no response for {name!r}: {names}")
            check_response(name, by_name[name], checks)


def parse_xml(body: bytes) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise StepFailed(f"the answer is not XML ({exc}): {body[:300]!r}") from None


def body_of(step: dict[str, Any]) -> bytes:
    if "body_hex" in step:
        return bytes.fromhex("".join(step["body_hex"].split()))
    return str(step.get("body") or "").encode("utf-8")


def clark(name: str) -> str:
    prefix, _, local = name.partition(":")
    return f"{{{NAMESPACES[prefix]}}}{local}"


@dataclass
class Answer:
    status: int | None  # a response-level <status> (no propstat)
    props: dict[str, tuple[int, ET.Element]]


def parse_multistatus(root: ET.Element, mailbox_path: str) -> list[tuple[str, Answer]]:
    """(mailbox-relative decoded name, answer) for every <response>."""
    result = []
    for response in root.findall("{DAV:}response"):
        href = response.findtext("{DAV:}href") or ""
        path = unquote(urlsplit(href).path)
        prefix = unquote(mailbox_path)
        name = path[len(prefix) :] if path.startswith(prefix) else path
        status_text = response.findtext("{DAV:}status")
        props: dict[str, tuple[int, ET.Element]] = {}
        for propstat in response.findall("{DAV:}propstat"):
            code = status_code(propstat.findtext("{DAV:}status") or "")
            prop_element = propstat.find("{DAV:}prop")
            for prop in [] if prop_element is None else list(prop_element):
                props[prop.tag] = (code, prop)
        result.append(
            (name.rstrip("/"), Answer(status_code(status_text) if status_text else None, props))
        )
    return result


def status_code(line: str) -> int:
    return int(line.split()[1])


def value_of(answer: Answer, prop: str) -> str | None:
    """The text of a property found (200), else None."""
    code, element = answer.props.get(clark(prop), (None, None))
    return None if element is None or code != 200 else (element.text or "").strip()


def check_response(name: str, answer: Answer, checks: dict[str, Any]) -> None:
    if "status" in checks and answer.status != checks["status"]:
        raise StepFailed(f"{name!r}: status {answer.status}, expected {checks['status']}")
    for prop in checks.get("found") or []:
        code = answer.props.get(clark(prop), (None,))[0]
        if code != 200:
            raise StepFailed(f"{name!r}: {prop} has status {code}, expected 200")
    for prop, value in (checks.get("values") or {}).items():
        code, element = answer.props.get(clark(prop), (None, None))
        got = None if element is None else (element.text or "").strip()
        if code != 200 or got != str(value):
            raise StepFailed(f"{name!r}: {prop} = {got!r} ({code}), expected {value!r}")
    alternatives = checks.get("one_of") or []
    if alternatives and not any(
        all(value_of(answer, p) == str(v) for p, v in alt.items()) for alt in alternatives
    ):
        got = {p: value_of(answer, p) for alt in alternatives for p in alt}
        raise StepFailed(f"{name!r}: none of {alternatives} holds: {got}")
    for prop in checks.get("numeric") or []:
        code, element = answer.props.get(clark(prop), (None, None))
        got = None if element is None else (element.text or "").strip()
        if code != 200 or not (got or "").isdigit():
            raise StepFailed(f"{name!r}: {prop} = {got!r} ({code}), expected a number")
    if "collection" in checks:
        _, element = answer.props.get(clark("D:resourcetype"), (None, None))
        if element is None:
            raise StepFailed(f"{name!r}: no D:resourcetype")
        is_collection = element.find("{DAV:}collection") is not None
        if is_collection != checks["collection"]:
            raise StepFailed(f"{name!r}: collection is {is_collection}")


def set_up(server: DavboxServer, replay: Replay, setup: dict[str, Any]) -> None:
    auth = (USER, PASSWORD)
    for folder in setup.get("folders") or []:
        response = requests.request("MKCOL", replay.url_of(folder), auth=auth, timeout=10)
        assert response.status_code == 201, (folder, response.status_code, response.text)
    for name, content in (setup.get("files") or {}).items():
        response = requests.put(replay.url_of(name), data=content.encode(), auth=auth, timeout=10)
        assert response.status_code == 201, (name, response.status_code, response.text)


def check_after(server: DavboxServer, mailbox: str, after: dict[str, Any]) -> None:
    folder = server.storage_dir(mailbox)
    for name, content in (after.get("files") or {}).items():
        wanted = (
            bytes.fromhex("".join(content["hex"].split()))
            if isinstance(content, dict)
            else content.encode()
        )
        path = folder / name
        assert path.is_file(), f"{name!r} is not stored: {sorted(p.name for p in folder.iterdir())}"
        assert path.read_bytes() == wanted, f"{name!r} holds {path.read_bytes()[:200]!r}"
    for name in after.get("absent") or []:
        assert not (folder / name).exists(), f"{name!r} is still stored"
    for sub, names in (after.get("names") or {}).items():
        got = sorted(p.name for p in (folder / sub).iterdir())
        assert got == sorted(names), f"{sub!r} holds {got!r}, expected {sorted(names)!r}"


KEYS = {
    "fixture": {"client", "action", "sources", "notes", "defaults", "setup", "steps", "after"},
    "source": {"ref", "for"},
    "setup": {"folders", "files"},
    "step": {
        "name",
        "method",
        "path",
        "url_path",
        "auth",
        "headers",
        "destination",
        "body",
        "body_hex",
        "chunked",
        "junk",
        "xfail",
        "expect",
    },
    "expect": {
        "status",
        "headers",
        "header_contains",
        "header_present",
        "header_absent",
        "body_contains",
        "body_lacks",
        "capture",
        "xml_text",
        "multistatus",
    },
    "multistatus": {"count", "listed_once", "not_listed", "hrefs", "responses"},
    "response": {"status", "found", "values", "numeric", "collection", "one_of"},
    "after": {"files", "absent", "names"},
}
JUNK = re.compile(r"(^|/)(\._[^/]*|\.DS_Store|Thumbs\.db|desktop\.ini)/?$", re.IGNORECASE)


def keys_ok(kind: str, data: Any, where: str) -> None:
    assert isinstance(data, dict), f"{where}: a mapping"
    unknown = set(data) - KEYS[kind]
    assert not unknown, f"{where}: unknown keys {sorted(unknown)} (known: {sorted(KEYS[kind])})"


def load(path: Path) -> dict[str, Any]:
    """The fixture, checked: known keys only, sources named, junk steps marked."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    keys_ok("fixture", data, path.name)
    assert data.get("client") and data.get("action"), f"{path.name}: client and action"
    sources = data.get("sources") or []
    assert sources, f"{path.name}: every fixture names its sources"
    for source in sources:
        keys_ok("source", source, f"{path.name}: source")
        assert source.get("ref") and source.get("for"), f"{path.name}: source ref and for"
    keys_ok("setup", data.get("setup") or {}, f"{path.name}: setup")
    keys_ok("after", data.get("after") or {}, f"{path.name}: after")
    for name in [
        *(data.get("after") or {}).get("files", {}),
        *(data.get("after") or {}).get("absent", []),
    ]:
        assert not JUNK.search(name), f"{path.name}: after names junk file {name!r}"
    for number, step in enumerate(data["steps"], 1):
        where = f"{path.name} step {number}"
        keys_ok("step", step, where)
        assert ("path" in step) != ("url_path" in step), f"{where}: path or url_path"
        expect = step.get("expect") or {}
        keys_ok("expect", expect, where)
        multistatus = expect.get("multistatus") or {}
        keys_ok("multistatus", multistatus, where)
        for name, checks in (multistatus.get("responses") or {}).items():
            keys_ok("response", checks, f"{where} response {name!r}")
        if any(JUNK.search(step.get(key) or "") for key in ("path", "destination")):
            assert step.get("junk") is True, f"{where}: a junk file request needs junk: true"
    return data


def test_every_fixture_names_its_sources() -> None:
    files = fixture_files()
    assert {f.name.split("-")[0] for f in files} == {"explorer", "finder"}
    for path in files:
        load(path)


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_replay(server: DavboxServer, path: Path) -> None:
    data = load(path)
    mailbox = path.stem
    server.mailbox(mailbox, **{USER: "member"})
    replay = Replay(server, mailbox)
    set_up(server, replay, data.get("setup") or {})
    defaults = data.get("defaults") or {}
    xfailed: list[str] = []
    xpassed: list[str] = []
    try:
        for number, step in enumerate(data["steps"], 1):
            label = f"step {number} ({step['method']} {step.get('path', step.get('url_path'))}"
            label += f": {step['name']})"
            response = replay.send(step, defaults)
            body = response.read()
            if response.will_close:
                replay.close()
            try:
                replay.check(step, response, body)
            except StepFailed as exc:
                if "xfail" not in step:
                    pytest.fail(f"{label}: {exc}")
                xfailed.append(f"{label}: {step['xfail']} [{exc}]")
            else:
                if "xfail" in step:
                    xpassed.append(f"{label}: {step['xfail']}")
    finally:
        replay.close()
    if xpassed:
        pytest.fail("XPASS(strict), the bug is fixed; drop the xfail: " + "; ".join(xpassed))
    check_after(server, mailbox, data.get("after") or {})
    if xfailed:
        pytest.xfail("; ".join(xfailed))
