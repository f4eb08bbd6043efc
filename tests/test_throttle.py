"""Brute force: failed logins slow down per account and per address; 429 with Retry-After."""

from __future__ import annotations

import math
import time

import requests

from davbox.db import Database
from davbox.throttle import LoginThrottle
from tests.davserver import PASSWORD


def test_300_wrong_passwords_are_throttled(make_server, tmp_path):
    config = tmp_path / "throttle.yaml"
    config.write_text("auth:\n  throttle_account_failures: 10\n  throttle_address_failures: 1000\n")
    server = make_server("throttle", config=config)
    server.add_user("victim")
    server.add_user("bystander")
    server.mailbox("v", victim="member", bystander="member")
    url = server.dav("v/")
    statuses = []
    started = time.monotonic()
    with requests.Session() as session:
        for attempt in range(300):
            response = session.request(
                "PROPFIND",
                url,
                headers={"Depth": "0"},
                auth=("victim", f"guess-{attempt}"),
                timeout=30,
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert "too many failed logins" in response.text
    elapsed = time.monotonic() - started
    checked = statuses.count(401)
    # After 10 failures each further check waits 2, 4, 8 ... s after the last:
    # on a slow machine a run longer than 2 s earns one more check, and so on.
    extra = max(0, math.floor(math.log2(elapsed + 2)) - 1)
    assert 10 <= checked <= 10 + extra, (elapsed, statuses[:20])
    assert statuses.count(429) == 300 - checked
    # Only the first 10 guesses were ever checked against the password.
    print(f"300 guesses in {elapsed:.2f} s; {checked} checked ({checked / elapsed:.1f}/s)")
    # The right password is refused too while the account is blocked ...
    blocked = requests.request(
        "PROPFIND", url, headers={"Depth": "0"}, auth=("victim", PASSWORD), timeout=10
    )
    assert blocked.status_code == 429
    # ... but other accounts from the same address are not affected.
    other = requests.request(
        "PROPFIND", url, headers={"Depth": "0"}, auth=("bystander", PASSWORD), timeout=10
    )
    assert other.status_code == 207
    log = server.log_text(until="outcome='throttled' status=429")
    assert log.count("login-refused") >= 300
    assert "actor='victim'" in log and "outcome='throttled' status=429" in log
    assert "guess-" not in log, "passwords never reach the log"


def test_unknown_accounts_are_throttled_like_known_ones(make_server, tmp_path):
    config = tmp_path / "throttle.yaml"
    config.write_text("auth:\n  throttle_account_failures: 3\n  throttle_address_failures: 1000\n")
    server = make_server("unknown", config=config)
    server.add_user("known")
    answers = {}
    for name in ("known", "ghost"):
        answers[name] = [
            requests.get(server.dav(""), auth=(name, "wrong-password"), timeout=30).status_code
            for _ in range(5)
        ]
    assert answers["known"] == answers["ghost"] == [401, 401, 401, 429, 429]


def test_address_limit_and_success_reset(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    db.upgrade()
    throttle = LoginThrottle(db, account_limit=3, address_limit=5, window=900, max_delay=900)
    for index in range(5):
        assert throttle.retry_after(throttle.keys(f"user{index}", "10.0.0.9")) is None
        throttle.begin(throttle.keys(f"user{index}", "10.0.0.9"))
    assert throttle.retry_after(throttle.keys("someone-else", "10.0.0.9")) is not None
    assert throttle.retry_after(throttle.keys("someone-else", "10.0.0.10")) is None
    for _ in range(2):
        throttle.begin(throttle.keys("alice", "10.0.0.11"))
    throttle.succeeded("account:alice")
    throttle.begin(throttle.keys("alice", "10.0.0.11"))
    assert throttle.retry_after(["account:alice"]) is None  # 1 failure since the success
    db.dispose()


def test_parallel_guesses_get_one_try_at_the_limit(make_server, tmp_path):
    import threading

    config = tmp_path / "throttle.yaml"
    config.write_text("auth:\n  throttle_account_failures: 10\n  throttle_address_failures: 1000\n")
    server = make_server("parallel", config=config)
    server.add_user("target")
    url = server.dav("")
    for attempt in range(9):
        assert requests.get(url, auth=("target", f"wrong-{attempt}"), timeout=30).status_code == 401
    statuses: list[int] = []

    def guess(index: int) -> None:
        response = requests.get(url, auth=("target", f"parallel-{index}"), timeout=60)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(401) == 1, statuses
    assert statuses.count(429) == 15
