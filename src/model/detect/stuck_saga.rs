//! `stuck-saga`: a saga without its terminal event, idle for longer than the timeout. A saga is
//! a correlation chain that carries commands (orchestrated) or holds one of the global start
//! types (choreographed: events only), ended by the global terminal types; or one that belongs
//! to a flow of the profile (it holds one of the flow's start types, or the flow names none),
//! ended by the flow's terminal types. A chain with none of these (a foreign stream) has no
//! known end and is never judged.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{retain_live, retain_live_heap, heap_bytes, loc, type_of, Anomaly, AnomalyKind, DetectConfig, Detector, FlowConfig};
use crate::model::log::{fx_map_bytes, FxMap, LogIndex, ObservedLog, Sym};

pub(super) fn make(c: &DetectConfig) -> Box<dyn Detector> {
    let mut d = StuckSaga::new(c.terminal_types.clone(), c.stuck_saga_timeout_ms);
    d.start_types = c.start_types.clone();
    d.flows = c.flows.clone();
    Box::new(d)
}

struct Chain {
    last_activity: i64,
    last_idx: LogIndex,
    terminal: bool,
    reported: bool,
    scheduled: bool,
    /// Holds a command or a start type: a saga, not a plain event stream.
    saga: bool,
}

/// A saga (a correlation chain that carries commands, or holds a start type)
/// with no terminal event, idle for longer than the timeout. Chains of other
/// events only (foreign streams) have no known end and are not judged.
pub struct StuckSaga {
    terminal_types: Vec<String>,
    /// Types that start a saga without commands (a choreography).
    start_types: Vec<String>,
    flows: Vec<FlowConfig>,
    timeout_ms: i64,
    chains: FxMap<Sym, Chain>,
    due: BinaryHeap<Reverse<(i64, Sym)>>,
}

impl StuckSaga {
    pub fn new(terminal_types: Vec<String>, timeout_ms: i64) -> Self {
        StuckSaga {
            terminal_types,
            start_types: Vec::new(),
            flows: Vec::new(),
            timeout_ms,
            chains: FxMap::default(),
            due: BinaryHeap::new(),
        }
    }
}

impl StuckSaga {
    const KIND: AnomalyKind = AnomalyKind::StuckSaga;

    fn terminal_list(&self) -> String {
        let mut all: Vec<&str> = self.terminal_types.iter().map(String::as_str).collect();
        for f in &self.flows {
            all.extend(f.terminal_types.iter().map(String::as_str));
        }
        all.dedup();
        all.join(", ")
    }
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
        if self.terminal_types.is_empty() && self.flows.is_empty() {
            return Vec::new();
        }
        let (Some(m), Some(row)) = (log.meta(idx), log.row(idx)) else {
            return Vec::new();
        };
        let Some(corr) = m.correlation_id else {
            return Vec::new();
        };
        let ty = log.resolve_opt(m.event_type);
        let is_terminal = ty.is_some_and(|t| {
            self.terminal_types.iter().any(|x| x == t)
                || self
                    .flows
                    .iter()
                    .any(|f| f.terminal_types.iter().any(|x| x == t))
        });
        let in_flow = self.flows.iter().any(|f| {
            f.start_types.is_empty() || ty.is_some_and(|t| f.start_types.iter().any(|x| x == t))
        });
        let commanded = m.is_command && !self.terminal_types.is_empty();
        let started = !self.terminal_types.is_empty()
            && ty.is_some_and(|t| self.start_types.iter().any(|x| x == t));
        let c = self.chains.entry(corr).or_insert(Chain {
            last_activity: row.time_ms,
            last_idx: idx,
            terminal: false,
            reported: false,
            scheduled: false,
            saga: false,
        });
        c.saga |= commanded || started || in_flow;
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
        let terminals = self.terminal_list();
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
                terminals,
                type_of(log, c.last_idx),
                loc(log, c.last_idx),
                now.saturating_sub(c.last_activity)
            );
            out.push(Anomaly::at(Self::KIND, log, c.last_idx, detail));
        }
        out
    }
    fn state_bytes(&self) -> usize {
        fx_map_bytes(&self.chains) + heap_bytes(&self.due)
    }
    fn on_forget(&mut self, log: &ObservedLog) {
        retain_live(&mut self.chains, |&c, _| log.is_live(c));
        retain_live_heap(&mut self.due, |Reverse((_, c))| log.is_live(*c));
    }
}
