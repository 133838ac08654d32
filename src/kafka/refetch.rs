//! Kafka as the observed log's store: a record's bytes read back by topic, partition and
//! offset (see [`crate::model::store`]). One consumer, no group membership, assigned to the
//! wanted ranges for each read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventscope_demo::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::model::record::Record;
use crate::model::store::{OffsetRange, RecordStore};

/// How long one read back may take before it is given up (the caller says why).
const READ_WAIT: Duration = Duration::from_secs(5);

/// Reads records back from a broker that keeps its log (a real Kafka, tansu).
pub struct KafkaRecordStore {
    settings: KafkaSettings,
    consumer: Mutex<Option<BaseConsumer>>,
    wait: Duration,
}

impl KafkaRecordStore {
    pub fn new(settings: KafkaSettings) -> Self {
        KafkaRecordStore {
            settings,
            consumer: Mutex::new(None),
            wait: READ_WAIT,
        }
    }

    fn create(&self) -> Result<BaseConsumer, KafkaError> {
        let mut c = self.settings.base();
        c.set(
            "group.id",
            format!("eventscope-refetch-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // An offset the broker no longer has is an error, not a silent jump.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "10")
        .set("client.id", "eventscope-refetch");
        c.create()
    }

    fn read(&self, consumer: &BaseConsumer, ranges: &[OffsetRange]) -> Result<Vec<Record>, String> {
        let mut tpl = TopicPartitionList::new();
        let mut open: HashMap<(&str, i32), (i64, i64)> = HashMap::new();
        for r in ranges {
            tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.first))
                .map_err(|e| e.to_string())?;
            open.insert((r.topic.as_str(), r.partition), (r.first, r.last));
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + self.wait;
        let mut out = Vec::new();
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let mut missing: Vec<String> = open
                    .iter()
                    .map(|((t, p), (f, l))| format!("{t}/{p}@{f}..={l}"))
                    .collect();
                missing.sort();
                return Err(format!(
                    "{} did not give back {} within {} s",
                    self.describe(),
                    missing.join(", "),
                    self.wait.as_secs()
                ));
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                None => {}
                Some(Ok(m)) => {
                    let key = (m.topic(), m.partition());
                    let Some(&(first, last)) = open.get(&key) else {
                        continue;
                    };
                    if (first..=last).contains(&m.offset()) {
                        out.push(super::tap::to_record(&m));
                    }
                    if m.offset() >= last {
                        open.retain(|k, _| *k != key);
                    }
                }
                // Past retention: what was read stands, the records missing from it are
                // judged gone by the log, chunk by chunk.
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                ))) => break,
                Some(Err(e)) => {
                    return Err(format!(
                        "reading back from {}: {e} (past retention, or the broker is down)",
                        self.describe()
                    ))
                }
            }
        }
        Ok(out)
    }
}

impl RecordStore for KafkaRecordStore {
    fn fetch(&self, ranges: &[OffsetRange]) -> Result<Vec<Record>, String> {
        let mut slot = self
            .consumer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(self.create().map_err(|e| e.to_string())?);
        }
        let Some(consumer) = slot.as_ref() else {
            return Err("no consumer".into());
        };
        let started = Instant::now();
        let got = self.read(consumer, ranges);
        tracing::debug!(
            ranges = ranges.len(),
            records = got.as_ref().map_or(0, Vec::len),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "read back"
        );
        let _ = consumer.unassign();
        if got.is_err() {
            // A fresh consumer next time: nothing of this read lingers in its queues.
            *slot = None;
        }
        got
    }

    fn describe(&self) -> String {
        format!("Kafka at {}", self.settings.brokers)
    }
}
