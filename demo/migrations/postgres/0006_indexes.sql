-- A relay takes a row only when no earlier row of its key is still unpublished:
-- this partial index answers that per key, where the claim used to scan every
-- unpublished row for each candidate (3 ms a claim with a few hundred pending).
CREATE INDEX outbox_key_unpublished ON outbox (msg_key, id) WHERE published_at IS NULL;
-- A consumer that recognises a redelivery sends the replies it wrote for it
-- again: found by the command's id instead of a scan of the whole outbox.
CREATE INDEX outbox_causation ON outbox (causation_id);
-- A participant counts the effects a command already had (its idempotency under
-- `no-idempotency`, and the reply id): by the command's id, not a table scan.
CREATE INDEX payments_command ON payments (command_id);
CREATE INDEX stock_movements_command ON stock_movements (command_id);
CREATE INDEX shipments_command ON shipments (command_id);
