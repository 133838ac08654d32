//! The choreographed saga, as a pure table: no orchestrator and no command
//! topics. Each service reacts to the previous service's event and publishes
//! its own outcome; on a failure each owner undoes its own step, newest first,
//! by reacting to the failure downstream of it.
//!
//! ```text
//! OrderCreated -> inventory reserves -> StockReserved -> payment charges
//!   -> PaymentCompleted -> shipping schedules -> ShipmentScheduled
//!   -> the order service completes the order (OrderCompleted)
//! StockRejected   -> order cancelled
//! PaymentDeclined -> inventory restores -> StockRestored -> order cancelled
//! ShipmentFailed  -> payment refunds -> PaymentRefunded -> inventory restores
//!   -> StockRestored -> order cancelled
//! ```
//!
//! Every record of a choreographed order carries the CloudEvents extension
//! `sagamode = choreography` (copied from the event it reacts to), so services
//! that take part in both modes react only to the records of their mode.

use crate::saga::SagaMode;
use crate::topics;

/// A service that takes part in the choreography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Participant {
    Inventory,
    Payment,
    Shipping,
    Order,
}

/// What a participant does about an event: the same effect as the
/// orchestrator's command of that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    ReserveStock,
    RestoreStock,
    ProcessPayment,
    RefundPayment,
    ScheduleShipment,
    ApproveOrder,
    CancelOrder,
}

impl Reaction {
    /// The orchestration command with the same effect.
    pub fn command(self) -> &'static str {
        match self {
            Reaction::ReserveStock => "ReserveStock",
            Reaction::RestoreStock => "RestoreStock",
            Reaction::ProcessPayment => "ProcessPayment",
            Reaction::RefundPayment => "RefundPayment",
            Reaction::ScheduleShipment => "ScheduleShipment",
            Reaction::ApproveOrder => "ApproveOrder",
            Reaction::CancelOrder => "CancelOrder",
        }
    }

    /// A step forward (not a compensation).
    pub fn is_forward(self) -> bool {
        matches!(
            self,
            Reaction::ReserveStock
                | Reaction::ProcessPayment
                | Reaction::ScheduleShipment
                | Reaction::ApproveOrder
        )
    }
}

/// Who reacts to what: (participant, event type, reaction, the event's topic).
const TRIGGERS: [(Participant, &str, Reaction, &str); 9] = [
    (
        Participant::Inventory,
        "OrderCreated",
        Reaction::ReserveStock,
        topics::ORDERS,
    ),
    (
        Participant::Inventory,
        "PaymentDeclined",
        Reaction::RestoreStock,
        topics::PAYMENTS,
    ),
    (
        Participant::Inventory,
        "PaymentRefunded",
        Reaction::RestoreStock,
        topics::PAYMENTS,
    ),
    (
        Participant::Payment,
        "StockReserved",
        Reaction::ProcessPayment,
        topics::INVENTORY,
    ),
    (
        Participant::Payment,
        "ShipmentFailed",
        Reaction::RefundPayment,
        topics::SHIPPING,
    ),
    (
        Participant::Shipping,
        "PaymentCompleted",
        Reaction::ScheduleShipment,
        topics::PAYMENTS,
    ),
    (
        Participant::Order,
        "ShipmentScheduled",
        Reaction::ApproveOrder,
        topics::SHIPPING,
    ),
    (
        Participant::Order,
        "StockRejected",
        Reaction::CancelOrder,
        topics::INVENTORY,
    ),
    (
        Participant::Order,
        "StockRestored",
        Reaction::CancelOrder,
        topics::INVENTORY,
    ),
];

/// What `p` does about an event of `event_type` in a choreographed order.
pub fn reaction(p: Participant, event_type: &str) -> Option<Reaction> {
    TRIGGERS
        .iter()
        .find(|(who, t, _, _)| *who == p && *t == event_type)
        .map(|(_, _, r, _)| *r)
}

/// What `p` does about a record, if it is a choreographed one `p` reacts to.
pub fn reaction_to(p: Participant, mode: Option<SagaMode>, event_type: &str) -> Option<Reaction> {
    match mode {
        Some(SagaMode::Choreography) => reaction(p, event_type),
        _ => None,
    }
}

/// Whether `p` handles a record from `topic`: a request on its command topic
/// (orchestration), or a choreographed event it reacts to. The rest of what
/// it reads for the choreography belongs to orchestrated orders.
pub fn wants(
    p: Participant,
    command_topic: &str,
    topic: &str,
    mode: Option<SagaMode>,
    event_type: &str,
) -> bool {
    topic == command_topic || reaction_to(p, mode, event_type).is_some()
}

/// The topics `p` reads while sagas run in `modes`: its command topic for
/// orchestration, the event topics of its triggers for the choreography.
pub fn topics_in(
    p: Participant,
    command_topic: &'static str,
    modes: &[SagaMode],
) -> Vec<&'static str> {
    let mut out = Vec::new();
    if modes.contains(&SagaMode::Orchestration) {
        out.push(command_topic);
    }
    if modes.contains(&SagaMode::Choreography) {
        out.extend(topics(p));
    }
    out
}

/// The event topics `p` reads in the choreography.
pub fn topics(p: Participant) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (who, _, _, topic) in TRIGGERS {
        if who == p && !out.contains(&topic) {
            out.push(topic);
        }
    }
    out
}

/// The failure a participant publishes when it cannot read the event that
/// should move it forward (an unknown contract version): its step failed, and
/// the services before it undo theirs as for any other failure.
pub fn failure_of(r: Reaction) -> Option<&'static str> {
    match r {
        Reaction::ReserveStock => Some("StockRejected"),
        Reaction::ProcessPayment => Some("PaymentDeclined"),
        Reaction::ScheduleShipment => Some("ShipmentFailed"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Participant; 4] = [
        Participant::Inventory,
        Participant::Payment,
        Participant::Shipping,
        Participant::Order,
    ];

    /// The outcome event of a reaction; `fails` names the reactions that fail.
    fn outcome(r: Reaction, fails: &[Reaction]) -> &'static str {
        let failed = fails.contains(&r);
        match r {
            Reaction::ReserveStock if failed => "StockRejected",
            Reaction::ReserveStock => "StockReserved",
            Reaction::RestoreStock => "StockRestored",
            Reaction::ProcessPayment if failed => "PaymentDeclined",
            Reaction::ProcessPayment => "PaymentCompleted",
            Reaction::RefundPayment => "PaymentRefunded",
            Reaction::ScheduleShipment if failed => "ShipmentFailed",
            Reaction::ScheduleShipment => "ShipmentScheduled",
            Reaction::ApproveOrder => "OrderCompleted",
            Reaction::CancelOrder => "OrderCancelled",
        }
    }

    /// given an OrderCreated and the failing steps, then the events in order.
    fn walk(fails: &[Reaction]) -> Vec<&'static str> {
        let mut events = vec!["OrderCreated"];
        loop {
            let last = events[events.len() - 1];
            let reactions: Vec<Reaction> = ALL
                .iter()
                .filter_map(|p| reaction_to(*p, Some(SagaMode::Choreography), last))
                .collect();
            match reactions.as_slice() {
                [] => return events,
                [r] => events.push(outcome(*r, fails)),
                more => panic!("{last} moves several services: {more:?}"),
            }
        }
    }

    #[test]
    fn every_path_ends_with_the_order_and_undoes_in_reverse() {
        use Reaction::*;
        let cases: &[(&[Reaction], &[&str])] = &[
            (
                &[],
                &[
                    "OrderCreated",
                    "StockReserved",
                    "PaymentCompleted",
                    "ShipmentScheduled",
                    "OrderCompleted",
                ],
            ),
            (
                &[ReserveStock],
                &["OrderCreated", "StockRejected", "OrderCancelled"],
            ),
            (
                &[ProcessPayment],
                &[
                    "OrderCreated",
                    "StockReserved",
                    "PaymentDeclined",
                    "StockRestored",
                    "OrderCancelled",
                ],
            ),
            (
                &[ScheduleShipment],
                &[
                    "OrderCreated",
                    "StockReserved",
                    "PaymentCompleted",
                    "ShipmentFailed",
                    "PaymentRefunded",
                    "StockRestored",
                    "OrderCancelled",
                ],
            ),
        ];
        for (fails, want) in cases {
            assert_eq!(walk(fails), *want, "failing {fails:?}");
        }
    }

    #[test]
    fn orchestrated_records_move_nobody() {
        for p in ALL {
            for (_, t, _, _) in TRIGGERS {
                assert_eq!(reaction_to(p, Some(SagaMode::Orchestration), t), None);
                assert_eq!(reaction_to(p, None, t), None);
            }
        }
    }

    #[test]
    fn no_participant_reads_a_command_topic() {
        for p in ALL {
            let t = topics(p);
            assert!(!t.is_empty(), "{p:?} reads nothing");
            assert!(t.iter().all(|t| !t.ends_with(".commands")), "{p:?}: {t:?}");
        }
        assert_eq!(
            topics(Participant::Inventory),
            [topics::ORDERS, topics::PAYMENTS]
        );
    }

    #[test]
    fn an_unreadable_forward_trigger_is_that_step_failing() {
        assert_eq!(failure_of(Reaction::ReserveStock), Some("StockRejected"));
        assert_eq!(failure_of(Reaction::RestoreStock), None);
        assert!(Reaction::ApproveOrder.is_forward() && !Reaction::CancelOrder.is_forward());
    }
}
