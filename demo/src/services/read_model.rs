//! The CQRS read model `order_view`, built only from the `orders` topic.

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
    type Batch = ();
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
        tx: &mut Tx,
        _batch: &mut (),
        msg: &Envelope,
        _trace: &Trace,
    ) -> Result<(), StoreError> {
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
            _ => return Ok(()),
        };
        let email = d
            .get("customer_email")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let total = d.get("total_cents").and_then(|v| v.as_i64()).unwrap_or(0);
        let items = d
            .get("items")
            .and_then(|v| v.as_array())
            .map(|a| a.len() as i64)
            .unwrap_or(0);
        if msg.event_type == "OrderCreated" {
            sqlx::query(
                "INSERT INTO order_view (order_id, status, customer_email, total_cents, item_count, version, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (order_id) DO UPDATE SET customer_email = excluded.customer_email, \
                 total_cents = excluded.total_cents, item_count = excluded.item_count",
            )
            .bind(&msg.subject)
            .bind(status)
            .bind(email)
            .bind(total)
            .bind(items)
            .bind(version)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        } else {
            // Only move forward: an older event arriving late must not undo a newer one.
            sqlx::query(
                "INSERT INTO order_view (order_id, status, customer_email, total_cents, item_count, version, updated_at) \
                 VALUES ($1, $2, '', 0, 0, $3, $4) \
                 ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, version = excluded.version, \
                 updated_at = excluded.updated_at WHERE order_view.version < excluded.version",
            )
            .bind(&msg.subject)
            .bind(status)
            .bind(version)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
