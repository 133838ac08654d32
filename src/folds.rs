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
            OrderEvent::from_versioned(t, None, payload).map(|(e, _)| e),
            serde_json::from_value::<OrderState>(state.clone()),
        ) else {
            return state;
        };
        serde_json::to_value(domain::apply(s, &e)).unwrap_or(state)
    }
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
