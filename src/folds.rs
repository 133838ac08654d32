//! Folds for time travel: the demo's own `Order` fold for demo aggregates, the
//! generic JSON merge for everything else.

use eventscope_demo::domain::{self, OrderEvent, OrderState};
use serde_json::Value;

use crate::model::envelope::ObservedEvent;
use crate::model::log::ObservedLog;
use crate::model::timetravel::{patch_json, Fold, FoldState, JsonChange, JsonMergeFold};

/// The demo's `Order` aggregate, folded with the demo's own pure `apply`.
///
/// Between events the state stays an [`OrderState`] ([`Fold::apply_state`]): it becomes JSON
/// once per query, not once per event (a long order's state grows with every note, so a
/// per-event round trip through serde made a replay quadratic).
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderFold;

impl FoldState for OrderState {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
    fn patch_json(&self, json: &mut Value) -> Vec<JsonChange> {
        patch_json(self, json)
    }
    fn clone_box(&self) -> Box<dyn FoldState> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// The event as the fold reads it: upcast from the version it was written in.
fn order_event(event: &ObservedEvent, payload: &Value) -> Option<OrderEvent> {
    let t = event.event_type.as_deref()?;
    OrderEvent::from_versioned(t, written_version(event), payload).map(|(e, _)| e)
}

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
    /// The JSON path (a round trip through serde); the engine uses [`Fold::apply_state`].
    fn apply(&self, state: Value, event: &ObservedEvent, payload: &Value) -> Value {
        let (Some(e), Ok(s)) = (
            order_event(event, payload),
            serde_json::from_value::<OrderState>(state.clone()),
        ) else {
            return state;
        };
        serde_json::to_value(domain::apply(s, &e)).unwrap_or(state)
    }
    fn initial_state(&self) -> Box<dyn FoldState> {
        Box::new(OrderState::default())
    }
    fn apply_state(&self, state: &mut dyn FoldState, event: &ObservedEvent, payload: &Value) {
        if let (Some(s), Some(e)) = (
            state.as_any_mut().downcast_mut::<OrderState>(),
            order_event(event, payload),
        ) {
            *s = domain::apply(std::mem::take(s), &e);
        }
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
    use crate::model::log::{LogIndex, ObservedLog};
    use crate::model::record::Record;
    use eventscope_demo::contracts::uri;

    fn append_event(
        log: &mut ObservedLog,
        offset: i64,
        (ty, id, version): (&str, &str, u32),
        data: &str,
    ) -> ObservedEvent {
        let r = Record::new(eventscope_demo::topics::ORDERS, 0, offset)
            .with_key("o")
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", id)
            .with_header("ce_type", ty)
            .with_header("ce_source", "/orders")
            .with_header("ce_subject", "o")
            .with_header("ce_dataschema", &uri(ty, version))
            .with_header("content-type", "application/json")
            .with_value(data.as_bytes().to_vec());
        let idx = log.append(&r, 0).unwrap();
        log.event(idx).unwrap()
    }

    fn order_created(
        log: &mut ObservedLog,
        offset: i64,
        version: u32,
        data: &str,
    ) -> ObservedEvent {
        let id = format!("e{offset}");
        append_event(log, offset, ("OrderCreated", &id, version), data)
    }

    /// The Order fold on JSON only (the engine's default `apply_state` over `apply`).
    struct JsonOnly;
    impl Fold for JsonOnly {
        fn name(&self) -> &str {
            "demo-order-json"
        }
        fn initial(&self) -> Value {
            OrderFold.initial()
        }
        fn accepts(&self, topic: &str, event_type: Option<&str>, is_command: bool) -> bool {
            OrderFold.accepts(topic, event_type, is_command)
        }
        fn apply(&self, state: Value, event: &ObservedEvent, payload: &Value) -> Value {
            OrderFold.apply(state, event, payload)
        }
    }

    #[test]
    fn the_typed_order_state_folds_like_the_json_one() {
        use crate::model::timetravel::{replay, StateEngine};
        let mut log = ObservedLog::new(Default::default());
        let v1 = r#"{"order_id":"o","customer_email":"e","shipping_address":"a","items":[{"product_id":"p","quantity":2,"unit_price_cents":3}],"total_cents":6}"#;
        order_created(&mut log, 0, 1, v1);
        let mut offset = 1;
        let mut next = |log: &mut ObservedLog, ty: &str, id: &str, data: &str| {
            append_event(log, offset, (ty, id, 1), data);
            offset += 1;
        };
        for i in 0..7 {
            let note = format!(r#"{{"order_id":"o","text":"n{i}"}}"#);
            next(&mut log, "OrderNoteAdded", &format!("n{i}"), &note);
        }
        next(
            &mut log,
            "OrderNoteAdded",
            "n3",
            r#"{"order_id":"o","text":"again"}"#,
        ); // redelivery
        next(&mut log, "OrderShredded", "x", r#"{"order_id":"o"}"#); // unknown type
        next(&mut log, "OrderNoteAdded", "bad", r#"{"order_id":"o"}"#); // unreadable
        next(
            &mut log,
            "OrderCompleted",
            "c",
            r#"{"order_id":"o","total_cents":6}"#,
        );
        let last = LogIndex::try_from(log.len() - 1).unwrap();
        let mut eng = StateEngine::new(3);
        for c in (0..=last).rev().chain(0..=last) {
            let typed = eng.state_at(&log, &OrderFold, "o", c).unwrap();
            let json = replay(&log, &JsonOnly, "o", c).unwrap();
            assert_eq!(typed.state, json.state, "cursor {c}");
            assert_eq!(typed.diff, json.diff, "cursor {c}");
            assert_eq!(typed.applied, json.applied, "cursor {c}");
            assert_eq!(
                Some(&typed.state),
                replay(&log, &OrderFold, "o", c).map(|s| s.state).as_ref()
            );
        }
        let end = eng.state_at(&log, &OrderFold, "o", last).unwrap();
        assert_eq!(end.state["status"], "completed");
        assert_eq!(end.state["notes"].as_array().map(Vec::len), Some(7));
        assert_eq!(end.state["currency"], "EUR");
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
