-- Event contracts: the dataschema each outbox row names, and sagas ended by a step deadline.
ALTER TABLE outbox ADD COLUMN dataschema TEXT;
ALTER TABLE sagas ADD COLUMN timed_out BIGINT NOT NULL DEFAULT 0;
