//! `out-of-order`: an aggregate's events out of version order, or spread over partitions.

use super::{retain_live, kind_code, kind_word, loc, type_of, Anomaly, AnomalyKind, DetectConfig, Detector};
use crate::model::log::{fx_map_bytes, FxMap, LogIndex, ObservedLog, Sym};

pub(super) fn make(_: &DetectConfig) -> Box<dyn Detector> {
    Box::<OutOfOrder>::default()
}

/// Per aggregate: a version lower than one already seen, or one topic's records of the
/// aggregate spread over several partitions (keying broken).
#[derive(Default)]
pub struct OutOfOrder {
    highest: FxMap<(Sym, u8), (i64, LogIndex)>,
    placement: FxMap<(Sym, Sym), (i32, LogIndex, bool)>,
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
    fn state_bytes(&self) -> usize {
        fx_map_bytes(&self.highest) + fx_map_bytes(&self.placement)
    }
    fn on_forget(&mut self, log: &ObservedLog) {
        retain_live(&mut self.highest, |&(agg, _), _| log.is_live(agg));
        retain_live(&mut self.placement, |&(agg, _), _| log.is_live(agg));
    }
}
