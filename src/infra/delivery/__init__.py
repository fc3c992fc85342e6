"""Delivery: the relay (log → JetStream), the projector runtime (JetStream → views) and the
process-manager runtime (the order saga), one active process per role by advisory locks, and the
checkpoint announcements read-your-writes waits on. Imports the event store and view stores;
imported by the CLI, the API's read-your-writes wait, and operations."""
