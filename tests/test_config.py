"""Configuration loading: exact messages admins see, and the example documents every key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from davbox.config import ConfigError, Settings, load_settings, settings_from_text

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        settings_from_text(text, "davbox.yaml")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "server:\n  listen: 127.0.0.1:9000\n  thread: 4\n",
            ["davbox.yaml:3: server.thread: unknown key 'thread' (did you mean 'threads'?)"],
            id="unknown-key",
        ),
        pytest.param(
            "server:\n  threads: many\n",
            ["davbox.yaml:2: server.threads: input should be a valid integer, got 'many'"],
            id="wrong-type",
        ),
        pytest.param(
            "logging:\n  access_log: no\n",
            ["davbox.yaml:2: logging.access_log: input should be a valid boolean, got 'no'"],
            id="no-is-not-a-bool",
        ),
        pytest.param(
            "auth:\n  realm: a\n  cache_ttl: 10\n  realm: b\n",
            ["davbox.yaml:4: auth.realm: duplicate key (first defined on line 2)"],
            id="duplicate-key",
        ),
        pytest.param(
            "server:\n  listen: [1, 2\nstorage: {}\n",
            [
                "davbox.yaml:3: YAML syntax error: while parsing a flow sequence, "
                "expected ',' or ']', but got ':'"
            ],
            id="syntax-error",
        ),
        pytest.param(
            "server:\n  listen: 8080\n",
            ["davbox.yaml:2: server.listen: input should be a valid string, got 8080"],
            id="listen-not-a-string",
        ),
        pytest.param(
            "server:\n  listen: 'localhost'\n",
            ["davbox.yaml:2: server.listen: expected HOST:PORT, got 'localhost'"],
            id="listen-without-port",
        ),
        pytest.param(
            "storage:\n  block_size: lots\n",
            [
                "davbox.yaml:2: storage.block_size: could not parse value and unit from byte"
                " string, got 'lots'"
            ],
            id="bad-size",
        ),
        pytest.param(
            "database:\n  url: {$env: DAVBOX_TEST_UNSET_VARIABLE}\n",
            [
                "davbox.yaml:2: database.url: environment variable"
                " DAVBOX_TEST_UNSET_VARIABLE is not set"
            ],
            id="missing-secret",
        ),
        pytest.param(
            "bogus: 1\nserver:\n  threads: 0\n",
            [
                "davbox.yaml:1: bogus: unknown key 'bogus'"
                " (known keys: audit, auth, database, expiry, links, logging, mail, policies,"
                " server, storage, transfer, web)",
                "davbox.yaml:3: server.threads: input should be greater than or equal to 1, got 0",
            ],
            id="every-problem-at-once",
        ),
    ],
)
def test_problem_messages(text, expected):
    assert problems(text) == expected


def test_secrets_from_env_and_file(tmp_path, monkeypatch):
    (tmp_path / "db.url").write_text("sqlite:////tmp/x.db\n")
    monkeypatch.setenv("DAVBOX_TEST_REALM", "Postbus")
    config = tmp_path / "c.yaml"
    config.write_text(
        "auth:\n  realm: {$env: DAVBOX_TEST_REALM}\ndatabase:\n  url: {$file: db.url}\n"
    )
    settings = load_settings(config)
    assert settings.auth.realm == "Postbus"
    assert settings.database.url == "sqlite:////tmp/x.db"


def test_sizes_take_units():
    settings = settings_from_text(
        "storage:\n  block_size: 4MiB\nserver:\n  max_header_size: 10KB\n", "c"
    )
    assert settings.storage.block_size == 4 * 1024 * 1024
    assert settings.server.max_header_size == 10_000


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """Model classes in an annotation, also inside lists, unions and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.add(path)
        for sub in _models_in(field.annotation):
            keys |= _keys(sub, path + ".")
    return keys


def _yaml_keys(text: str) -> set[str]:
    """Keys in the example, including ones shown in comments (``#  key: value``)."""
    found = set()
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        line = raw.replace("#", "", 1) if raw.lstrip().startswith("#") else raw
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("- "):  # the first key of a list item
            stripped = stripped[2:].lstrip()
            indent = len(line) - len(stripped)
        key = stripped.split(":", 1)[0].strip()
        if not key.replace("_", "").isalnum():
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        found.add(path)
        stack.append((indent, key))
    return found


def test_example_documents_every_key_and_is_valid():
    text = (ROOT / "config.example.yaml").read_text()
    documented = _yaml_keys(text)
    missing = sorted(_keys(Settings) - documented)
    assert not missing, f"config.example.yaml lacks: {missing}"
    assert isinstance(yaml.safe_load(text), dict)
    load_settings(ROOT / "config.example.yaml")


def test_cli_reports_problems_with_exit_2_and_no_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("server:\n  thraeds: 4\n  threads: x\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "davbox",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "d"),
            "serve",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        f"{config}:2: server.thraeds: unknown key 'thraeds' (did you mean 'threads'?)"
        in result.stderr
    )
    assert f"{config}:3: server.threads: input should be a valid integer, got 'x'" in result.stderr
    assert not (tmp_path / "d").exists(), "nothing starts with a bad configuration"


def test_config_check_command(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "davbox",
            "--config",
            str(ROOT / "config.example.yaml"),
            "config",
            "check",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout
