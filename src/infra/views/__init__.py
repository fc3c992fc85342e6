"""Where read models live: SQL and Redis view stores (a batch and its checkpoint atomically),
rebuilding a view from the log, fingerprints, and what operators do to projections (status,
blue/green rebuild, reset, retry, skip). Imports the event store and `projections`."""
