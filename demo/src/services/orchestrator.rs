//! The saga orchestrator: durable saga state, commands through the outbox.

use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use sqlx::Row;

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

struct Stored {
    state: SagaState,
    correlation_id: String,
}

async fn load(tx: &mut Tx, order_id: &str) -> Result<Option<Stored>, StoreError> {
    let row = sqlx::query("SELECT state, correlation_id FROM sagas WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let s: String = r.try_get("state")?;
            Ok(Some(Stored {
                state: serde_json::from_str(&s)?,
                correlation_id: r.try_get("correlation_id")?,
            }))
        }
    }
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
    async fn handle(
        &self,
        _ctx: &Ctx,
        tx: &mut Tx,
        msg: &Envelope,
        trace: &Trace,
    ) -> Result<(), StoreError> {
        let order_id = msg.subject.as_str();
        let now = now_ms();
        if msg.event_type == "OrderCreated" {
            if load(tx, order_id).await?.is_some() {
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
            insert_saga(tx, &state, &correlation_id, now).await?;
            let span = step_span(trace, None, &state, Cause::of(msg), &actions);
            let done = perform(tx, &state, &correlation_id, Cause::of(msg), &actions, &span).await;
            span.end();
            return done;
        }
        let Some(input) = SagaInput::from_event(&msg.event_type, &msg.data) else {
            return Ok(());
        };
        let Some(stored) = load(tx, order_id).await? else {
            tracing::warn!(order = order_id, event = %msg.event_type, "no saga for this order; ignored");
            return Ok(());
        };
        advance(tx, &stored, input, Cause::of(msg), trace, false).await
    }

    /// An `OrderCreated` this orchestrator cannot read (a contract version it
    /// does not know) still opens the order's saga, from the envelope alone:
    /// the saga then waits for data it cannot get, and its step deadline
    /// cancels the order.
    async fn unreadable(&self, _ctx: &Ctx, tx: &mut Tx, msg: &Envelope) -> Result<(), StoreError> {
        if msg.event_type != "OrderCreated" || load(tx, &msg.subject).await?.is_some() {
            return Ok(());
        }
        let state = SagaState::unreadable(msg.subject.clone());
        let correlation_id = msg.correlation_id.as_deref().unwrap_or(&msg.subject);
        insert_saga(tx, &state, correlation_id, now_ms()).await
    }
}

/// Store a new saga in its first phase.
async fn insert_saga(
    tx: &mut Tx,
    state: &SagaState,
    correlation_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sagas (order_id, correlation_id, phase, state, started_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&state.order_id)
    .bind(correlation_id)
    .bind(state.phase.name())
    .bind(serde_json::to_string(state)?)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Step a stored saga with `input`, store the new state (only if nobody else
/// moved it meanwhile: a consumer and the deadline sweeper can race) and
/// queue its commands.
async fn advance(
    tx: &mut Tx,
    stored: &Stored,
    input: SagaInput,
    cause: Cause<'_>,
    trace: &Trace,
    deadline: bool,
) -> Result<(), StoreError> {
    let (state, actions) = saga::step(stored.state.clone(), input);
    if state == stored.state {
        return Ok(());
    }
    let now = now_ms();
    let finished = state.phase.is_terminal().then_some(now);
    let updated = sqlx::query(
        "UPDATE sagas SET phase = $1, state = $2, updated_at = $3, finished_at = $4, \
         timed_out = CASE WHEN $5 THEN 1 ELSE timed_out END \
         WHERE order_id = $6 AND state = $7",
    )
    .bind(state.phase.name())
    .bind(serde_json::to_string(&state)?)
    .bind(now)
    .bind(finished)
    .bind(deadline)
    .bind(&state.order_id)
    .bind(serde_json::to_string(&stored.state)?)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!("saga {}", state.order_id)));
    }
    let span = step_span(trace, Some(&stored.state), &state, cause, &actions);
    let done = perform(tx, &state, &stored.correlation_id, cause, &actions, &span).await;
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
            let result = match load(&mut tx, &order_id).await? {
                Some(stored) => {
                    advance(
                        &mut tx,
                        &stored,
                        SagaInput::StepTimedOut,
                        Cause::DEADLINE,
                        &trace,
                        true,
                    )
                    .await
                }
                None => Ok(()),
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
