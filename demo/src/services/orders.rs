//! Where the event-sourced `Order` aggregates live: loading one (latest
//! snapshot + the events after it), a full replay for checks, and the unit of
//! work the order service decides in ([`Orders`]).
//!
//! A batch of commands (the order requests that arrived together, the
//! records of one poll) loads its aggregates in two queries, decides command
//! after command in memory with the pure domain, and appends once when it is
//! written: one INSERT of the new events, one of the new snapshots. The
//! optimistic check on (aggregate id, version) stays: an event whose version
//! another writer took meanwhile makes the whole batch a `Conflict`, retried.

use std::collections::HashMap;

use sqlx::Row;

use crate::contracts;
use crate::domain::{self, OrderCommand, OrderError, OrderEvent, OrderState};
use crate::envelope::{now_rfc3339, Envelope};
use crate::ids;
use crate::saga::SagaMode;
use crate::store::{checked_outbox_row, now_ms, Db, OutboxRow, StoreError, Tx};
use crate::telemetry::Trace;
use crate::topics;

pub const SOURCE: &str = "/eventscope-demo/order-service";
pub const NAME: &str = "order-service";

/// Correlation, causation and trace context of the events a command produces.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    /// The span handling the command; the outbox writes are its children.
    pub trace: Trace,
    /// The contract version to write `OrderCreated` in (None: v1). v2 is the
    /// compatible evolution (`schema-evolve`), v3 the breaking draft
    /// (`schema-drift`).
    pub created_version: Option<u32>,
    /// Skip the producer-side contract check (`no-schema-check`).
    pub skip_schema_check: bool,
    /// How the order's saga runs: kept in the events' metadata and sent as
    /// the `sagamode` extension.
    pub saga_mode: SagaMode,
}

/// The contract version a stored event was written in (its metadata's
/// `schema_version`; events stored before contracts have none).
fn stored_version(metadata: &str) -> Option<u32> {
    serde_json::from_str::<serde_json::Value>(metadata)
        .ok()?
        .get("schema_version")?
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
}

fn read_event(event_type: &str, payload: &str, metadata: &str) -> Result<OrderEvent, StoreError> {
    let data: serde_json::Value = serde_json::from_str(payload)?;
    OrderEvent::from_versioned(event_type, stored_version(metadata), &data)
        .map(|(e, _)| e)
        .ok_or_else(|| {
            StoreError::Json(serde::de::Error::custom(format!(
                "cannot read order event {event_type}"
            )))
        })
}

/// `state` with the stored event of row `r` (columns event_type, payload, metadata) applied.
fn apply_row(state: OrderState, r: &sqlx::any::AnyRow) -> Result<OrderState, StoreError> {
    let t: String = r.try_get("event_type")?;
    let p: String = r.try_get("payload")?;
    let m: String = r.try_get("metadata")?;
    Ok(domain::apply(state, &read_event(&t, &p, &m)?))
}

/// Where the state came from: the snapshot version it started at, and the tail length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loaded {
    pub snapshot_version: i64,
    pub tail: usize,
}

/// Latest snapshot + the events after it.
pub async fn load(tx: &mut Tx, order_id: &str) -> Result<(OrderState, Loaded), StoreError> {
    let snap = sqlx::query(
        "SELECT version, state FROM order_snapshots WHERE aggregate_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (mut state, from) = match snap {
        Some(r) => {
            let s: String = r.try_get("state")?;
            (
                serde_json::from_str::<OrderState>(&s)?,
                r.try_get::<i64, _>("version")?,
            )
        }
        None => (OrderState::default(), 0),
    };
    let rows = sqlx::query(
        "SELECT event_type, payload, metadata FROM order_events WHERE aggregate_id = $1 AND version > $2 ORDER BY version",
    )
    .bind(order_id)
    .bind(from)
    .fetch_all(&mut **tx)
    .await?;
    let tail = rows.len();
    for r in &rows {
        state = apply_row(state, r)?;
    }
    Ok((
        state,
        Loaded {
            snapshot_version: from,
            tail,
        },
    ))
}

/// Full replay of the stored events, ignoring snapshots (for checks).
pub async fn replay_all(db: &Db, order_id: &str) -> Result<OrderState, StoreError> {
    let rows = sqlx::query(
        "SELECT event_type, payload, metadata FROM order_events WHERE aggregate_id = $1 ORDER BY version",
    )
    .bind(order_id)
    .fetch_all(&db.pool)
    .await?;
    let mut state = OrderState::default();
    for r in &rows {
        state = apply_row(state, r)?;
    }
    Ok(state)
}

/// An event decided in this batch, appended when it is written.
struct NewEvent {
    aggregate_id: String,
    version: i64,
    event_id: String,
    event_type: &'static str,
    payload: String,
    metadata: String,
    created_at: i64,
}

/// A snapshot taken in this batch, inserted after its events.
struct NewSnapshot {
    aggregate_id: String,
    version: i64,
    state: String,
    created_at: i64,
}

/// The aggregates a batch of commands touches, a unit of work: loaded
/// together, decided in memory in the order the commands come, and appended
/// once ([`Orders::write`], before the commit).
#[derive(Default)]
pub struct Orders {
    /// Every order looked up, in its state after this batch's events (an
    /// order with no events is in the default state, `New`).
    by_id: HashMap<String, OrderState>,
    events: Vec<NewEvent>,
    snapshots: Vec<NewSnapshot>,
}

/// Order ids one load binds at most (two parameters each in the tail query).
const LOAD_CHUNK: usize = 400;
/// Events or snapshots one INSERT writes at most (7 parameters each).
const WRITE_CHUNK: usize = 500;

impl Orders {
    /// Load the aggregates of `order_ids`.
    pub async fn load(tx: &mut Tx, order_ids: &[&str]) -> Result<Orders, StoreError> {
        let mut orders = Orders::default();
        orders.fetch(tx, order_ids).await?;
        Ok(orders)
    }

    /// Load those of `order_ids` this batch has not: each one's latest
    /// snapshot in one query, then the events after it in one more.
    async fn fetch(&mut self, tx: &mut Tx, order_ids: &[&str]) -> Result<(), StoreError> {
        let mut wanted: Vec<&str> = order_ids
            .iter()
            .copied()
            .filter(|o| !self.by_id.contains_key(*o))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for chunk in wanted.chunks(LOAD_CHUNK) {
            let sql = format!(
                "SELECT aggregate_id, version, state FROM order_snapshots s WHERE aggregate_id IN ({}) \
                 AND version = (SELECT MAX(version) FROM order_snapshots l WHERE l.aggregate_id = s.aggregate_id)",
                tx.backend.params(chunk.len(), 1)
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            let mut loaded: HashMap<String, (OrderState, i64)> = HashMap::new();
            for r in q.fetch_all(&mut **tx).await? {
                let s: String = r.try_get("state")?;
                loaded.insert(
                    r.try_get("aggregate_id")?,
                    (serde_json::from_str(&s)?, r.try_get("version")?),
                );
            }
            // The events after each one's snapshot (version 0: none).
            let from = tx.backend.typed_rows(chunk.len(), &[None, Some("BIGINT")]);
            let sql = format!(
                "WITH f (aggregate_id, version) AS (VALUES {from}) \
                 SELECT e.aggregate_id, e.event_type, e.payload, e.metadata FROM order_events e \
                 JOIN f ON e.aggregate_id = f.aggregate_id AND e.version > f.version \
                 ORDER BY e.aggregate_id, e.version"
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id).bind(loaded.get(*id).map_or(0, |(_, v)| *v));
            }
            for r in q.fetch_all(&mut **tx).await? {
                let id: String = r.try_get("aggregate_id")?;
                let (state, _) = loaded.entry(id).or_default();
                *state = apply_row(std::mem::take(state), &r)?;
            }
            for id in chunk {
                let state = loaded.remove(*id).map(|(s, _)| s).unwrap_or_default();
                self.by_id.insert((*id).to_owned(), state);
            }
        }
        Ok(())
    }

    /// Decide `command` on `order_id` as this batch has it and queue its
    /// events with their outbox rows. Outer error: store (a refused outbox
    /// row included: then nothing of this command is queued, and the batch's
    /// other commands stand); inner: domain rejection.
    pub async fn execute(
        &mut self,
        tx: &mut Tx,
        order_id: &str,
        command: OrderCommand,
        meta: &Meta,
        snapshot_every: i64,
    ) -> Result<Result<Vec<OrderEvent>, OrderError>, StoreError> {
        self.fetch(tx, &[order_id]).await?;
        let mut state = self.by_id.get(order_id).cloned().unwrap_or_default();
        let events = match domain::handle(&state, command) {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        let mut appended = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        let mut snapshots = Vec::new();
        for event in &events {
            state = domain::apply(state, event);
            let version = state.version;
            let event_id = ids::derive(&[order_id, "v", &version.to_string()]);
            let schema_version = match event {
                OrderEvent::OrderCreated { .. } => meta.created_version.unwrap_or(1),
                _ => 1,
            };
            let data = event.to_data_version(schema_version);
            let metadata = serde_json::json!({
                "correlation_id": meta.correlation_id,
                "causation_id": meta.causation_id,
                "schema_version": schema_version,
                "saga_mode": meta.saga_mode,
            });
            appended.push(NewEvent {
                aggregate_id: order_id.to_owned(),
                version,
                event_id: event_id.clone(),
                event_type: event.type_name(),
                payload: serde_json::to_string(&data)?,
                metadata: metadata.to_string(),
                created_at: now_ms(),
            });
            let envelope = Envelope {
                id: event_id,
                event_type: event.type_name().to_owned(),
                source: SOURCE.to_owned(),
                time: now_rfc3339(),
                subject: order_id.to_owned(),
                correlation_id: meta.correlation_id.clone(),
                causation_id: meta.causation_id.clone(),
                aggregate_version: Some(version),
                dataschema: Some(contracts::uri(event.type_name(), schema_version)),
                saga_mode: Some(meta.saga_mode),
                data,
            };
            rows.push(checked_outbox_row(
                OutboxRow {
                    service: NAME,
                    topic: topics::ORDERS.to_owned(),
                    envelope,
                    schema_check: !meta.skip_schema_check,
                },
                &meta.trace,
            )?);
            if snapshot_every > 0 && version % snapshot_every == 0 {
                snapshots.push(NewSnapshot {
                    aggregate_id: order_id.to_owned(),
                    version,
                    state: serde_json::to_string(&state)?,
                    created_at: now_ms(),
                });
            }
        }
        self.events.extend(appended);
        self.snapshots.extend(snapshots);
        for row in rows {
            tx.queue_outbox(row);
        }
        self.by_id.insert(order_id.to_owned(), state);
        Ok(Ok(events))
    }

    /// Append what the batch decided: its events (every one at a version
    /// nobody took meanwhile, else the batch is a `Conflict`), then its snapshots.
    pub async fn write(self, tx: &mut Tx) -> Result<(), StoreError> {
        for chunk in self.events.chunks(WRITE_CHUNK) {
            let sql = format!(
                "INSERT INTO order_events (aggregate_id, version, event_id, event_type, payload, metadata, created_at) \
                 VALUES {} ON CONFLICT (aggregate_id, version) DO NOTHING",
                tx.backend.rows(chunk.len(), 7)
            );
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(&e.aggregate_id)
                    .bind(e.version)
                    .bind(&e.event_id)
                    .bind(e.event_type)
                    .bind(&e.payload)
                    .bind(&e.metadata)
                    .bind(e.created_at);
            }
            let inserted = q.execute(&mut **tx).await?;
            if inserted.rows_affected() != chunk.len() as u64 {
                let versions: Vec<String> = chunk
                    .iter()
                    .map(|e| format!("{} v{}", e.aggregate_id, e.version))
                    .collect();
                return Err(StoreError::Conflict(format!(
                    "an order version among {}",
                    versions.join(", ")
                )));
            }
        }
        for chunk in self.snapshots.chunks(WRITE_CHUNK) {
            let sql = format!(
                "INSERT INTO order_snapshots (aggregate_id, version, state, created_at) VALUES {}",
                tx.backend.rows(chunk.len(), 4)
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q
                    .bind(&s.aggregate_id)
                    .bind(s.version)
                    .bind(&s.state)
                    .bind(s.created_at);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::domain::LineItem;
    use crate::store::testing::db;

    fn place(id: &str) -> OrderCommand {
        OrderCommand::PlaceOrder {
            order_id: id.into(),
            customer_email: "a@example.com".into(),
            shipping_address: "1 Main St".into(),
            items: vec![LineItem {
                product_id: "lamp".into(),
                quantity: 1,
                unit_price_cents: 2900,
            }],
        }
    }

    fn note(i: usize) -> OrderCommand {
        OrderCommand::AddNote {
            text: format!("n{i}"),
        }
    }

    /// Aggregates loaded together (some from a snapshot and a tail, some
    /// from events alone, some new) are what each one's own load and a full
    /// replay give; a batch that loaded an order another batch appended to
    /// meanwhile is a conflict as a whole, and appends nothing.
    #[tokio::test]
    async fn a_batch_loads_its_orders_together_and_appends_under_the_version_check() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, pg) = db(&dir).await;
        let meta = Meta::default();
        let mut tx = db.begin().await.expect("begin");
        let mut orders = Orders::load(&mut tx, &["a", "b"]).await.expect("load");
        orders
            .execute(&mut tx, "a", place("a"), &meta, 5)
            .await
            .expect("store")
            .expect("placed");
        // Twelve notes on "a" in the same batch: snapshots at 5 and 10.
        for i in 0..12 {
            orders
                .execute(&mut tx, "a", note(i), &meta, 5)
                .await
                .expect("store")
                .expect("noted");
        }
        orders
            .execute(&mut tx, "b", place("b"), &meta, 5)
            .await
            .expect("store")
            .expect("placed");
        orders.write(&mut tx).await.expect("write");
        tx.commit().await.expect("commit");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM order_snapshots")
                .await
                .expect("count"),
            2
        );

        let mut tx = db.begin().await.expect("begin");
        let together = Orders::load(&mut tx, &["b", "a", "c", "a"])
            .await
            .expect("load");
        let mut alone = HashMap::new();
        for id in ["a", "b", "c"] {
            let (state, _) = load(&mut tx, id).await.expect("load one");
            assert_eq!(together.by_id[id], state, "{id}");
            alone.insert(id, state);
        }
        tx.rollback().await.expect("rollback");
        for (id, state) in alone {
            assert_eq!(state, replay_all(&db, id).await.expect("replay"), "{id}");
        }
        assert_eq!(together.by_id["a"].version, 13);

        // Two batches load "b"; the first to append wins. (The second loads
        // first: SQLite has one connection, so the batches take turns.)
        let mut second_orders = {
            let mut second = db.begin().await.expect("begin");
            let two = Orders::load(&mut second, &["a", "b"]).await.expect("load");
            second.rollback().await.expect("rollback");
            two
        };
        let mut first = db.begin().await.expect("begin");
        let mut one = Orders::load(&mut first, &["b"]).await.expect("load");
        one.execute(&mut first, "b", note(0), &meta, 5)
            .await
            .expect("store")
            .expect("noted");
        one.write(&mut first).await.expect("write");
        first.commit().await.expect("commit");
        let mut second = db.begin().await.expect("begin");
        for id in ["a", "b"] {
            second_orders
                .execute(&mut second, id, note(1), &meta, 5)
                .await
                .expect("store")
                .expect("noted");
        }
        match second_orders.write(&mut second).await {
            Err(e @ StoreError::Conflict(_)) => assert!(e.is_transient()),
            other => panic!("expected a conflict, got {other:?}"),
        }
        second.rollback().await.expect("rollback");
        assert_eq!(replay_all(&db, "a").await.expect("replay").version, 13);
        assert_eq!(replay_all(&db, "b").await.expect("replay").version, 2);
        if let Some(pg) = pg {
            pg.drop_it(db).await;
        }
    }
}
