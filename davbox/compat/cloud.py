"""The OCS ``cloud/capabilities`` and ``cloud/user`` answers for sync clients.

Contract: ``capabilities()`` names only what davbox implements: WebDAV at
``remote.php/webdav``, SHA1/MD5/ADLER32 upload checksums (``OC-Checksum``
is verified), Nextcloud's chunked upload (``dav.chunking`` 1.0, not ownCloud's
old ``bigfilechunking``),
public links through the share API (password, expiry, upload-only drop).
``user(principal, email)`` describes the logged-in account; quotas are per
mailbox in davbox, so the account's own quota is "unlimited" (-3).
"""

from __future__ import annotations

from typing import Any

from davbox.compat.status import SERVER_VERSION, VERSION_STRING, status_fields
from davbox.policies.base import Principal

POLL_INTERVAL = 30  # seconds between a client's looks at the top folder's ETag


def capabilities() -> dict[str, Any]:
    major, minor, micro, _ = (int(p) for p in SERVER_VERSION.split("."))
    return {
        "version": {
            "major": major,
            "minor": minor,
            "micro": micro,
            "string": VERSION_STRING,
            "edition": "Community",
            "product": "davbox",
        },
        "capabilities": {
            "core": {
                "pollinterval": POLL_INTERVAL,
                "webdav-root": "remote.php/webdav",
                "status": status_fields(),
            },
            "dav": {"chunking": "1.0", "reports": []},
            "checksums": {
                "supportedTypes": ["SHA1", "MD5", "ADLER32"],
                "preferredUploadType": "SHA1",
            },
            "files": {
                "bigfilechunking": False,
                "blacklisted_files": [".htaccess"],
                "undelete": False,
                "versioning": False,
            },
            "files_sharing": {
                "api_enabled": True,
                "public": {
                    "enabled": True,
                    "password": {"enforced": False},
                    "expire_date": {"enabled": True},
                    "upload": True,
                    "supports_upload_only": True,
                    "multiple": True,
                },
                "resharing": False,
                "user": {"send_mail": False},
                "group_sharing": False,
                "federation": {"outgoing": False, "incoming": False},
            },
        },
    }


def user(principal: Principal, display_name: str, email: str | None) -> dict[str, Any]:
    return {
        "id": principal.name,
        "display-name": display_name or principal.name,
        "displayname": display_name or principal.name,
        "email": email or "",
        "enabled": True,
        "quota": {"free": -3, "used": 0, "total": -3, "relative": 0, "quota": -3},
        "language": "en",
    }
