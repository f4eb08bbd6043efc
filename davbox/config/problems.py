"""Map pydantic validation errors to ``file:line: key.path: message`` problems.

Contract: ``problems_from(exc, data, filename, model, prefix)`` turns every
error of validating ``data`` (or the part of it at ``prefix``) against
``model`` into one ``ConfigProblem`` with the line of the offending key, a
"did you mean" hint for unknown keys, and never a secret's value.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from davbox.config.yamlsource import ConfigProblem, LineDict


def problems_from(
    exc: ValidationError,
    data: Any,
    filename: str,
    model: type[BaseModel],
    prefix: tuple[Any, ...] = (),
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        rel = [part for part in error["loc"] if not _is_union_tag(part)]
        loc = [*prefix, *rel]
        key_path = _dotted(loc)
        line = line_of(data, loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            name = str(rel[-1])
            known = sorted(_fields_at(model, list(error["loc"][:-1])))
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


def line_of(data: Any, loc: list[Any]) -> int:
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
    """The keys allowed at ``loc`` (a raw pydantic location: list indexes, union tags)."""
    annotation: Any = model
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: same annotation
        if _is_union_tag(part):
            # The member of a union that pydantic chose (tags are class names).
            annotation = _model_of(annotation, str(part)) or annotation
            continue
        current = _model_of(annotation)
        field = current.model_fields.get(str(part)) if current else None
        if field is None:
            return []
        annotation = field.annotation
    current = _model_of(annotation)
    return list(current.model_fields) if current else []


def _model_of(annotation: Any, name: str | None = None) -> type[BaseModel] | None:
    """The first model class in ``annotation`` (named ``name``, if given)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation if name is None or annotation.__name__ == name else None
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg, name)
        if found:
            return found
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _shown(value: Any, key_path: str) -> str:
    if any(word in key_path for word in ("password", "secret", "key", "token", "url")):
        return "a value of another type" if not isinstance(value, str) else "a text value"
    return repr(value)
