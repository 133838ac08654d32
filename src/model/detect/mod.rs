//! Anomaly detectors, one small unit per kind (like tokio-console's lints).
//!
//! Each unit implements [`Detector`]: a kind, a one-line summary, an incremental check run on
//! every appended record ([`Detector::on_append`]), for the time-based kinds a check run on
//! clock ticks ([`Detector::on_tick`]), and the verdicts given once the backlog that existed at
//! connect time has been read ([`Detector::on_backlog_end`]). Time is always passed in, never
//! read. [`Detectors`] holds the set and switches units on and off. A unit that is off keeps no
//! state; switching it on later only sees records appended from then on.
//!
//! One lint per file in this folder, registered in the `lints!` table below: adding a lint is
//! one new file (with a `make(&DetectConfig)` constructor) and one line in the table.

use serde::{Deserialize, Serialize};

use super::envelope::VersionKind;
use super::log::{LogIndex, ObservedLog};

/// Declares the lints: each line is `Variant = "kind-name" => module`, where `module` is a file
/// of this folder with `pub(super) fn make(&DetectConfig) -> Box<dyn Detector>`. Generates the
/// modules, [`AnomalyKind`] (in report order) and the constructor table.
macro_rules! lints {
    ($($(#[$doc:meta])* $variant:ident = $name:literal => $module:ident,)*) => {
        $(mod $module;)*

        /// The kinds of anomaly (names as in DESIGN.md).
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        pub enum AnomalyKind {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        impl AnomalyKind {
            pub const ALL: [AnomalyKind; [$($name),*].len()] = [$(AnomalyKind::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(AnomalyKind::$variant => $name,)*
                }
            }
        }

        /// A fresh unit of `kind`, configured.
        fn make(kind: AnomalyKind, cfg: &DetectConfig) -> Box<dyn Detector> {
            match kind {
                $(AnomalyKind::$variant => $module::make(cfg),)*
            }
        }
    };
}

lints! {
    /// The same event id delivered again.
    DuplicateDelivery = "duplicate-delivery" => duplicate_delivery,
    /// One cause produced the same effect twice.
    DuplicateEffect = "duplicate-effect" => duplicate_effect,
    /// An aggregate's events out of version order, or spread over partitions.
    OutOfOrder = "out-of-order" => out_of_order,
    /// A causation id that points to no observed event.
    BrokenChain = "broken-chain" => broken_chain,
    /// Records without a correlation id, one finding per topic, type and source.
    MissingCorrelation = "missing-correlation" => missing_correlation,
    /// A saga without its terminal event, idle too long.
    StuckSaga = "stuck-saga" => stuck_saga,
    /// An undecodable record.
    PoisonMessage = "poison-message" => poison_message,
    /// A gap in an aggregate's versions never filled.
    LostEvent = "lost-event" => lost_event,
    /// A payload whose shape breaks its type's established or declared schema.
    SchemaDrift = "schema-drift" => schema_drift,
    /// A consumer group's committed offset stalls, stops or goes back while records wait.
    ConsumerStall = "consumer-stall" => consumer_stall,
}

impl AnomalyKind {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding, naming the records it is about. `log_indices[0]` is the record the anomaly is
/// reported at (its topic/partition/offset/event id fill the other fields); further indices are
/// related records (the first delivery, the earlier version, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub log_indices: Vec<LogIndex>,
    pub event_id: Option<String>,
    pub correlation_id: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub detail: String,
    /// Set when this finding summarises a group of records (e.g. `missing-correlation` per
    /// topic, type and source): the record above is the group's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<AnomalyGroup>,
}

/// The records a grouped finding stands for. A later finding of the same kind and key replaces
/// the earlier one (the count grows) instead of being counted again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyGroup {
    /// What the records have in common (e.g. `topic|type|source`).
    pub key: String,
    /// Records in the group so far.
    pub count: u64,
    pub first_partition: i32,
    pub first_offset: i64,
    pub last_partition: i32,
    pub last_offset: i64,
}

impl Anomaly {
    /// An anomaly about the record at `idx`, with its coordinates filled from the log.
    pub fn at(kind: AnomalyKind, log: &ObservedLog, idx: LogIndex, detail: String) -> Anomaly {
        let row = log.row(idx);
        let meta = log.meta(idx);
        Anomaly {
            kind,
            log_indices: vec![idx],
            event_id: meta.map(|m| log.resolve(m.event_id).to_owned()),
            correlation_id: meta
                .and_then(|m| log.resolve_opt(m.correlation_id))
                .map(str::to_owned),
            topic: row
                .map(|r| log.resolve(r.topic).to_owned())
                .unwrap_or_default(),
            partition: row.map_or(-1, |r| r.partition),
            offset: row.map_or(-1, |r| r.offset),
            detail: if log.is_dropped(idx) {
                format!("{detail} (record {idx} dropped: memory limit)")
            } else {
                detail
            },
            group: None,
        }
    }

    fn with(mut self, related: LogIndex) -> Anomaly {
        self.log_indices.push(related);
        self
    }
}

/// One lint.
pub trait Detector: Send {
    fn kind(&self) -> AnomalyKind;
    /// One line saying what this lint flags.
    fn summary(&self) -> &'static str;
    /// Check the record just appended at `idx`.
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, now_ms: i64) -> Vec<Anomaly>;
    /// Time-based checks; `now_ms` is the observer's clock, passed in.
    fn on_tick(&mut self, _log: &ObservedLog, _now_ms: i64) -> Vec<Anomaly> {
        Vec::new()
    }
    /// Every record that existed when the observer connected has been read: give the verdicts
    /// that need "never seen" now, judging by the records' own times as of `as_of_ms` (the
    /// moment the backlog was cut: connect time, or the end of a recording). By default, a
    /// tick at that time.
    fn on_backlog_end(&mut self, log: &ObservedLog, as_of_ms: i64) -> Vec<Anomaly> {
        self.on_tick(log, as_of_ms)
    }
    /// The log forgot ids under the memory limit ([`ObservedLog::forget_epoch`] moved on):
    /// drop what is kept under symbols that are no longer live ([`ObservedLog::is_live`]),
    /// before their slots name other strings. A lint that keeps symbols of ids must.
    fn on_forget(&mut self, _log: &ObservedLog) {}
    /// Heap bytes kept per id (aggregate, correlation, cause), estimated in O(1): counted
    /// against the memory limit.
    fn state_bytes(&self) -> usize {
        0
    }
}

/// After ids were forgotten: keep `map`'s entries whose symbols are live, and give the room
/// back once it is mostly empty.
pub(crate) fn retain_live<K, V>(
    map: &mut crate::model::log::FxMap<K, V>,
    live: impl Fn(&K, &V) -> bool,
) where
    K: Eq + std::hash::Hash,
{
    map.retain(|k, v| live(k, &*v));
    if map.capacity() > 4 * map.len().max(256) {
        map.shrink_to(map.len() * 2);
    }
}

/// [`retain_live`] for a binary heap.
pub(crate) fn retain_live_heap<T: Ord>(
    heap: &mut std::collections::BinaryHeap<T>,
    live: impl Fn(&T) -> bool,
) {
    heap.retain(|x| live(x));
    if heap.capacity() > 4 * heap.len().max(256) {
        heap.shrink_to(heap.len() * 2);
    }
}

/// Heap bytes of a binary heap, from its capacity.
pub(crate) fn heap_bytes<T: Ord>(h: &std::collections::BinaryHeap<T>) -> usize {
    h.capacity() * std::mem::size_of::<T>()
}

/// Settings of the lints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectConfig {
    /// How long a causation id referenced in the live tail may stay unseen before
    /// `broken-chain` (in the backlog: until the backlog has been read).
    pub causation_grace_ms: i64,
    /// How long a version gap may stay open before `lost-event`.
    pub lost_event_grace_ms: i64,
    /// Aggregate versions start here: a first observed version above it opens a gap.
    /// `None`: the first observed version is the baseline (e.g. when topics were truncated).
    pub expected_first_version: Option<i64>,
    /// A correlation chain without a terminal event, idle for longer than this, is a `stuck-saga`.
    pub stuck_saga_timeout_ms: i64,
    /// Event types that end a saga that carries commands. Empty (and no flows): no saga
    /// notion, `stuck-saga` never fires.
    pub terminal_types: Vec<String>,
    /// Event types that start a saga whether it carries commands or not (a choreography):
    /// a chain holding one is judged by `terminal_types`. A chain with neither a command nor
    /// one of these (a foreign stream) is not judged.
    pub start_types: Vec<String>,
    /// The observed system's own flows (from the profile): judged whether they carry commands
    /// or not.
    pub flows: Vec<FlowConfig>,
    /// A directory of JSON Schemas (`<Type>/v<N>.json`) that records' `dataschema` URIs
    /// name (`--schemas DIR`); the demo's own contracts are known without it.
    pub schemas_dir: Option<std::path::PathBuf>,
}

/// One flow of the observed system: a correlation chain holding one of `start_types` (any
/// chain when empty) is a saga that ends with one of `terminal_types`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowConfig {
    pub name: String,
    pub start_types: Vec<String>,
    pub terminal_types: Vec<String>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            causation_grace_ms: 10_000,
            lost_event_grace_ms: 10_000,
            expected_first_version: Some(1),
            stuck_saga_timeout_ms: 60_000,
            terminal_types: vec!["OrderCompleted".into(), "OrderCancelled".into()],
            start_types: vec!["OrderCreated".into()],
            flows: Vec::new(),
            schemas_dir: None,
        }
    }
}

struct Unit {
    det: Box<dyn Detector>,
    enabled: bool,
}

/// The set of lints, run incrementally.
pub struct Detectors {
    cfg: DetectConfig,
    units: Vec<Unit>,
}

/// Description of one lint for a settings view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintInfo {
    pub kind: AnomalyKind,
    pub summary: &'static str,
    pub enabled: bool,
}

impl Detectors {
    /// Every lint of the table, on.
    pub fn new(cfg: DetectConfig) -> Self {
        let mut d = Detectors {
            cfg,
            units: Vec::new(),
        };
        for k in AnomalyKind::ALL {
            let det = make(k, &d.cfg);
            d.push(det);
        }
        d
    }

    /// No lints (add your own with [`Detectors::push`]).
    pub fn empty(cfg: DetectConfig) -> Self {
        Detectors {
            cfg,
            units: Vec::new(),
        }
    }

    pub fn push(&mut self, det: Box<dyn Detector>) {
        self.units.push(Unit { det, enabled: true });
    }

    /// Switch every unit of `kind` on or off. Switching on starts from a clean state.
    pub fn set_enabled(&mut self, kind: AnomalyKind, on: bool) {
        let mut fresh = Vec::new();
        for (i, u) in self.units.iter().enumerate() {
            if u.det.kind() == kind && on && !u.enabled {
                fresh.push(i);
            }
        }
        for i in fresh {
            let det = make(kind, &self.cfg);
            if let Some(u) = self.units.get_mut(i) {
                u.det = det;
            }
        }
        for u in self.units.iter_mut().filter(|u| u.det.kind() == kind) {
            u.enabled = on;
        }
    }

    pub fn is_enabled(&self, kind: AnomalyKind) -> bool {
        self.units.iter().any(|u| u.det.kind() == kind && u.enabled)
    }

    pub fn lints(&self) -> Vec<LintInfo> {
        self.units
            .iter()
            .map(|u| LintInfo {
                kind: u.det.kind(),
                summary: u.det.summary(),
                enabled: u.enabled,
            })
            .collect()
    }

    pub fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, now_ms: i64) -> Vec<Anomaly> {
        let mut out = Vec::new();
        for u in self.units.iter_mut().filter(|u| u.enabled) {
            out.extend(u.det.on_append(log, idx, now_ms));
        }
        out
    }

    pub fn on_tick(&mut self, log: &ObservedLog, now_ms: i64) -> Vec<Anomaly> {
        let mut out = Vec::new();
        for u in self.units.iter_mut().filter(|u| u.enabled) {
            out.extend(u.det.on_tick(log, now_ms));
        }
        out
    }

    pub fn on_backlog_end(&mut self, log: &ObservedLog, as_of_ms: i64) -> Vec<Anomaly> {
        let mut out = Vec::new();
        for u in self.units.iter_mut().filter(|u| u.enabled) {
            out.extend(u.det.on_backlog_end(log, as_of_ms));
        }
        out
    }

    /// See [`Detector::state_bytes`] (the lints that are on).
    pub fn state_bytes(&self) -> usize {
        self.units
            .iter()
            .filter(|u| u.enabled)
            .map(|u| u.det.state_bytes())
            .sum()
    }

    /// See [`Detector::on_forget`].
    pub fn on_forget(&mut self, log: &ObservedLog) {
        for u in &mut self.units {
            u.det.on_forget(log);
        }
    }
}

pub(crate) fn loc(log: &ObservedLog, idx: LogIndex) -> String {
    match log.row(idx) {
        Some(r) => format!("{}/{}@{}", log.resolve(r.topic), r.partition, r.offset),
        None if log.is_dropped(idx) => format!("log #{idx} (dropped: memory limit)"),
        None => format!("log #{idx}"),
    }
}

pub(crate) fn type_of(log: &ObservedLog, idx: LogIndex) -> &str {
    log.meta(idx)
        .and_then(|m| log.resolve_opt(m.event_type))
        .unwrap_or("?")
}

fn kind_code(k: VersionKind) -> u8 {
    match k {
        VersionKind::AggregateVersion => 1,
        VersionKind::Sequence => 2,
    }
}

fn kind_word(k: VersionKind) -> &'static str {
    match k {
        VersionKind::AggregateVersion => "version",
        VersionKind::Sequence => "sequence",
    }
}

#[cfg(test)]
mod tests;
