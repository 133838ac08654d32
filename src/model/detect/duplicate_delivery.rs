//! `duplicate-delivery`: the same event id delivered more than once.

use super::{loc, type_of, Anomaly, AnomalyKind, DetectConfig, Detector};
use crate::model::log::{LogIndex, ObservedLog};

pub(super) fn make(_: &DetectConfig) -> Box<dyn Detector> {
    Box::new(DuplicateDelivery)
}

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
        let Some(m) = log.meta(idx).filter(|m| !m.first_delivery && !m.dead_letter) else {
            return Vec::new();
        };
        let deliveries = log.deliveries_of(m.event_id);
        let Some(&first) = deliveries.first() else {
            return Vec::new();
        };
        if first == idx {
            let detail = format!(
                "{} {} delivered again; the earlier deliveries were dropped (memory limit)",
                type_of(log, idx),
                log.resolve(m.event_id)
            );
            return vec![Anomaly::at(Self::KIND, log, idx, detail)];
        }
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
