//! Kafka at the edge of the debugger: the embedded broker and the tap consumer.

pub mod broker;
pub mod groups;
pub mod proxy;
pub mod refetch;
pub mod tap;
