//! Payment, inventory and shipping services. Each consumes its command topic
//! (orchestration) or the events it reacts to (choreography, see
//! `choreography`) and writes its effect + its outcome's outbox row in the
//! consumer's transaction.

use std::collections::HashMap;

use sqlx::Row;

use crate::choreography::{self, Participant, Reaction};
use crate::consumer::Handler;
use crate::context::Ctx;
use crate::contracts;
use crate::domain::LineItem;
use crate::envelope::{now_rfc3339, Envelope};
use crate::faults::Fault;
use crate::ids;
use crate::saga::SagaMode;
use crate::store::{insert_outbox, now_ms, OutboxRow, StoreError, Tx};
use crate::telemetry::Trace;
use crate::topics;

/// Build and queue the reply event to `cmd`; `n` tells repeated effects apart.
#[allow(clippy::too_many_arguments)]
async fn reply(
    ctx: &Ctx,
    tx: &mut Tx,
    service: &'static str,
    topic: &str,
    cmd: &Envelope,
    event_type: &str,
    n: i64,
    data: serde_json::Value,
    trace: &Trace,
) -> Result<(), StoreError> {
    let correlation_id = if ctx
        .faults
        .hits(Fault::MissingCorrelation, &format!("{service}:{}", cmd.id))
    {
        tracing::warn!(service, event_type, "injected: correlation id dropped");
        None
    } else {
        cmd.correlation_id.clone()
    };
    let envelope = Envelope {
        id: ids::derive(&[&cmd.id, event_type, &n.to_string()]),
        event_type: event_type.to_owned(),
        source: format!("/eventscope-demo/{service}"),
        time: now_rfc3339(),
        subject: cmd.subject.clone(),
        correlation_id,
        causation_id: Some(cmd.id.clone()),
        aggregate_version: None,
        dataschema: Some(contracts::uri(event_type, 1)),
        saga_mode: cmd.saga_mode,
        data,
    };
    insert_outbox(
        tx,
        OutboxRow {
            service,
            topic: topic.to_owned(),
            envelope,
            schema_check: true,
        },
        trace,
    )
    .await
}

/// The effects the commands of a batch already had (rows of the service's
/// table per command id), counted in one query when the batch opens. Each
/// count is used once: a command twice in one batch (a redelivery without
/// idempotency) is counted again, live, the second time, its first effect included.
#[derive(Default)]
pub struct PriorEffects(HashMap<String, i64>);

/// Command ids one count binds at most.
const COUNT_CHUNK: usize = 500;

impl PriorEffects {
    async fn load(tx: &mut Tx, table: &str, msgs: &[&Envelope]) -> Result<Self, StoreError> {
        let mut ids: Vec<&str> = msgs.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut counts: HashMap<String, i64> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(COUNT_CHUNK) {
            let sql = format!(
                "SELECT command_id, COUNT(*) FROM {table} WHERE command_id IN ({}) GROUP BY command_id",
                tx.backend.params(chunk.len(), 1)
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&mut **tx).await? {
                counts.insert(r.try_get(0)?, r.try_get(1)?);
            }
            for id in chunk {
                counts.entry((*id).to_owned()).or_insert(0);
            }
        }
        Ok(PriorEffects(counts))
    }

    async fn take(
        &mut self,
        tx: &mut Tx,
        table: &str,
        command_id: &str,
    ) -> Result<i64, StoreError> {
        match self.0.remove(command_id) {
            Some(n) => Ok(n),
            None => prior_effects(tx, table, command_id).await,
        }
    }
}

async fn prior_effects(tx: &mut Tx, table: &str, command_id: &str) -> Result<i64, StoreError> {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE command_id = $1");
    let r = sqlx::query(&sql)
        .bind(command_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(r.try_get::<i64, _>(0)?)
}

fn amount(cmd: &Envelope) -> i64 {
    cmd.data
        .get("amount_cents")
        .and_then(|a| a.as_i64())
        .unwrap_or(0)
}

/// What a service does with `msg`: the command's name, or for a
/// choreographed event the command with the same effect.
fn operation(p: Participant, msg: &Envelope) -> (&str, Option<Reaction>) {
    let reaction = choreography::reaction_to(p, msg.saga_mode, &msg.event_type);
    (
        reaction.map_or(msg.event_type.as_str(), |r| r.command()),
        reaction,
    )
}

/// A participant that cannot read the event meant to move it forward (an
/// unknown contract version) publishes its step's failure, so that the
/// services before it undo theirs and the order is cancelled.
async fn unreadable_step(
    ctx: &Ctx,
    tx: &mut Tx,
    p: Participant,
    service: &'static str,
    topic: &str,
    msg: &Envelope,
) -> Result<(), StoreError> {
    let Some(failure) = choreography::reaction_to(p, msg.saga_mode, &msg.event_type)
        .and_then(choreography::failure_of)
    else {
        return Ok(());
    };
    let written = msg
        .dataschema
        .as_deref()
        .and_then(contracts::parse_uri)
        .map_or(1, |(_, v)| v);
    let reason = format!("cannot read {} v{written}", msg.event_type);
    let order = msg.subject.clone();
    let data = match failure {
        "StockRejected" => {
            serde_json::json!({"order_id": order, "product_id": "", "reason": reason})
        }
        "PaymentDeclined" => {
            serde_json::json!({"order_id": order, "amount_cents": 0, "reason": reason})
        }
        _ => serde_json::json!({"order_id": order, "reason": reason}),
    };
    let trace = ctx.telemetry.trace_for(service);
    reply(ctx, tx, service, topic, msg, failure, 0, data, &trace).await
}

/// What the items cost.
fn total(items: &[LineItem]) -> i64 {
    items.iter().map(|i| i.quantity * i.unit_price_cents).sum()
}

pub struct Payment;

impl Handler for Payment {
    type Batch = PriorEffects;
    async fn open_batch(
        &self,
        tx: &mut Tx,
        msgs: &[&Envelope],
    ) -> Result<PriorEffects, StoreError> {
        PriorEffects::load(tx, "payments", msgs).await
    }
    fn name(&self) -> &'static str {
        "payment-service"
    }
    fn topics(&self, modes: &[SagaMode]) -> Vec<&'static str> {
        choreography::topics_in(Participant::Payment, topics::PAYMENT_COMMANDS, modes)
    }
    fn wants(&self, topic: &str, msg: &Envelope) -> bool {
        choreography::wants(
            Participant::Payment,
            topics::PAYMENT_COMMANDS,
            topic,
            msg.saga_mode,
            &msg.event_type,
        )
    }
    async fn unreadable(
        &self,
        ctx: &Ctx,
        tx: &mut Tx,
        _prior: &mut PriorEffects,
        msg: &Envelope,
    ) -> Result<(), StoreError> {
        unreadable_step(
            ctx,
            tx,
            Participant::Payment,
            self.name(),
            topics::PAYMENTS,
            msg,
        )
        .await
    }
    async fn handle(
        &self,
        ctx: &Ctx,
        tx: &mut Tx,
        prior: &mut PriorEffects,
        cmd: &Envelope,
        trace: &Trace,
    ) -> Result<(), StoreError> {
        let n = prior.take(tx, "payments", &cmd.id).await?;
        let order = cmd.subject.clone();
        let (op, reaction) = operation(Participant::Payment, cmd);
        // A command names the amount; in a choreography the charge is what the
        // reserved items cost, and the refund is what this service charged.
        let requested = match (reaction, op) {
            (None, _) => amount(cmd),
            (Some(_), "ProcessPayment") => total(&items(cmd)),
            (Some(_), _) => net_charged(tx, &order).await?,
        };
        let (kind, reply_type, data) = match op {
            "ProcessPayment" if ctx.faults.hits(Fault::PaymentDecline, &order) => (
                "declined",
                "PaymentDeclined",
                serde_json::json!({"order_id": order, "amount_cents": requested, "reason": "card declined"}),
            ),
            "ProcessPayment" => (
                "charge",
                "PaymentCompleted",
                serde_json::json!({"order_id": order, "amount_cents": requested, "payment_id": ids::derive(&[&order, "payment"])}),
            ),
            "RefundPayment" => (
                "refund",
                "PaymentRefunded",
                serde_json::json!({"order_id": order, "amount_cents": requested}),
            ),
            other => {
                tracing::warn!(
                    command = other,
                    "payment service ignores an unknown command"
                );
                return Ok(());
            }
        };
        let signed = if kind == "refund" {
            // A compensation undoes what happened, nothing more: refund what
            // is charged (nothing when the charge never took effect, e.g.
            // after a step deadline).
            -net_charged(tx, &order).await?.min(requested)
        } else if kind == "charge" {
            requested
        } else {
            0
        };
        if kind != "refund" || signed != 0 {
            sqlx::query("INSERT INTO payments (order_id, command_id, kind, amount_cents, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&order)
                .bind(&cmd.id)
                .bind(kind)
                .bind(signed)
                .bind(now_ms())
                .execute(&mut **tx)
                .await?;
        }
        reply(
            ctx,
            tx,
            self.name(),
            topics::PAYMENTS,
            cmd,
            reply_type,
            n,
            data,
            trace,
        )
        .await
    }
}

async fn net_charged(tx: &mut Tx, order: &str) -> Result<i64, StoreError> {
    let r = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM payments WHERE order_id = $1",
    )
    .bind(order)
    .fetch_one(&mut **tx)
    .await?;
    Ok(r.try_get::<i64, _>(0)?.max(0))
}

/// What `order` holds reserved of `product` (reservations minus restores).
async fn net_reserved(tx: &mut Tx, order: &str, product: &str) -> Result<i64, StoreError> {
    let r = sqlx::query(
        "SELECT CAST(COALESCE(SUM(delta), 0) AS BIGINT) FROM stock_movements WHERE order_id = $1 AND product_id = $2",
    )
    .bind(order)
    .bind(product)
    .fetch_one(&mut **tx)
    .await?;
    Ok((-r.try_get::<i64, _>(0)?).max(0))
}

pub struct Inventory;

/// What `order` holds reserved, product by product (priced from the catalogue).
async fn reserved_items(tx: &mut Tx, order: &str) -> Result<Vec<LineItem>, StoreError> {
    let rows = sqlx::query(
        "SELECT product_id, CAST(-SUM(delta) AS BIGINT) FROM stock_movements WHERE order_id = $1 \
         GROUP BY product_id HAVING SUM(delta) < 0 ORDER BY product_id",
    )
    .bind(order)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let product_id: String = r.try_get(0)?;
        let unit_price_cents = crate::context::PRODUCTS
            .iter()
            .find(|(p, _)| *p == product_id)
            .map_or(0, |(_, price)| *price);
        out.push(LineItem {
            product_id,
            quantity: r.try_get(1)?,
            unit_price_cents,
        });
    }
    Ok(out)
}

fn items(cmd: &Envelope) -> Vec<LineItem> {
    cmd.data
        .get("items")
        .and_then(|i| serde_json::from_value(i.clone()).ok())
        .unwrap_or_default()
}

impl Handler for Inventory {
    type Batch = PriorEffects;
    async fn open_batch(
        &self,
        tx: &mut Tx,
        msgs: &[&Envelope],
    ) -> Result<PriorEffects, StoreError> {
        PriorEffects::load(tx, "stock_movements", msgs).await
    }
    fn name(&self) -> &'static str {
        "inventory-service"
    }
    fn topics(&self, modes: &[SagaMode]) -> Vec<&'static str> {
        choreography::topics_in(Participant::Inventory, topics::INVENTORY_COMMANDS, modes)
    }
    fn wants(&self, topic: &str, msg: &Envelope) -> bool {
        choreography::wants(
            Participant::Inventory,
            topics::INVENTORY_COMMANDS,
            topic,
            msg.saga_mode,
            &msg.event_type,
        )
    }
    async fn unreadable(
        &self,
        ctx: &Ctx,
        tx: &mut Tx,
        _prior: &mut PriorEffects,
        msg: &Envelope,
    ) -> Result<(), StoreError> {
        unreadable_step(
            ctx,
            tx,
            Participant::Inventory,
            self.name(),
            topics::INVENTORY,
            msg,
        )
        .await
    }
    async fn handle(
        &self,
        ctx: &Ctx,
        tx: &mut Tx,
        prior: &mut PriorEffects,
        cmd: &Envelope,
        trace: &Trace,
    ) -> Result<(), StoreError> {
        let n = prior.take(tx, "stock_movements", &cmd.id).await?;
        let order = cmd.subject.clone();
        let (op, reaction) = operation(Participant::Inventory, cmd);
        // In a choreography the failure that undoes the reservation does not
        // carry the items: this service restores what it reserved.
        let items = match (reaction, op) {
            (Some(_), "RestoreStock") => reserved_items(tx, &order).await?,
            _ => items(cmd),
        };
        let (kind, sign, reply_type) = match op {
            "ReserveStock" => ("reserve", -1, "StockReserved"),
            "RestoreStock" => ("restore", 1, "StockRestored"),
            other => {
                tracing::warn!(
                    command = other,
                    "inventory service ignores an unknown command"
                );
                return Ok(());
            }
        };
        if kind == "reserve" {
            let mut short = None;
            if ctx.faults.hits(Fault::OutOfStock, &order) {
                short = items.first().map(|i| i.product_id.clone());
            } else if !items.is_empty() {
                // What is in stock of every item, in one query.
                let sql = format!(
                    "SELECT product_id, quantity FROM stock WHERE product_id IN ({})",
                    tx.backend.params(items.len(), 1)
                );
                let mut q = sqlx::query(&sql);
                for i in &items {
                    q = q.bind(&i.product_id);
                }
                let mut have: HashMap<String, i64> = HashMap::with_capacity(items.len());
                for r in q.fetch_all(&mut **tx).await? {
                    have.insert(r.try_get(0)?, r.try_get(1)?);
                }
                short = items
                    .iter()
                    .find(|i| have.get(&i.product_id).copied().unwrap_or(0) < i.quantity)
                    .map(|i| i.product_id.clone());
            }
            if let Some(product) = short {
                let data = serde_json::json!({"order_id": order, "product_id": product, "reason": format!("{product} out of stock")});
                return reply(
                    ctx,
                    tx,
                    self.name(),
                    topics::INVENTORY,
                    cmd,
                    "StockRejected",
                    n,
                    data,
                    trace,
                )
                .await;
            }
        }
        for i in &items {
            let quantity = if kind == "restore" {
                // Put back what is reserved, nothing more (a no-op when the
                // reservation never took effect).
                net_reserved(tx, &order, &i.product_id)
                    .await?
                    .min(i.quantity)
            } else {
                i.quantity
            };
            if quantity == 0 {
                continue;
            }
            let delta = sign * quantity;
            sqlx::query("UPDATE stock SET quantity = quantity + $1 WHERE product_id = $2")
                .bind(delta)
                .bind(&i.product_id)
                .execute(&mut **tx)
                .await?;
            sqlx::query("INSERT INTO stock_movements (order_id, command_id, product_id, delta, kind, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&order)
                .bind(&cmd.id)
                .bind(&i.product_id)
                .bind(delta)
                .bind(kind)
                .bind(now_ms())
                .execute(&mut **tx)
                .await?;
        }
        let data = serde_json::json!({"order_id": order, "items": items});
        reply(
            ctx,
            tx,
            self.name(),
            topics::INVENTORY,
            cmd,
            reply_type,
            n,
            data,
            trace,
        )
        .await
    }
}

pub struct Shipping;

impl Handler for Shipping {
    type Batch = PriorEffects;
    async fn open_batch(
        &self,
        tx: &mut Tx,
        msgs: &[&Envelope],
    ) -> Result<PriorEffects, StoreError> {
        PriorEffects::load(tx, "shipments", msgs).await
    }
    fn name(&self) -> &'static str {
        "shipping-service"
    }
    fn topics(&self, modes: &[SagaMode]) -> Vec<&'static str> {
        choreography::topics_in(Participant::Shipping, topics::SHIPPING_COMMANDS, modes)
    }
    fn wants(&self, topic: &str, msg: &Envelope) -> bool {
        choreography::wants(
            Participant::Shipping,
            topics::SHIPPING_COMMANDS,
            topic,
            msg.saga_mode,
            &msg.event_type,
        )
    }
    async fn unreadable(
        &self,
        ctx: &Ctx,
        tx: &mut Tx,
        _prior: &mut PriorEffects,
        msg: &Envelope,
    ) -> Result<(), StoreError> {
        unreadable_step(
            ctx,
            tx,
            Participant::Shipping,
            self.name(),
            topics::SHIPPING,
            msg,
        )
        .await
    }
    async fn handle(
        &self,
        ctx: &Ctx,
        tx: &mut Tx,
        prior: &mut PriorEffects,
        cmd: &Envelope,
        trace: &Trace,
    ) -> Result<(), StoreError> {
        let n = prior.take(tx, "shipments", &cmd.id).await?;
        let order = cmd.subject.clone();
        let shipment_id = ids::derive(&[&order, "shipment"]);
        let (op, _) = operation(Participant::Shipping, cmd);
        let (kind, reply_type, data) = match op {
            "ScheduleShipment" if ctx.faults.hits(Fault::ShippingFailure, &order) => (
                "failed",
                "ShipmentFailed",
                serde_json::json!({"order_id": order, "reason": "no courier available"}),
            ),
            "ScheduleShipment" => (
                "scheduled",
                "ShipmentScheduled",
                serde_json::json!({"order_id": order, "shipment_id": shipment_id}),
            ),
            "CancelShipment" => (
                "cancelled",
                "ShipmentCancelled",
                serde_json::json!({"order_id": order, "shipment_id": shipment_id}),
            ),
            other => {
                tracing::warn!(
                    command = other,
                    "shipping service ignores an unknown command"
                );
                return Ok(());
            }
        };
        // Cancel only a shipment that was scheduled (a no-op otherwise).
        let takes_effect = kind != "cancelled" || {
            let r = sqlx::query(
                "SELECT COUNT(*) FROM shipments WHERE order_id = $1 AND kind = 'scheduled'",
            )
            .bind(&order)
            .fetch_one(&mut **tx)
            .await?;
            r.try_get::<i64, _>(0)? > 0
        };
        if takes_effect {
            sqlx::query("INSERT INTO shipments (order_id, command_id, kind, created_at) VALUES ($1, $2, $3, $4)")
                .bind(&order)
                .bind(&cmd.id)
                .bind(kind)
                .bind(now_ms())
                .execute(&mut **tx)
                .await?;
        }
        reply(
            ctx,
            tx,
            self.name(),
            topics::SHIPPING,
            cmd,
            reply_type,
            n,
            data,
            trace,
        )
        .await
    }
}
