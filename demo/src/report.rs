//! Facts about a run read from the database: counts and invariants that the
//! headless report combines with what the observer saw on the topics.

use std::collections::HashSet;

use sqlx::Row;

use crate::domain::OrderStatus;
use crate::order_service;
use crate::saga::{SagaMode, SagaState};
use crate::store::{Db, StoreError};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbFacts {
    pub orders_created: i64,
    pub orders_completed: i64,
    pub orders_compensated: i64,
    /// Orders whose saga is not terminal (or never started).
    pub orders_stuck: i64,
    pub outbox_written: i64,
    pub outbox_published: i64,
    pub outbox_pending: i64,
    /// Rows published more than once by the relay.
    pub outbox_republished: i64,
    /// One line per effect applied more than once.
    pub duplicate_effects: Vec<String>,
    pub stock_expected_out: i64,
    pub stock_actual_out: i64,
    /// Orders whose `order_view` row differs from a replay of their events.
    pub read_model_mismatches: Vec<String>,
    /// Open sagas by phase.
    pub stuck_phases: Vec<(String, i64)>,
    /// Records written per (type, contract version), from the outbox.
    pub schema_versions: Vec<(String, u32, i64)>,
    /// Sagas a step deadline ended.
    pub sagas_timed_out: i64,
}

impl DbFacts {
    pub fn stock_conserved(&self) -> bool {
        self.stock_expected_out == self.stock_actual_out
    }
    pub fn all_sagas_terminal(&self) -> bool {
        self.orders_stuck == 0
    }
}

async fn duplicates(
    db: &Db,
    sql: &str,
    what: &str,
    out: &mut Vec<String>,
) -> Result<(), StoreError> {
    for r in sqlx::query(sql).fetch_all(&db.pool).await? {
        let order: String = r.try_get(0)?;
        let kind: String = r.try_get(1)?;
        let n: i64 = r.try_get(2)?;
        out.push(format!(
            "{what} '{kind}' applied {n} times for order {order}"
        ));
    }
    Ok(())
}

/// The orders placed to run as a choreography (their first event's metadata
/// says so). Their sagas have no state of their own: an order is terminal when
/// it is completed or cancelled (cancelled last, after every compensation).
pub async fn choreographed_orders(db: &Db) -> Result<HashSet<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT aggregate_id, metadata FROM order_events WHERE event_type = 'OrderCreated'",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut out = HashSet::new();
    for r in rows {
        let metadata: String = r.try_get(1)?;
        let mode = serde_json::from_str::<serde_json::Value>(&metadata)
            .ok()
            .and_then(|m| m.get("saga_mode")?.as_str().and_then(SagaMode::parse));
        if mode == Some(SagaMode::Choreography) {
            out.insert(r.try_get(0)?);
        }
    }
    Ok(out)
}

/// Orders whose saga ended (completed or compensated), in either mode.
pub async fn terminal_orders(db: &Db) -> Result<i64, StoreError> {
    let orchestrated = db
        .count("SELECT COUNT(*) FROM sagas WHERE phase IN ('completed', 'compensated')")
        .await?;
    let choreographed = choreographed_orders(db).await?;
    if choreographed.is_empty() {
        return Ok(orchestrated);
    }
    let ended: HashSet<String> = sqlx::query(
        "SELECT DISTINCT aggregate_id FROM order_events WHERE event_type IN ('OrderCompleted', 'OrderCancelled')",
    )
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>(0))
    .collect::<Result<_, _>>()?;
    Ok(orchestrated + ended.intersection(&choreographed).count() as i64)
}

pub async fn collect(db: &Db) -> Result<DbFacts, StoreError> {
    let choreographed = choreographed_orders(db).await?;
    let mut f = DbFacts {
        orders_created: db
            .count("SELECT COUNT(*) FROM order_events WHERE event_type = 'OrderCreated'")
            .await?,
        orders_completed: db
            .count("SELECT COUNT(*) FROM sagas WHERE phase = 'completed'")
            .await?,
        orders_compensated: db
            .count("SELECT COUNT(*) FROM sagas WHERE phase = 'compensated'")
            .await?,
        outbox_written: db.count("SELECT COUNT(*) FROM outbox").await?,
        outbox_published: db
            .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL")
            .await?,
        outbox_pending: db
            .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .await?,
        outbox_republished: db
            .count("SELECT COUNT(*) FROM outbox WHERE publish_count > 1")
            .await?,
        ..DbFacts::default()
    };
    f.sagas_timed_out = db
        .count("SELECT COUNT(*) FROM sagas WHERE timed_out = 1")
        .await?;
    for r in sqlx::query(
        "SELECT event_type, dataschema, COUNT(*) FROM outbox GROUP BY event_type, dataschema ORDER BY event_type, dataschema",
    )
    .fetch_all(&db.pool)
    .await?
    {
        let t: String = r.try_get(0)?;
        let uri: Option<String> = r.try_get(1)?;
        let version = uri
            .as_deref()
            .and_then(crate::contracts::parse_uri)
            .map_or(1, |(_, v)| v);
        f.schema_versions.push((t, version, r.try_get(2)?));
    }
    for r in sqlx::query("SELECT phase, COUNT(*) FROM sagas WHERE phase NOT IN ('completed', 'compensated') GROUP BY phase")
        .fetch_all(&db.pool)
        .await?
    {
        f.stuck_phases.push((r.try_get(0)?, r.try_get(1)?));
    }
    let mut without = 0;
    for r in sqlx::query("SELECT e.aggregate_id FROM order_events e WHERE e.event_type = 'OrderCreated' AND NOT EXISTS (SELECT 1 FROM sagas s WHERE s.order_id = e.aggregate_id)")
        .fetch_all(&db.pool)
        .await?
    {
        if !choreographed.contains(&r.try_get::<String, _>(0)?) {
            without += 1;
        }
    }
    if without > 0 {
        f.stuck_phases.push(("no_saga_yet".into(), without));
    }
    duplicates(
        db,
        "SELECT order_id, kind, COUNT(*) FROM payments GROUP BY order_id, kind HAVING COUNT(*) > 1",
        "payment",
        &mut f.duplicate_effects,
    )
    .await?;
    duplicates(
        db,
        "SELECT order_id, kind || ' ' || product_id, COUNT(*) FROM stock_movements GROUP BY order_id, kind, product_id HAVING COUNT(*) > 1",
        "stock",
        &mut f.duplicate_effects,
    )
    .await?;
    duplicates(
        db,
        "SELECT order_id, kind, COUNT(*) FROM shipments GROUP BY order_id, kind HAVING COUNT(*) > 1",
        "shipment",
        &mut f.duplicate_effects,
    )
    .await?;
    f.stock_actual_out = db
        .count("SELECT CAST(COALESCE(SUM(initial_quantity - quantity), 0) AS BIGINT) FROM stock")
        .await?;
    for r in sqlx::query("SELECT state FROM sagas WHERE phase = 'completed'")
        .fetch_all(&db.pool)
        .await?
    {
        let s: String = r.try_get(0)?;
        let state: SagaState = serde_json::from_str(&s)?;
        f.stock_expected_out += state.items.iter().map(|i| i.quantity).sum::<i64>();
    }
    let views = sqlx::query(
        "SELECT order_id, status, customer_email, total_cents, item_count FROM order_view",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut choreography_open = 0;
    let mut seen = std::collections::HashMap::new();
    for r in views {
        let id: String = r.try_get(0)?;
        let row: (String, String, i64, i64) =
            (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?);
        seen.insert(id, row);
    }
    for r in sqlx::query("SELECT DISTINCT aggregate_id FROM order_events")
        .fetch_all(&db.pool)
        .await?
    {
        let id: String = r.try_get(0)?;
        let s = order_service::replay_all(db, &id).await?;
        if choreographed.contains(&id) {
            match s.status {
                OrderStatus::Completed => {
                    f.orders_completed += 1;
                    f.stock_expected_out += s.items.iter().map(|i| i.quantity).sum::<i64>();
                }
                OrderStatus::Cancelled => f.orders_compensated += 1,
                OrderStatus::New | OrderStatus::Pending => choreography_open += 1,
            }
        }
        let expected = (
            s.status.as_str().to_owned(),
            s.customer_email.clone(),
            s.total_cents,
            s.items.len() as i64,
        );
        match seen.get(&id) {
            Some(got) if *got == expected => {}
            Some(got) => f
                .read_model_mismatches
                .push(format!("order {id}: view {got:?}, replay {expected:?}")),
            None if s.status == OrderStatus::New => {}
            None => f
                .read_model_mismatches
                .push(format!("order {id}: missing from order_view")),
        }
    }
    if choreography_open > 0 {
        f.stuck_phases
            .push(("choreography_open".into(), choreography_open));
    }
    f.orders_stuck = f.orders_created - f.orders_completed - f.orders_compensated;
    Ok(f)
}

/// Event ids the relay marked published (what must be on the topics).
pub async fn published_event_ids(db: &Db) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT event_id FROM outbox WHERE published_at IS NOT NULL")
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
        .collect()
}
