//! Kafka clients of the demo: one place for client settings, topic set-up and lag.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("Kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("cannot reach Kafka at {brokers}: {why}")]
    Unreachable { brokers: String, why: String },
    #[error("creating topic {topic}: {why}")]
    Topic { topic: String, why: String },
    #[error("topic {topic} exists with {actual} partitions, {wanted} wanted")]
    PartitionMismatch {
        topic: String,
        actual: usize,
        wanted: i32,
    },
}

/// Controls of an embedded broker (the mock cluster) that a real Kafka does not offer.
pub trait BrokerControl: Send + Sync {
    fn create_topic(&self, name: &str, partitions: i32) -> Result<(), String>;
    /// Take every broker down (`true`) or bring them back.
    fn set_down(&self, down: bool) -> Result<(), String>;
}

/// Where Kafka is and how to talk to it.
#[derive(Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Extra librdkafka properties (SASL/SSL, ...), applied last.
    pub extra: Vec<(String, String)>,
    /// Present for the embedded broker.
    pub control: Option<Arc<dyn BrokerControl>>,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field(
                "extra_keys",
                &self.extra.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("embedded", &self.control.is_some())
            .finish()
    }
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.into(),
            extra: vec![],
            control: None,
        }
    }

    pub fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "eventscope-demo")
            .set("socket.connection.setup.timeout.ms", "5000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("log_level", "3");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// The relay's producer: idempotent, acks=all; deliveries time out after
    /// `timeout` so an outage leaves rows unpublished instead of hanging. No
    /// linger: the relay queues a whole claimed batch at once and then waits for
    /// it, so waiting for more records only delayed the batch's last request
    /// (2 ms of linger cost 2–4 ms of p50 and 3–5 ms of p99 when paced).
    pub fn producer(&self, timeout: Duration) -> Result<FutureProducer, KafkaSetupError> {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", timeout.as_millis().to_string());
        Ok(c.create()?)
    }

    /// A consumer in `group`: offsets stored by hand after the effect commits,
    /// committed in the background.
    pub fn consumer(&self, group: &str) -> Result<StreamConsumer, KafkaSetupError> {
        let mut c = self.base();
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "100")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("topic.metadata.refresh.interval.ms", "2000");
        Ok(c.create()?)
    }

    /// Check the cluster answers within `timeout`.
    /// The reason names what librdkafka reported on the way (an authentication
    /// or TLS failure, a refused connection), not just the metadata timeout.
    pub fn probe(&self, timeout: Duration) -> Result<usize, KafkaSetupError> {
        let consumer: BaseConsumer<ProbeContext> =
            self.base().create_with_context(ProbeContext::default())?;
        let md = consumer.fetch_metadata(None, timeout).map_err(|e| {
            // Errors reach the context through the main queue: serve it.
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(20));
            }
            let why = match consumer.context().last_error() {
                Some(reported) => format!("{reported} ({e})"),
                None => e.to_string(),
            };
            KafkaSetupError::Unreachable {
                brokers: self.brokers.clone(),
                why,
            }
        })?;
        Ok(md.brokers().len())
    }

    /// Create the topics that do not exist with `partitions` partitions; report
    /// existing topics with another partition count.
    pub async fn ensure_topics(
        &self,
        topics: &[&str],
        partitions: i32,
    ) -> Result<(), KafkaSetupError> {
        let existing = self.partition_counts(Duration::from_secs(5))?;
        let mut missing = Vec::new();
        for t in topics {
            match existing.get(*t) {
                Some(n) if *n as i32 != partitions => {
                    return Err(KafkaSetupError::PartitionMismatch {
                        topic: (*t).to_owned(),
                        actual: *n,
                        wanted: partitions,
                    })
                }
                Some(_) => {}
                None => missing.push(*t),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if let Some(control) = &self.control {
            for t in missing {
                control
                    .create_topic(t, partitions)
                    .map_err(|why| KafkaSetupError::Topic {
                        topic: t.to_owned(),
                        why,
                    })?;
            }
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self.base().create()?;
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for r in admin.create_topics(&new, &opts).await? {
            match r {
                Ok(_) => {}
                Err((topic, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(%topic, "already exists");
                }
                Err((topic, code)) => {
                    return Err(KafkaSetupError::Topic {
                        topic,
                        why: code.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Partition count of every topic in the cluster.
    pub fn partition_counts(
        &self,
        timeout: Duration,
    ) -> Result<HashMap<String, usize>, KafkaSetupError> {
        let consumer: BaseConsumer = self.base().create()?;
        let md =
            consumer
                .fetch_metadata(None, timeout)
                .map_err(|e| KafkaSetupError::Unreachable {
                    brokers: self.brokers.clone(),
                    why: e.to_string(),
                })?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect())
    }

    /// High watermark (the next offset to be written) of every partition of
    /// `topics` that exists, in one round trip: a ListOffsets (latest) for every
    /// partition at once. Asked partition by partition it cost a round trip
    /// each (across a network, 64 partitions took 64). A partition the batched
    /// answer leaves unclear is asked alone.
    pub fn high_watermarks(
        &self,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<HashMap<(String, i32), i64>, KafkaSetupError> {
        let consumer: BaseConsumer = self.base().create()?;
        let md = consumer.fetch_metadata(None, timeout)?;
        let mut latest = TopicPartitionList::new();
        for t in md.topics().iter().filter(|t| topics.contains(&t.name())) {
            for p in t.partitions() {
                latest.add_partition_offset(t.name(), p.id(), Offset::End)?;
            }
        }
        let mut out = HashMap::new();
        if latest.count() == 0 {
            return Ok(out);
        }
        // A time of -1 (`Offset::End`) asks for the latest offset.
        let got = consumer.offsets_for_times(latest, timeout)?;
        for e in got.elements() {
            let high = match (e.error(), e.offset()) {
                (Ok(()), Offset::Offset(o)) if o >= 0 => o,
                _ => {
                    consumer
                        .fetch_watermarks(e.topic(), e.partition(), timeout)?
                        .1
                }
            };
            out.insert((e.topic().to_owned(), e.partition()), high);
        }
        Ok(out)
    }

    /// Each group's lag on its topics against the log's end `highs`, in the
    /// order given: what the group committed subtracted, summed; a partition
    /// it never committed on counts whole. The groups are asked side by side
    /// ([`side_by_side`]), so the whole takes about one round trip, not one
    /// per group (six groups one after the other took 0.6-0.7 s on the
    /// embedded broker).
    pub fn group_lags(
        &self,
        groups: &[(&str, &[&str])],
        highs: &HashMap<(String, i32), i64>,
        timeout: Duration,
    ) -> Result<Vec<i64>, KafkaSetupError> {
        side_by_side(groups, |(group, topics)| {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in highs.keys().filter(|(t, _)| topics.contains(&t.as_str())) {
                tpl.add_partition(t, *p);
            }
            if tpl.count() == 0 {
                return Ok(0);
            }
            let mut lag = 0;
            for e in self.committed(group, tpl, timeout)?.elements() {
                let high = highs
                    .get(&(e.topic().to_owned(), e.partition()))
                    .copied()
                    .unwrap_or(0);
                let done = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                lag += (high - done).max(0);
            }
            Ok(lag)
        })
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(KafkaSetupError::Unreachable {
                    brokers: self.brokers.clone(),
                    why: "the offset fetch panicked".to_owned(),
                })
            })
        })
        .collect()
    }

    /// What `group` has committed on the partitions of `tpl` (OffsetFetch
    /// through a client that carries the group's id but never joins it).
    pub fn committed(
        &self,
        group: &str,
        tpl: TopicPartitionList,
        timeout: Duration,
    ) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
        let mut c = self.base();
        c.set("group.id", group).set("enable.auto.commit", "false");
        let consumer: BaseConsumer = c.create()?;
        consumer.committed_offsets(tpl, timeout)
    }
}

/// Most blocking broker calls [`side_by_side`] runs at the same time.
pub const SIDE_BY_SIDE: usize = 8;

/// `ask` for each item, up to [`SIDE_BY_SIDE`] at a time on threads of their
/// own, results in the items' order; None where `ask` panicked.
pub fn side_by_side<I: Sync, T: Send>(items: &[I], ask: impl Fn(&I) -> T + Sync) -> Vec<Option<T>> {
    let ask = &ask;
    let mut out = Vec::with_capacity(items.len());
    for wave in items.chunks(SIDE_BY_SIDE) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = wave.iter().map(|i| scope.spawn(move || ask(i))).collect();
            out.extend(handles.into_iter().map(|h| h.join().ok()));
        });
    }
    out
}

/// Keeps the last error librdkafka reported while probing (its messages name
/// authentication and TLS failures; the metadata call only says it timed out).
#[derive(Default)]
pub struct ProbeContext {
    last: std::sync::Mutex<Option<String>>,
}

impl ProbeContext {
    pub fn last_error(&self) -> Option<String> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}

impl rdkafka::ClientContext for ProbeContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "kafka client error while probing");
        if let Ok(mut l) = self.last.lock() {
            // Prefer the most specific report: authentication beats transport.
            let auth = reason.contains("SASL")
                || reason.contains("SSL")
                || reason.contains("uthentication");
            // "n/n brokers are down" is a summary: the cause came before it.
            let summary = reason.contains("brokers are down");
            let keep_old = l.as_deref().is_some_and(|o| {
                summary
                    || ((o.contains("SASL") || o.contains("SSL") || o.contains("uthentication"))
                        && !auth)
            });
            if !keep_old {
                *l = Some(reason.to_owned());
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ProbeContext {}
