"""Verified credentials are cached (no password hash per request) and dropped on changes."""

from __future__ import annotations

import time

from davbox import accounts
from davbox.access import AccessService
from davbox.db import Database
from davbox.providers.identity.sql import SqlIdentityProvider
from tests.davserver import PASSWORD


class CountingProvider(SqlIdentityProvider):
    def __init__(self, db):
        super().__init__(db)
        self.calls = 0

    def verify(self, username, password):
        self.calls += 1
        return super().verify(username, password)


def _service(tmp_path, refresh_interval=0.0):
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.upgrade()
    accounts.add_user(db, "alice", PASSWORD)
    provider = CountingProvider(db)
    service = AccessService(db, [provider], cache_ttl=300, refresh_interval=refresh_interval)
    return db, provider, service


def test_a_verified_password_is_hashed_once_then_served_from_cache(tmp_path):
    db, provider, service = _service(tmp_path, refresh_interval=60)
    started = time.perf_counter()
    for _ in range(1000):
        assert service.authenticate("alice", PASSWORD) is not None
    elapsed = time.perf_counter() - started
    assert provider.calls == 1
    # Not a benchmark: 999 cached look-ups must not cost anything like 999 argon2 runs.
    assert elapsed < 1.0
    db.dispose()


def test_wrong_passwords_are_never_cached(tmp_path):
    db, provider, service = _service(tmp_path)
    assert service.authenticate("alice", "wrong-password-1") is None
    assert service.authenticate("alice", "wrong-password-1") is None
    assert provider.calls == 2
    db.dispose()


def test_password_change_and_disable_drop_the_cache(tmp_path):
    db, _provider, service = _service(tmp_path)
    assert service.authenticate("alice", PASSWORD) is not None
    accounts.set_password(db, "alice", "another-long-password")
    assert service.authenticate("alice", PASSWORD) is None
    assert service.authenticate("alice", "another-long-password") is not None
    accounts.set_disabled(db, "alice", True)
    assert service.authenticate("alice", "another-long-password") is None
    db.dispose()


def test_cache_key_holds_no_password(tmp_path):
    db, _provider, service = _service(tmp_path)
    service.authenticate("alice", PASSWORD)
    for key in service._credentials:
        assert PASSWORD.encode() not in key
    db.dispose()
