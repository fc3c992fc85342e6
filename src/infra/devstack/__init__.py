"""The development stack: embedded PostgreSQL, NATS and Redis from wheels, the supervisor behind
`chronicle dev`, and scratch databases for tests and benchmarks. Never imported by the product's
runtime paths (API, relay, projector, saga)."""
