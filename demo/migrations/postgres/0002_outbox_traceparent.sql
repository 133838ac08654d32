-- The W3C trace context of the span that wrote the row; the relay sends it
-- as the `traceparent` and `ce_traceparent` headers. Keep in step with ../sqlite.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
