"""Seeing Chronicle run: Prometheus metrics (`metrics`), OpenTelemetry traces across HTTP, the event
store and NATS (`tracing`), and structured logs with the request's correlation and trace ids
(`logs`). Imported by the API, the delivery runtimes and the event store; imports nothing of
Chronicle's but settings."""
