"""Languages of the web pages: English (the message ids) and Dutch, with Babel.

Contract:
- Texts in templates and page code are English message ids (``_("...")``);
  ``translations/<lang>.po`` holds the other languages. The .po files are
  compiled in memory at import (Babel), so there is no build step and no
  binary in the repository. A test checks every message id has a Dutch text.
- ``negotiate(query_lang, cookie_lang, accept_language)`` picks the page's
  language: an explicit choice (``?lang=`` or the ``davbox-lang`` cookie)
  first, else the browser's ``Accept-Language``, else English.
- ``environment(lang)`` is a jinja2 environment (autoescaping on) whose
  ``_``/``gettext``/``ngettext`` speak that language; ``format_time`` renders
  a UTC time in the page's language.
"""

from __future__ import annotations

import io
from datetime import datetime
from functools import cache
from pathlib import Path

from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.datastructures import LanguageAccept

LANGUAGES = ("en", "nl")
DEFAULT = "en"
_HERE = Path(__file__).parent


@cache
def translations(lang: str) -> NullTranslations:
    if lang == DEFAULT:
        return NullTranslations()
    with open(_HERE / "translations" / f"{lang}.po", "rb") as po:
        catalog = read_po(po, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


@cache
def environment(lang: str) -> Environment:
    env = Environment(
        loader=PackageLoader("davbox.admin_ui", "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.globals["lang"] = lang
    env.globals["languages"] = LANGUAGES
    env.filters["when"] = lambda value: format_time(value, lang)
    return env


def gettext(lang: str, message: str) -> str:
    return translations(lang).gettext(message)


def format_time(value: datetime | None, lang: str) -> str:
    if value is None:
        return "-"
    return format_datetime(value, "medium", tzinfo=None, locale=lang) + " UTC"


def negotiate(query_lang: str | None, cookie_lang: str | None, accept: LanguageAccept) -> str:
    for choice in (query_lang, cookie_lang):
        if choice in LANGUAGES:
            return choice
    return accept.best_match(LANGUAGES, default=DEFAULT) or DEFAULT
