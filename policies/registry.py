"""Turn the ``policies:`` list of the YAML into policy objects.

Contract: ``build_policies(specs, data, filename)`` returns the policies and
every problem found, one ``file:line: policies[i].key: message`` each: an
unknown ``type`` (with a "did you mean"), unknown or mistyped options, a
third-party class that cannot be imported. Built-in policies are named by
short name; others by ``module:Class`` (a ``Policy`` subclass). Only what the
list names is active: installing a package changes nothing.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from pydantic import ValidationError

from davbox.config.problems import line_of, problems_from
from davbox.config.yamlsource import ConfigProblem, LineDict
from davbox.policies.base import Policy
from davbox.policies.limits import DenyPolicy, ExtensionPolicy, QuotaPolicy, SizePolicy
from davbox.policies.links import LinkPolicy
from davbox.policies.retention import RetentionPolicy
from davbox.policies.systemfiles import SystemFilesPolicy
from davbox.policies.twofactor import TwoFactorPolicy

BUILTINS: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        SizePolicy,
        ExtensionPolicy,
        QuotaPolicy,
        DenyPolicy,
        TwoFactorPolicy,
        LinkPolicy,
        RetentionPolicy,
        SystemFilesPolicy,
    )
}


def load_class(type_name: str) -> type[Policy]:
    """A built-in short name or ``module:Class``; raise ValueError with a readable text."""
    if type_name in BUILTINS:
        return BUILTINS[type_name]
    if ":" not in type_name:
        hint = difflib.get_close_matches(type_name, sorted(BUILTINS), n=1)
        suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ValueError(
            f"unknown policy type '{type_name}'{suffix}; built-in: {', '.join(sorted(BUILTINS))}"
            ", or module:Class"
        )
    module_name, _, class_name = type_name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load policy class '{type_name}': {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise ValueError(f"'{type_name}' is not a davbox policy class")
    return cls


def build_policies(
    specs: Any, data: Any, filename: str
) -> tuple[list[Policy], list[ConfigProblem]]:
    policies: list[Policy] = []
    problems: list[ConfigProblem] = []
    if not isinstance(specs, list):
        line = line_of(data, ["policies"])
        return [], [ConfigProblem(filename, line, "policies", "must be a list of rules")]
    for index, spec in enumerate(specs):
        where = ("policies", index)
        if not isinstance(spec, LineDict) or not isinstance(spec.get("type"), str):
            line = getattr(spec, "line", line_of(data, list(where)))
            problems.append(
                ConfigProblem(filename, line, f"policies[{index}]", "each rule needs a 'type'")
            )
            continue
        try:
            cls = load_class(spec["type"])
        except ValueError as exc:
            line = spec.key_line("type")
            problems.append(ConfigProblem(filename, line, f"policies[{index}].type", str(exc)))
            continue
        if cls.Options is None:
            problems.append(
                ConfigProblem(filename, spec.line, f"policies[{index}]", "policy has no options")
            )
            continue
        try:
            options = cls.Options.model_validate(dict(spec))
        except ValidationError as exc:
            problems.extend(problems_from(exc, data, filename, cls.Options, where))
            continue
        label = getattr(options, "name", None) or f"{cls.name} rule {index + 1}"
        policies.append(cls(options, label=label))
    return policies, problems
