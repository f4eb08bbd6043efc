"""Storage providers: where mailbox bytes live. The built-in one is ``filesystem``."""
