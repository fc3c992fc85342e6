"""Infrastructure, one folder per role. Only `api` (the ways in) and `infra` itself import from here;
`domain` imports nothing of it, `commands` and `projections` only the event store's envelope and
recorder ports.

- `eventstore/`: the event store: recorder, migrations, envelopes, tamper evidence, audit reads.
- `delivery/`: getting the log to consumers: relay, projector and process-manager runtimes,
  leadership locks, checkpoint announcements.
- `views/`: where read models live (SQL and Redis view stores), rebuilds and operator actions.
- `devstack/`: embedded servers, the dev supervisor, scratch databases (development and tests).
- `bench/`: `chronicle bench …`.
- `observe/`: Prometheus metrics, OpenTelemetry tracing and structured logs, for every process.
- `settings.py` (read once from the environment) and `bootstrap.py` (the composition root).
"""
