-- The W3C traceparent of the span that appended an event (OpenTelemetry), so the relay and every
-- consumer can continue the request's trace. Operational, not part of the event's hash.
ALTER TABLE events ADD COLUMN trace_parent text;
