//! The order saga as a pure state machine: `step(state, input) -> (state, actions)`.
//!
//! order -> payment -> inventory -> shipping -> approve. On a failure the steps
//! already done are compensated one at a time in reverse order
//! (cancel shipment, restore stock, refund payment), then the order is cancelled.

use serde::{Deserialize, Serialize};

use crate::domain::LineItem;

/// How an order's saga is run: by the orchestrator's commands, or by each
/// service reacting to the previous service's event (see `choreography`).
/// Records carry it as the CloudEvents extension `sagamode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaMode {
    #[default]
    Orchestration,
    Choreography,
}

impl SagaMode {
    pub const ALL: [SagaMode; 2] = [SagaMode::Orchestration, SagaMode::Choreography];

    pub fn as_str(self) -> &'static str {
        match self {
            SagaMode::Orchestration => "orchestration",
            SagaMode::Choreography => "choreography",
        }
    }

    /// The mode a header value names; None for anything else.
    pub fn parse(s: &str) -> Option<SagaMode> {
        SagaMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for SagaMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Payment,
    Stock,
    Shipment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum SagaPhase {
    /// Opened from an `OrderCreated` the orchestrator could not read: it
    /// waits for nothing it can get, so its step deadline cancels the order.
    AwaitingOrderData,
    AwaitingPayment,
    AwaitingStock,
    AwaitingShipment,
    AwaitingApproval,
    /// Undoing `step`; the rest of `to_undo` follows.
    Compensating {
        step: Step,
    },
    CancellingOrder,
    Completed,
    Compensated,
}

impl SagaPhase {
    pub fn is_terminal(&self) -> bool {
        matches!(self, SagaPhase::Completed | SagaPhase::Compensated)
    }

    /// Phases whose step deadline may end the saga: waiting for a forward
    /// step's reply. Approval and compensations never time out: a late
    /// approval would race a cancel, and compensations must run to the end.
    pub const DEADLINED: [&'static str; 4] = [
        "awaiting_order_data",
        "awaiting_payment",
        "awaiting_stock",
        "awaiting_shipment",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            SagaPhase::AwaitingOrderData => "awaiting_order_data",
            SagaPhase::AwaitingPayment => "awaiting_payment",
            SagaPhase::AwaitingStock => "awaiting_stock",
            SagaPhase::AwaitingShipment => "awaiting_shipment",
            SagaPhase::AwaitingApproval => "awaiting_approval",
            SagaPhase::Compensating { .. } => "compensating",
            SagaPhase::CancellingOrder => "cancelling_order",
            SagaPhase::Completed => "completed",
            SagaPhase::Compensated => "compensated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState {
    pub order_id: String,
    pub total_cents: i64,
    pub items: Vec<LineItem>,
    pub phase: SagaPhase,
    /// Steps done, in the order they were done.
    pub done: Vec<Step>,
    /// Steps still to compensate, next first.
    pub to_undo: Vec<Step>,
    pub failure: Option<String>,
}

/// What the orchestrator hears (from event topics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaInput {
    OrderCreated,
    PaymentCompleted,
    PaymentDeclined {
        reason: String,
    },
    StockReserved,
    StockRejected {
        reason: String,
    },
    ShipmentScheduled,
    ShipmentFailed {
        reason: String,
    },
    OrderCompleted,
    OrderCancelled,
    PaymentRefunded,
    StockRestored,
    ShipmentCancelled,
    /// The current step's deadline passed without a reply.
    StepTimedOut,
}

impl SagaInput {
    /// Map an event type and its data to a saga input, if the saga cares.
    pub fn from_event(event_type: &str, data: &serde_json::Value) -> Option<SagaInput> {
        let reason = || {
            data.get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("unknown")
                .to_owned()
        };
        Some(match event_type {
            "OrderCreated" => SagaInput::OrderCreated,
            "PaymentCompleted" => SagaInput::PaymentCompleted,
            "PaymentDeclined" => SagaInput::PaymentDeclined { reason: reason() },
            "StockReserved" => SagaInput::StockReserved,
            "StockRejected" => SagaInput::StockRejected { reason: reason() },
            "ShipmentScheduled" => SagaInput::ShipmentScheduled,
            "ShipmentFailed" => SagaInput::ShipmentFailed { reason: reason() },
            "OrderCompleted" => SagaInput::OrderCompleted,
            "OrderCancelled" => SagaInput::OrderCancelled,
            "PaymentRefunded" => SagaInput::PaymentRefunded,
            "StockRestored" => SagaInput::StockRestored,
            "ShipmentCancelled" => SagaInput::ShipmentCancelled,
            _ => return None,
        })
    }
}

/// Commands the orchestrator sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaCommand {
    ProcessPayment,
    ReserveStock,
    ScheduleShipment,
    ApproveOrder,
    RefundPayment,
    RestoreStock,
    CancelShipment,
    CancelOrder { reason: String },
}

impl SagaCommand {
    pub fn type_name(&self) -> &'static str {
        match self {
            SagaCommand::ProcessPayment => "ProcessPayment",
            SagaCommand::ReserveStock => "ReserveStock",
            SagaCommand::ScheduleShipment => "ScheduleShipment",
            SagaCommand::ApproveOrder => "ApproveOrder",
            SagaCommand::RefundPayment => "RefundPayment",
            SagaCommand::RestoreStock => "RestoreStock",
            SagaCommand::CancelShipment => "CancelShipment",
            SagaCommand::CancelOrder { .. } => "CancelOrder",
        }
    }

    pub fn topic(&self) -> &'static str {
        use crate::topics::*;
        match self {
            SagaCommand::ProcessPayment | SagaCommand::RefundPayment => PAYMENT_COMMANDS,
            SagaCommand::ReserveStock | SagaCommand::RestoreStock => INVENTORY_COMMANDS,
            SagaCommand::ScheduleShipment | SagaCommand::CancelShipment => SHIPPING_COMMANDS,
            SagaCommand::ApproveOrder | SagaCommand::CancelOrder { .. } => ORDER_COMMANDS,
        }
    }

    /// Event-carried state: the command's data, built from the saga state.
    pub fn data(&self, s: &SagaState) -> serde_json::Value {
        let mut v = serde_json::json!({ "order_id": s.order_id });
        let o = v.as_object_mut();
        if let Some(o) = o {
            match self {
                SagaCommand::ProcessPayment | SagaCommand::RefundPayment => {
                    o.insert("amount_cents".into(), s.total_cents.into());
                }
                SagaCommand::ReserveStock | SagaCommand::RestoreStock => {
                    o.insert(
                        "items".into(),
                        serde_json::to_value(&s.items).unwrap_or_default(),
                    );
                }
                SagaCommand::CancelOrder { reason } => {
                    o.insert("reason".into(), reason.clone().into());
                }
                _ => {}
            }
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaAction {
    Send(SagaCommand),
    /// The saga reached a terminal phase.
    Finished,
}

impl SagaState {
    /// A saga for an order whose data the orchestrator could not read.
    pub fn unreadable(order_id: String) -> SagaState {
        SagaState {
            phase: SagaPhase::AwaitingOrderData,
            ..SagaState::start(order_id, 0, vec![])
        }
    }

    pub fn start(order_id: String, total_cents: i64, items: Vec<LineItem>) -> SagaState {
        SagaState {
            order_id,
            total_cents,
            items,
            phase: SagaPhase::AwaitingPayment,
            done: vec![],
            to_undo: vec![],
            failure: None,
        }
    }
}

fn compensation(step: Step) -> SagaCommand {
    match step {
        Step::Payment => SagaCommand::RefundPayment,
        Step::Stock => SagaCommand::RestoreStock,
        Step::Shipment => SagaCommand::CancelShipment,
    }
}

/// Begin compensating: undo done steps newest first, then cancel the order.
fn fail(mut s: SagaState, reason: String) -> (SagaState, Vec<SagaAction>) {
    s.failure = Some(reason);
    s.to_undo = s.done.iter().rev().copied().collect();
    next_compensation(s)
}

fn next_compensation(mut s: SagaState) -> (SagaState, Vec<SagaAction>) {
    if s.to_undo.is_empty() {
        s.phase = SagaPhase::CancellingOrder;
        let reason = s.failure.clone().unwrap_or_else(|| "saga failed".into());
        (
            s,
            vec![SagaAction::Send(SagaCommand::CancelOrder { reason })],
        )
    } else {
        let step = s.to_undo.remove(0);
        s.phase = SagaPhase::Compensating { step };
        (s, vec![SagaAction::Send(compensation(step))])
    }
}

fn timed_out(mut s: SagaState, step: Step) -> (SagaState, Vec<SagaAction>) {
    s.done.push(step);
    let name = match step {
        Step::Payment => "payment",
        Step::Stock => "stock reservation",
        Step::Shipment => "shipment",
    };
    fail(s, format!("timed out waiting for the {name}"))
}

/// The first action of a new saga.
pub fn begin(s: &SagaState) -> Vec<SagaAction> {
    debug_assert_eq!(s.phase, SagaPhase::AwaitingPayment);
    vec![SagaAction::Send(SagaCommand::ProcessPayment)]
}

/// Advance the saga. Inputs that do not fit the phase (late duplicates,
/// redeliveries) change nothing and produce no action.
pub fn step(s: SagaState, input: SagaInput) -> (SagaState, Vec<SagaAction>) {
    use SagaInput as I;
    use SagaPhase as P;
    match (&s.phase, input) {
        (P::AwaitingPayment, I::PaymentCompleted) => {
            let mut s = s;
            s.done.push(Step::Payment);
            s.phase = P::AwaitingStock;
            (s, vec![SagaAction::Send(SagaCommand::ReserveStock)])
        }
        (P::AwaitingPayment, I::PaymentDeclined { reason }) => {
            fail(s, format!("payment declined: {reason}"))
        }
        (P::AwaitingStock, I::StockReserved) => {
            let mut s = s;
            s.done.push(Step::Stock);
            s.phase = P::AwaitingShipment;
            (s, vec![SagaAction::Send(SagaCommand::ScheduleShipment)])
        }
        (P::AwaitingStock, I::StockRejected { reason }) => {
            fail(s, format!("out of stock: {reason}"))
        }
        (P::AwaitingShipment, I::ShipmentScheduled) => {
            let mut s = s;
            s.done.push(Step::Shipment);
            s.phase = P::AwaitingApproval;
            (s, vec![SagaAction::Send(SagaCommand::ApproveOrder)])
        }
        (P::AwaitingShipment, I::ShipmentFailed { reason }) => {
            fail(s, format!("shipping failed: {reason}"))
        }
        (P::AwaitingApproval, I::OrderCompleted) => {
            let mut s = s;
            s.phase = P::Completed;
            (s, vec![SagaAction::Finished])
        }
        // The order was cancelled while we waited for approval: undo everything.
        (P::AwaitingApproval, I::OrderCancelled) => {
            fail(s, "order cancelled before approval".into())
        }
        (
            P::Compensating {
                step: Step::Shipment,
            },
            I::ShipmentCancelled,
        )
        | (P::Compensating { step: Step::Stock }, I::StockRestored)
        | (
            P::Compensating {
                step: Step::Payment,
            },
            I::PaymentRefunded,
        ) => next_compensation(s),
        // A deadline: the step may still happen (its command is in flight),
        // so it is compensated too. Compensations are no-ops for a step that
        // never took effect, and a late command is ordered before its
        // compensation on the same partition.
        (P::AwaitingOrderData, I::StepTimedOut) => {
            fail(s, "timed out: the order's data could not be read".into())
        }
        (P::AwaitingPayment, I::StepTimedOut) => timed_out(s, Step::Payment),
        (P::AwaitingStock, I::StepTimedOut) => timed_out(s, Step::Stock),
        (P::AwaitingShipment, I::StepTimedOut) => timed_out(s, Step::Shipment),
        (P::CancellingOrder, I::OrderCancelled) => {
            let mut s = s;
            s.phase = P::Compensated;
            (s, vec![SagaAction::Finished])
        }
        _ => (s, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_saga() -> SagaState {
        SagaState::start("o1".into(), 300, vec![])
    }

    /// given inputs, then the commands sent (in order) and the final phase.
    fn run(inputs: Vec<SagaInput>) -> (SagaState, Vec<&'static str>) {
        let mut s = new_saga();
        let mut sent: Vec<&'static str> = begin(&s)
            .iter()
            .filter_map(|a| match a {
                SagaAction::Send(c) => Some(c.type_name()),
                SagaAction::Finished => None,
            })
            .collect();
        for i in inputs {
            let (next, actions) = step(s, i);
            s = next;
            for a in actions {
                if let SagaAction::Send(c) = a {
                    sent.push(c.type_name());
                }
            }
        }
        (s, sent)
    }

    #[test]
    fn happy_path() {
        use SagaInput::*;
        let (s, sent) = run(vec![
            PaymentCompleted,
            StockReserved,
            ShipmentScheduled,
            OrderCompleted,
        ]);
        assert_eq!(s.phase, SagaPhase::Completed);
        assert_eq!(
            sent,
            [
                "ProcessPayment",
                "ReserveStock",
                "ScheduleShipment",
                "ApproveOrder"
            ]
        );
    }

    #[test]
    fn step_deadlines_compensate_the_step_that_may_still_happen() {
        use SagaInput::*;
        // Payment timed out: refund it (a no-op if it never happened), cancel.
        let (s, sent) = run(vec![StepTimedOut, PaymentRefunded, OrderCancelled]);
        assert_eq!(s.phase, SagaPhase::Compensated);
        assert_eq!(sent, ["ProcessPayment", "RefundPayment", "CancelOrder"]);
        // Stock timed out: restore it, refund, cancel; a late reply changes nothing.
        let (s, sent) = run(vec![
            PaymentCompleted,
            StepTimedOut,
            StockReserved,
            StockRestored,
            PaymentRefunded,
            OrderCancelled,
        ]);
        assert_eq!(s.phase, SagaPhase::Compensated);
        assert_eq!(
            sent,
            [
                "ProcessPayment",
                "ReserveStock",
                "RestoreStock",
                "RefundPayment",
                "CancelOrder"
            ]
        );
        // Approval and compensations have no deadline.
        let (s, _) = run(vec![
            PaymentCompleted,
            StockReserved,
            ShipmentScheduled,
            StepTimedOut,
        ]);
        assert_eq!(s.phase, SagaPhase::AwaitingApproval);
        // A saga opened for unreadable order data cancels the order at its deadline.
        let (s, actions) = step(SagaState::unreadable("o1".into()), StepTimedOut);
        assert_eq!(s.phase, SagaPhase::CancellingOrder);
        assert!(matches!(
            actions.as_slice(),
            [SagaAction::Send(SagaCommand::CancelOrder { .. })]
        ));
        assert_eq!(step(s, OrderCancelled).0.phase, SagaPhase::Compensated);
    }

    #[test]
    fn payment_declined_cancels_the_order() {
        use SagaInput::*;
        let (s, sent) = run(vec![
            PaymentDeclined {
                reason: "card".into(),
            },
            OrderCancelled,
        ]);
        assert_eq!(s.phase, SagaPhase::Compensated);
        assert_eq!(sent, ["ProcessPayment", "CancelOrder"]);
    }

    #[test]
    fn out_of_stock_refunds_then_cancels() {
        use SagaInput::*;
        let (s, sent) = run(vec![
            PaymentCompleted,
            StockRejected {
                reason: "p1".into(),
            },
            PaymentRefunded,
            OrderCancelled,
        ]);
        assert_eq!(s.phase, SagaPhase::Compensated);
        assert_eq!(
            sent,
            [
                "ProcessPayment",
                "ReserveStock",
                "RefundPayment",
                "CancelOrder"
            ]
        );
    }

    #[test]
    fn shipping_failure_compensates_in_reverse_order() {
        use SagaInput::*;
        let (s, sent) = run(vec![
            PaymentCompleted,
            StockReserved,
            ShipmentFailed {
                reason: "no courier".into(),
            },
            StockRestored,
            PaymentRefunded,
            OrderCancelled,
        ]);
        assert_eq!(s.phase, SagaPhase::Compensated);
        assert_eq!(
            sent,
            [
                "ProcessPayment",
                "ReserveStock",
                "ScheduleShipment",
                "RestoreStock",
                "RefundPayment",
                "CancelOrder"
            ]
        );
    }

    #[test]
    fn cancellation_after_shipment_undoes_all_three() {
        use SagaInput::*;
        let (s, sent) = run(vec![
            PaymentCompleted,
            StockReserved,
            ShipmentScheduled,
            OrderCancelled,
            ShipmentCancelled,
            StockRestored,
            PaymentRefunded,
            OrderCancelled,
        ]);
        assert_eq!(s.phase, SagaPhase::Compensated);
        assert_eq!(
            &sent[4..],
            [
                "CancelShipment",
                "RestoreStock",
                "RefundPayment",
                "CancelOrder"
            ]
        );
    }

    #[test]
    fn duplicates_and_strays_are_ignored() {
        use SagaInput::*;
        let (s, sent) = run(vec![
            PaymentCompleted,
            PaymentCompleted,
            StockRestored,
            StockReserved,
            StockReserved,
        ]);
        assert_eq!(s.phase, SagaPhase::AwaitingShipment);
        assert_eq!(sent, ["ProcessPayment", "ReserveStock", "ScheduleShipment"]);
    }
}
