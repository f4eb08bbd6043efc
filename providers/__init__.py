"""Providers: where identities come from (``identity``) and where bytes live (``storage``)."""
