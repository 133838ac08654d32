//! The observer's model: pure and deterministic. Records in, anomalies and states out;
//! time is always passed in (`now_ms`), never read from a clock.
//!
//! - [`record`]: the raw Kafka record;
//! - [`envelope`]: record → [`envelope::ObservedEvent`] (CloudEvents binary/structured,
//!   Debezium outbox, plain JSON) or a [`envelope::DecodeError`];
//! - [`log`]: the append-only [`log::ObservedLog`] with its indexes;
//! - [`detect`]: the anomaly lints;
//! - [`timetravel`]: cursor, folds with snapshots, diffs;
//! - [`jsonl`]: recorded sessions as JSON Lines;
//! - [`redact`]: personal data masking (inspector, exports).

pub mod detect;
pub mod envelope;
pub mod flow;
pub mod groups;
pub mod jsonl;
pub mod log;
pub mod record;
pub mod redact;
pub mod schemas;
pub mod store;
pub mod timetravel;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use self::detect::{Anomaly, AnomalyKind, DetectConfig, Detectors};
use self::envelope::DecodeConfig;
use self::log::{DropStats, LogError, LogIndex, LogStats, ObservedLog};
use self::record::Record;
use self::timetravel::{AggregateState, Fold, StateEngine};

/// Everything the model can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    pub decode: DecodeConfig,
    pub detect: DetectConfig,
    /// Snapshot every N applied events per aggregate.
    pub snapshot_every: usize,
    /// Anomalies kept per kind (all are counted; beyond this only the count grows).
    pub max_anomalies_per_kind: usize,
    /// Bytes the observed log may hold before its oldest records are dropped
    /// (`--memory-limit`; see [`ObservedLog::shed`]). `None`: no limit.
    pub memory_limit: Option<u64>,
    /// Where evicted payloads are read back from (see [`store`]): under the memory limit the
    /// log gives back payload bytes first, keeping rows and indexes. None: bytes stay in memory.
    #[serde(skip)]
    pub record_store: store::RecordStoreHandle,
    /// With a record store: payload bytes the log keeps at most, under any memory limit (the
    /// index-only mode, see [`ObservedLog::set_payload_budget`]). None: evicted only under
    /// the limit.
    pub payload_budget: Option<u64>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            decode: DecodeConfig::default(),
            detect: DetectConfig::default(),
            snapshot_every: 100,
            max_anomalies_per_kind: 100_000,
            memory_limit: None,
            record_store: store::RecordStoreHandle::default(),
            payload_budget: None,
        }
    }
}

/// The observed log, the lints and their findings, and the state engine.
pub struct Model {
    cfg: ModelConfig,
    log: ObservedLog,
    detectors: Detectors,
    anomalies: Vec<Anomaly>,
    counts: BTreeMap<AnomalyKind, u64>,
    anomaly_at: BTreeSet<LogIndex>,
    /// Grouped findings so far: (kind, group key) → position in `anomalies` (None: counted but
    /// not stored, past the per-kind limit).
    groups: HashMap<(AnomalyKind, String), Option<usize>>,
    /// Set once the backlog that existed at connect time has been read (the time it was cut).
    backlog_end: Option<i64>,
    /// The consumer groups as last judged (see [`Model::observe_groups`]).
    group_lags: Vec<groups::GroupLag>,
    states: StateEngine,
    /// Under a memory limit, the flow map kept as records arrive: the report's flow still
    /// counts the records dropped since (without a limit it is built from the log).
    flow: Option<flow::FlowMap>,
    /// The log's round of forgetting the lints and the state engine have caught up with.
    forget_epoch: u64,
}

impl Default for Model {
    fn default() -> Self {
        Self::new(ModelConfig::default())
    }
}

/// Records with their envelopes decoded ([`decode_batch`]), for [`Model::ingest_decoded`].
pub type DecodedBatch = (
    Vec<Record>,
    Vec<Result<envelope::ObservedEvent, envelope::DecodeError>>,
);

/// Decode a batch's envelopes as the model would: a pipeline decodes one batch on a thread
/// of its own while the model appends the one before.
pub fn decode_batch(batch: Vec<Record>, cfg: &DecodeConfig) -> DecodedBatch {
    let decoded = batch
        .iter()
        .map(|r| envelope::decode_envelope(r, cfg))
        .collect();
    (batch, decoded)
}

/// Event counters of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub observed: u64,
    pub unique: u64,
    pub duplicate_deliveries: u64,
    pub poison: u64,
}

impl From<LogStats> for EventCounts {
    fn from(s: LogStats) -> Self {
        EventCounts {
            observed: s.observed,
            unique: s.unique,
            duplicate_deliveries: s.duplicate_deliveries,
            poison: s.poison,
        }
    }
}

/// The model's part of the report (DESIGN.md): `events`, `anomalies`, `anomaly_counts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFragment {
    pub events: EventCounts,
    /// Sorted by the log index they are reported at.
    pub anomalies: Vec<Anomaly>,
    /// Every kind, zero included.
    pub anomaly_counts: BTreeMap<String, u64>,
    /// Who publishes and consumes what (see [`flow::FlowMap`]).
    pub flow: serde_json::Value,
    /// What the memory limit dropped (the lints' verdicts above are kept).
    #[serde(default)]
    pub memory: DropStats,
}

impl ReportFragment {
    /// As a JSON object, ready to merge into the report.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl Model {
    pub fn new(cfg: ModelConfig) -> Self {
        let mut log = ObservedLog::new(cfg.decode.clone());
        log.set_memory_limit(
            cfg.memory_limit
                .map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
        );
        log.set_record_store(cfg.record_store.clone());
        log.set_payload_budget(
            cfg.payload_budget
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
        );
        Model {
            log,
            detectors: Detectors::new(cfg.detect.clone()),
            anomalies: Vec::new(),
            counts: AnomalyKind::ALL.iter().map(|&k| (k, 0)).collect(),
            anomaly_at: BTreeSet::new(),
            groups: HashMap::new(),
            backlog_end: None,
            group_lags: Vec::new(),
            states: StateEngine::new(cfg.snapshot_every),
            flow: cfg.memory_limit.map(|_| flow::FlowMap::default()),
            forget_epoch: 0,
            cfg,
        }
    }

    /// Append one record and run the lints on it. Returns its log index and how many anomalies
    /// it raised.
    pub fn ingest(&mut self, rec: &Record, now_ms: i64) -> Result<(LogIndex, usize), LogError> {
        let idx = self.log.append(rec, now_ms)?;
        Ok((idx, self.after_append(idx, now_ms)))
    }

    /// [`Model::ingest`] with the envelope decoded already ([`decode_batch`], on another
    /// thread, with this model's decode settings).
    pub fn ingest_decoded(
        &mut self,
        rec: &Record,
        decoded: &Result<envelope::ObservedEvent, envelope::DecodeError>,
        now_ms: i64,
    ) -> Result<(LogIndex, usize), LogError> {
        let idx = self.log.append_decoded(rec, decoded, now_ms)?;
        Ok((idx, self.after_append(idx, now_ms)))
    }

    /// The lints, the flow map and the memory limit on a record just appended; how many
    /// anomalies it raised.
    fn after_append(&mut self, idx: LogIndex, now_ms: i64) -> usize {
        let found = self.detectors.on_append(&self.log, idx, now_ms);
        let n = found.len();
        self.record_anomalies(found);
        if let Some(f) = &mut self.flow {
            f.add(&self.log, idx);
        }
        // After the lints and the flow map: they have seen the record; what they found stays.
        if self.log.memory_limit().is_some() {
            self.log.set_lint_bytes(self.detectors.state_bytes());
        }
        self.log.shed();
        if self.log.forget_epoch() != self.forget_epoch {
            self.forget_epoch = self.log.forget_epoch();
            self.detectors.on_forget(&self.log);
            self.states.on_forget(&self.log);
        }
        n
    }

    /// Run the time-based lints. Returns how many anomalies were raised.
    pub fn tick(&mut self, now_ms: i64) -> usize {
        let found = self.detectors.on_tick(&self.log, now_ms);
        let n = found.len();
        self.record_anomalies(found);
        n
    }

    /// Every record that existed when the observer connected has been read (`inspect`, the GUI
    /// on connecting, `import` at the end of the file): the lints give their "never seen"
    /// verdicts now, judging by the records' own times as of `as_of_ms` (when the backlog was
    /// cut). Later records are the live tail, judged by [`Model::tick`]'s clock. Only the first
    /// call counts. Returns how many anomalies were raised.
    pub fn end_of_backlog(&mut self, as_of_ms: i64) -> usize {
        if self.backlog_end.is_some() {
            return 0;
        }
        self.backlog_end = Some(as_of_ms);
        let found = self.detectors.on_backlog_end(&self.log, as_of_ms);
        let n = found.len();
        self.record_anomalies(found);
        n
    }

    /// Consumer groups judged from samples of their committed offsets: a partition that
    /// stalls, stops or rewinds is a `consumer-stall` at the record the group has not
    /// processed (one finding per group, partition and verdict; the same condition seen
    /// again updates it). Returns how many new findings were raised.
    pub fn observe_groups(&mut self, lags: &[groups::GroupLag]) -> usize {
        self.group_lags = lags.to_vec();
        if !self.detectors.is_enabled(AnomalyKind::ConsumerStall) {
            return 0;
        }
        let before = self.counts.get(&AnomalyKind::ConsumerStall).copied();
        let mut found = Vec::new();
        for p in lags.iter().flat_map(|g| &g.partitions) {
            if !matches!(
                p.verdict,
                groups::Verdict::Stall | groups::Verdict::Stop | groups::Verdict::Rewind
            ) {
                continue;
            }
            let Some(idx) = p.at else { continue };
            let detail = format!(
                "group {} on {}[{}]: {} ({}; lag {} records{})",
                p.group,
                p.topic,
                p.partition,
                p.verdict.as_str(),
                p.detail,
                p.lag,
                p.lag_ms
                    .map(|ms| format!(", {} s", ms / 1000))
                    .unwrap_or_default()
            );
            let mut a = Anomaly::at(AnomalyKind::ConsumerStall, &self.log, idx, detail);
            let (partition, offset) = (a.partition, a.offset);
            a.group = Some(detect::AnomalyGroup {
                key: format!(
                    "{}|{}|{}|{}",
                    p.group,
                    p.topic,
                    p.partition,
                    p.verdict.as_str()
                ),
                count: 1,
                first_partition: partition,
                first_offset: offset,
                last_partition: partition,
                last_offset: offset,
            });
            found.push(a);
        }
        self.record_anomalies(found);
        let after = self.counts.get(&AnomalyKind::ConsumerStall).copied();
        (after.unwrap_or(0) - before.unwrap_or(0)) as usize
    }

    /// When the backlog ended (its cut time), if it has.
    pub fn backlog_end(&self) -> Option<i64> {
        self.backlog_end
    }

    fn record_anomalies(&mut self, found: Vec<Anomaly>) {
        for a in found {
            if let Some(g) = &a.group {
                if let Some(&pos) = self.groups.get(&(a.kind, g.key.clone())) {
                    // A grouped finding grows: the stored one is replaced, not counted again;
                    // the new record still marks its row.
                    if let Some(&i) = a.log_indices.last() {
                        self.anomaly_at.insert(i);
                    }
                    if let Some(slot) = pos.and_then(|p| self.anomalies.get_mut(p)) {
                        *slot = a;
                    }
                    continue;
                }
            }
            let c = self.counts.entry(a.kind).or_insert(0);
            *c += 1;
            if let Some(&i) = a.log_indices.first() {
                self.anomaly_at.insert(i);
            }
            let stored = *c <= self.cfg.max_anomalies_per_kind as u64;
            if let Some(g) = &a.group {
                let pos = stored.then_some(self.anomalies.len());
                self.groups.insert((a.kind, g.key.clone()), pos);
            }
            if stored {
                self.anomalies.push(a);
            }
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Records appended from now on are decoded through `registry` (when reading the held
    /// ones again is not possible).
    pub fn set_registry(&mut self, registry: crate::registry::RegistryHandle) {
        self.log.set_registry(registry.clone());
        self.cfg.decode.registry = registry;
    }

    /// Records appended from now on are read back from `store` (the window connected to
    /// another broker); those held already still read back from where they came from.
    pub fn set_record_store(&mut self, store: store::RecordStoreHandle) {
        self.log.set_record_store(store.clone());
        self.cfg.record_store = store;
    }

    pub fn log(&self) -> &ObservedLog {
        &self.log
    }

    /// Anomalies in the order they were found (stored up to the per-kind limit).
    pub fn anomalies(&self) -> &[Anomaly] {
        &self.anomalies
    }

    /// Counts per kind, every kind present.
    pub fn anomaly_counts(&self) -> &BTreeMap<AnomalyKind, u64> {
        &self.counts
    }

    /// Log indices anomalies are reported at (for the cursor's next/previous anomaly).
    pub fn anomaly_indices(&self) -> &BTreeSet<LogIndex> {
        &self.anomaly_at
    }

    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    pub fn detectors_mut(&mut self) -> &mut Detectors {
        &mut self.detectors
    }

    /// An aggregate's state at a cursor, using the shared snapshot cache.
    pub fn state_at(
        &mut self,
        fold: &dyn Fold,
        aggregate_id: &str,
        cursor: LogIndex,
    ) -> Option<AggregateState> {
        self.states.state_at(&self.log, fold, aggregate_id, cursor)
    }

    pub fn report(&self) -> ReportFragment {
        let mut anomalies = self.anomalies.clone();
        anomalies.sort_by_key(|a| (a.log_indices.first().copied(), a.kind));
        ReportFragment {
            events: self.log.stats().into(),
            anomalies,
            anomaly_counts: self
                .counts
                .iter()
                .map(|(k, n)| (k.as_str().to_owned(), *n))
                .collect(),
            flow: {
                let map = match &self.flow {
                    Some(f) => {
                        let mut f = f.clone();
                        if let Some(last) = self.log.len().checked_sub(1) {
                            let last = LogIndex::try_from(last).unwrap_or(LogIndex::MAX);
                            f.add_anomalies(&self.log, &self.anomalies, last);
                        }
                        f
                    }
                    None => flow::FlowMap::build(&self.log, self.log.held(), &self.anomalies),
                };
                let mut f = map.view(&self.log);
                f.add_groups(&self.group_lags);
                f.to_json()
            },
            memory: self.log.drop_stats(),
        }
    }

    /// Rebuild a model offline from JSON Lines. Each record is ingested at `now` = its
    /// timestamp (else the previous one). A recording is all backlog: once it is read, the
    /// lints give their verdicts as of `settle_ms` after the last record's time. A line that
    /// cannot be read (cut short, not a record, too large to store) is left out and named in
    /// [`Recording::bad_lines`]; every good line is read.
    pub fn from_jsonl<R: BufRead>(
        cfg: ModelConfig,
        r: R,
        settle_ms: i64,
    ) -> Result<Recording, ImportModelError> {
        let mut m = Model::new(cfg);
        let mut bad = BadLines::default();
        let mut now = 0i64;
        for (line, rec) in jsonl::read_numbered(r) {
            let rec = match rec {
                Ok(rec) => rec,
                Err(e @ jsonl::ImportError::Io { .. }) => return Err(e.into()),
                Err(e @ jsonl::ImportError::Malformed { .. }) => {
                    bad.push(line, e.to_string());
                    continue;
                }
            };
            now = now.max(rec.timestamp_ms.unwrap_or(now));
            match m.ingest(&rec, now) {
                Ok(_) => {}
                Err(source @ LogError::Full(_)) => {
                    return Err(ImportModelError::Log { line, source })
                }
                Err(e @ (LogError::TooLarge(_) | LogError::Unreadable(..))) => {
                    bad.push(line, format!("line {line}: {e}"))
                }
            }
        }
        m.end_of_backlog(now.saturating_add(settle_ms));
        Ok(Recording {
            model: m,
            bad_lines: bad.kept,
            bad_line_count: bad.count,
        })
    }
}

/// A recording read back: the model of its good lines and the lines left out.
pub struct Recording {
    pub model: Model,
    /// The first [`BAD_LINES_KEPT`] lines left out, in file order.
    pub bad_lines: Vec<BadLine>,
    /// Every line left out.
    pub bad_line_count: usize,
}

/// Bad lines named one by one; beyond this only the count grows.
pub const BAD_LINES_KEPT: usize = 1000;

/// A line of a recording that was left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    /// Why, starting with `line N:`.
    pub reason: String,
}

#[derive(Default)]
struct BadLines {
    kept: Vec<BadLine>,
    count: usize,
}

impl BadLines {
    fn push(&mut self, line: usize, reason: String) {
        self.count += 1;
        if self.kept.len() < BAD_LINES_KEPT {
            self.kept.push(BadLine { line, reason });
        }
    }
}

/// Rebuilding a model from a file failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportModelError {
    #[error(transparent)]
    Import(#[from] jsonl::ImportError),
    #[error("line {line}: {source}")]
    Log {
        line: usize,
        #[source]
        source: LogError,
    },
}

/// Conveniences for callers that think in strings and raw records.
impl Model {
    /// Was an event with this id observed?
    pub fn has_event(&self, event_id: &str) -> bool {
        self.log
            .sym(event_id)
            .is_some_and(|s| self.log.has_event(s))
    }

    /// Every record held, rebuilt byte for byte, in log order (without those the memory
    /// limit dropped).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.log.held().filter_map(|i| self.log.record(i))
    }

    /// The same records read again with `cfg` (same order, same log indices): after a profile
    /// changed, or once a schema registry that did not answer can decode what it could not.
    /// Switched-off lints stay off; the end of the backlog is kept. Records the memory limit
    /// dropped stay dropped, counted, with the findings made about them. A held record that
    /// cannot be read back (its broker does not answer) is an error: nothing is re-read.
    pub fn reread(&self, cfg: ModelConfig) -> Result<Model, LogError> {
        let mut model = Model::new(cfg);
        for k in AnomalyKind::ALL {
            if !self.detectors().is_enabled(k) {
                model.detectors_mut().set_enabled(k, false);
            }
        }
        // Records the memory limit dropped cannot be read again: their indices stay taken,
        // and the verdicts given about them stay.
        model.log.continue_drops_from(&self.log);
        let gone: Vec<Anomaly> = self
            .anomalies
            .iter()
            .filter(|a| {
                a.log_indices
                    .first()
                    .is_some_and(|&i| self.log.is_dropped(i))
            })
            .cloned()
            .collect();
        model.record_anomalies(gone);
        for idx in self.log.held() {
            // Left out, it would shift every later index (the cursor, the selection, the
            // findings): refused instead, the caller keeps this model.
            let Some(rec) = self.log.record(idx) else {
                let why = self
                    .log
                    .unreadable(idx)
                    .unwrap_or_else(|| "its bytes cannot be read".to_owned());
                return Err(LogError::Unreadable(idx, why));
            };
            // Read back, later, from the store it came from (the window may have connected
            // to another broker since).
            model.log.append_like(&self.log, Some(idx));
            let now = rec.timestamp_ms.unwrap_or(0);
            model.ingest(&rec, now)?;
        }
        model.log.append_like(&self.log, None);
        if let Some(cut) = self.backlog_end() {
            model.end_of_backlog(cut);
        }
        Ok(model)
    }

    /// The report's `events` counters.
    pub fn event_counts(&self) -> EventCounts {
        EventCounts::from(self.log.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::log::tests::Ev;
    use super::*;

    #[test]
    fn report_shape() {
        let mut m = Model::default();
        let a = Ev {
            id: "a",
            version: Some(1),
            ..Ev::default()
        }
        .rec();
        m.ingest(&a, 0).unwrap();
        m.ingest(&a, 1).unwrap();
        m.ingest(&Record::new("orders", 0, 9).with_value(b"\xff".to_vec()), 2)
            .unwrap();
        m.tick(1_000_000);
        let j = m.report().to_json();
        assert_eq!(
            j["events"],
            serde_json::json!({"observed":3,"unique":1,"duplicate_deliveries":1,"poison":1})
        );
        assert_eq!(j["anomaly_counts"]["duplicate-delivery"], 1);
        assert_eq!(j["anomaly_counts"]["poison-message"], 1);
        // An `OrderCreated` (a start type) without its terminal event, long idle: a
        // choreographed saga that is stuck, though its chain carries no command.
        assert_eq!(j["anomaly_counts"]["stuck-saga"], 1);
        assert_eq!(j["anomaly_counts"]["lost-event"], 0);
        let first = &j["anomalies"][0];
        for key in [
            "kind",
            "event_id",
            "correlation_id",
            "topic",
            "partition",
            "offset",
            "detail",
        ] {
            assert!(first.get(key).is_some(), "{key}");
        }
        assert_eq!(
            m.anomaly_indices().iter().copied().collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    /// A grouped finding is counted once per group, stored or not, and marks every row.
    #[test]
    fn grouped_findings_count_once_per_group() {
        let cfg = ModelConfig {
            max_anomalies_per_kind: 1,
            ..ModelConfig::default()
        };
        let mut m = Model::new(cfg);
        for (i, ty) in ["A", "B", "A", "B", "A"].into_iter().enumerate() {
            let id = format!("e{i}");
            let r = Ev {
                id: &id,
                ty,
                corr: None,
                offset: i as i64,
                ..Ev::default()
            }
            .rec();
            m.ingest(&r, 0).unwrap();
        }
        assert_eq!(m.anomaly_counts()[&AnomalyKind::MissingCorrelation], 2);
        assert_eq!(m.anomalies().len(), 1);
        let g = m.anomalies()[0].group.as_ref().unwrap();
        assert_eq!((g.count, g.first_offset, g.last_offset), (3, 0, 4));
        assert_eq!(m.anomaly_indices().len(), 5);
        let j = m.report().to_json();
        assert_eq!(j["anomalies"][0]["group"]["count"], 3);
    }

    #[test]
    fn jsonl_rebuilds_the_same_model() {
        let mut m = Model::default();
        let mut recs = Vec::new();
        for i in 0..20i64 {
            let id = format!("e{}", i % 15);
            let cause = (i > 0).then(|| format!("e{}", i - 1));
            recs.push(
                Ev {
                    id: &id,
                    cause: cause.as_deref(),
                    offset: i,
                    ts: 1_000 + i,
                    version: Some(i + 1),
                    ..Ev::default()
                }
                .rec(),
            );
        }
        recs.push(Record::new("orders", 1, 0).with_value(vec![1, 2, 3]));
        for r in &recs {
            m.ingest(r, r.timestamp_ms.unwrap_or(0)).unwrap();
        }
        m.tick(1_019 + 100_000);
        let mut buf = Vec::new();
        jsonl::write(
            (0..m.log().len() as u32)
                .filter_map(|i| m.log().record(i))
                .collect::<Vec<_>>()
                .iter(),
            &mut buf,
        )
        .unwrap();
        let m2 = Model::from_jsonl(ModelConfig::default(), &buf[..], 100_000)
            .unwrap()
            .model;
        assert_eq!(m.report(), m2.report());
        assert!(m2.report().anomaly_counts["duplicate-delivery"] == 5);
    }

    /// The lints' verdicts outlive the records they name: a finding made before the drop
    /// stays as it was, a verdict given after it names the dropped record as dropped, and
    /// what the lints know of dropped records still counts (a redelivery of a dropped event
    /// is a duplicate; a causation id naming one is no broken chain).
    #[test]
    fn verdicts_survive_the_memory_limit() {
        let cfg = ModelConfig {
            memory_limit: Some(3 << 20),
            ..ModelConfig::default()
        };
        let mut m = Model::new(cfg);
        let dup = Ev {
            id: "dup",
            offset: 1,
            ..Ev::default()
        }
        .rec();
        m.ingest(&dup, 0).unwrap();
        m.ingest(&dup, 0).unwrap();
        let orphan = Ev {
            id: "orphan",
            cause: Some("never-seen"),
            offset: 2,
            ..Ev::default()
        }
        .rec();
        let (orphan_at, _) = m.ingest(&orphan, 0).unwrap();
        let before = m.anomalies().to_vec();
        let dup_finding = before
            .iter()
            .find(|a| a.kind == AnomalyKind::DuplicateDelivery)
            .cloned()
            .unwrap();
        // Until the three are dropped, and while the ids of dropped records are remembered.
        let mut i = 0;
        while m.log().first_held() <= orphan_at || i < 20_000 {
            m.ingest(&log::tests::filler(i), 0).unwrap();
            i += 1;
        }
        assert_eq!(m.log().drop_stats().forgotten_ids, 0);
        let first = m.log().first_held();
        assert!(first > orphan_at, "{first}");
        assert!(m.log().record(dup_finding.log_indices[0]).is_none());
        // Found before the drop: kept as found, coordinates and all.
        assert!(m.anomalies().contains(&dup_finding));
        assert_eq!(dup_finding.event_id.as_deref(), Some("dup"));
        assert_eq!(
            (dup_finding.topic.as_str(), dup_finding.offset),
            ("orders", 1)
        );
        // Again after the drop: still a duplicate, said plainly.
        m.ingest(&dup, 0).unwrap();
        let last = m.anomalies().last().unwrap();
        assert_eq!(last.kind, AnomalyKind::DuplicateDelivery);
        assert!(
            last.detail.contains("earlier deliveries were dropped"),
            "{}",
            last.detail
        );
        // A child of a dropped event: its cause was observed, no broken chain.
        let child = Ev {
            id: "child",
            cause: Some("e0"),
            offset: 3,
            ..Ev::default()
        }
        .rec();
        m.ingest(&child, 0).unwrap();
        m.end_of_backlog(2_000_000);
        let broken: Vec<_> = m
            .anomalies()
            .iter()
            .filter(|a| a.kind == AnomalyKind::BrokenChain)
            .collect();
        // Judged after the drop, about a dropped record: named as dropped.
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert_eq!(broken[0].log_indices[0], orphan_at);
        assert!(broken[0].detail.contains("never-seen"));
        assert!(
            broken[0].detail.contains("dropped: memory limit"),
            "{}",
            broken[0].detail
        );
        let r = m.report();
        assert_eq!(r.memory.dropped_records, u64::from(first));
        assert_eq!(r.events.observed, i as u64 + 5);
        assert_eq!(r.anomaly_counts["duplicate-delivery"], 2);
        let j = r.to_json();
        assert_eq!(j["memory"]["dropped_records"], u64::from(first));
        assert_eq!(j["memory"]["limit_bytes"], 3 << 20);
        // Read again (another profile): the dropped records stay dropped and counted, the
        // held ones keep their indices, the verdicts about dropped ones stay.
        let cfg = ModelConfig {
            memory_limit: None,
            ..m.config().clone()
        };
        let again = m.reread(cfg).unwrap();
        assert_eq!(again.log().held(), m.log().held());
        let (a, b) = (again.report(), m.report());
        assert_eq!(a.events, b.events);
        assert_eq!(a.memory.dropped_records, b.memory.dropped_records);
        assert_eq!(a.memory.held_records, b.memory.held_records);
        assert_eq!(a.anomaly_counts["duplicate-delivery"], 2);
        assert_eq!(a.anomaly_counts["broken-chain"], 1);
        assert!(again.anomalies().contains(&dup_finding));
        for i in [first, first + 1, m.log().len() as u32 - 1] {
            assert_eq!(again.log().record(i), m.log().record(i));
        }
    }

    /// Past the horizon of remembered ids (an eighth of the limit) the oldest ids of dropped
    /// records are forgotten: the lints' state goes with them, memory stays bounded, and a
    /// forgotten id seen again gives no false verdict (a cause that was forgotten is no
    /// broken chain, an aggregate seen again past its first versions is no lost event); a
    /// cause never seen still is one.
    #[test]
    fn ids_of_dropped_records_are_forgotten_without_false_verdicts() {
        let limit = 1 << 20;
        let mut m = Model::new(ModelConfig {
            memory_limit: Some(limit),
            ..ModelConfig::default()
        });
        let early = |id: &'static str, version: i64, offset: i64| {
            Ev {
                id,
                agg: "order-early",
                version: Some(version),
                offset,
                ..Ev::default()
            }
            .rec()
        };
        let filler = |i: i64| {
            let (id, agg) = (format!("e{i}"), format!("order-{i}"));
            Ev {
                id: &id,
                agg: &agg,
                corr: Some(&agg),
                version: Some(1),
                offset: i + 10,
                ts: 1_000 + i,
                ..Ev::default()
            }
            .rec()
        };
        let mut peak = [0usize; 2];
        for i in 0..150_000i64 {
            m.ingest(&filler(i), 0).unwrap();
            // Bounded: what is held does not grow with the records and ids gone through.
            let held = m.log().approx_bytes();
            peak[usize::from(i >= 50_000)] = peak[usize::from(i >= 50_000)].max(held);
        }
        assert!(peak[1] <= peak[0] + peak[0] / 10, "{peak:?}");
        assert!(peak[1] < 2 * limit as usize, "{peak:?}");
        let d = m.report().memory;
        assert!(d.forgotten_ids > 200_000, "{d:?}");
        // An aggregate and an event, dropped and then forgotten (the newest forgotten are
        // remembered approximately).
        m.ingest(&early("early-1", 1, 1), 0).unwrap();
        m.ingest(&early("early-2", 2, 2), 0).unwrap();
        let mut i = 150_000;
        while m.log().sym("order-early").is_some() || m.log().sym("early-2").is_some() {
            m.ingest(&filler(i), 0).unwrap();
            i += 1;
        }
        let before = m.report().anomaly_counts.clone();
        m.ingest(&early("early-3", 3, 200_000), 0).unwrap();
        let child = Ev {
            id: "child",
            cause: Some("early-2"),
            offset: 200_001,
            ..Ev::default()
        }
        .rec();
        m.ingest(&child, 0).unwrap();
        let orphan = Ev {
            id: "orphan",
            cause: Some("never-seen-cause"),
            offset: 200_002,
            ..Ev::default()
        }
        .rec();
        let (orphan_at, _) = m.ingest(&orphan, 0).unwrap();
        m.end_of_backlog(2_000_000);
        let after = m.report().anomaly_counts;
        assert_eq!(after["lost-event"], before["lost-event"], "{after:?}");
        assert_eq!(
            after["broken-chain"],
            before["broken-chain"] + 1,
            "{after:?}"
        );
        let mut broken = m
            .anomalies()
            .iter()
            .filter(|a| a.kind == AnomalyKind::BrokenChain);
        assert_eq!(broken.next_back().unwrap().log_indices[0], orphan_at);
        // A fold of the aggregate seen again says its history is partial.
        let fold = crate::model::timetravel::JsonMergeFold;
        let st = m.state_at(&fold, "order-early", orphan_at).unwrap();
        assert!(st.dropped > 0);
    }

    /// Decoded a batch ahead on another thread or as each record is appended: the same log,
    /// the same findings.
    #[test]
    fn ingesting_predecoded_batches_is_ingesting() {
        let mut recs: Vec<Record> = (0..2_000).map(log::tests::filler).collect();
        recs.push(log::tests::filler(7)); // a redelivery
        let mut bad = log::tests::filler(9_999);
        bad.value = Some(b"{not json".to_vec());
        recs.push(bad);
        let (mut a, mut b) = (Model::default(), Model::default());
        for r in &recs {
            a.ingest(r, 0).unwrap();
        }
        let cfg = b.config().decode.clone();
        for chunk in recs.chunks(300) {
            let (batch, decoded) = decode_batch(chunk.to_vec(), &cfg);
            for (r, d) in batch.iter().zip(&decoded) {
                b.ingest_decoded(r, d, 0).unwrap();
            }
        }
        a.end_of_backlog(10_000);
        b.end_of_backlog(10_000);
        assert_eq!(a.report(), b.report());
        assert_eq!(a.report().events.poison, 1);
        assert_eq!(a.report().events.duplicate_deliveries, 1);
        for i in [0, 1_000, 2_001] {
            assert_eq!(a.log().record(i), b.log().record(i));
            assert_eq!(
                a.log().meta(i).map(|m| m.event_id),
                b.log().meta(i).map(|m| m.event_id)
            );
        }
    }

    /// Reading the log again when an evicted record cannot be read back (its broker is down):
    /// refused with the record and the reason, never a log with shifted indices.
    #[test]
    fn reread_refuses_when_a_record_cannot_be_read_back() {
        struct Down;
        impl store::RecordStore for Down {
            fn fetch(&self, _: &[store::OffsetRange]) -> Result<Vec<Record>, String> {
                Err("the broker does not answer".into())
            }
            fn describe(&self) -> String {
                "a broker that is down".into()
            }
        }
        let cfg = ModelConfig {
            memory_limit: Some(1 << 20),
            record_store: store::RecordStoreHandle::new(Down),
            ..ModelConfig::default()
        };
        let mut m = Model::new(cfg.clone());
        for i in 0..20_000 {
            m.ingest(&log::tests::filler(i), 0).unwrap();
        }
        assert!(m.log().drop_stats().payloads_in_store > 0);
        match m.reread(cfg) {
            Err(LogError::Unreadable(idx, why)) => {
                assert!(why.contains("does not answer"), "{why}");
                assert!(m.log().record(idx).is_none());
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("re-read with records that cannot be read back"),
        }
    }

    /// Under a memory limit the report's flow still counts every record, dropped or held.
    #[test]
    fn the_flow_counts_dropped_records() {
        let limited = ModelConfig {
            memory_limit: Some(2 << 20),
            ..ModelConfig::default()
        };
        let (mut a, mut b) = (Model::new(limited), Model::default());
        for i in 0..30_000i64 {
            let (id, cause) = (format!("e{i}"), format!("e{}", i - 1));
            let r = Ev {
                id: &id,
                cause: (i % 3 != 0).then_some(cause.as_str()),
                topic: ["orders", "payments", "shipping"][(i % 3) as usize],
                offset: i,
                ts: 1_000 + i,
                ..Ev::default()
            }
            .rec();
            a.ingest(&r, 0).unwrap();
            b.ingest(&r, 0).unwrap();
        }
        assert!(a.log().first_held() > 10_000);
        let (fa, fb) = (a.report().flow, b.report().flow);
        assert_eq!(fa, fb);
        let edges = fb["edges"].as_array().unwrap();
        assert!(edges.iter().any(|e| e["kind"] == "consumes"), "{fb}");
    }

    use proptest::prelude::*;

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                "ce_specversion",
                "ce_id",
                "ce_type",
                "ce_source",
                "ce_subject",
                "ce_time",
                "ce_correlationid",
                "ce_causationid",
                "ce_aggregateversion",
                "ce_sequence",
                "ce_traceparent",
                "content-type",
                "id",
                "eventType",
                "traceparent",
            ])
            .prop_map(str::to_owned),
            ".{0,6}",
        ]
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..24),
            "[0-9a-z.:{}\\[\\]\",/ -]{0,24}".prop_map(String::into_bytes),
            proptest::sample::select(vec![
                "1.0",
                "1",
                "-5",
                "e1",
                "e2",
                "application/json",
                "application/cloudevents+json",
                "{\"id\":\"x\",\"data\":{}}",
                "2026-01-01T00:00:00Z"
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
        ]
    }

    /// 1 to 39 arbitrary records: topics, partitions, offsets, timestamps, keys,
    /// headers and values, well-formed or not.
    fn records() -> impl Strategy<Value = Vec<Record>> {
        proptest::collection::vec(
            (
                proptest::sample::select(vec!["orders", "outbox.event.x", "a.commands", ""]),
                -2i32..3,
                any::<i64>(),
                proptest::option::of(any::<i64>()),
                proptest::option::of(bytes()),
                proptest::collection::vec((header_name(), proptest::option::of(bytes())), 0..10),
                proptest::option::of(bytes()),
            )
                .prop_map(|(topic, partition, offset, ts, key, headers, value)| {
                    Record {
                        topic: topic.to_owned(),
                        partition,
                        offset,
                        timestamp_ms: ts,
                        key,
                        headers: headers.into(),
                        value,
                    }
                }),
            1..40,
        )
    }

    proptest! {
        /// Whatever arrives, nothing panics and the raw record is kept byte for byte.
        #[test]
        fn arbitrary_records_never_panic(
            recs in records(),
            ticks in proptest::collection::vec(any::<i64>(), 0..4),
        ) {
            let mut m = Model::default();
            for (i, rec) in recs.into_iter().enumerate() {
                let (idx, _) = m.ingest(&rec, i as i64).unwrap();
                prop_assert_eq!(m.log().record(idx), Some(rec));
                let _ = m.log().event(idx);
                let _ = m.state_at(&timetravel::JsonMergeFold, "x", idx);
            }
            for t in ticks {
                m.tick(t);
            }
            let _ = m.report().to_json();
        }

        /// The same under a memory limit that drops nearly everything: a record is read back
        /// byte for byte or is dropped, never anything else.
        #[test]
        fn arbitrary_records_under_a_tiny_memory_limit(
            recs in records(),
            ticks in proptest::collection::vec(any::<i64>(), 0..4),
        ) {
            let mut m = Model::new(ModelConfig { memory_limit: Some(1), ..ModelConfig::default() });
            let mut kept = Vec::new();
            for (i, rec) in recs.into_iter().enumerate() {
                let (idx, _) = m.ingest(&rec, i as i64).unwrap();
                prop_assert_eq!(m.log().record(idx), Some(rec.clone()));
                kept.push((idx, rec));
                // A quarter of a chunk: the chunks turn over, and the records above go too.
                let pad = Record::new("pad", 0, i as i64).with_value(vec![b'x'; 15_000]);
                m.ingest(&pad, i as i64).unwrap();
                let _ = m.state_at(&timetravel::JsonMergeFold, "x", idx);
                for (j, r) in &kept {
                    match m.log().record(*j) {
                        Some(back) => prop_assert_eq!(&back, r),
                        None => prop_assert!(m.log().is_dropped(*j)),
                    }
                }
            }
            prop_assert!(m.log().len() < 12 || m.log().first_held() > 0);
            for t in ticks {
                m.tick(t);
            }
            let _ = m.report().to_json();
        }
    }
}
