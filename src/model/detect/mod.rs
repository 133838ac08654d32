//! Anomaly detectors, one small unit per kind (like tokio-console's lints).
//!
//! Each unit implements [`Detector`]: a kind, a one-line summary, an incremental check run on
//! every appended record ([`Detector::on_append`]) and, for the time-based kinds, a check run on
//! clock ticks ([`Detector::on_tick`]). Time is always passed in (`now_ms`), never read.
//! [`Detectors`] holds the set and switches units on and off. A unit that is off keeps no state;
//! switching it on later only sees records appended from then on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::envelope::VersionKind;
use super::log::{FxMap, LogIndex, ObservedLog, RowKind, Sym};

/// The kinds of anomaly (names as in DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyKind {
    DuplicateDelivery,
    DuplicateEffect,
    OutOfOrder,
    BrokenChain,
    StuckSaga,
    PoisonMessage,
    LostEvent,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 7] = [
        AnomalyKind::DuplicateDelivery,
        AnomalyKind::DuplicateEffect,
        AnomalyKind::OutOfOrder,
        AnomalyKind::BrokenChain,
        AnomalyKind::StuckSaga,
        AnomalyKind::PoisonMessage,
        AnomalyKind::LostEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::DuplicateDelivery => "duplicate-delivery",
            AnomalyKind::DuplicateEffect => "duplicate-effect",
            AnomalyKind::OutOfOrder => "out-of-order",
            AnomalyKind::BrokenChain => "broken-chain",
            AnomalyKind::StuckSaga => "stuck-saga",
            AnomalyKind::PoisonMessage => "poison-message",
            AnomalyKind::LostEvent => "lost-event",
        }
    }

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
            detail,
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
}

/// Settings of the lints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectConfig {
    /// How long a referenced causation id may stay unseen before `broken-chain`.
    pub causation_grace_ms: i64,
    /// Flag events without a correlation id as `broken-chain`.
    pub require_correlation: bool,
    /// How long a version gap may stay open before `lost-event`.
    pub lost_event_grace_ms: i64,
    /// Aggregate versions start here: a first observed version above it opens a gap.
    /// `None`: the first observed version is the baseline (e.g. when topics were truncated).
    pub expected_first_version: Option<i64>,
    /// A correlation chain without a terminal event, idle for longer than this, is a `stuck-saga`.
    pub stuck_saga_timeout_ms: i64,
    /// Event types that end a saga. Empty: no saga notion, `stuck-saga` never fires.
    pub terminal_types: Vec<String>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            causation_grace_ms: 10_000,
            require_correlation: true,
            lost_event_grace_ms: 10_000,
            expected_first_version: Some(1),
            stuck_saga_timeout_ms: 60_000,
            terminal_types: vec!["OrderCompleted".into(), "OrderCancelled".into()],
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
    /// All seven lints, on.
    pub fn new(cfg: DetectConfig) -> Self {
        let mut d = Detectors {
            cfg,
            units: Vec::new(),
        };
        for k in AnomalyKind::ALL {
            let det = d.make(k);
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

    fn make(&self, k: AnomalyKind) -> Box<dyn Detector> {
        let c = &self.cfg;
        match k {
            AnomalyKind::DuplicateDelivery => Box::new(DuplicateDelivery),
            AnomalyKind::DuplicateEffect => Box::<DuplicateEffect>::default(),
            AnomalyKind::OutOfOrder => Box::<OutOfOrder>::default(),
            AnomalyKind::BrokenChain => Box::new(BrokenChain::new(
                c.require_correlation,
                c.causation_grace_ms,
            )),
            AnomalyKind::StuckSaga => Box::new(StuckSaga::new(
                c.terminal_types.clone(),
                c.stuck_saga_timeout_ms,
            )),
            AnomalyKind::PoisonMessage => Box::new(PoisonMessage),
            AnomalyKind::LostEvent => Box::new(LostEvent::new(
                c.lost_event_grace_ms,
                c.expected_first_version,
            )),
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
            let det = self.make(kind);
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
}

fn loc(log: &ObservedLog, idx: LogIndex) -> String {
    match log.row(idx) {
        Some(r) => format!("{}/{}@{}", log.resolve(r.topic), r.partition, r.offset),
        None => format!("log #{idx}"),
    }
}

fn type_of(log: &ObservedLog, idx: LogIndex) -> &str {
    log.meta(idx)
        .and_then(|m| log.resolve_opt(m.event_type))
        .unwrap_or("?")
}

// ---------------------------------------------------------------- duplicate-delivery

/// The same event id delivered again (same or different offset).
pub struct DuplicateDelivery;

impl DuplicateDelivery {
    const KIND: AnomalyKind = AnomalyKind::DuplicateDelivery;
}

impl Detector for DuplicateDelivery {
    fn kind(&self) -> AnomalyKind {
        Self::KIND
    }
    fn summary(&self) -> &'static str {
        "an event id was delivered more than once"
    }
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, _now: i64) -> Vec<Anomaly> {
        let Some(m) = log.meta(idx).filter(|m| !m.first_delivery) else {
            return Vec::new();
        };
        let deliveries = log.deliveries_of(m.event_id);
        let Some(&first) = deliveries.first() else {
            return Vec::new();
        };
        let same_place = match (log.row(first), log.row(idx)) {
            (Some(a), Some(b)) => {
                a.topic == b.topic && a.partition == b.partition && a.offset == b.offset
            }
            _ => false,
        };
        let detail = format!(
            "{} {} delivered {} times; first at {}{}",
            type_of(log, idx),
            log.resolve(m.event_id),
            deliveries.len(),
            loc(log, first),
            if same_place {
                " (same offset: the record was read again)"
            } else {
                " (a different record: published again)"
            }
        );
        vec![Anomaly::at(Self::KIND, log, idx, detail).with(first)]
    }
}

// ---------------------------------------------------------------- duplicate-effect

/// Two different event ids with the same causation id and type.
#[derive(Default)]
pub struct DuplicateEffect {
    seen: FxMap<(Sym, Sym), (Sym, LogIndex)>,
}

impl DuplicateEffect {
    const KIND: AnomalyKind = AnomalyKind::DuplicateEffect;
}

impl Detector for DuplicateEffect {
    fn kind(&self) -> AnomalyKind {
        Self::KIND
    }
    fn summary(&self) -> &'static str {
        "one cause produced the same effect twice (different event ids, same causation and type)"
    }
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, _now: i64) -> Vec<Anomaly> {
        let Some(m) = log.meta(idx).filter(|m| m.first_delivery) else {
            return Vec::new();
        };
        let (Some(cause), Some(ty)) = (m.causation_id, m.event_type) else {
            return Vec::new();
        };
        match self.seen.get(&(cause, ty)) {
            None => {
                self.seen.insert((cause, ty), (m.event_id, idx));
                Vec::new()
            }
            Some(&(other, first)) if other != m.event_id => {
                let detail = format!(
                    "{} caused {} twice: {} (at {}) and {} (at {})",
                    log.resolve(cause),
                    log.resolve(ty),
                    log.resolve(other),
                    loc(log, first),
                    log.resolve(m.event_id),
                    loc(log, idx)
                );
                vec![Anomaly::at(Self::KIND, log, idx, detail).with(first)]
            }
            Some(_) => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- out-of-order

/// Per aggregate: a version lower than one already seen, or one topic's records of the
/// aggregate spread over several partitions (keying broken).
#[derive(Default)]
pub struct OutOfOrder {
    highest: FxMap<(Sym, u8), (i64, LogIndex)>,
    placement: FxMap<(Sym, Sym), (i32, LogIndex, bool)>,
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

impl OutOfOrder {
    const KIND: AnomalyKind = AnomalyKind::OutOfOrder;
}

impl Detector for OutOfOrder {
    fn kind(&self) -> AnomalyKind {
        Self::KIND
    }
    fn summary(&self) -> &'static str {
        "an aggregate's events arrived out of version order, or its records of one topic span partitions"
    }
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, _now: i64) -> Vec<Anomaly> {
        let (Some(m), Some(row)) = (log.meta(idx), log.row(idx)) else {
            return Vec::new();
        };
        let Some(agg) = m.aggregate_id else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let (true, Some((vk, v))) = (m.first_delivery, m.order_key()) {
            let e = self.highest.entry((agg, kind_code(vk))).or_insert((v, idx));
            if v < e.0 {
                let detail = format!(
                    "{} {} of {} ({}) arrived after {} {} (at {})",
                    kind_word(vk),
                    v,
                    log.resolve(agg),
                    type_of(log, idx),
                    kind_word(vk),
                    e.0,
                    loc(log, e.1)
                );
                out.push(Anomaly::at(Self::KIND, log, idx, detail).with(e.1));
            } else {
                *e = (v, idx);
            }
        }
        let p = self
            .placement
            .entry((agg, row.topic))
            .or_insert((row.partition, idx, false));
        if p.0 != row.partition && !p.2 {
            p.2 = true;
            let detail = format!(
                "records of {} on {} are spread over partitions {} and {}: keying is broken, per-aggregate order is not guaranteed",
                log.resolve(agg),
                log.resolve(row.topic),
                p.0,
                row.partition
            );
            out.push(Anomaly::at(Self::KIND, log, idx, detail).with(p.1));
        }
        out
    }
}

// ---------------------------------------------------------------- broken-chain

/// An event without correlation id, or whose causation id is never seen within a grace period.
pub struct BrokenChain {
    require_correlation: bool,
    grace_ms: i64,
    /// causation id → (first record referring to it, deadline)
    pending: FxMap<Sym, (LogIndex, i64)>,
    due: BinaryHeap<Reverse<(i64, Sym)>>,
}

impl BrokenChain {
    pub fn new(require_correlation: bool, grace_ms: i64) -> Self {
        BrokenChain {
            require_correlation,
            grace_ms,
            pending: FxMap::default(),
            due: BinaryHeap::new(),
        }
    }
}

impl BrokenChain {
    const KIND: AnomalyKind = AnomalyKind::BrokenChain;
}

impl Detector for BrokenChain {
    fn kind(&self) -> AnomalyKind {
        Self::KIND
    }
    fn summary(&self) -> &'static str {
        "an event has no correlation id, or its causation id is never seen"
    }
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, now: i64) -> Vec<Anomaly> {
        let Some(m) = log.meta(idx).filter(|m| m.first_delivery) else {
            return Vec::new();
        };
        self.pending.remove(&m.event_id);
        if let Some(c) = m.causation_id {
            if !log.has_event(c) && !self.pending.contains_key(&c) {
                let deadline = now.saturating_add(self.grace_ms);
                self.pending.insert(c, (idx, deadline));
                self.due.push(Reverse((deadline, c)));
            }
        }
        if self.require_correlation && m.correlation_id.is_none() {
            let detail = format!(
                "{} {} has no correlation id",
                type_of(log, idx),
                log.resolve(m.event_id)
            );
            return vec![Anomaly::at(Self::KIND, log, idx, detail)];
        }
        Vec::new()
    }
    fn on_tick(&mut self, log: &ObservedLog, now: i64) -> Vec<Anomaly> {
        let mut out = Vec::new();
        while let Some(&Reverse((deadline, c))) = self.due.peek() {
            if deadline > now {
                break;
            }
            self.due.pop();
            if self.pending.get(&c).is_some_and(|p| p.1 == deadline) {
                if let Some((idx, _)) = self.pending.remove(&c) {
                    let detail = format!(
                        "causation id {} of {} was never seen within {} ms",
                        log.resolve(c),
                        type_of(log, idx),
                        self.grace_ms
                    );
                    out.push(Anomaly::at(Self::KIND, log, idx, detail));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------- stuck-saga

struct Chain {
    last_activity: i64,
    last_idx: LogIndex,
    terminal: bool,
    reported: bool,
    scheduled: bool,
    /// Holds a command: a saga somebody orchestrates, not a plain event stream.
    saga: bool,
}

/// A correlation chain that carries commands (an orchestrated saga) with no
/// terminal event, idle for longer than the timeout. Chains of events only
/// (choreography, foreign streams) have no known end and are not judged.
pub struct StuckSaga {
    terminal_types: Vec<String>,
    timeout_ms: i64,
    chains: FxMap<Sym, Chain>,
    due: BinaryHeap<Reverse<(i64, Sym)>>,
}

impl StuckSaga {
    pub fn new(terminal_types: Vec<String>, timeout_ms: i64) -> Self {
        StuckSaga {
            terminal_types,
            timeout_ms,
            chains: FxMap::default(),
            due: BinaryHeap::new(),
        }
    }
}

impl StuckSaga {
    const KIND: AnomalyKind = AnomalyKind::StuckSaga;
}

impl Detector for StuckSaga {
    fn kind(&self) -> AnomalyKind {
        Self::KIND
    }
    fn summary(&self) -> &'static str {
        "a saga (correlation chain) has no terminal event and has been idle too long"
    }
    /// Activity time is the record's time (broker timestamp, else event time, else `now`).
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, _now: i64) -> Vec<Anomaly> {
        if self.terminal_types.is_empty() {
            return Vec::new();
        }
        let (Some(m), Some(row)) = (log.meta(idx), log.row(idx)) else {
            return Vec::new();
        };
        let Some(corr) = m.correlation_id else {
            return Vec::new();
        };
        let is_terminal = log
            .resolve_opt(m.event_type)
            .is_some_and(|t| self.terminal_types.iter().any(|x| x == t));
        let c = self.chains.entry(corr).or_insert(Chain {
            last_activity: row.time_ms,
            last_idx: idx,
            terminal: false,
            reported: false,
            scheduled: false,
            saga: false,
        });
        c.saga |= m.is_command;
        if row.time_ms >= c.last_activity {
            c.last_activity = row.time_ms;
            c.last_idx = idx;
        }
        c.terminal |= is_terminal;
        if c.saga && !c.terminal && !c.scheduled {
            c.scheduled = true;
            self.due.push(Reverse((
                c.last_activity.saturating_add(self.timeout_ms),
                corr,
            )));
        }
        Vec::new()
    }
    fn on_tick(&mut self, log: &ObservedLog, now: i64) -> Vec<Anomaly> {
        let mut out = Vec::new();
        while let Some(&Reverse((due, corr))) = self.due.peek() {
            if due > now {
                break;
            }
            self.due.pop();
            let Some(c) = self.chains.get_mut(&corr) else {
                continue;
            };
            c.scheduled = false;
            if c.terminal || c.reported {
                continue;
            }
            let real_due = c.last_activity.saturating_add(self.timeout_ms);
            if real_due > now {
                c.scheduled = true;
                self.due.push(Reverse((real_due, corr)));
                continue;
            }
            c.reported = true;
            let detail = format!(
                "saga {} has no terminal event ({}); last activity {} at {}, {} ms ago",
                log.resolve(corr),
                self.terminal_types.join(", "),
                type_of(log, c.last_idx),
                loc(log, c.last_idx),
                now.saturating_sub(c.last_activity)
            );
            out.push(Anomaly::at(Self::KIND, log, c.last_idx, detail));
        }
        out
    }
}

// ---------------------------------------------------------------- poison-message

/// An undecodable record.
pub struct PoisonMessage;

impl PoisonMessage {
    const KIND: AnomalyKind = AnomalyKind::PoisonMessage;
}

impl Detector for PoisonMessage {
    fn kind(&self) -> AnomalyKind {
        Self::KIND
    }
    fn summary(&self) -> &'static str {
        "a record could not be decoded"
    }
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, _now: i64) -> Vec<Anomaly> {
        match log.row(idx).map(|r| r.kind) {
            Some(RowKind::Poison { error }) => {
                let detail = format!("undecodable record: {}", log.resolve(error));
                vec![Anomaly::at(Self::KIND, log, idx, detail)]
            }
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- lost-event

#[derive(Clone, Copy)]
struct Gap {
    lo: i64,
    hi: i64,
    deadline: i64,
    /// The record whose version revealed the gap.
    at: LogIndex,
}

struct Versions {
    max: i64,
    gaps: SmallVec<[Gap; 1]>,
}

/// A gap in an aggregate's version sequence not filled within the grace period.
pub struct LostEvent {
    grace_ms: i64,
    expected_first: Option<i64>,
    aggs: FxMap<(Sym, u8), Versions>,
    due: BinaryHeap<Reverse<(i64, Sym, u8)>>,
}

impl LostEvent {
    pub fn new(grace_ms: i64, expected_first: Option<i64>) -> Self {
        LostEvent {
            grace_ms,
            expected_first,
            aggs: FxMap::default(),
            due: BinaryHeap::new(),
        }
    }
}

impl LostEvent {
    const KIND: AnomalyKind = AnomalyKind::LostEvent;
}

impl Detector for LostEvent {
    fn kind(&self) -> AnomalyKind {
        Self::KIND
    }
    fn summary(&self) -> &'static str {
        "an aggregate's version sequence has a gap that was never filled"
    }
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, now: i64) -> Vec<Anomaly> {
        let Some(m) = log.meta(idx).filter(|m| m.first_delivery) else {
            return Vec::new();
        };
        let (Some(agg), Some((vk, v))) = (m.aggregate_id, m.order_key()) else {
            return Vec::new();
        };
        let key = (agg, kind_code(vk));
        let deadline = now.saturating_add(self.grace_ms);
        let mut new_gap = None;
        match self.aggs.get_mut(&key) {
            None => {
                let mut gaps = SmallVec::new();
                if let (VersionKind::AggregateVersion, Some(first)) = (vk, self.expected_first) {
                    if v > first {
                        new_gap = Some(Gap {
                            lo: first,
                            hi: v - 1,
                            deadline,
                            at: idx,
                        });
                    }
                }
                gaps.extend(new_gap);
                self.aggs.insert(key, Versions { max: v, gaps });
            }
            Some(st) => {
                if v > st.max {
                    if v > st.max.saturating_add(1) {
                        let g = Gap {
                            lo: st.max + 1,
                            hi: v - 1,
                            deadline,
                            at: idx,
                        };
                        new_gap = Some(g);
                        st.gaps.push(g);
                    }
                    st.max = v;
                } else if let Some(pos) = st.gaps.iter().position(|g| g.lo <= v && v <= g.hi) {
                    // a late arrival fills (part of) a gap
                    let g = st.gaps.remove(pos);
                    if g.lo < v {
                        st.gaps.push(Gap { hi: v - 1, ..g });
                    }
                    if v < g.hi {
                        st.gaps.push(Gap { lo: v + 1, ..g });
                    }
                }
            }
        }
        if new_gap.is_some() {
            self.due.push(Reverse((deadline, key.0, key.1)));
        }
        Vec::new()
    }
    fn on_tick(&mut self, log: &ObservedLog, now: i64) -> Vec<Anomaly> {
        let mut out = Vec::new();
        while let Some(&Reverse((deadline, agg, k))) = self.due.peek() {
            if deadline > now {
                break;
            }
            self.due.pop();
            let Some(st) = self.aggs.get_mut(&(agg, k)) else {
                continue;
            };
            let mut expired: SmallVec<[Gap; 2]> = SmallVec::new();
            st.gaps.retain(|g| {
                let gone = g.deadline <= now;
                if gone {
                    expired.push(*g);
                }
                !gone
            });
            expired.sort_by_key(|g| g.lo);
            for g in expired {
                let word = if k == 1 { "version" } else { "sequence" };
                let range = if g.lo == g.hi {
                    format!("{word} {}", g.lo)
                } else {
                    format!("{word}s {}..={}", g.lo, g.hi)
                };
                let detail = format!(
                    "{range} of {} never seen (gap before {} at {})",
                    log.resolve(agg),
                    type_of(log, g.at),
                    loc(log, g.at)
                );
                out.push(Anomaly::at(Self::KIND, log, g.at, detail));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::log::tests::Ev;
    use super::super::record::Record;
    use super::*;

    /// A clean saga: 9 records on 8 topics, chained by causation, order versions 1 and 2.
    fn saga(n: usize, p: i32, t0: i64) -> Vec<Record> {
        let o = format!("order-{n}");
        let c = format!("corr-{n}");
        let id = |s: &str| format!("{n}-{s}");
        type Step<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<i64>);
        let steps: [Step; 9] = [
            ("orders", "created", "OrderCreated", None, Some(1)),
            (
                "payments.commands",
                "pay",
                "ProcessPayment",
                Some("created"),
                None,
            ),
            ("payments", "paid", "PaymentCompleted", Some("pay"), None),
            (
                "inventory.commands",
                "reserve",
                "ReserveStock",
                Some("paid"),
                None,
            ),
            (
                "inventory",
                "reserved",
                "StockReserved",
                Some("reserve"),
                None,
            ),
            (
                "shipping.commands",
                "ship",
                "ScheduleShipment",
                Some("reserved"),
                None,
            ),
            (
                "shipping",
                "shipped",
                "ShipmentScheduled",
                Some("ship"),
                None,
            ),
            (
                "orders.commands",
                "approve",
                "ApproveOrder",
                Some("shipped"),
                None,
            ),
            (
                "orders",
                "completed",
                "OrderCompleted",
                Some("approve"),
                Some(2),
            ),
        ];
        steps
            .iter()
            .enumerate()
            .map(|(i, (topic, s, ty, cause, v))| {
                let eid = id(s);
                let cid = cause.map(id);
                Ev {
                    topic,
                    partition: p,
                    offset: (n * 10 + i) as i64,
                    id: &eid,
                    ty,
                    agg: &o,
                    corr: Some(&c),
                    cause: cid.as_deref(),
                    version: *v,
                    ts: t0 + i as i64,
                    ..Ev::default()
                }
                .rec()
            })
            .collect()
    }

    fn clean() -> Vec<Record> {
        (0..3)
            .flat_map(|n| saga(n, (n % 3) as i32, 1_000))
            .collect()
    }

    fn set(r: &mut Record, name: &str, value: Option<&str>) {
        r.headers.retain(|(n, _)| n != name);
        if let Some(v) = value {
            r.headers.push((name.into(), Some(v.as_bytes().to_vec())));
        }
    }

    /// Feed records at now = 1_000 + i, then tick at `tick`; return (kind, reported index) sorted.
    fn run(records: &[Record], tick: i64) -> Vec<(AnomalyKind, LogIndex)> {
        let mut log = ObservedLog::default();
        let mut det = Detectors::new(DetectConfig::default());
        let mut out = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let now = 1_000 + i as i64;
            let idx = log.append(r, now).unwrap();
            out.extend(det.on_append(&log, idx, now));
        }
        out.extend(det.on_tick(&log, tick));
        let mut v: Vec<_> = out.iter().map(|a| (a.kind, a.log_indices[0])).collect();
        v.sort();
        v
    }

    const LATER: i64 = 1_000_000;

    struct Case {
        name: &'static str,
        records: Vec<Record>,
        tick: i64,
        expect: Vec<(AnomalyKind, LogIndex)>,
    }

    fn cases() -> Vec<Case> {
        use AnomalyKind::*;
        let mut v = Vec::new();
        v.push(Case {
            name: "clean",
            records: clean(),
            tick: LATER,
            expect: vec![],
        });

        // duplicate-delivery: the same record read again (same offset) and republished (new offset)
        let mut r = clean();
        let again = r[2].clone();
        let mut republished = r[4].clone();
        republished.offset += 100;
        r.insert(5, again);
        r.push(republished);
        v.push(Case {
            name: "duplicate-delivery",
            records: r,
            tick: LATER,
            expect: vec![(DuplicateDelivery, 5), (DuplicateDelivery, 28)],
        });

        // duplicate-effect: StockReserved emitted twice for one ReserveStock (no idempotency)
        let mut r = clean();
        let mut twice = r[4].clone();
        set(&mut twice, "ce_id", Some("0-reserved-again"));
        twice.offset += 100;
        r.insert(5, twice);
        v.push(Case {
            name: "duplicate-effect",
            records: r,
            tick: LATER,
            expect: vec![(DuplicateEffect, 5)],
        });

        // out-of-order by version: OrderCompleted (v2) before OrderCreated (v1) of order-1
        let mut r = clean();
        r.swap(9, 17);
        v.push(Case {
            name: "out-of-order version",
            records: r,
            tick: LATER,
            expect: vec![(OutOfOrder, 17)],
        });

        // out-of-order by partition spread: order-2 on two partitions of `orders` and three of
        // `shipping`; reported once per aggregate and topic
        let mut r = clean();
        r[26].partition = 0;
        let mut extra = r[24].clone();
        set(&mut extra, "ce_id", Some("2-extra"));
        set(&mut extra, "ce_type", Some("ShipmentRescheduled"));
        extra.partition = 1;
        let mut extra2 = r[24].clone();
        set(&mut extra2, "ce_id", Some("2-extra2"));
        set(&mut extra2, "ce_type", Some("ShipmentDelayed"));
        extra2.partition = 0;
        r.insert(25, extra);
        r.insert(26, extra2);
        v.push(Case {
            name: "out-of-order partitions",
            records: r,
            tick: LATER,
            expect: vec![(OutOfOrder, 25), (OutOfOrder, 28)],
        });

        // broken-chain: missing correlation id; causation id never seen
        let mut r = clean();
        set(&mut r[3], "ce_correlationid", None);
        set(&mut r[12], "ce_causationid", Some("ghost"));
        v.push(Case {
            name: "broken-chain",
            records: r,
            tick: LATER,
            expect: vec![(BrokenChain, 3), (BrokenChain, 12)],
        });

        // broken-chain: parent arrives late but within grace → nothing
        let mut r = clean();
        let parent = r.remove(1);
        r.insert(5, parent);
        v.push(Case {
            name: "late parent within grace",
            records: r,
            tick: LATER,
            expect: vec![],
        });

        // stuck-saga: order-1's saga stops after StockReserved; a compensated saga is fine
        let mut r = clean();
        r.drain(14..18);
        let comp = saga(7, 0, 1_000);
        let mut comp: Vec<Record> = comp.into_iter().take(3).collect();
        let mut cancelled = comp[0].clone();
        set(&mut cancelled, "ce_id", Some("7-cancelled"));
        set(&mut cancelled, "ce_type", Some("OrderCancelled"));
        set(&mut cancelled, "ce_causationid", Some("7-paid"));
        set(&mut cancelled, "ce_aggregateversion", Some("2"));
        comp.push(cancelled);
        r.extend(comp);
        v.push(Case {
            name: "stuck-saga",
            records: r,
            tick: LATER,
            expect: vec![(StuckSaga, 13)],
        });

        // not stuck yet when the timeout has not passed
        let mut r = clean();
        r.truncate(5);
        v.push(Case {
            name: "stuck-saga not yet",
            records: r,
            tick: 1_010 + 59_000,
            expect: vec![],
        });

        // poison-message
        let mut r = clean();
        r.insert(
            4,
            Record::new("payments", 0, 999).with_value(vec![0xde, 0xad, 0xbe, 0xef]),
        );
        v.push(Case {
            name: "poison-message",
            records: r,
            tick: LATER,
            expect: vec![(PoisonMessage, 4)],
        });

        // lost-event: order-2 jumps from version 1 to 3; order-0 first seen at version 2
        let mut r = clean();
        set(&mut r[26], "ce_aggregateversion", Some("3"));
        set(&mut r[0], "ce_aggregateversion", Some("2"));
        set(&mut r[8], "ce_aggregateversion", Some("3"));
        v.push(Case {
            name: "lost-event",
            records: r,
            tick: LATER,
            expect: vec![(LostEvent, 0), (LostEvent, 26)],
        });

        // a gap filled late (out of order) is out-of-order, not lost
        let mut r = clean();
        let mut v3 = r[8].clone();
        set(&mut v3, "ce_id", Some("0-v3"));
        set(&mut v3, "ce_type", Some("OrderNoted"));
        set(&mut v3, "ce_aggregateversion", Some("3"));
        r.insert(8, v3); // v1, v3, v2: v2 fills the gap
        v.push(Case {
            name: "gap filled late",
            records: r,
            tick: LATER,
            expect: vec![(OutOfOrder, 9)],
        });
        v
    }

    #[test]
    fn lint_table() {
        for c in cases() {
            assert_eq!(run(&c.records, c.tick), c.expect, "case {}", c.name);
        }
    }

    #[test]
    fn gap_not_reported_before_grace() {
        let mut r = clean();
        set(&mut r[26], "ce_aggregateversion", Some("3"));
        // appended at now=1_026; grace 10 s → due at 11_026
        assert_eq!(run(&r, 11_025), vec![]);
        assert_eq!(run(&r, 11_026), vec![(AnomalyKind::LostEvent, 26)]);
    }

    #[test]
    fn switch_off_and_describe() {
        let mut det = Detectors::new(DetectConfig::default());
        det.set_enabled(AnomalyKind::PoisonMessage, false);
        let mut log = ObservedLog::default();
        let i = log
            .append(&Record::new("t", 0, 0).with_value(b"\x00".to_vec()), 0)
            .unwrap();
        assert!(det.on_append(&log, i, 0).is_empty());
        det.set_enabled(AnomalyKind::PoisonMessage, true);
        assert_eq!(det.on_append(&log, i, 0).len(), 1);
        assert_eq!(det.lints().len(), 7);
        assert!(det.lints().iter().all(|l| !l.summary.is_empty()));
        assert_eq!(
            AnomalyKind::parse("stuck-saga"),
            Some(AnomalyKind::StuckSaga)
        );
        assert_eq!(
            serde_json::to_string(&AnomalyKind::LostEvent).unwrap(),
            "\"lost-event\""
        );
    }

    #[test]
    fn anomaly_names_its_record() {
        let mut r = clean();
        let again = r[2].clone();
        r.push(again);
        let mut log = ObservedLog::default();
        let mut det = Detectors::new(DetectConfig::default());
        let mut out = Vec::new();
        for rec in &r {
            let i = log.append(rec, 0).unwrap();
            out.extend(det.on_append(&log, i, 0));
        }
        let a = &out[0];
        assert_eq!(a.kind, AnomalyKind::DuplicateDelivery);
        assert_eq!(a.event_id.as_deref(), Some("0-paid"));
        assert_eq!(a.correlation_id.as_deref(), Some("corr-0"));
        assert_eq!(
            (a.topic.as_str(), a.partition, a.offset),
            ("payments", 0, 2)
        );
        assert_eq!(a.log_indices, vec![27, 2]);
    }
}
