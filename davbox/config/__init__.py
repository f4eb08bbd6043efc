"""Load and check davbox's YAML configuration.

Contract: ``load_settings(path)`` returns a validated ``Settings`` or raises
``ConfigError`` whose ``problems`` list has one ``file:line: key.path: message``
entry per problem found (all of them, not just the first). Unknown keys get a
"did you mean" hint. No secret value ever appears in a message.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from davbox.config.problems import problems_from
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
    settings = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems.extend(problems_from(exc, data, filename, Settings))
    if settings is not None:
        from davbox.policies.registry import build_policies

        problems.extend(build_policies(data.get("policies") or [], data, filename)[1])
    if problems or settings is None:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    return settings
