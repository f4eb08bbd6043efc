"""Every text of the web pages has a Dutch translation, and the Dutch file has nothing stale."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from davbox.admin_ui import i18n

ROOT = Path(__file__).parent.parent / "admin_ui"
METHODS = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}


def _message_ids() -> set[str]:
    found = extract_from_dir(str(ROOT), METHODS, keywords={"_": None}, options_map=OPTIONS)
    return {message for _file, _line, message, _comments, _context in found}


def _dutch() -> dict[str, str]:
    with open(ROOT / "translations" / "nl.po", "rb") as po:
        return {m.id: m.string for m in read_po(po) if m.id}  # type: ignore[misc]


def test_every_text_has_a_dutch_translation():
    ids = _message_ids()
    assert len(ids) > 50, "the extraction found the page texts"
    dutch = _dutch()
    missing = sorted(m for m in ids if not dutch.get(m))
    assert missing == [], f"texts without Dutch text in admin_ui/translations/nl.po: {missing}"


def test_the_dutch_file_has_no_stale_entries():
    stale = sorted(set(_dutch()) - _message_ids())
    assert stale == [], f"nl.po entries no page uses any more: {stale}"


def test_placeholders_survive_translation():
    for message, text in _dutch().items():
        assert message.count("{") == text.count("{"), message


def test_compiled_catalog_is_used():
    assert i18n.gettext("nl", "Log in") == "Inloggen"
    assert i18n.gettext("en", "Log in") == "Log in"
