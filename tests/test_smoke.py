"""The server starts, prints its URL and admin password, and serves WebDAV."""

import requests


def test_first_start_prints_url_and_one_time_admin_password(shared_server):
    assert shared_server.admin_password
    assert any(f"{shared_server.url}/dav/" in line for line in shared_server.output)
    response = requests.request(
        "PROPFIND",
        shared_server.dav(),
        headers={"Depth": "1"},
        auth=("admin", shared_server.admin_password),
        timeout=10,
    )
    assert response.status_code == 207
    assert "/dav/inbox/" in response.text
