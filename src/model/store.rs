//! Where a record's bytes can be read again after the observed log let go of them.
//!
//! On a broker that keeps its log (a real Kafka, tansu) Kafka itself is the store: under
//! the memory limit the log keeps its rows and indexes (the lints' and the graph's view) and
//! evicts the payload bytes, then reads a record back by topic, partition and offset when it
//! is inspected or folded ([`crate::kafka::refetch::KafkaRecordStore`]). The embedded broker
//! drops old batches, so there the bytes stay in memory.

use std::sync::Arc;

use super::record::Record;

/// Offsets `first..=last` of one topic-partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

/// Reads records back by position. Blocking; called from whoever reads the log.
pub trait RecordStore: Send + Sync {
    /// The records of `ranges` that still exist, in any order. An error when they cannot be
    /// read at all (broker unreachable, offsets past retention); records missing from the
    /// answer are judged by the caller.
    fn fetch(&self, ranges: &[OffsetRange]) -> Result<Vec<Record>, String>;
    /// What it reads from, for messages (e.g. "Kafka at 127.0.0.1:9092").
    fn describe(&self) -> String;
}

/// The model configuration's handle on a record store (none by default: payloads stay in
/// memory). Two handles are equal when they share the store.
#[derive(Clone, Default)]
pub struct RecordStoreHandle(pub Option<Arc<dyn RecordStore>>);

impl RecordStoreHandle {
    pub fn new(store: impl RecordStore + 'static) -> Self {
        RecordStoreHandle(Some(Arc::new(store)))
    }
}

impl std::fmt::Debug for RecordStoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(s) => write!(f, "RecordStoreHandle({})", s.describe()),
            None => f.write_str("RecordStoreHandle(memory)"),
        }
    }
}

impl PartialEq for RecordStoreHandle {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for RecordStoreHandle {}
