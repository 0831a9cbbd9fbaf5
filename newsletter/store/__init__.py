"""The subscriber store: subscribers, lists, memberships, suppressions (and, in the same database,
the delivery ledger and events). ``open_store(config)`` is the one way callers get one."""
