//! `lost-event`: a gap in an aggregate's version sequence that was never filled.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use smallvec::SmallVec;

use super::{retain_live, retain_live_heap, heap_bytes, kind_code, loc, type_of, Anomaly, AnomalyKind, DetectConfig, Detector};
use crate::model::envelope::VersionKind;
use crate::model::log::{fx_map_bytes, FxMap, LogIndex, ObservedLog, Sym};

pub(super) fn make(c: &DetectConfig) -> Box<dyn Detector> {
    Box::new(LostEvent::new(
        c.lost_event_grace_ms,
        c.expected_first_version,
    ))
}

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
                    // An aggregate forgotten under the memory limit had its first versions
                    // then: not a gap.
                    if v > first && !log.maybe_forgotten(agg) {
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
            out.extend(expired.into_iter().map(|g| gap_anomaly(log, agg, k, g)));
        }
        out
    }
    fn state_bytes(&self) -> usize {
        fx_map_bytes(&self.aggs) + heap_bytes(&self.due)
    }
    fn on_forget(&mut self, log: &ObservedLog) {
        retain_live(&mut self.aggs, |&(agg, _), _| log.is_live(agg));
        retain_live_heap(&mut self.due, |Reverse((_, agg, _))| log.is_live(*agg));
    }
    /// Everything that existed has been read: an open gap will not be filled by the backlog.
    fn on_backlog_end(&mut self, log: &ObservedLog, _as_of: i64) -> Vec<Anomaly> {
        self.due.clear();
        let mut open: Vec<(LogIndex, i64, Sym, u8, Gap)> = Vec::new();
        for (&(agg, k), st) in self.aggs.iter_mut() {
            open.extend(st.gaps.drain(..).map(|g| (g.at, g.lo, agg, k, g)));
        }
        open.sort_unstable_by_key(|(at, lo, ..)| (*at, *lo));
        open.into_iter()
            .map(|(_, _, agg, k, g)| gap_anomaly(log, agg, k, g))
            .collect()
    }
}

fn gap_anomaly(log: &ObservedLog, agg: Sym, k: u8, g: Gap) -> Anomaly {
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
    Anomaly::at(AnomalyKind::LostEvent, log, g.at, detail)
}
