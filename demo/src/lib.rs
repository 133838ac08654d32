//! The demo order system that eventscope observes.
//!
//! Patterns: an event-sourced `Order` aggregate with snapshots, a transactional
//! outbox drained by a relay (the only component that talks to Kafka as a
//! producer of domain records), a saga with compensations (orchestrated, or
//! choreographed: see `choreography`), idempotent
//! consumers (`processed_events` written in the same transaction as the effect),
//! a CQRS read model, CloudEvents envelopes and runtime failure injection.

// The files are grouped by role; the module paths stay flat (`eventscope_demo::relay`).
//
// domain/: the pure parts, no I/O: the `Order` aggregate, the saga state
// machines (orchestrated and choreographed), event contracts and upcasters,
// the CloudEvents envelope, ids.
#[path = "domain/choreography.rs"]
pub mod choreography;
#[path = "domain/contracts.rs"]
pub mod contracts;
#[path = "domain/order.rs"]
pub mod domain;
#[path = "domain/envelope.rs"]
pub mod envelope;
#[path = "domain/ids.rs"]
pub mod ids;
#[path = "domain/saga.rs"]
pub mod saga;
#[path = "domain/upcast.rs"]
pub mod upcast;

// services/: the order service, the saga orchestrator, the payment, inventory
// and shipping participants, the read model.
#[path = "services/orchestrator.rs"]
pub mod orchestrator;
#[path = "services/order_service.rs"]
pub mod order_service;
#[path = "services/orders.rs"]
pub mod orders;
#[path = "services/read_model.rs"]
pub mod read_model;
#[path = "services/participants.rs"]
pub mod services;

// infra/: what the services run on: the shared task context, the store and
// outbox, the relays (polling, CDC), the consumer loop, Kafka, telemetry.
#[path = "infra/cdc.rs"]
pub mod cdc;
#[path = "infra/consumer.rs"]
pub mod consumer;
#[path = "infra/context.rs"]
pub mod context;
#[path = "infra/kafka.rs"]
pub mod kafka;
#[path = "infra/relay.rs"]
pub mod relay;
#[path = "infra/store.rs"]
pub mod store;
#[path = "infra/telemetry.rs"]
pub mod telemetry;
#[path = "infra/values.rs"]
pub mod values;

// The wiring (`system`), failure injection, the report's database facts, topic names.
pub mod faults;
pub mod report;
pub mod system;
pub mod topics;

pub use faults::{Fault, Faults};
pub use system::{DemoConfig, DemoSystem};
