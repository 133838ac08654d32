//! The saga orchestrator: durable saga state, commands through the outbox.

use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use sqlx::Row;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::consumer::{Exit, Handler};
use crate::context::Ctx;
use crate::domain::LineItem;
use crate::envelope::{now_rfc3339, Envelope};
use crate::faults::Fault;
use crate::ids;
use crate::saga::{self, SagaAction, SagaInput, SagaMode, SagaPhase, SagaState};
use crate::store::{insert_outbox, now_ms, Db, OutboxRow, StoreError, Tx};
use crate::telemetry::{attr, Trace};
use crate::topics;

pub const NAME: &str = "saga-orchestrator";
pub const SOURCE: &str = "/eventscope-demo/saga-orchestrator";

pub struct Orchestrator;

/// What moved a saga: an observed event, or its step deadline.
#[derive(Clone, Copy)]
struct Cause<'a> {
    /// The event id (the commands' causation id); None for a deadline.
    id: Option<&'a str>,
    input: &'a str,
    correlation_id: Option<&'a str>,
}

impl<'a> Cause<'a> {
    fn of(e: &'a Envelope) -> Cause<'a> {
        Cause {
            id: Some(&e.id),
            input: &e.event_type,
            correlation_id: e.correlation_id.as_deref(),
        }
    }

    const DEADLINE: Cause<'static> = Cause {
        id: None,
        input: "StepTimedOut",
        correlation_id: None,
    };
}

/// One saga as the batch sees it.
struct Saga {
    /// Its state column as loaded, for the write's optimistic check (a
    /// consumer and the deadline sweeper can race); None: new in this batch.
    loaded: Option<String>,
    state: SagaState,
    correlation_id: String,
    started_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    timed_out: bool,
    changed: bool,
}

/// The sagas one batch touches, a unit of work: loaded in one query, stepped
/// in memory record after record in offset order, and written back once each
/// before the commit (one INSERT for the new ones, one UPDATE for the moved).
#[derive(Default)]
pub struct Sagas {
    /// Every order looked up; None: it has no saga.
    by_order: HashMap<String, Option<Saga>>,
}

impl Sagas {
    /// Load the sagas of `order_ids` (an order without one is remembered as such).
    async fn load(tx: &mut Tx, order_ids: &[&str]) -> Result<Sagas, StoreError> {
        let mut sagas = Sagas::default();
        sagas.fetch(tx, order_ids).await?;
        Ok(sagas)
    }

    async fn fetch(&mut self, tx: &mut Tx, order_ids: &[&str]) -> Result<(), StoreError> {
        let mut wanted: Vec<&str> = order_ids
            .iter()
            .copied()
            .filter(|o| !self.by_order.contains_key(*o))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for chunk in wanted.chunks(LOAD_CHUNK) {
            let sql = format!(
                "SELECT order_id, state, correlation_id, started_at, updated_at, finished_at, timed_out \
                 FROM sagas WHERE order_id IN ({})",
                tx.backend.params(chunk.len(), 1)
            );
            let mut q = sqlx::query(&sql);
            for o in chunk {
                q = q.bind(*o);
            }
            for r in q.fetch_all(&mut **tx).await? {
                let loaded: String = r.try_get("state")?;
                let saga = Saga {
                    state: serde_json::from_str(&loaded)?,
                    loaded: Some(loaded),
                    correlation_id: r.try_get("correlation_id")?,
                    started_at: r.try_get("started_at")?,
                    updated_at: r.try_get("updated_at")?,
                    finished_at: r.try_get("finished_at")?,
                    timed_out: r.try_get::<i64, _>("timed_out")? != 0,
                    changed: false,
                };
                self.by_order.insert(r.try_get("order_id")?, Some(saga));
            }
            for o in chunk {
                self.by_order.entry((*o).to_owned()).or_insert(None);
            }
        }
        Ok(())
    }

    /// The saga of `order_id`, looked up now if the batch did not load it.
    async fn get(&mut self, tx: &mut Tx, order_id: &str) -> Result<Option<&mut Saga>, StoreError> {
        if !self.by_order.contains_key(order_id) {
            self.fetch(tx, &[order_id]).await?;
        }
        Ok(self.by_order.get_mut(order_id).and_then(Option::as_mut))
    }

    /// A saga opened in this batch, in its first phase.
    fn open(&mut self, state: SagaState, correlation_id: String, now: i64) {
        let saga = Saga {
            loaded: None,
            correlation_id,
            started_at: now,
            updated_at: now,
            finished_at: state.phase.is_terminal().then_some(now),
            timed_out: false,
            changed: true,
            state,
        };
        self.by_order
            .insert(saga.state.order_id.clone(), Some(saga));
    }

    /// Write back what the batch changed: the new sagas in one INSERT, the
    /// moved ones in one UPDATE that touches each only if its state is still
    /// the one loaded; otherwise the batch is a `Conflict` (retried).
    async fn write(self, tx: &mut Tx) -> Result<(), StoreError> {
        let changed: Vec<Saga> = self
            .by_order
            .into_values()
            .flatten()
            .filter(|s| s.changed)
            .collect();
        let (new, moved): (Vec<Saga>, Vec<Saga>) =
            changed.into_iter().partition(|s| s.loaded.is_none());
        for chunk in new.chunks(WRITE_CHUNK) {
            insert_sagas(tx, chunk).await?;
        }
        for chunk in moved.chunks(WRITE_CHUNK) {
            update_sagas(tx, chunk).await?;
        }
        Ok(())
    }
}

/// Order ids one load binds at most.
const LOAD_CHUNK: usize = 500;
/// Sagas one INSERT or UPDATE writes at most (8 parameters each).
const WRITE_CHUNK: usize = 100;

/// Each saga's state as stored.
fn serialized(sagas: &[Saga]) -> Result<Vec<String>, StoreError> {
    Ok(sagas
        .iter()
        .map(|s| serde_json::to_string(&s.state))
        .collect::<Result<_, _>>()?)
}

async fn insert_sagas(tx: &mut Tx, sagas: &[Saga]) -> Result<(), StoreError> {
    const COLUMNS: usize = 8;
    let values = tx.backend.rows(sagas.len(), COLUMNS);
    let sql = format!(
        "INSERT INTO sagas (order_id, correlation_id, phase, state, started_at, updated_at, finished_at, timed_out) \
         VALUES {values}"
    );
    let states = serialized(sagas)?;
    let mut q = sqlx::query(&sql);
    for (s, state) in sagas.iter().zip(&states) {
        q = q
            .bind(&s.state.order_id)
            .bind(&s.correlation_id)
            .bind(s.state.phase.name())
            .bind(state)
            .bind(s.started_at)
            .bind(s.updated_at)
            .bind(s.finished_at)
            .bind(i64::from(s.timed_out));
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

async fn update_sagas(tx: &mut Tx, sagas: &[Saga]) -> Result<(), StoreError> {
    const BIGINT: Option<&str> = Some("BIGINT");
    let values = tx.backend.typed_rows(
        sagas.len(),
        &[None, None, None, BIGINT, BIGINT, BIGINT, None],
    );
    // A CTE names the VALUES' columns the same way in SQLite and PostgreSQL.
    let sql = format!(
        "WITH v (order_id, phase, state, updated_at, finished_at, timed_out, loaded) AS (VALUES {values}) \
         UPDATE sagas SET phase = v.phase, state = v.state, updated_at = v.updated_at, \
         finished_at = v.finished_at, timed_out = v.timed_out \
         FROM v WHERE sagas.order_id = v.order_id AND sagas.state = v.loaded"
    );
    let states = serialized(sagas)?;
    let mut q = sqlx::query(&sql);
    for (s, state) in sagas.iter().zip(&states) {
        q = q
            .bind(&s.state.order_id)
            .bind(s.state.phase.name())
            .bind(state)
            .bind(s.updated_at)
            .bind(s.finished_at)
            .bind(i64::from(s.timed_out))
            .bind(s.loaded.as_deref());
    }
    let updated = q.execute(&mut **tx).await?;
    if updated.rows_affected() != sagas.len() as u64 {
        let orders: Vec<&str> = sagas.iter().map(|s| s.state.order_id.as_str()).collect();
        return Err(StoreError::Conflict(format!(
            "sagas moved meanwhile among {orders:?}"
        )));
    }
    Ok(())
}

/// The span of one saga transition: a step forward, a compensation, or the end.
fn step_span(
    parent: &Trace,
    from: Option<&SagaState>,
    to: &SagaState,
    cause: Cause<'_>,
    actions: &[SagaAction],
) -> Trace {
    let compensating = matches!(
        to.phase,
        SagaPhase::Compensating { .. } | SagaPhase::CancellingOrder | SagaPhase::Compensated
    );
    let command = actions.iter().find_map(|a| match a {
        SagaAction::Send(c) => Some(c.type_name()),
        SagaAction::Finished => None,
    });
    let name = match (from, command) {
        (None, _) => "saga start".to_owned(),
        (_, Some(c)) if compensating => format!("saga compensate {c}"),
        (_, Some(c)) => format!("saga step {c}"),
        (_, None) => format!("saga {}", to.phase.name()),
    };
    let mut attributes = vec![
        KeyValue::new(
            attr::HOP,
            if compensating {
                "saga compensation"
            } else {
                "saga step"
            },
        ),
        KeyValue::new(attr::ORDER_ID, to.order_id.clone()),
        KeyValue::new(attr::SAGA_PHASE, to.phase.name()),
        KeyValue::new(attr::SAGA_INPUT, cause.input.to_owned()),
    ];
    if let Some(from) = from {
        attributes.push(KeyValue::new(
            "eventscope.saga.phase_before",
            from.phase.name(),
        ));
    }
    if let Some(f) = &to.failure {
        attributes.push(KeyValue::new("eventscope.saga.failure", f.clone()));
    }
    parent.child(name, SpanKind::Internal, attributes)
}

async fn perform(
    tx: &mut Tx,
    s: &SagaState,
    correlation_id: &str,
    cause: Cause<'_>,
    actions: &[SagaAction],
    trace: &Trace,
) -> Result<(), StoreError> {
    for a in actions {
        if let SagaAction::Send(cmd) = a {
            let envelope = Envelope {
                id: ids::derive(&[&s.order_id, "cmd", cmd.type_name()]),
                event_type: cmd.type_name().to_owned(),
                source: SOURCE.to_owned(),
                time: now_rfc3339(),
                subject: s.order_id.clone(),
                // Repair a chain a service broke: the saga knows its correlation id.
                correlation_id: Some(cause.correlation_id.unwrap_or(correlation_id).to_owned()),
                causation_id: cause.id.map(str::to_owned),
                aggregate_version: None,
                dataschema: Some(crate::contracts::uri(cmd.type_name(), 1)),
                saga_mode: Some(SagaMode::Orchestration),
                data: cmd.data(s),
            };
            insert_outbox(
                tx,
                OutboxRow {
                    service: NAME,
                    topic: cmd.topic().to_owned(),
                    envelope,
                    schema_check: true,
                },
                trace,
            )
            .await?;
        }
    }
    Ok(())
}

impl Handler for Orchestrator {
    fn name(&self) -> &'static str {
        NAME
    }
    fn topics(&self, modes: &[SagaMode]) -> Vec<&'static str> {
        if !modes.contains(&SagaMode::Orchestration) {
            return Vec::new();
        }
        vec![
            topics::ORDERS,
            topics::PAYMENTS,
            topics::INVENTORY,
            topics::SHIPPING,
        ]
    }
    /// A choreographed order has no saga here.
    fn wants(&self, _topic: &str, msg: &Envelope) -> bool {
        msg.saga_mode != Some(SagaMode::Choreography)
    }
    fn crash_fault(&self) -> Fault {
        Fault::OrchestratorCrash
    }
    /// The saga's state machine already ignores inputs that do not fit its phase.
    fn honours_no_idempotency(&self) -> bool {
        false
    }
    /// Replies go to the orchestrator; it never answers them again.
    fn replies_again_on_redelivery(&self) -> bool {
        false
    }
    type Batch = Sagas;
    async fn open_batch(&self, tx: &mut Tx, msgs: &[&Envelope]) -> Result<Sagas, StoreError> {
        let orders: Vec<&str> = msgs.iter().map(|m| m.subject.as_str()).collect();
        Sagas::load(tx, &orders).await
    }
    async fn close_batch(&self, tx: &mut Tx, sagas: Sagas) -> Result<(), StoreError> {
        sagas.write(tx).await
    }
    async fn handle(
        &self,
        _ctx: &Ctx,
        tx: &mut Tx,
        sagas: &mut Sagas,
        msg: &Envelope,
        trace: &Trace,
    ) -> Result<(), StoreError> {
        let order_id = msg.subject.as_str();
        if msg.event_type == "OrderCreated" {
            if sagas.get(tx, order_id).await?.is_some() {
                return Ok(());
            }
            let total = msg
                .data
                .get("total_cents")
                .and_then(|t| t.as_i64())
                .unwrap_or(0);
            let items: Vec<LineItem> = msg
                .data
                .get("items")
                .and_then(|i| serde_json::from_value(i.clone()).ok())
                .unwrap_or_default();
            let state = SagaState::start(order_id.to_owned(), total, items);
            let correlation_id = msg
                .correlation_id
                .clone()
                .unwrap_or_else(|| order_id.to_owned());
            let actions = saga::begin(&state);
            let span = step_span(trace, None, &state, Cause::of(msg), &actions);
            let done = perform(tx, &state, &correlation_id, Cause::of(msg), &actions, &span).await;
            span.end();
            sagas.open(state, correlation_id, now_ms());
            return done;
        }
        let Some(input) = SagaInput::from_event(&msg.event_type, &msg.data) else {
            return Ok(());
        };
        let Some(saga) = sagas.get(tx, order_id).await? else {
            tracing::warn!(order = order_id, event = %msg.event_type, "no saga for this order; ignored");
            return Ok(());
        };
        advance(tx, saga, input, Cause::of(msg), trace, false).await
    }

    /// An `OrderCreated` this orchestrator cannot read (a contract version it
    /// does not know) still opens the order's saga, from the envelope alone:
    /// the saga then waits for data it cannot get, and its step deadline
    /// cancels the order.
    async fn unreadable(
        &self,
        _ctx: &Ctx,
        tx: &mut Tx,
        sagas: &mut Sagas,
        msg: &Envelope,
    ) -> Result<(), StoreError> {
        if msg.event_type != "OrderCreated" || sagas.get(tx, &msg.subject).await?.is_some() {
            return Ok(());
        }
        let state = SagaState::unreadable(msg.subject.clone());
        let correlation_id = msg
            .correlation_id
            .clone()
            .unwrap_or_else(|| msg.subject.clone());
        sagas.open(state, correlation_id, now_ms());
        Ok(())
    }
}

/// Step a saga with `input` (in memory; the batch writes it back) and queue
/// its commands.
async fn advance(
    tx: &mut Tx,
    saga: &mut Saga,
    input: SagaInput,
    cause: Cause<'_>,
    trace: &Trace,
    deadline: bool,
) -> Result<(), StoreError> {
    let (state, actions) = saga::step(saga.state.clone(), input);
    if state == saga.state {
        return Ok(());
    }
    let now = now_ms();
    saga.updated_at = now;
    saga.finished_at = state.phase.is_terminal().then_some(now);
    saga.timed_out |= deadline;
    saga.changed = true;
    let before = std::mem::replace(&mut saga.state, state);
    let span = step_span(trace, Some(&before), &saga.state, cause, &actions);
    let done = perform(
        tx,
        &saga.state,
        &saga.correlation_id,
        cause,
        &actions,
        &span,
    )
    .await;
    span.end();
    done
}

/// The step deadlines: every open saga whose current forward step has waited
/// longer than `step_timeout` is stepped with `StepTimedOut` (and so
/// compensates). Runs beside the orchestrator's consumer, like a Temporal
/// activity's `startToCloseTimeout`.
pub async fn run_deadlines(
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Exit> {
    let timeout_ms = i64::try_from(ctx.config.step_timeout.as_millis()).unwrap_or(i64::MAX);
    let phases = SagaPhase::DEADLINED
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let due_sql = format!(
        "SELECT order_id FROM sagas WHERE phase IN ({phases}) AND updated_at < $1 ORDER BY updated_at LIMIT 200"
    );
    // A deadline counts the time the orchestrator ran: after a restart every
    // open saga gets a full step timeout again, so the system's own downtime
    // (a kill -9, a deploy) does not cancel the orders it left in flight.
    let started = now_ms();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(Exit::Shutdown),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let cutoff = now_ms().saturating_sub(timeout_ms);
        if cutoff <= started {
            continue;
        }
        let due: Vec<String> = sqlx::query(&due_sql)
            .bind(cutoff)
            .fetch_all(&ctx.db.pool)
            .await
            .map_err(StoreError::from)?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)?;
        for order_id in due {
            let trace = ctx.telemetry.trace_for(NAME);
            let mut tx = ctx.db.begin().await?;
            let mut sagas = Sagas::load(&mut tx, &[&order_id]).await?;
            let result = match sagas.get(&mut tx, &order_id).await? {
                Some(saga) => {
                    advance(
                        &mut tx,
                        saga,
                        SagaInput::StepTimedOut,
                        Cause::DEADLINE,
                        &trace,
                        true,
                    )
                    .await
                }
                None => Ok(()),
            };
            let result = match result {
                Ok(()) => sagas.write(&mut tx).await,
                e => e,
            };
            match result {
                Ok(()) => {
                    tx.commit().await?;
                    ctx.outbox_committed();
                    tracing::warn!(order = %order_id, "saga step deadline passed: compensating");
                }
                // Moved by its consumer meanwhile: looked at again next round.
                Err(e) if e.is_transient() => tx.rollback().await?,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Sagas not yet terminal (a restarted orchestrator resumes them from their
/// durable state; their pending commands are already in the outbox).
pub async fn open_sagas(db: &Db) -> Result<i64, StoreError> {
    db.count("SELECT COUNT(*) FROM sagas WHERE phase NOT IN ('completed', 'compensated')")
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::testing::db;

    async fn stored(db: &Db, order_id: &str) -> (String, String, i64, Option<i64>) {
        let r = sqlx::query(
            "SELECT phase, state, timed_out, finished_at FROM sagas WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_one(&db.pool)
        .await
        .expect("saga row");
        (
            r.get("phase"),
            r.get("state"),
            r.get("timed_out"),
            r.get("finished_at"),
        )
    }

    /// A batch writes each saga once, whatever it did to it; a saga moved by
    /// someone else since the batch loaded it makes the whole write a conflict.
    #[tokio::test]
    async fn a_batch_writes_each_saga_once_and_detects_a_saga_moved_meanwhile() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, pg) = db(&dir).await;
        let mut tx = db.begin().await.expect("begin");
        let mut sagas = Sagas::load(&mut tx, &["a", "b"]).await.expect("load");
        assert!(sagas.get(&mut tx, "a").await.expect("get").is_none());
        sagas.open(
            SagaState::start("a".into(), 100, vec![]),
            "corr-a".into(),
            1,
        );
        sagas.open(
            SagaState::start("b".into(), 200, vec![]),
            "corr-b".into(),
            1,
        );
        // Stepped twice in the same batch: written once, in its last state.
        let a = sagas.get(&mut tx, "a").await.expect("get").expect("a");
        let (paid, _) = saga::step(a.state.clone(), SagaInput::PaymentCompleted);
        a.state = paid;
        sagas.write(&mut tx).await.expect("write new");
        tx.commit().await.expect("commit");
        assert_eq!(stored(&db, "a").await.0, "awaiting_stock");
        assert_eq!(stored(&db, "b").await.0, "awaiting_payment");

        // Two batches load "a"; the first to write wins, the second conflicts.
        let mut first = db.begin().await.expect("begin");
        let mut one = Sagas::load(&mut first, &["a", "b"]).await.expect("load");
        let saga = one.get(&mut first, "a").await.expect("get").expect("a");
        advance(
            &mut first,
            saga,
            SagaInput::StepTimedOut,
            Cause::DEADLINE,
            &Trace::default(),
            true,
        )
        .await
        .expect("advance");
        let untouched = one.get(&mut first, "b").await.expect("get").expect("b");
        assert!(!untouched.changed);
        one.write(&mut first).await.expect("write");
        first.commit().await.expect("commit");
        let (phase, _, timed_out, finished) = stored(&db, "a").await;
        assert_eq!(phase, "compensating");
        assert_eq!(timed_out, 1);
        assert_eq!(finished, None, "compensating is not terminal");

        let mut second = db.begin().await.expect("begin");
        let mut two = Sagas::load(&mut second, &["a"]).await.expect("load");
        // As if it had loaded "a" before the first batch moved it.
        let saga = two.get(&mut second, "a").await.expect("get").expect("a");
        saga.loaded =
            Some(serde_json::to_string(&SagaState::start("a".into(), 100, vec![])).unwrap());
        let (next, _) = saga::step(saga.state.clone(), SagaInput::StepTimedOut);
        saga.state = next;
        saga.changed = true;
        match two.write(&mut second).await {
            Err(e @ StoreError::Conflict(_)) => assert!(e.is_transient()),
            other => panic!("expected a conflict, got {other:?}"),
        }
        second.rollback().await.expect("rollback");
        if let Some(pg) = pg {
            pg.drop_it(db).await;
        }
    }
}
