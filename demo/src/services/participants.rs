//! Payment, inventory and shipping services. Each consumes its command topic
//! (orchestration) or the events it reacts to (choreography, see
//! `choreography`) and writes its effect + its outcome's outbox row in the
//! consumer's transaction.

use std::collections::{BTreeMap, HashMap};

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

/// One of the participants' effect tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Payments,
    StockMovements,
    Shipments,
}

impl Table {
    const ALL: [Table; 3] = [Table::Payments, Table::StockMovements, Table::Shipments];

    fn name(self) -> &'static str {
        match self {
            Table::Payments => "payments",
            Table::StockMovements => "stock_movements",
            Table::Shipments => "shipments",
        }
    }

    /// The columns an effect row fills, in the order [`insert_effects`] binds them.
    fn columns(self) -> &'static str {
        match self {
            Table::Payments => "order_id, command_id, kind, created_at, amount_cents",
            Table::StockMovements => "order_id, command_id, kind, created_at, delta, product_id",
            Table::Shipments => "order_id, command_id, kind, created_at",
        }
    }

    fn column_count(self) -> usize {
        match self {
            Table::Payments => 5,
            Table::StockMovements => 6,
            Table::Shipments => 4,
        }
    }
}

/// A row of an effect table, written with its batch ([`Ledger::flush`]).
struct Effect {
    table: Table,
    order_id: String,
    command_id: String,
    kind: &'static str,
    /// `amount_cents` (payments) or `delta` (stock movements); shipments have none.
    amount: i64,
    /// The product moved (stock movements only).
    product_id: String,
    created_at: i64,
}

/// A participant's unit of work for one batch. The effects each command
/// already had are counted in one query when the batch opens (each count is
/// used once: a command twice in one batch, a redelivery without idempotency,
/// is counted again, live, the second time, its first effect included). The
/// effect rows the batch's commands make are written together before the
/// commit (one INSERT per table), and the stock they move in one UPDATE;
/// inventory reads a product's stock once per batch and keeps it up to date
/// with the batch's own movements. A read of the effect tables (what a
/// compensation undoes, a command's count taken live) writes what is pending
/// first, so that it sees the batch's own effects.
#[derive(Default)]
pub struct Ledger {
    prior: HashMap<String, i64>,
    pending: Vec<Effect>,
    /// Stock by product as this batch has it (None: no such product).
    stock: HashMap<String, Option<i64>>,
    /// What the batch moved per product, not yet written.
    moved: BTreeMap<String, i64>,
}

/// Command ids one count binds at most.
const COUNT_CHUNK: usize = 500;
/// Effect rows one INSERT, or products one stock UPDATE, writes at most.
const WRITE_CHUNK: usize = 500;

impl Ledger {
    /// Open a batch of `msgs` on `table`: count what their commands already did.
    async fn open(tx: &mut Tx, table: Table, msgs: &[&Envelope]) -> Result<Self, StoreError> {
        let mut ids: Vec<&str> = msgs.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut prior: HashMap<String, i64> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(COUNT_CHUNK) {
            let sql = format!(
                "SELECT command_id, COUNT(*) FROM {} WHERE command_id IN ({}) GROUP BY command_id",
                table.name(),
                tx.backend.params(chunk.len(), 1)
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&mut **tx).await? {
                prior.insert(r.try_get(0)?, r.try_get(1)?);
            }
            for id in chunk {
                prior.entry((*id).to_owned()).or_insert(0);
            }
        }
        Ok(Ledger {
            prior,
            ..Ledger::default()
        })
    }

    /// The effects `command_id` had before: counted when the batch opened,
    /// or (the second time in a batch) now.
    async fn prior(
        &mut self,
        tx: &mut Tx,
        table: Table,
        command_id: &str,
    ) -> Result<i64, StoreError> {
        if let Some(n) = self.prior.remove(command_id) {
            return Ok(n);
        }
        self.flush(tx).await?;
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE command_id = $1",
            table.name()
        );
        let r = sqlx::query(&sql)
            .bind(command_id)
            .fetch_one(&mut **tx)
            .await?;
        Ok(r.try_get::<i64, _>(0)?)
    }

    /// Queue an effect row.
    fn record(&mut self, effect: Effect) {
        self.pending.push(effect);
    }

    /// Read the stock of `products` this batch has not read yet.
    async fn read_stock(&mut self, tx: &mut Tx, products: &[&str]) -> Result<(), StoreError> {
        let mut wanted: Vec<&str> = products
            .iter()
            .copied()
            .filter(|p| !self.stock.contains_key(*p))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT product_id, quantity FROM stock WHERE product_id IN ({})",
            tx.backend.params(wanted.len(), 1)
        );
        let mut q = sqlx::query(&sql);
        for p in &wanted {
            q = q.bind(*p);
        }
        for p in &wanted {
            self.stock.insert((*p).to_owned(), None);
        }
        for r in q.fetch_all(&mut **tx).await? {
            let product: String = r.try_get(0)?;
            // The stored level, plus what the batch moved and has not written.
            let moved = self.moved.get(&product).copied().unwrap_or(0);
            self.stock
                .insert(product, Some(r.try_get::<i64, _>(1)? + moved));
        }
        Ok(())
    }

    /// What is in stock of `product` as this batch has it (read first with [`Ledger::read_stock`]).
    fn in_stock(&self, product: &str) -> i64 {
        self.stock.get(product).copied().flatten().unwrap_or(0)
    }

    /// Move `delta` of `product`'s stock (written with the batch).
    fn move_stock(&mut self, product: &str, delta: i64) {
        *self.moved.entry(product.to_owned()).or_insert(0) += delta;
        if let Some(Some(q)) = self.stock.get_mut(product) {
            *q += delta;
        }
    }

    /// Write what is pending: the effect rows, one INSERT per table, and the
    /// stock moved, one UPDATE.
    async fn flush(&mut self, tx: &mut Tx) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        for table in Table::ALL {
            let rows: Vec<&Effect> = pending.iter().filter(|e| e.table == table).collect();
            for chunk in rows.chunks(WRITE_CHUNK) {
                insert_effects(tx, table, chunk).await?;
            }
        }
        let moved: Vec<(String, i64)> = std::mem::take(&mut self.moved)
            .into_iter()
            .filter(|(_, delta)| *delta != 0)
            .collect();
        for chunk in moved.chunks(WRITE_CHUNK) {
            let values = tx.backend.typed_rows(chunk.len(), &[None, Some("BIGINT")]);
            let sql = format!(
                "WITH v (product_id, delta) AS (VALUES {values}) \
                 UPDATE stock SET quantity = stock.quantity + v.delta FROM v \
                 WHERE stock.product_id = v.product_id"
            );
            let mut q = sqlx::query(&sql);
            for (product, delta) in chunk {
                q = q.bind(product).bind(*delta);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// One INSERT of `rows` into `table`, in their order.
async fn insert_effects(tx: &mut Tx, table: Table, rows: &[&Effect]) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        table.name(),
        table.columns(),
        tx.backend.rows(rows.len(), table.column_count())
    );
    let mut q = sqlx::query(&sql);
    for e in rows {
        q = q
            .bind(&e.order_id)
            .bind(&e.command_id)
            .bind(e.kind)
            .bind(e.created_at);
        q = match table {
            Table::Payments => q.bind(e.amount),
            Table::StockMovements => q.bind(e.amount).bind(&e.product_id),
            Table::Shipments => q,
        };
    }
    q.execute(&mut **tx).await?;
    Ok(())
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
    type Batch = Ledger;
    async fn open_batch(&self, tx: &mut Tx, msgs: &[&Envelope]) -> Result<Ledger, StoreError> {
        Ledger::open(tx, Table::Payments, msgs).await
    }
    async fn close_batch(&self, tx: &mut Tx, mut ledger: Ledger) -> Result<(), StoreError> {
        ledger.flush(tx).await
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
        _ledger: &mut Ledger,
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
        ledger: &mut Ledger,
        cmd: &Envelope,
        trace: &Trace,
    ) -> Result<(), StoreError> {
        let n = ledger.prior(tx, Table::Payments, &cmd.id).await?;
        let order = cmd.subject.clone();
        let (op, reaction) = operation(Participant::Payment, cmd);
        // A command names the amount; in a choreography the charge is what the
        // reserved items cost, and the refund is what this service charged.
        let requested = match (reaction, op) {
            (None, _) => amount(cmd),
            (Some(_), "ProcessPayment") => total(&items(cmd)),
            (Some(_), _) => net_charged(tx, ledger, &order).await?,
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
            -net_charged(tx, ledger, &order).await?.min(requested)
        } else if kind == "charge" {
            requested
        } else {
            0
        };
        if kind != "refund" || signed != 0 {
            ledger.record(Effect {
                table: Table::Payments,
                order_id: order.clone(),
                command_id: cmd.id.clone(),
                kind,
                amount: signed,
                product_id: String::new(),
                created_at: now_ms(),
            });
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

/// What `order` is charged (the batch's own payments included).
async fn net_charged(tx: &mut Tx, ledger: &mut Ledger, order: &str) -> Result<i64, StoreError> {
    ledger.flush(tx).await?;
    let r = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM payments WHERE order_id = $1",
    )
    .bind(order)
    .fetch_one(&mut **tx)
    .await?;
    Ok(r.try_get::<i64, _>(0)?.max(0))
}

/// What `order` holds reserved of `product` (reservations minus restores;
/// the batch's own included).
async fn net_reserved(
    tx: &mut Tx,
    ledger: &mut Ledger,
    order: &str,
    product: &str,
) -> Result<i64, StoreError> {
    ledger.flush(tx).await?;
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

/// What `order` holds reserved, product by product (priced from the
/// catalogue; the batch's own movements included).
async fn reserved_items(
    tx: &mut Tx,
    ledger: &mut Ledger,
    order: &str,
) -> Result<Vec<LineItem>, StoreError> {
    ledger.flush(tx).await?;
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
    type Batch = Ledger;
    async fn open_batch(&self, tx: &mut Tx, msgs: &[&Envelope]) -> Result<Ledger, StoreError> {
        Ledger::open(tx, Table::StockMovements, msgs).await
    }
    async fn close_batch(&self, tx: &mut Tx, mut ledger: Ledger) -> Result<(), StoreError> {
        ledger.flush(tx).await
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
        _ledger: &mut Ledger,
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
        ledger: &mut Ledger,
        cmd: &Envelope,
        trace: &Trace,
    ) -> Result<(), StoreError> {
        let n = ledger.prior(tx, Table::StockMovements, &cmd.id).await?;
        let order = cmd.subject.clone();
        let (op, reaction) = operation(Participant::Inventory, cmd);
        // In a choreography the failure that undoes the reservation does not
        // carry the items: this service restores what it reserved.
        let items = match (reaction, op) {
            (Some(_), "RestoreStock") => reserved_items(tx, ledger, &order).await?,
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
                // What is in stock of every item: read once per batch.
                let products: Vec<&str> = items.iter().map(|i| i.product_id.as_str()).collect();
                ledger.read_stock(tx, &products).await?;
                short = items
                    .iter()
                    .find(|i| ledger.in_stock(&i.product_id) < i.quantity)
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
                net_reserved(tx, ledger, &order, &i.product_id)
                    .await?
                    .min(i.quantity)
            } else {
                i.quantity
            };
            if quantity == 0 {
                continue;
            }
            let delta = sign * quantity;
            ledger.move_stock(&i.product_id, delta);
            ledger.record(Effect {
                table: Table::StockMovements,
                order_id: order.clone(),
                command_id: cmd.id.clone(),
                kind,
                amount: delta,
                product_id: i.product_id.clone(),
                created_at: now_ms(),
            });
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
    type Batch = Ledger;
    async fn open_batch(&self, tx: &mut Tx, msgs: &[&Envelope]) -> Result<Ledger, StoreError> {
        Ledger::open(tx, Table::Shipments, msgs).await
    }
    async fn close_batch(&self, tx: &mut Tx, mut ledger: Ledger) -> Result<(), StoreError> {
        ledger.flush(tx).await
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
        _ledger: &mut Ledger,
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
        ledger: &mut Ledger,
        cmd: &Envelope,
        trace: &Trace,
    ) -> Result<(), StoreError> {
        let n = ledger.prior(tx, Table::Shipments, &cmd.id).await?;
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
            ledger.flush(tx).await?;
            let r = sqlx::query(
                "SELECT COUNT(*) FROM shipments WHERE order_id = $1 AND kind = 'scheduled'",
            )
            .bind(&order)
            .fetch_one(&mut **tx)
            .await?;
            r.try_get::<i64, _>(0)? > 0
        };
        if takes_effect {
            ledger.record(Effect {
                table: Table::Shipments,
                order_id: order.clone(),
                command_id: cmd.id.clone(),
                kind,
                amount: 0,
                product_id: String::new(),
                created_at: now_ms(),
            });
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::testing::db;

    fn command(id: &str) -> Envelope {
        Envelope {
            id: id.to_owned(),
            event_type: "ReserveStock".into(),
            source: "test".into(),
            time: "2026-11-28T00:00:00Z".into(),
            subject: "o".into(),
            correlation_id: None,
            causation_id: None,
            aggregate_version: None,
            dataschema: None,
            saga_mode: None,
            data: serde_json::json!({}),
        }
    }

    fn movement(command_id: &str, product: &str, delta: i64) -> Effect {
        Effect {
            table: Table::StockMovements,
            order_id: "o".into(),
            command_id: command_id.into(),
            kind: if delta < 0 { "reserve" } else { "restore" },
            amount: delta,
            product_id: product.into(),
            created_at: 0,
        }
    }

    async fn stored_stock(tx: &mut Tx, product: &str) -> i64 {
        sqlx::query("SELECT quantity FROM stock WHERE product_id = $1")
            .bind(product)
            .fetch_one(&mut **tx)
            .await
            .expect("stock")
            .get(0)
    }

    /// A batch's effects and stock moves are written together, yet what the
    /// batch reads sees them: the stock it keeps, a compensation's "what is
    /// reserved", a command counted a second time.
    #[tokio::test]
    async fn a_batch_sees_its_own_effects_before_it_writes_them() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, pg) = db(&dir).await;
        sqlx::query(
            "INSERT INTO stock (product_id, quantity, initial_quantity) VALUES ('lamp', 10, 10), ('desk', 5, 5)",
        )
        .execute(&db.pool)
        .await
        .expect("stock");
        let mut tx = db.begin().await.expect("begin");
        let (c1, c2) = (command("c1"), command("c2"));
        let mut ledger = Ledger::open(&mut tx, Table::StockMovements, &[&c1, &c2])
            .await
            .expect("open");
        assert_eq!(
            ledger
                .prior(&mut tx, Table::StockMovements, "c1")
                .await
                .expect("prior"),
            0
        );
        // Moved before it is read: the read adds what the batch moved.
        ledger.move_stock("desk", 1);
        ledger
            .read_stock(&mut tx, &["lamp", "desk", "nothing"])
            .await
            .expect("read");
        assert_eq!(
            (
                ledger.in_stock("lamp"),
                ledger.in_stock("desk"),
                ledger.in_stock("nothing")
            ),
            (10, 6, 0)
        );
        ledger.move_stock("lamp", -3);
        ledger.record(movement("c1", "lamp", -3));
        assert_eq!(ledger.in_stock("lamp"), 7);
        assert_eq!(stored_stock(&mut tx, "lamp").await, 10, "not written yet");
        assert_eq!(
            net_reserved(&mut tx, &mut ledger, "o", "lamp")
                .await
                .expect("reserved"),
            3
        );
        assert_eq!(
            stored_stock(&mut tx, "lamp").await,
            7,
            "written by the read"
        );
        // c1 a second time: counted now, its first effect included.
        assert_eq!(
            ledger
                .prior(&mut tx, Table::StockMovements, "c1")
                .await
                .expect("prior"),
            1
        );
        ledger.move_stock("lamp", -2);
        ledger.record(movement("c2", "lamp", -2));
        assert_eq!(ledger.in_stock("lamp"), 5, "a write keeps what was read");
        ledger.flush(&mut tx).await.expect("flush");
        assert_eq!(
            (
                stored_stock(&mut tx, "lamp").await,
                stored_stock(&mut tx, "desk").await
            ),
            (5, 6)
        );
        tx.commit().await.expect("commit");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM stock_movements")
                .await
                .expect("count"),
            2
        );
        if let Some(pg) = pg {
            pg.drop_it(db).await;
        }
    }
}
