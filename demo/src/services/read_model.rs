//! The CQRS read model `order_view`, built only from the `orders` topic.

use std::collections::BTreeMap;

use crate::consumer::Handler;
use crate::context::Ctx;
use crate::contracts;
use crate::domain::OrderEvent;
use crate::envelope::Envelope;
use crate::store::{now_ms, StoreError, Tx};
use crate::telemetry::Trace;
use crate::topics;

pub struct OrderView;

impl Handler for OrderView {
    /// The batch's changes to the view, written together.
    type Batch = ViewChanges;
    async fn close_batch(&self, tx: &mut Tx, view: ViewChanges) -> Result<(), StoreError> {
        view.write(tx).await
    }
    fn name(&self) -> &'static str {
        "order-view"
    }
    fn topics(&self, _modes: &[crate::saga::SagaMode]) -> Vec<&'static str> {
        vec![topics::ORDERS]
    }
    /// A projection: it has nothing to answer.
    fn replies_again_on_redelivery(&self) -> bool {
        false
    }
    /// Deployed with the order service: it reads every `OrderCreated`
    /// version the aggregate's upcasters read, drafts included.
    fn reads(&self, msg: &Envelope) -> Result<(), String> {
        let written = msg
            .dataschema
            .as_deref()
            .and_then(contracts::parse_uri)
            .map(|(_, v)| v);
        match OrderEvent::from_versioned(&msg.event_type, written, &msg.data) {
            Some(_) => Ok(()),
            None if msg.event_type != "OrderCreated" => Ok(()),
            None => Err(format!(
                "order-view cannot read {} v{}",
                msg.event_type,
                written.unwrap_or(1)
            )),
        }
    }
    async fn handle(
        &self,
        _ctx: &Ctx,
        _tx: &mut Tx,
        view: &mut ViewChanges,
        msg: &Envelope,
        _trace: &Trace,
    ) -> Result<(), StoreError> {
        view.add(msg);
        Ok(())
    }
}

/// An `order_view` row as an event sets it.
struct ViewRow {
    status: &'static str,
    customer_email: String,
    total_cents: i64,
    item_count: i64,
    version: i64,
    updated_at: i64,
}

/// What a batch's events do to the view, by order: written together before
/// the commit, the orders' `OrderCreated` rows first (one upsert that sets
/// what they carry), then each order's newest status (one upsert that only
/// moves a row forward). The result is the one the events would leave one by
/// one, in any order: a created row's details are kept whatever its status,
/// and a status only replaces an older one.
#[derive(Default)]
pub struct ViewChanges {
    created: BTreeMap<String, ViewRow>,
    moved: BTreeMap<String, ViewRow>,
}

/// Rows one upsert writes at most (7 parameters each).
const WRITE_CHUNK: usize = 500;

impl ViewChanges {
    /// What `msg` does to the view.
    fn add(&mut self, msg: &Envelope) {
        let version = msg.aggregate_version.unwrap_or(0);
        // The order service's own projection reads every version it writes,
        // through the aggregate's upcasters.
        let upcast;
        let d = if msg.event_type == "OrderCreated" {
            let written = msg
                .dataschema
                .as_deref()
                .and_then(contracts::parse_uri)
                .map(|(_, v)| v);
            upcast = OrderEvent::from_versioned(&msg.event_type, written, &msg.data)
                .map(|(e, _)| e.to_data());
            upcast.as_ref().unwrap_or(&msg.data)
        } else {
            &msg.data
        };
        let status = match msg.event_type.as_str() {
            "OrderCreated" | "OrderNoteAdded" => "pending",
            "OrderCompleted" => "completed",
            "OrderCancelled" => "cancelled",
            _ => return,
        };
        // A row another event creates has no details until its `OrderCreated` is read.
        let created = msg.event_type == "OrderCreated";
        let row = ViewRow {
            status,
            customer_email: match d.get("customer_email").and_then(|v| v.as_str()) {
                Some(email) if created => email.to_owned(),
                _ => String::new(),
            },
            total_cents: match d.get("total_cents").and_then(|v| v.as_i64()) {
                Some(total) if created => total,
                _ => 0,
            },
            item_count: match d.get("items").and_then(|v| v.as_array()) {
                Some(items) if created => items.len() as i64,
                _ => 0,
            },
            version,
            updated_at: now_ms(),
        };
        if created {
            // The last one read wins, as its upsert would.
            self.created.insert(msg.subject.clone(), row);
        } else {
            // Only move forward: an older event must not undo a newer one
            // (of two at one version, the first stands).
            match self.moved.get(&msg.subject) {
                Some(had) if had.version >= version => {}
                _ => {
                    self.moved.insert(msg.subject.clone(), row);
                }
            }
        }
    }

    async fn write(self, tx: &mut Tx) -> Result<(), StoreError> {
        let created: Vec<(String, ViewRow)> = self.created.into_iter().collect();
        for chunk in created.chunks(WRITE_CHUNK) {
            upsert(
                tx,
                chunk,
                "customer_email = excluded.customer_email, total_cents = excluded.total_cents, \
                 item_count = excluded.item_count",
            )
            .await?;
        }
        let moved: Vec<(String, ViewRow)> = self.moved.into_iter().collect();
        for chunk in moved.chunks(WRITE_CHUNK) {
            upsert(
                tx,
                chunk,
                "status = excluded.status, version = excluded.version, \
                 updated_at = excluded.updated_at WHERE order_view.version < excluded.version",
            )
            .await?;
        }
        Ok(())
    }
}

/// Insert `rows`, or where an order has its row, `on_conflict` it.
async fn upsert(
    tx: &mut Tx,
    rows: &[(String, ViewRow)],
    on_conflict: &str,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO order_view (order_id, status, customer_email, total_cents, item_count, version, updated_at) \
         VALUES {} ON CONFLICT (order_id) DO UPDATE SET {on_conflict}",
        tx.backend.rows(rows.len(), 7)
    );
    let mut q = sqlx::query(&sql);
    for (order, r) in rows {
        q = q
            .bind(order)
            .bind(r.status)
            .bind(&r.customer_email)
            .bind(r.total_cents)
            .bind(r.item_count)
            .bind(r.version)
            .bind(r.updated_at);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::Row;

    use super::*;
    use crate::store::testing::db;

    fn event(order: &str, event_type: &str, version: i64) -> Envelope {
        let data = match event_type {
            "OrderCreated" => serde_json::json!({
                "order_id": order, "customer_email": "a@example.com", "total_cents": 5800,
                "items": [{"product_id": "lamp", "quantity": 2, "unit_price_cents": 2900}],
                "shipping_address": "1 Main St",
            }),
            "OrderNoteAdded" => serde_json::json!({"order_id": order, "text": "n"}),
            _ => serde_json::json!({"order_id": order, "total_cents": 1}),
        };
        Envelope {
            id: format!("{order}-{version}"),
            event_type: event_type.to_owned(),
            source: "test".into(),
            time: "2026-11-28T00:00:00Z".into(),
            subject: order.to_owned(),
            correlation_id: None,
            causation_id: None,
            aggregate_version: Some(version),
            dataschema: None,
            saga_mode: None,
            data,
        }
    }

    async fn row(db: &crate::store::Db, order: &str) -> (String, String, i64, i64, i64) {
        let r = sqlx::query(
            "SELECT status, customer_email, total_cents, item_count, version FROM order_view WHERE order_id = $1",
        )
        .bind(order)
        .fetch_one(&db.pool)
        .await
        .expect("row");
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
    }

    /// An order's events in one batch, in any order, or spread over batches,
    /// leave the row they leave one by one: the details of its
    /// `OrderCreated`, the status of its newest event.
    #[tokio::test]
    async fn a_batch_leaves_the_row_its_events_leave_one_by_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, pg) = db(&dir).await;
        let events = [
            event("o", "OrderCreated", 1),
            event("o", "OrderNoteAdded", 2),
            event("o", "OrderCompleted", 3),
        ];
        let orders: [[usize; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let expected = (
            "completed".to_owned(),
            "a@example.com".to_owned(),
            5800,
            1,
            3,
        );
        for (n, order) in orders.iter().enumerate() {
            let id = format!("o{n}");
            // One batch, plus the same events again in batches of one (redelivered).
            let mut view = ViewChanges::default();
            for &i in order {
                view.add(&Envelope {
                    subject: id.clone(),
                    ..events[i].clone()
                });
            }
            let mut tx = db.begin().await.expect("begin");
            view.write(&mut tx).await.expect("write");
            tx.commit().await.expect("commit");
            assert_eq!(row(&db, &id).await, expected, "order {order:?}");
            for &i in order.iter().rev() {
                let mut view = ViewChanges::default();
                view.add(&Envelope {
                    subject: id.clone(),
                    ..events[i].clone()
                });
                let mut tx = db.begin().await.expect("begin");
                view.write(&mut tx).await.expect("write");
                tx.commit().await.expect("commit");
            }
            assert_eq!(row(&db, &id).await, expected, "order {order:?} again");
        }
        if let Some(pg) = pg {
            pg.drop_it(db).await;
        }
    }
}
