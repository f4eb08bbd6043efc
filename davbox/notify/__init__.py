"""Notifications: who wants to hear about which files, and the mails that tell them.

- ``subscriptions``: subscriptions per user and mailbox ("placed",
  "fetched"; immediate or an hourly/daily digest), sensitive mailboxes, link
  notices for a link's creator, a user's mail language; and the in-memory
  index the event sink reads, rebuilt only when something changed.
- ``preferences``: an account's own settings as its web page reads and
  saves them (checked against its roles and address, one transaction).
- ``sink``: the ``EventBus`` sink that turns events into outbox mails and
  digest items (and warns an account owner whose logins are throttled).
- ``digest``: the hourly and daily digest job and its scheduler.
"""
