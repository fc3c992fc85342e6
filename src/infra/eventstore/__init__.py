"""The event store: the recorder (gap-free total order, optimistic concurrency, idempotency),
schema migrations, envelopes (events as they leave the store), tamper evidence and its
verification, and the auditors' reads. May import `commands.base`, `commands.library` (the one
module that touches eventsourcing's private interface) and `domain`, nothing else of Chronicle's;
everything that reads or writes the log imports from here."""
