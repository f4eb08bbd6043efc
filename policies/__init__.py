"""Policies: the rules that decide, per operation, whether a request may proceed.

A policy kind is one base class (``policies.base.Policy``) with a small
vocabulary (``policies.base.Operation``, ``Decision``). The engine
(``policies.engine.PolicyEngine``) asks the membership rules first, then every
policy the configuration names; **any deny wins**. Installing a package never
activates a policy: only what the YAML names is switched on.
"""
