-- Wake the relays on commit instead of waiting for their next poll: a NOTIFY on the
-- channel `eventscope_outbox` when rows are written, or set unpublished again (a
-- consumer re-sending its replies). PostgreSQL delivers it when the transaction
-- commits, once per transaction; relays in any process LISTEN to it.
CREATE FUNCTION outbox_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('eventscope_outbox', '');
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER outbox_inserted AFTER INSERT ON outbox
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TRIGGER outbox_unpublished AFTER UPDATE OF published_at ON outbox
  FOR EACH ROW WHEN (NEW.published_at IS NULL) EXECUTE FUNCTION outbox_notify();
