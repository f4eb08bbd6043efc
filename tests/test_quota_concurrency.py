"""Uploads that each fit a quota cannot together overrun it."""

from __future__ import annotations

import threading

import requests

from tests.davserver import PASSWORD


def test_concurrent_uploads_never_overrun_the_quota(make_server, tmp_path):
    config = tmp_path / "quota.yaml"
    config.write_text("policies:\n  - type: quota\n    mailboxes: [q]\n    max_bytes: 2500000\n")
    server = make_server("quota", config=config)
    server.add_user("q")
    server.mailbox("q", q="member")
    auth = ("q", PASSWORD)
    for run in range(5):
        statuses: list[int] = []

        def upload(index: int, run: int = run, statuses: list[int] = statuses) -> None:
            body = bytes([index]) * 1_000_000
            url = server.dav(f"q/r{run}-{index}.bin")
            statuses.append(requests.put(url, data=body, auth=auth, timeout=60).status_code)

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [201, 201, 507, 507], statuses
        stored = sorted(
            p.stat().st_size for p in (server.data_dir / "storage" / "mailboxes").rglob("*.bin")
        )
        assert sum(stored) <= 2_500_000
        for path in (server.data_dir / "storage" / "mailboxes").rglob("*.bin"):
            requests.delete(server.dav(f"q/{path.name}"), auth=auth, timeout=10)
