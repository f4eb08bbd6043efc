"""davbox: a self-hosted secure file-mailbox server over WebDAV.

The package layout is explained in README.md (section "Architecture").
"""

__version__ = "0.1.0"
