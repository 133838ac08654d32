//! What every part of the demo shares: its configuration, the product
//! catalogue, and the task context (database, Kafka settings, faults,
//! telemetry, counters). The services, relays and consumers depend on this,
//! not on `system`, which wires them together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::producer::FutureProducer;

use crate::faults::Faults;
use crate::kafka::KafkaSettings;
use crate::saga::SagaMode;
use crate::store::Db;
use crate::telemetry::{OtlpSettings, Telemetry};

/// Products of the demo shop: id, unit price in cents.
pub const PRODUCTS: [(&str, i64); 8] = [
    ("keyboard", 4900),
    ("mouse", 1900),
    ("monitor", 18900),
    ("cable", 900),
    ("headset", 7900),
    ("webcam", 5900),
    ("dock", 12900),
    ("lamp", 2900),
];

#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub kafka: KafkaSettings,
    pub database_url: String,
    pub partitions: i32,
    pub seed: u64,
    pub snapshot_every: i64,
    /// How often an idle relay looks at the outbox unasked: commits wake it at once.
    pub relay_interval: Duration,
    pub relay_batch: i64,
    pub relay_delivery_timeout: Duration,
    /// Starting stock of each product.
    pub initial_stock: i64,
    /// How outbox rows reach Kafka.
    pub relay: RelayMode,
    /// Where to export spans (OpenTelemetry OTLP); None: trace context only.
    pub otlp: Option<OtlpSettings>,
    /// The orchestrator's step deadline (Temporal's `startToCloseTimeout`): a
    /// saga waiting longer than this for a step's reply compensates.
    pub step_timeout: Duration,
    /// How new orders' sagas run (`--saga`).
    pub saga: SagaMode,
    /// Run the consumers of both saga modes, so that new orders can switch mode
    /// at runtime ([`DemoSystem::set_saga_mode`], the GUI); else only `saga`'s:
    /// a choreographed run has no orchestrator and writes no command topic.
    pub saga_switchable: bool,
    /// Write values in the Confluent wire format (magic byte 0, the schema id, then JSON or
    /// Avro) with the ids a Schema Registry gave the contracts. None: plain JSON
    /// (CloudEvents binary mode). A contract without an id is written plain.
    pub values: Option<std::sync::Arc<crate::values::ValueCodec>>,
}

/// The outbox relay: polling the table (default, any database) or CDC from
/// PostgreSQL logical decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayMode {
    #[default]
    Poll,
    Cdc,
}

impl DemoConfig {
    pub fn new(kafka: KafkaSettings, database_url: impl Into<String>) -> DemoConfig {
        DemoConfig {
            kafka,
            database_url: database_url.into(),
            partitions: 3,
            seed: 1,
            snapshot_every: 100,
            relay_interval: Duration::from_millis(250),
            relay_batch: 500,
            relay_delivery_timeout: Duration::from_secs(3),
            initial_stock: 1_000_000,
            relay: RelayMode::Poll,
            otlp: None,
            step_timeout: Duration::from_secs(30),
            saga: SagaMode::Orchestration,
            saga_switchable: false,
            values: None,
        }
    }

    /// The bytes of an outbox row's value and their media type: the data as JSON, or framed
    /// by [`DemoConfig::values`] with the registry's schema id for its contract.
    pub fn value_bytes(
        &self,
        env: &crate::envelope::Envelope,
    ) -> serde_json::Result<(Vec<u8>, &'static str)> {
        match &self.values {
            Some(codec) => codec
                .encode(env)
                .map_err(<serde_json::Error as serde::ser::Error>::custom),
            None => Ok((serde_json::to_vec(&env.data)?, "application/json")),
        }
    }

    /// The saga modes whose consumers run.
    pub fn saga_modes(&self) -> Vec<SagaMode> {
        if self.saga_switchable {
            SagaMode::ALL.to_vec()
        } else {
            vec![self.saga]
        }
    }
}

/// What every task shares. Read-only but for the error sink.
pub struct Ctx {
    pub db: Db,
    pub kafka: KafkaSettings,
    pub faults: std::sync::Arc<Faults>,
    pub config: DemoConfig,
    pub dlq_producer: FutureProducer,
    pub(crate) errors: Mutex<Vec<String>>,
    pub(crate) restarts: AtomicU64,
    /// Redeliveries a consumer recognised in `processed_events` and skipped.
    pub duplicates_skipped: AtomicU64,
    /// Writes the producer-side contract check refused.
    pub schema_refused: AtomicU64,
    /// Records consumers could not read and sent to the dlq.
    pub dead_lettered: AtomicU64,
    /// Tracers of the services and the OTLP export.
    pub telemetry: Telemetry,
    /// Outbox write → broker acknowledgement, per published row.
    pub relay_latency: LatencyLog,
    /// Outbox rows the `duplicate-publish` fault already left unmarked once.
    pub(crate) relay_duplicated: Mutex<std::collections::HashSet<i64>>,
    /// Rung after a commit that may have written outbox rows (and by the
    /// PostgreSQL listener on the trigger's NOTIFY): wakes an idle relay.
    pub outbox_written: tokio::sync::Notify,
}

/// Latencies in milliseconds (the last 100,000), for percentiles.
#[derive(Default)]
pub struct LatencyLog(Mutex<std::collections::VecDeque<u32>>);

impl LatencyLog {
    const KEEP: usize = 100_000;

    pub fn record(&self, ms: i64) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() == Self::KEEP {
                v.pop_front();
            }
            v.push_back(u32::try_from(ms.max(0)).unwrap_or(u32::MAX));
        }
    }

    /// (p50, p99, max, samples) in milliseconds; None before the first sample.
    pub fn percentiles(&self) -> Option<(u32, u32, u32, usize)> {
        let mut v: Vec<u32> = self.0.lock().ok()?.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99), v[v.len() - 1], v.len()))
    }
}

impl Ctx {
    /// Wake an idle relay: a transaction that may have written outbox rows committed.
    pub fn outbox_committed(&self) {
        self.outbox_written.notify_one();
    }

    /// An idle relay's wait: until a commit may have written outbox rows,
    /// or `relay_interval` at most (rows written elsewhere, unsignalled).
    /// False on shutdown.
    pub async fn await_outbox(&self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = shutdown.changed() => false,
            _ = self.outbox_written.notified() => true,
            _ = tokio::time::sleep(self.config.relay_interval) => true,
        }
    }

    /// A task "restarted" after an injected crash.
    pub fn note_restart(&self) {
        self.restarts.fetch_add(1, Ordering::SeqCst);
    }

    /// Background errors surface to the caller (GUI status line, headless stderr).
    pub fn report_error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            if v.len() < 1000 {
                v.push(e);
            }
        }
    }
}
