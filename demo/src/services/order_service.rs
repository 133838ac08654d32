//! The order service: loads the event-sourced `Order` (latest snapshot + tail),
//! decides with the pure domain, appends events and their outbox rows in ONE
//! transaction, with optimistic concurrency on (aggregate id, version). Its
//! requests ([`serve`]) and its consumer's records are decided a batch to a
//! transaction (the unit of work is [`Orders`]).

use std::sync::Arc;

use sqlx::Row;
use tokio::sync::{mpsc, oneshot, watch};

use crate::choreography::{self, Participant};
use crate::consumer::Handler;
use crate::context::Ctx;
use crate::domain::{OrderCommand, OrderError, OrderEvent};
use crate::envelope::Envelope;
use crate::saga::SagaMode;
use crate::store::{Db, StoreError, Tx};
use crate::telemetry::Trace;
use crate::topics;

pub use crate::orders::{load, replay_all, Loaded, Meta, Orders, NAME, SOURCE};

/// Decide and append inside `tx`. Outer error: store; inner: domain rejection.
pub async fn execute_in(
    tx: &mut Tx,
    order_id: &str,
    command: OrderCommand,
    meta: &Meta,
    snapshot_every: i64,
) -> Result<Result<Vec<OrderEvent>, OrderError>, StoreError> {
    let mut orders = Orders::load(tx, &[order_id]).await?;
    let decided = orders
        .execute(tx, order_id, command, meta, snapshot_every)
        .await?;
    orders.write(tx).await?;
    Ok(decided)
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

/// A request to the order service: a command on an order, answered on `answer_tx`.
pub struct Request {
    pub order_id: String,
    pub command: OrderCommand,
    pub meta: Meta,
    pub answer_tx: oneshot::Sender<Answer>,
}

/// The order service's answer to a request. Outer error: store (the
/// contract check's refusal included); inner: domain rejection.
pub type Answer = Result<Result<Vec<OrderEvent>, OrderError>, StoreError>;

/// Requests one transaction decides at most.
const REQUESTS_PER_TRANSACTION: usize = 256;

/// Serve requests until shutdown (or until every sender is gone). The
/// requests that arrive while a transaction runs are decided together in the
/// next one (a group commit): in the order they came, each on the state the
/// ones before it left, in one transaction with one load and one append. A
/// request the domain or the contract check refuses is answered so and leaves
/// the others alone; a transient store error retries the transaction; any
/// other store error answers each request from a transaction of its own.
pub async fn serve(
    ctx: Arc<Ctx>,
    mut requests_rx: mpsc::Receiver<Request>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => return,
            r = requests_rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < REQUESTS_PER_TRANSACTION {
            match requests_rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let answers = decide_together(&ctx.db, ctx.config.snapshot_every, &batch).await;
        ctx.outbox_committed();
        for (request, answer) in batch.into_iter().zip(answers) {
            // A requester that stopped waiting is no error.
            let _ = request.answer_tx.send(answer);
        }
    }
}

/// Decide `batch` in one transaction (see [`serve`]); one answer per request.
async fn decide_together(db: &Db, snapshot_every: i64, batch: &[Request]) -> Vec<Answer> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match decide_in_one(db, snapshot_every, batch).await {
            Ok(answers) => return answers,
            Err(e) if e.is_transient() && attempts < 10 => {}
            Err(e) if batch.len() == 1 => return vec![Err(e)],
            Err(e) => {
                tracing::debug!(error = %e, requests = batch.len(), "deciding the requests one by one");
                break;
            }
        }
    }
    let mut answers = Vec::with_capacity(batch.len());
    for r in batch {
        let command = r.command.clone();
        answers.push(execute(db, &r.order_id, command, &r.meta, snapshot_every).await);
    }
    answers
}

/// One transaction for `batch`: an error about one request (the contract
/// check refused its event) is its answer; any other ends the transaction.
async fn decide_in_one(
    db: &Db,
    snapshot_every: i64,
    batch: &[Request],
) -> Result<Vec<Answer>, StoreError> {
    let mut tx = db.begin().await?;
    let ids: Vec<&str> = batch.iter().map(|r| r.order_id.as_str()).collect();
    let mut orders = Orders::load(&mut tx, &ids).await?;
    let mut answers = Vec::with_capacity(batch.len());
    for r in batch {
        let decided = orders
            .execute(
                &mut tx,
                &r.order_id,
                r.command.clone(),
                &r.meta,
                snapshot_every,
            )
            .await;
        answers.push(match decided {
            Err(e) if e.is_about_the_record() => Err(e),
            Err(e) => return Err(e),
            Ok(decided) => Ok(decided),
        });
    }
    orders.write(&mut tx).await?;
    tx.commit().await?;
    Ok(answers)
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
    /// The batch's orders, loaded when it opens and appended once.
    type Batch = Orders;
    async fn open_batch(&self, tx: &mut Tx, msgs: &[&Envelope]) -> Result<Orders, StoreError> {
        let orders: Vec<&str> = msgs.iter().map(|m| m.subject.as_str()).collect();
        Orders::load(tx, &orders).await
    }
    async fn close_batch(&self, tx: &mut Tx, orders: Orders) -> Result<(), StoreError> {
        orders.write(tx).await
    }
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
        orders: &mut Orders,
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
        if let Err(e) = orders
            .execute(tx, &msg.subject, command, &meta, ctx.config.snapshot_every)
            .await?
        {
            tracing::warn!(order = %msg.subject, command = %msg.event_type, error = %e, "order rejected the command");
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

    fn place(id: &str, items: usize) -> OrderCommand {
        OrderCommand::PlaceOrder {
            order_id: id.into(),
            customer_email: "a@example.com".into(),
            shipping_address: "1 Main St".into(),
            items: (0..items)
                .map(|_| LineItem {
                    product_id: "lamp".into(),
                    quantity: 1,
                    unit_price_cents: 2900,
                })
                .collect(),
        }
    }

    fn request(order_id: &str, command: OrderCommand, meta: Meta) -> Request {
        Request {
            order_id: order_id.into(),
            command,
            meta,
            answer_tx: oneshot::channel().0,
        }
    }

    /// Requests decided together: each on the state the ones before it left;
    /// one the contract check refuses and ones the domain rejects are
    /// answered so, and the others are appended all the same.
    #[tokio::test]
    async fn a_refused_request_does_not_take_its_neighbours_down() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, pg) = db(&dir).await;
        let drift = Meta {
            created_version: Some(3),
            ..Meta::default()
        };
        let batch = [
            request("o1", place("o1", 1), Meta::default()),
            request("o2", place("o2", 1), drift),
            request("o1", place("o1", 1), Meta::default()),
            request("o3", place("o3", 0), Meta::default()),
            request(
                "o1",
                OrderCommand::AddNote { text: "n".into() },
                Meta::default(),
            ),
            request("o4", place("o4", 2), Meta::default()),
        ];
        let answers = decide_together(&db, 100, &batch).await;
        assert!(matches!(answers[0], Ok(Ok(_))), "{:?}", answers[0]);
        assert!(
            matches!(answers[1], Err(StoreError::Contract(_))),
            "{:?}",
            answers[1]
        );
        assert!(
            matches!(answers[2], Ok(Err(OrderError::AlreadyExists))),
            "{:?}",
            answers[2]
        );
        assert!(
            matches!(answers[3], Ok(Err(OrderError::NoItems))),
            "{:?}",
            answers[3]
        );
        assert!(matches!(answers[4], Ok(Ok(_))), "{:?}", answers[4]);
        assert!(matches!(answers[5], Ok(Ok(_))), "{:?}", answers[5]);
        let events = sqlx::query(
            "SELECT aggregate_id, version FROM order_events ORDER BY aggregate_id, version",
        )
        .fetch_all(&db.pool)
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect::<Vec<_>>();
        assert_eq!(
            events,
            [
                ("o1".to_owned(), 1),
                ("o1".to_owned(), 2),
                ("o4".to_owned(), 1)
            ]
        );
        let outbox = db
            .count("SELECT COUNT(*) FROM outbox")
            .await
            .expect("count");
        assert_eq!(outbox, 3, "one outbox row per event appended");
        // Decided again (a client's retry), nothing is appended twice.
        let again = decide_together(&db, 100, &batch[..1]).await;
        assert!(matches!(again[0], Ok(Err(OrderError::AlreadyExists))));
        if let Some(pg) = pg {
            pg.drop_it(db).await;
        }
    }
}
