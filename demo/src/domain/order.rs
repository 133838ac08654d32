//! The event-sourced `Order` aggregate: pure, synchronous, no side effects.
//!
//! `handle(&state, command) -> Result<Vec<event>, error>` decides;
//! `apply(state, &event) -> state` evolves. Persisted type names are never renamed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// No event yet.
    #[default]
    New,
    Pending,
    Completed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "new",
            OrderStatus::Pending => "pending",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OrderState {
    pub order_id: String,
    pub version: i64,
    pub status: OrderStatus,
    pub customer_email: String,
    pub shipping_address: String,
    pub items: Vec<LineItem>,
    pub total_cents: i64,
    /// Shared, not copied, when a state is cloned: a long-lived order gathers many notes and
    /// a state at every N-th event is kept (eventscope's time-travel snapshots). Serialized as
    /// a plain array of strings.
    #[serde(with = "shared_strings")]
    pub notes: Vec<Arc<str>>,
    pub cancel_reason: Option<String>,
    /// Since `OrderCreated` v2; v1 orders read as EUR through the upcaster.
    #[serde(default)]
    pub currency: String,
}

/// `Vec<Arc<str>>` as a JSON array of strings.
mod shared_strings {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Arc<str>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| &**x))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Arc<str>>, D::Error> {
        Ok(Vec::<String>::deserialize(d)?
            .into_iter()
            .map(Arc::from)
            .collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    PlaceOrder {
        order_id: String,
        customer_email: String,
        shipping_address: String,
        items: Vec<LineItem>,
    },
    AddNote {
        text: String,
    },
    ApproveOrder,
    CancelOrder {
        reason: String,
    },
}

/// Events of the `Order` aggregate; serialized with the type name as `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    OrderCreated {
        order_id: String,
        customer_email: String,
        shipping_address: String,
        items: Vec<LineItem>,
        total_cents: i64,
        /// v2 of the contract; written as v1 (without it) unless a newer
        /// version is asked for.
        #[serde(default = "default_currency")]
        currency: String,
    },
    OrderNoteAdded {
        order_id: String,
        text: String,
    },
    OrderCompleted {
        order_id: String,
        total_cents: i64,
    },
    OrderCancelled {
        order_id: String,
        reason: String,
    },
}

impl OrderEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            OrderEvent::OrderCreated { .. } => "OrderCreated",
            OrderEvent::OrderNoteAdded { .. } => "OrderNoteAdded",
            OrderEvent::OrderCompleted { .. } => "OrderCompleted",
            OrderEvent::OrderCancelled { .. } => "OrderCancelled",
        }
    }

    /// The event's data without the type tag (the CloudEvents `data`).
    pub fn to_data(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("type");
        }
        v
    }

    /// The event's data in version `version` of its contract (see
    /// `demo/schemas/`): `OrderCreated` v1 has no `currency`, v2 adds it, v3
    /// (the breaking draft of the `schema-drift` fault) renames `items` to
    /// `line_items`. Other types have one version.
    pub fn to_data_version(&self, version: u32) -> serde_json::Value {
        let mut v = self.to_data();
        if let (OrderEvent::OrderCreated { .. }, Some(o)) = (self, v.as_object_mut()) {
            match version {
                1 => {
                    o.remove("currency");
                }
                3 => {
                    if let Some(items) = o.remove("items") {
                        o.insert("line_items".into(), items);
                    }
                }
                _ => {}
            }
        }
        v
    }

    /// Rebuild from a type, the contract version the data was written in
    /// (None: guessed from its shape) and the data, upcast to the version
    /// this fold reads. Also returns the versions it was upcast from.
    pub fn from_versioned(
        event_type: &str,
        version: Option<u32>,
        data: &serde_json::Value,
    ) -> Option<(OrderEvent, Vec<u32>)> {
        let version = version.unwrap_or_else(|| crate::upcast::guess_version(event_type, data));
        let (data, path) = crate::upcast::upcast(event_type, version, data.clone())?;
        Some((OrderEvent::from_data(event_type, &data)?, path))
    }

    /// Rebuild from a CloudEvents type and data in the current version.
    pub fn from_data(event_type: &str, data: &serde_json::Value) -> Option<OrderEvent> {
        let mut v = data.clone();
        v.as_object_mut()?
            .insert("type".into(), serde_json::Value::String(event_type.into()));
        serde_json::from_value(v).ok()
    }
}

fn default_currency() -> String {
    "EUR".into()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order already exists")]
    AlreadyExists,
    #[error("order does not exist")]
    NotFound,
    #[error("order has no items")]
    NoItems,
    #[error("invalid quantity or price")]
    InvalidLine,
    #[error("order is {0}, not pending")]
    NotPending(&'static str),
}

pub fn handle(state: &OrderState, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
    match command {
        OrderCommand::PlaceOrder {
            order_id,
            customer_email,
            shipping_address,
            items,
        } => {
            if state.status != OrderStatus::New {
                return Err(OrderError::AlreadyExists);
            }
            if items.is_empty() {
                return Err(OrderError::NoItems);
            }
            if items
                .iter()
                .any(|i| i.quantity <= 0 || i.unit_price_cents < 0)
            {
                return Err(OrderError::InvalidLine);
            }
            let total_cents = items.iter().map(|i| i.quantity * i.unit_price_cents).sum();
            Ok(vec![OrderEvent::OrderCreated {
                order_id,
                customer_email,
                shipping_address,
                items,
                total_cents,
                currency: default_currency(),
            }])
        }
        OrderCommand::AddNote { text } => {
            require_pending(state)?;
            Ok(vec![OrderEvent::OrderNoteAdded {
                order_id: state.order_id.clone(),
                text,
            }])
        }
        OrderCommand::ApproveOrder => {
            require_pending(state)?;
            Ok(vec![OrderEvent::OrderCompleted {
                order_id: state.order_id.clone(),
                total_cents: state.total_cents,
            }])
        }
        OrderCommand::CancelOrder { reason } => {
            require_pending(state)?;
            Ok(vec![OrderEvent::OrderCancelled {
                order_id: state.order_id.clone(),
                reason,
            }])
        }
    }
}

fn require_pending(state: &OrderState) -> Result<(), OrderError> {
    match state.status {
        OrderStatus::Pending => Ok(()),
        OrderStatus::New => Err(OrderError::NotFound),
        other => Err(OrderError::NotPending(other.as_str())),
    }
}

pub fn apply(mut state: OrderState, event: &OrderEvent) -> OrderState {
    state.version += 1;
    match event {
        OrderEvent::OrderCreated {
            order_id,
            customer_email,
            shipping_address,
            items,
            total_cents,
            currency,
        } => {
            state.order_id = order_id.clone();
            state.currency = currency.clone();
            state.customer_email = customer_email.clone();
            state.shipping_address = shipping_address.clone();
            state.items = items.clone();
            state.total_cents = *total_cents;
            state.status = OrderStatus::Pending;
        }
        OrderEvent::OrderNoteAdded { text, .. } => state.notes.push(Arc::from(text.as_str())),
        OrderEvent::OrderCompleted { .. } => state.status = OrderStatus::Completed,
        OrderEvent::OrderCancelled { reason, .. } => {
            state.status = OrderStatus::Cancelled;
            state.cancel_reason = Some(reason.clone());
        }
    }
    state
}

/// Fold a sequence of events onto a starting state.
pub fn replay<'a>(
    start: OrderState,
    events: impl IntoIterator<Item = &'a OrderEvent>,
) -> OrderState {
    events.into_iter().fold(start, apply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item() -> LineItem {
        LineItem {
            product_id: "p1".into(),
            quantity: 2,
            unit_price_cents: 150,
        }
    }

    fn place() -> OrderCommand {
        OrderCommand::PlaceOrder {
            order_id: "o1".into(),
            customer_email: "a@example.com".into(),
            shipping_address: "1 Main St".into(),
            items: vec![item()],
        }
    }

    /// given events, when command, then events or error.
    fn given_when_then(
        given: Vec<OrderEvent>,
        when: OrderCommand,
        then: Result<Vec<&str>, OrderError>,
    ) {
        let state = replay(OrderState::default(), &given);
        let got =
            handle(&state, when).map(|es| es.iter().map(|e| e.type_name()).collect::<Vec<_>>());
        assert_eq!(got, then);
    }

    fn created() -> OrderEvent {
        OrderEvent::OrderCreated {
            order_id: "o1".into(),
            customer_email: "a@example.com".into(),
            shipping_address: "1 Main St".into(),
            items: vec![item()],
            total_cents: 300,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn command_table() {
        given_when_then(vec![], place(), Ok(vec!["OrderCreated"]));
        given_when_then(vec![created()], place(), Err(OrderError::AlreadyExists));
        given_when_then(
            vec![],
            OrderCommand::ApproveOrder,
            Err(OrderError::NotFound),
        );
        given_when_then(
            vec![created()],
            OrderCommand::ApproveOrder,
            Ok(vec!["OrderCompleted"]),
        );
        given_when_then(
            vec![created()],
            OrderCommand::CancelOrder { reason: "x".into() },
            Ok(vec!["OrderCancelled"]),
        );
        let completed = OrderEvent::OrderCompleted {
            order_id: "o1".into(),
            total_cents: 300,
        };
        given_when_then(
            vec![created(), completed],
            OrderCommand::CancelOrder { reason: "x".into() },
            Err(OrderError::NotPending("completed")),
        );
        given_when_then(
            vec![],
            OrderCommand::PlaceOrder {
                order_id: "o1".into(),
                customer_email: String::new(),
                shipping_address: String::new(),
                items: vec![],
            },
            Err(OrderError::NoItems),
        );
    }

    #[test]
    fn total_is_computed_and_data_round_trips() {
        let state = replay(OrderState::default(), &[created()]);
        assert_eq!(state.total_cents, 300);
        assert_eq!(state.version, 1);
        let e = created();
        assert_eq!(
            OrderEvent::from_data(e.type_name(), &e.to_data()),
            Some(e.clone())
        );
        // Every written version reads back as the same event, upcast.
        for (v, path) in [(1, vec![1]), (2, vec![]), (3, vec![3])] {
            let data = e.to_data_version(v);
            assert_eq!(data.get("currency").is_some(), v > 1, "v{v}: {data}");
            assert_eq!(
                OrderEvent::from_versioned(e.type_name(), Some(v), &data),
                Some((e.clone(), path.clone()))
            );
            assert_eq!(
                OrderEvent::from_versioned(e.type_name(), None, &data),
                Some((e.clone(), path))
            );
        }
    }

    proptest! {
        /// Snapshot + tail equals full replay, for random command sequences and snapshot points.
        #[test]
        fn snapshot_plus_tail_equals_replay(cmds in proptest::collection::vec(0u8..4, 1..200), every in 1usize..50) {
            let mut state = OrderState::default();
            let mut log: Vec<OrderEvent> = Vec::new();
            let mut snapshots: Vec<OrderState> = Vec::new();
            for (n, c) in cmds.iter().enumerate() {
                let cmd = match c {
                    0 => place(),
                    1 => OrderCommand::AddNote { text: format!("note {n}") },
                    2 => OrderCommand::ApproveOrder,
                    _ => OrderCommand::CancelOrder { reason: format!("r{n}") },
                };
                if let Ok(events) = handle(&state, cmd) {
                    for e in events {
                        state = apply(state, &e);
                        log.push(e);
                        if log.len() % every == 0 {
                            snapshots.push(state.clone());
                        }
                    }
                }
            }
            let full = replay(OrderState::default(), &log);
            prop_assert_eq!(&full, &state);
            let from = snapshots.last().cloned().unwrap_or_default();
            let tail = &log[usize::try_from(from.version).unwrap_or(0)..];
            prop_assert_eq!(replay(from, tail), full);
        }
    }
}
