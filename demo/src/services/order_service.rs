//! The order service: loads the event-sourced `Order` (latest snapshot + tail),
//! decides with the pure domain, appends events and their outbox rows in ONE
//! transaction, with optimistic concurrency on (aggregate id, version).

use sqlx::Row;

use crate::choreography::{self, Participant};
use crate::consumer::Handler;
use crate::context::Ctx;
use crate::contracts;
use crate::domain::{self, OrderCommand, OrderError, OrderEvent, OrderState};
use crate::envelope::{now_rfc3339, Envelope};
use crate::ids;
use crate::saga::SagaMode;
use crate::store::{insert_outbox, now_ms, Db, OutboxRow, StoreError, Tx};
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
    for r in rows {
        let t: String = r.try_get("event_type")?;
        let p: String = r.try_get("payload")?;
        let m: String = r.try_get("metadata")?;
        state = domain::apply(state, &read_event(&t, &p, &m)?);
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
    for r in rows {
        let t: String = r.try_get("event_type")?;
        let p: String = r.try_get("payload")?;
        let m: String = r.try_get("metadata")?;
        state = domain::apply(state, &read_event(&t, &p, &m)?);
    }
    Ok(state)
}

/// Decide and append inside `tx`. Outer error: store; inner: domain rejection.
pub async fn execute_in(
    tx: &mut Tx,
    order_id: &str,
    command: OrderCommand,
    meta: &Meta,
    snapshot_every: i64,
) -> Result<Result<Vec<OrderEvent>, OrderError>, StoreError> {
    let (state, _) = load(tx, order_id).await?;
    let events = match domain::handle(&state, command) {
        Ok(e) => e,
        Err(e) => return Ok(Err(e)),
    };
    let mut state = state;
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
        let inserted = sqlx::query(
            "INSERT INTO order_events (aggregate_id, version, event_id, event_type, payload, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (aggregate_id, version) DO NOTHING",
        )
        .bind(order_id)
        .bind(version)
        .bind(&event_id)
        .bind(event.type_name())
        .bind(serde_json::to_string(&data)?)
        .bind(metadata.to_string())
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "order {order_id} version {version}"
            )));
        }
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
        insert_outbox(
            tx,
            OutboxRow {
                service: NAME,
                topic: topics::ORDERS.to_owned(),
                envelope,
                schema_check: !meta.skip_schema_check,
            },
            &meta.trace,
        )
        .await?;
        if snapshot_every > 0 && version % snapshot_every == 0 {
            sqlx::query(
                "INSERT INTO order_snapshots (aggregate_id, version, state, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(order_id)
            .bind(version)
            .bind(serde_json::to_string(&state)?)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(Ok(events))
}

/// Execute a command in its own transaction, retrying on version conflicts.
pub async fn execute(
    db: &Db,
    order_id: &str,
    command: OrderCommand,
    meta: &Meta,
    snapshot_every: i64,
) -> Result<Result<Vec<OrderEvent>, OrderError>, StoreError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut tx = db.begin().await?;
        match execute_in(&mut tx, order_id, command.clone(), meta, snapshot_every).await {
            Ok(Ok(events)) => {
                tx.commit().await?;
                return Ok(Ok(events));
            }
            Ok(Err(e)) => {
                tx.rollback().await?;
                return Ok(Err(e));
            }
            Err(e) if e.is_transient() && attempts < 10 => {
                tx.rollback().await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The saga mode and correlation id an order was placed with (its first
/// event's metadata); None for an order this service does not know.
pub async fn placed_with(
    tx: &mut Tx,
    order_id: &str,
) -> Result<Option<(SagaMode, Option<String>)>, StoreError> {
    let row =
        sqlx::query("SELECT metadata FROM order_events WHERE aggregate_id = $1 AND version = 1")
            .bind(order_id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let m: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>(0)?)?;
    let mode = m
        .get("saga_mode")
        .and_then(|v| v.as_str())
        .and_then(SagaMode::parse)
        .unwrap_or_default();
    let correlation = m
        .get("correlation_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    Ok(Some((mode, correlation)))
}

/// The order service's consumer: `orders.commands` (from the orchestrator),
/// and in a choreography the events that end the order's saga.
pub struct OrderCommands;

impl Handler for OrderCommands {
    type Batch = ();
    fn name(&self) -> &'static str {
        NAME
    }
    fn topics(&self, modes: &[SagaMode]) -> Vec<&'static str> {
        choreography::topics_in(Participant::Order, topics::ORDER_COMMANDS, modes)
    }
    fn wants(&self, topic: &str, msg: &Envelope) -> bool {
        choreography::wants(
            Participant::Order,
            topics::ORDER_COMMANDS,
            topic,
            msg.saga_mode,
            &msg.event_type,
        )
    }
    async fn handle(
        &self,
        ctx: &Ctx,
        tx: &mut Tx,
        _batch: &mut (),
        msg: &Envelope,
        trace: &Trace,
    ) -> Result<(), StoreError> {
        let reaction =
            choreography::reaction_to(Participant::Order, msg.saga_mode, &msg.event_type);
        let reason = msg.data.get("reason").and_then(|r| r.as_str());
        let command = match reaction.map_or(msg.event_type.as_str(), |r| r.command()) {
            "ApproveOrder" => OrderCommand::ApproveOrder,
            "CancelOrder" => OrderCommand::CancelOrder {
                reason: match (msg.event_type.as_str(), reason) {
                    ("StockRejected", Some(r)) => format!("out of stock: {r}"),
                    ("StockRestored", _) => {
                        "compensated: stock restored after a failure downstream".to_owned()
                    }
                    (_, r) => r.unwrap_or("cancelled").to_owned(),
                },
            },
            other => {
                tracing::warn!(command = other, "order service ignores an unknown command");
                return Ok(());
            }
        };
        let mut correlation_id = msg.correlation_id.clone();
        if reaction.is_some() && correlation_id.is_none() {
            // The owner repairs a chain a service broke, as the orchestrator
            // does: it knows the correlation id its order was placed with.
            correlation_id = placed_with(tx, &msg.subject).await?.and_then(|(_, c)| c);
        }
        let meta = Meta {
            correlation_id,
            causation_id: Some(msg.id.clone()),
            trace: trace.clone(),
            saga_mode: msg.saga_mode.unwrap_or_default(),
            ..Meta::default()
        };
        if let Err(e) =
            execute_in(tx, &msg.subject, command, &meta, ctx.config.snapshot_every).await?
        {
            tracing::warn!(order = %msg.subject, command = %msg.event_type, error = %e, "order rejected the command");
        }
        Ok(())
    }
}
