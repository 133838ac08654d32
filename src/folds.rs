//! Folds for time travel: the demo's own `Order` fold for demo aggregates, the
//! generic JSON merge for everything else.

use eventscope_demo::domain::{self, OrderEvent, OrderState};
use serde_json::Value;

use crate::model::envelope::ObservedEvent;
use crate::model::log::ObservedLog;
use crate::model::timetravel::{Fold, JsonMergeFold};

/// The demo's `Order` aggregate, folded with the demo's own pure `apply`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderFold;

impl Fold for OrderFold {
    fn name(&self) -> &str {
        "demo-order"
    }
    fn initial(&self) -> Value {
        serde_json::to_value(OrderState::default()).unwrap_or(Value::Null)
    }
    fn accepts(&self, topic: &str, _event_type: Option<&str>, is_command: bool) -> bool {
        topic == eventscope_demo::topics::ORDERS && !is_command
    }
    fn apply(&self, state: Value, event: &ObservedEvent, payload: &Value) -> Value {
        let Some(t) = event.event_type.as_deref() else {
            return state;
        };
        let (Some(e), Ok(s)) = (
            OrderEvent::from_versioned(t, written_version(event), payload).map(|(e, _)| e),
            serde_json::from_value::<OrderState>(state.clone()),
        ) else {
            return state;
        };
        serde_json::to_value(domain::apply(s, &e)).unwrap_or(state)
    }
    fn read_as(&self, event: &ObservedEvent) -> Option<String> {
        let t = event.event_type.as_deref()?;
        let payload = event.payload.as_ref()?;
        let (_, path) = OrderEvent::from_versioned(t, written_version(event), payload)?;
        // `path` holds the versions passed through on the way to the current one.
        let from = path.first()?;
        Some(format!(
            "read as v{} (upcast from v{from})",
            eventscope_demo::upcast::current(t)
        ))
    }
}

/// The version an event was written in, from the contract its `dataschema` names
/// (`None`: guessed from the payload's shape).
fn written_version(event: &ObservedEvent) -> Option<u32> {
    event
        .dataschema
        .as_deref()
        .and_then(eventscope_demo::contracts::parse_uri)
        .map(|(_, v)| v)
}

/// The fold to use for an aggregate: the demo's when it has an `OrderCreated` on `orders`.
pub fn fold_for(log: &ObservedLog, aggregate_id: &str) -> &'static dyn Fold {
    static ORDER: OrderFold = OrderFold;
    static MERGE: JsonMergeFold = JsonMergeFold;
    let Some(sym) = log.sym(aggregate_id) else {
        return &MERGE;
    };
    let is_order = log.aggregate_of(sym).iter().any(|&i| {
        log.row(i)
            .is_some_and(|r| log.resolve(r.topic) == eventscope_demo::topics::ORDERS)
            && log
                .meta(i)
                .and_then(|m| log.resolve_opt(m.event_type))
                .is_some_and(|t| t == "OrderCreated")
    });
    if is_order {
        &ORDER
    } else {
        &MERGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::log::ObservedLog;
    use crate::model::record::Record;
    use eventscope_demo::contracts::uri;

    fn order_created(
        log: &mut ObservedLog,
        offset: i64,
        version: u32,
        data: &str,
    ) -> ObservedEvent {
        let r = Record::new(eventscope_demo::topics::ORDERS, 0, offset)
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", &format!("e{offset}"))
            .with_header("ce_type", "OrderCreated")
            .with_header("ce_source", "/orders")
            .with_header("ce_dataschema", &uri("OrderCreated", version))
            .with_header("content-type", "application/json")
            .with_value(data.as_bytes().to_vec());
        let idx = log.append(&r, 0).unwrap();
        log.event(idx).unwrap()
    }

    #[test]
    fn the_order_fold_says_when_it_reads_through_the_upcaster() {
        let mut log = ObservedLog::new(Default::default());
        let v1 = r#"{"order_id":"o","customer_email":"e","shipping_address":"a","items":[],"total_cents":1}"#;
        let v2 = r#"{"order_id":"o","customer_email":"e","shipping_address":"a","items":[],"total_cents":1,"currency":"USD"}"#;
        let old = order_created(&mut log, 0, 1, v1);
        let new = order_created(&mut log, 1, 2, v2);
        assert_eq!(
            OrderFold.read_as(&old).as_deref(),
            Some("read as v2 (upcast from v1)")
        );
        assert_eq!(OrderFold.read_as(&new), None);
        // The version the record declares wins over the payload's look.
        let state = OrderFold.apply(OrderFold.initial(), &new, new.payload.as_ref().unwrap());
        assert_eq!(state["currency"], "USD", "{state}");
        let state = OrderFold.apply(OrderFold.initial(), &old, old.payload.as_ref().unwrap());
        assert_eq!(state["currency"], "EUR", "{state}");
    }
}
