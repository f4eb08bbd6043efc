"""The policy engine as an access matrix: matching, any deny wins, fail closed, loading."""

from __future__ import annotations

import pytest

from davbox.config import ConfigError, settings_from_text
from davbox.config.yamlsource import load_yaml
from davbox.policies.base import AccessRequest, Operation, Principal, Usage
from davbox.policies.engine import PolicyEngine
from davbox.policies.registry import build_policies

ALICE = Principal("user", "alice", 1, frozenset({"legal"}))
BOB = Principal("user", "bob", 2, frozenset())

RULES = """
policies:
  - name: default-size
    type: size
    mailboxes: ["*", "!securetransfer*"]
    max_file_size: 200MB
  - name: st-types
    type: extensions
    mailboxes: ["securetransfer*"]
    allow: [pdf, docx, txt]
  - name: st-size
    type: size
    mailboxes: ["securetransfer*"]
    max_file_size: 100GB
  - name: legal-archive
    type: deny
    mailboxes: [extern]
    paths: ["/archief/*"]
    principals: ["!@legal"]
    operations: [create, overwrite, delete]
    reason: only legal may change the archive
  - name: no-drafts
    type: tests.sample_policies:NoWordInNames
    word: draft
    principals: ["role:dropper"]
  - name: extern-quota
    type: quota
    mailboxes: [extern]
    max_bytes: 1GB
    max_files: 3
"""


def engine_from(text: str) -> PolicyEngine:
    data = load_yaml(text, "rules.yaml")
    policies, problems = build_policies(data["policies"], data, "rules.yaml")
    assert problems == []
    return PolicyEngine(policies)


ENGINE = engine_from(RULES)


EMPTY = Usage(0, 0)


def req(principal, mailbox, path, op, roles=("member",), size=None, usage=EMPTY, **kw):
    return AccessRequest(
        principal,
        mailbox,
        path,
        Operation(op),
        frozenset(roles),
        size=size,
        usage=lambda: usage,
        **kw,
    )


GB = 10**9
MB = 10**6

MATRIX = [
    # who, mailbox, path, op, roles, size, usage, expected status (None = allowed)
    ("alice", "inbox", "/x.exe", "create", ("member",), 150 * MB, Usage(0, 0), None),
    ("alice", "inbox", "/x.pdf", "create", ("member",), 300 * MB, Usage(0, 0), 413),
    ("alice", "inbox", "/x.pdf", "overwrite", ("member",), 300 * MB, Usage(0, 0), 413),
    ("alice", "inbox", "/x.pdf", "read", ("member",), 300 * MB, Usage(0, 0), None),
    ("alice", "securetransfer", "/x.pdf", "create", ("member",), 300 * MB, Usage(0, 0), None),
    ("alice", "securetransfer-2", "/x.PDF", "create", ("member",), 1 * GB, Usage(0, 0), None),
    ("alice", "securetransfer", "/x.exe", "create", ("member",), 1, Usage(0, 0), 415),
    ("alice", "securetransfer", "/a.pdf.exe", "create", ("member",), 1, Usage(0, 0), 415),
    ("alice", "securetransfer", "/noext", "create", ("member",), 1, Usage(0, 0), 415),
    ("alice", "securetransfer", "/x.pdf", "create", ("member",), 200 * GB, Usage(0, 0), 413),
    ("alice", "securetransfer", "/dir", "mkcol", ("member",), None, Usage(0, 0), None),
    ("alice", "securetransfer", "/x.exe", "create", ("reader",), 1, Usage(0, 0), 403),
    ("bob", "extern", "/archief/a.pdf", "create", ("member",), 1, Usage(0, 0), 403),
    ("alice", "extern", "/archief/a.pdf", "create", ("member",), 1, Usage(0, 0), None),
    ("bob", "extern", "/archief/a.pdf", "read", ("member",), None, Usage(0, 0), None),
    ("bob", "extern", "/other/a.pdf", "delete", ("member",), None, Usage(0, 0), None),
    ("bob", "inbox", "/draft-1.pdf", "create", ("dropper",), 1, Usage(0, 0), 403),
    ("bob", "inbox", "/draft-1.pdf", "create", ("member",), 1, Usage(0, 0), None),
    ("alice", "extern", "/a.pdf", "create", ("member",), 10 * MB, Usage(995 * MB, 1), 507),
    ("alice", "extern", "/a.pdf", "create", ("member",), 1 * MB, Usage(995 * MB, 1), None),
    ("alice", "extern", "/a.pdf", "create", ("member",), 1, Usage(1, 3), 507),
]


@pytest.mark.parametrize(
    ("who", "mailbox", "path", "op", "roles", "size", "usage", "expected"),
    [pytest.param(*row, id=f"{row[0]}-{row[3]}-{row[1]}{row[2]}-{row[7]}") for row in MATRIX],
)
def test_access_matrix(who, mailbox, path, op, roles, size, usage, expected):
    principal = ALICE if who == "alice" else BOB
    new_files = 1 if op == "create" else 0
    decision = ENGINE.check(
        req(principal, mailbox, path, op, roles, size, usage, new_files=new_files)
    )
    assert (None if decision.allowed else decision.status) == expected, decision.reason


def test_refusal_reasons_name_the_limit_and_the_mailbox():
    decision = ENGINE.check(req(ALICE, "securetransfer", "/x.exe", "create", size=1))
    assert decision.reason == (
        "files of type .exe are not accepted in mailbox 'securetransfer'; allowed: pdf, docx, txt"
    )
    decision = ENGINE.check(req(ALICE, "inbox", "/x.pdf", "create", size=300 * MB))
    assert decision.reason == (
        "files larger than 200 MB are not accepted in mailbox 'inbox' (this file has 300 MB)"
    )


def test_any_deny_wins_whatever_the_order():
    allow = "  - type: tests.sample_policies:AllowEverything\n"
    deny = "  - type: deny\n    reason: closed\n"
    for text in (allow + deny, deny + allow):
        decision = engine_from("policies:\n" + text).check(req(ALICE, "inbox", "/a", "read"))
        assert not decision.allowed and decision.reason == "closed"


def test_a_failing_policy_denies():
    engine = engine_from("policies:\n  - type: tests.sample_policies:Broken\n")
    decision = engine.check(req(ALICE, "inbox", "/a", "read"))
    assert not decision.allowed
    assert decision.status == 500


def test_upload_limit_is_the_smallest_that_applies():
    limit = ENGINE.upload_limit(req(ALICE, "extern", "/a.pdf", "create", usage=Usage(900 * MB, 1)))
    assert limit.max_bytes == 100 * MB  # quota remaining beats the 200 MB size rule
    limit = ENGINE.upload_limit(req(ALICE, "inbox", "/a.pdf", "create"))
    assert limit.max_bytes == 200 * MB and limit.status == 413


def test_rules_for_a_principal_and_mailbox_are_computed_once():
    engine = engine_from(RULES)
    for index in range(1000):
        engine.check(req(ALICE, "inbox", f"/f{index}.pdf", "create", size=1))
    assert len(engine._applicable) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "policies:\n  - type: sise\n    max_file_size: 1MB\n",
            "rules.yaml:2: policies[0].type: unknown policy type 'sise' (did you mean 'size'?);"
            " built-in: deny, extensions, links, quota, retention, size, system_files, twofactor,"
            " or module:Class",
            id="unknown-type",
        ),
        pytest.param(
            "policies:\n  - type: size\n    max_size: 1MB\n",
            "rules.yaml:3: policies[0].max_size: unknown key 'max_size'",
            id="unknown-option",
        ),
        pytest.param(
            "policies:\n  - type: size\n",
            "rules.yaml:2: policies[0].max_file_size: required key is missing",
            id="missing-option",
        ),
        pytest.param(
            "policies:\n  - type: extensions\n    allow: pdf\n",
            "rules.yaml:3: policies[0].allow: input should be a valid list, got 'pdf'",
            id="wrong-type",
        ),
        pytest.param(
            "policies:\n  - type: size\n    max_file_size: 1MB\n    operations: [write]\n",
            "rules.yaml:4: policies[0].operations[0]: input should be 'read', 'list', 'create',"
            " 'overwrite', 'delete', 'move', 'mkcol', 'lock', 'proppatch' or 'share', got 'write'",
            id="bad-operation",
        ),
        pytest.param(
            "policies:\n  - type: nosuchmodule:Thing\n",
            "rules.yaml:2: policies[0].type: cannot load policy class 'nosuchmodule:Thing':"
            " No module named 'nosuchmodule'",
            id="bad-plugin",
        ),
    ],
)
def test_policy_problems_name_file_line_and_key(text, expected):
    with pytest.raises(ConfigError) as info:
        settings_from_text(text, "rules.yaml")
    assert any(str(p).startswith(expected) for p in info.value.problems), info.value.problems


def test_principal_kinds_match():
    engine = engine_from(
        "policies:\n  - type: deny\n    principals: [link, anonymous]\n    reason: no\n"
    )
    link = Principal("link", "abc123")
    assert not engine.check(req(link, "inbox", "/a", "read")).allowed
    assert engine.check(req(ALICE, "inbox", "/a", "read")).allowed


def test_installing_a_policy_changes_nothing_until_named():
    assert (
        engine_from("policies: []\n")
        .check(req(BOB, "inbox", "/draft.pdf", "create", ("dropper",), size=1))
        .allowed
    )


TWO_FACTOR = """
policies:
  - name: legal-needs-2fa
    type: twofactor
    mailboxes: ["legal-*"]
"""


@pytest.mark.parametrize(
    ("principal", "mailbox", "allowed"),
    [
        pytest.param(ALICE, "legal-cases", False, id="password-alone-refused-in-guarded-box"),
        pytest.param(
            Principal("user", "alice", 1, frozenset({"legal"}), second_factor=True),
            "legal-cases",
            True,
            id="second-factor-allowed",
        ),
        pytest.param(ALICE, "extern", True, id="unguarded-mailbox-untouched"),
        pytest.param(Principal("link", "abc123"), "legal-cases", True, id="links-not-accounts"),
    ],
)
def test_twofactor_policy(principal, mailbox, allowed):
    engine = engine_from(TWO_FACTOR)
    for operation in (Operation.READ, Operation.LIST, Operation.CREATE):
        decision = engine.check(
            AccessRequest(principal, mailbox, "/a.pdf", operation, frozenset({"member"}))
        )
        assert decision.allowed is allowed
        if not allowed:
            assert decision.status == 403 and decision.rule == "legal-needs-2fa"
            assert "needs two-factor login" in decision.reason


def test_twofactor_rule_on_whole_mailboxes_closes_them_and_a_narrowed_rule_only_its_paths():
    whole = engine_from(TWO_FACTOR)
    refused = whole.admit(ALICE, "legal-cases", frozenset({"member"}))
    assert not refused.allowed and refused.rule == "legal-needs-2fa"
    assert whole.admit(ALICE, "extern", frozenset({"member"})).allowed
    narrowed = engine_from(
        "policies:\n  - name: secret-folder\n    type: twofactor\n    paths: ['/geheim/*']\n"
    )
    assert narrowed.admit(ALICE, "extern", frozenset({"member"})).allowed
    inside = AccessRequest(ALICE, "extern", "/geheim/a.pdf", Operation.READ, frozenset({"member"}))
    outside = AccessRequest(ALICE, "extern", "/open/a.pdf", Operation.READ, frozenset({"member"}))
    assert not narrowed.check(inside).allowed
    assert narrowed.check(outside).allowed
