//! `duplicate-effect`: one cause produced the same effect twice.

use super::{retain_live, loc, Anomaly, AnomalyKind, DetectConfig, Detector};
use crate::model::log::{fx_map_bytes, FxMap, LogIndex, ObservedLog, Sym};

pub(super) fn make(_: &DetectConfig) -> Box<dyn Detector> {
    Box::<DuplicateEffect>::default()
}

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
    fn state_bytes(&self) -> usize {
        fx_map_bytes(&self.seen)
    }
    fn on_forget(&mut self, log: &ObservedLog) {
        retain_live(&mut self.seen, |&(cause, ty), &(id, _)| log.is_live(cause) && log.is_live(ty) && log.is_live(id));
    }
}
