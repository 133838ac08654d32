-- How the order's saga is run (orchestration | choreography): the relay sends it as
-- the CloudEvents extension `ce_sagamode`. NULL: written before the two modes. Keep in step.
ALTER TABLE outbox ADD COLUMN saga_mode TEXT;
