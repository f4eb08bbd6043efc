"""Load and check davbox's YAML configuration.

Contract: ``load_settings(path)`` returns a validated ``Settings`` or raises
``ConfigError`` whose ``problems`` list has one ``file:line: key.path: message``
entry per problem found (all of them, not just the first). Unknown keys get a
"did you mean" hint. No secret value ever appears in a message.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from davbox.config.schema import Settings
from davbox.config.yamlsource import ConfigProblem, LineDict, YamlError, load_yaml, resolve_secrets

__all__ = ["ConfigError", "ConfigProblem", "Settings", "load_settings", "settings_from_text"]


class ConfigError(Exception):
    """The configuration has problems; ``str()`` gives one line per problem."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_settings(path: str | Path | None) -> Settings:
    """Read ``path`` (or return the defaults when ``path`` is None)."""
    if path is None:
        return Settings()
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(filename, 0, "", f"cannot read file: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(filename, 0, "", "file is not UTF-8 text")]) from None
    return settings_from_text(text, filename)


def settings_from_text(text: str, filename: str) -> Settings:
    """Validate YAML ``text`` as davbox settings; ``filename`` is used in messages."""
    try:
        raw = load_yaml(text, filename)
    except YamlError as exc:
        raise ConfigError(exc.problems) from None
    if not isinstance(raw, LineDict):
        raise ConfigError([ConfigProblem(filename, 1, "", "the file must be a mapping of keys")])
    data, problems = resolve_secrets(raw, filename)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, data, filename))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    return settings


def _problems_from(exc: ValidationError, data: LineDict, filename: str) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = [part for part in error["loc"] if not _is_union_tag(part)]
        key_path = _dotted(loc)
        line = _line_of(data, loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            name = str(loc[-1])
            known = sorted(_fields_at(Settings, loc[:-1]))
            hint = difflib.get_close_matches(name, known, n=1)
            message = f"unknown key '{name}'"
            message += (
                f" (did you mean '{hint[0]}'?)" if hint else f" (known keys: {', '.join(known)})"
            )
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "value_error":
            message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
        else:
            message = _lower_first(error["msg"])
            if "input" in error and not isinstance(error["input"], dict):
                message += f", got {_shown(error['input'], key_path)}"
        problems.append(ConfigProblem(filename, line, key_path, message))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the member type name to the location of errors inside unions.
    return (isinstance(part, str) and part[:1].isupper()) or part in ("function-after",)


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(data: Any, loc: list[Any]) -> int:
    line = getattr(data, "line", 1)
    node = data
    for part in loc:
        if isinstance(node, LineDict) and part in node:
            line = node.key_line(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            line = getattr(node, "line", line)
        else:
            break
    return line


def _fields_at(model: type[BaseModel], loc: list[Any]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        sub = _model_of(field.annotation) if field else None
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found:
            return found
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _shown(value: Any, key_path: str) -> str:
    if any(word in key_path for word in ("password", "secret", "key", "token", "url")):
        return "a value of another type" if not isinstance(value, str) else "a text value"
    return repr(value)
