//! The demo order system that eventscope observes.
//!
//! Patterns: an event-sourced `Order` aggregate with snapshots, a transactional
//! outbox drained by a relay (the only component that talks to Kafka as a
//! producer of domain records), a saga with compensations (orchestrated, or
//! choreographed: see `choreography`), idempotent
//! consumers (`processed_events` written in the same transaction as the effect),
//! a CQRS read model, CloudEvents envelopes and runtime failure injection.

pub mod cdc;
pub mod choreography;
pub mod consumer;
pub mod contracts;
pub mod domain;
pub mod envelope;
pub mod faults;
pub mod ids;
pub mod kafka;
pub mod orchestrator;
pub mod order_service;
pub mod read_model;
pub mod relay;
pub mod report;
pub mod saga;
pub mod services;
pub mod store;
pub mod system;
pub mod telemetry;
pub mod topics;
pub mod upcast;

pub use faults::{Fault, Faults};
pub use system::{DemoConfig, DemoSystem};
