"""Read YAML with the positions admins need in error messages.

Contract:
- ``load_yaml(text, filename)`` returns plain Python data in which every
  mapping is a ``LineDict``: a dict that also remembers the line of each key
  (``key_line``) and of itself (``line``).
- Duplicate keys, YAML syntax errors and non-string keys are reported as
  ``ConfigProblem`` objects with file and line, never as tracebacks.
- Only ``true``/``false`` are booleans and only ``null``/``~`` are null (the
  YAML 1.2 core schema): ``no``, ``on`` and ``off`` stay strings, so a typo'd
  boolean is a type error instead of a silent ``False``.
- Secret references ``{$env: NAME}`` and ``{$file: PATH}`` are resolved here;
  relative ``$file`` paths are taken relative to the YAML file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration file, printed as ``file:line: key.path: message``."""

    filename: str
    line: int
    key_path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}"
        return (
            f"{where}: {self.key_path}: {self.message}"
            if self.key_path
            else (f"{where}: {self.message}")
        )


class LineDict(dict[str, Any]):
    """A dict that remembers the (1-based) line of itself and of each of its keys."""

    line: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines: dict[str, int] = {}

    def key_line(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YamlError(Exception):
    """Raised by ``load_yaml`` with every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, duplicate-key detection and line tracking."""

    filename: str
    problems: list[ConfigProblem]
    path_of: Callable[[yaml.Node], str]


# Replace YAML 1.1 booleans (yes/no/on/off/y/n) by YAML 1.2 core ones.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            loader.problems.append(
                ConfigProblem(loader.filename, line, "", f"key {key!r} must be a string")
            )
            key = str(key)
        if key in result:
            loader.problems.append(
                ConfigProblem(
                    loader.filename,
                    line,
                    _join(loader.path_of(node), key),
                    f"duplicate key (first defined on line {result.key_lines[key]})",
                )
            )
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def load_yaml(text: str, filename: str) -> Any:
    """Parse ``text``; raise ``YamlError`` listing every problem with its line."""
    loader = _Loader(text)
    loader.filename = filename
    loader.problems = []
    paths: dict[int, str] = {}
    loader.path_of = lambda node: paths.get(id(node), "")
    try:
        root = loader.get_single_node()
        if root is None:
            return LineDict()
        _record_paths(root, "", paths)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}, {problem}"
        raise YamlError(
            [ConfigProblem(filename, line, "", f"YAML syntax error: {problem}")]
        ) from None
    except yaml.YAMLError as exc:
        raise YamlError([ConfigProblem(filename, 1, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    if loader.problems:
        raise YamlError(loader.problems)
    return data


def _record_paths(node: yaml.Node, path: str, paths: dict[int, str]) -> None:
    """Remember the dotted key path of every mapping node (for duplicate-key messages)."""
    paths[id(node)] = path
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            _record_paths(value_node, _join(path, str(key)), paths)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_paths(item, f"{path}[{index}]", paths)


def resolve_secrets(data: Any, filename: str, path: str = "") -> tuple[Any, list[ConfigProblem]]:
    """Replace ``{$env: NAME}`` and ``{$file: PATH}`` mappings by the secret's text.

    Returns the new data and the problems found (unset variables, unreadable files).
    The secret's value never appears in a problem message.
    """
    problems: list[ConfigProblem] = []
    if isinstance(data, LineDict):
        if len(data) == 1 and next(iter(data)) in ("$env", "$file"):
            kind, ref = next(iter(data.items()))
            if not isinstance(ref, str) or not ref:
                problems.append(ConfigProblem(filename, data.line, path, f"{kind} needs a name"))
                return None, problems
            if kind == "$env":
                value = os.environ.get(ref)
                if value is None:
                    problems.append(
                        ConfigProblem(
                            filename, data.line, path, f"environment variable {ref} is not set"
                        )
                    )
                return value, problems
            secret_path = Path(ref)
            if not secret_path.is_absolute():
                secret_path = Path(filename).parent / secret_path
            try:
                return secret_path.read_text(encoding="utf-8").rstrip("\r\n"), problems
            except OSError as exc:
                problems.append(
                    ConfigProblem(
                        filename, data.line, path, f"cannot read secret file {ref}: {exc.strerror}"
                    )
                )
                return None, problems
        out = LineDict()
        out.line = data.line
        out.key_lines = dict(data.key_lines)
        for key, value in data.items():
            out[key], sub = resolve_secrets(value, filename, _join(path, key))
            problems.extend(sub)
        return out, problems
    if isinstance(data, list):
        items = []
        for index, item in enumerate(data):
            value, sub = resolve_secrets(item, filename, f"{path}[{index}]")
            items.append(value)
            problems.extend(sub)
        return items, problems
    return data, problems
