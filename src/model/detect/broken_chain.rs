//! `broken-chain`: a causation id that points to no observed event.
//!
//! In the backlog (the records that existed at connect time), a cause not seen by the time the
//! backlog has been read is reported then, at once. In the live tail, a cause may arrive late
//! (another partition, another topic): it is reported when it stays unseen for the grace period.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{retain_live, retain_live_heap, heap_bytes, type_of, Anomaly, AnomalyKind, DetectConfig, Detector};
use crate::model::log::{fx_map_bytes, FxMap, LogIndex, ObservedLog, Sym};

pub(super) fn make(c: &DetectConfig) -> Box<dyn Detector> {
    Box::new(BrokenChain::new(c.causation_grace_ms))
}

/// An event whose causation id is never seen (by the end of the backlog, or within a grace
/// period in the live tail).
pub struct BrokenChain {
    grace_ms: i64,
    /// causation id → (first record referring to it, deadline)
    pending: FxMap<Sym, (LogIndex, i64)>,
    due: BinaryHeap<Reverse<(i64, Sym)>>,
}

impl BrokenChain {
    pub fn new(grace_ms: i64) -> Self {
        BrokenChain {
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
        "a causation id points to no observed event"
    }
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, now: i64) -> Vec<Anomaly> {
        let Some(m) = log.meta(idx).filter(|m| m.first_delivery) else {
            return Vec::new();
        };
        self.pending.remove(&m.event_id);
        if let Some(c) = m.causation_id {
            // A cause forgotten under the memory limit was seen: not a broken chain.
            if !log.has_event(c) && !self.pending.contains_key(&c) && !log.maybe_forgotten(c) {
                let deadline = now.saturating_add(self.grace_ms);
                self.pending.insert(c, (idx, deadline));
                self.due.push(Reverse((deadline, c)));
            }
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
    fn state_bytes(&self) -> usize {
        fx_map_bytes(&self.pending) + heap_bytes(&self.due)
    }
    fn on_forget(&mut self, log: &ObservedLog) {
        retain_live(&mut self.pending, |c, _| log.is_live(*c));
        retain_live_heap(&mut self.due, |Reverse((_, c))| log.is_live(*c));
    }
    /// Everything that existed has been read: a cause not seen now was never written (or is
    /// on a topic not observed).
    fn on_backlog_end(&mut self, log: &ObservedLog, _as_of: i64) -> Vec<Anomaly> {
        let mut missing: Vec<(LogIndex, Sym)> =
            self.pending.drain().map(|(c, (idx, _))| (idx, c)).collect();
        self.due.clear();
        missing.sort_unstable();
        missing
            .into_iter()
            .map(|(idx, c)| {
                let detail = format!(
                    "causation id {} of {} points to no event in the {} records read",
                    log.resolve(c),
                    type_of(log, idx),
                    log.len()
                );
                Anomaly::at(Self::KIND, log, idx, detail)
            })
            .collect()
    }
}
