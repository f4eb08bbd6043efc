"""What ownCloud/Nextcloud sync clients need of a server, over davbox's own parts.

- ``status``: ``/status.php`` (the clients' first request).
- ``cloud``: the OCS ``cloud/capabilities`` and ``cloud/user`` answers.
- ``props``: the ``oc:``/``nc:`` WebDAV properties (ids, permissions, sizes).

Only what davbox implements is advertised: a client that is told of a
feature uses it.
"""
