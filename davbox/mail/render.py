"""Mail templates: jinja2 files ``templates/<name>.<language>.txt`` (and optional ``.html``).

Contract:
- A ``.txt`` template defines two blocks: ``subject`` (one line; whitespace
  and line breaks are collapsed, so a file name cannot add a header) and
  ``text`` (the plain-text body). An optional ``<name>.<language>.html``
  template is the HTML alternative; it is rendered with autoescaping on,
  the ``.txt`` one without (plain text needs none).
- Undefined variables raise (``StrictUndefined``): a caller who forgets a
  context value learns it at ``enqueue``, not from a mail with a hole.
- Languages are ``LANGUAGES``; names are lower-case words joined by "-".
  Files whose names start with "_" are parts for ``{% include %}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    select_autoescape,
)

TEMPLATE_DIR = Path(__file__).parent / "templates"
LANGUAGES = ("nl", "en")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class TemplateProblem(ValueError):
    """No such template or language, or the template could not be rendered."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None = None


class MailTemplates:
    def __init__(self, directory: Path = TEMPLATE_DIR) -> None:
        self.directory = directory
        self.env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def names(self) -> list[str]:
        """The templates that exist in every language."""
        found: dict[str, set[str]] = {}
        for path in self.directory.glob("*.txt"):
            name, _, language = path.stem.rpartition(".")
            if not name.startswith("_"):
                found.setdefault(name, set()).add(language)
        return sorted(n for n, langs in found.items() if langs >= set(LANGUAGES))

    def render(self, template: str, language: str, context: Mapping[str, Any]) -> Rendered:
        """Subject, text and (if the template has one) HTML; raise ``TemplateProblem``."""
        if not _NAME_RE.match(template):
            raise TemplateProblem(f"{template!r} is not a template name")
        if language not in LANGUAGES:
            raise TemplateProblem(f"unknown language {language!r} (known: {', '.join(LANGUAGES)})")
        try:
            text_template = self.env.get_template(f"{template}.{language}.txt")
        except TemplateNotFound:
            raise TemplateProblem(f"no mail template {template!r} in {language!r}") from None
        try:
            values = dict(context)
            blocks = text_template.blocks
            if "subject" not in blocks or "text" not in blocks:
                raise TemplateProblem(f"{template}.{language}.txt needs blocks subject and text")
            subject = " ".join(
                "".join(blocks["subject"](text_template.new_context(values))).split()
            )
            text = "".join(blocks["text"](text_template.new_context(values))).strip("\n") + "\n"
            html = None
            try:
                html_template = self.env.get_template(f"{template}.{language}.html")
            except TemplateNotFound:
                pass
            else:
                html = html_template.render(values)
        except TemplateError as exc:
            raise TemplateProblem(f"mail template {template}.{language}: {exc}") from exc
        if not subject:
            raise TemplateProblem(f"mail template {template}.{language}: the subject is empty")
        return Rendered(subject, text, html)
