//! `missing-correlation`: records without a correlation id, summarised per (topic, type,
//! source). A system that never had correlation ids yields one finding per group, with the
//! count and the first and last records, not one per record; every record still marks its row.

use super::{type_of, Anomaly, AnomalyGroup, AnomalyKind, DetectConfig, Detector};
use crate::model::log::{FxMap, LogIndex, ObservedLog, Sym};

pub(super) fn make(_: &DetectConfig) -> Box<dyn Detector> {
    Box::<MissingCorrelation>::default()
}

struct Group {
    count: u64,
    first: LogIndex,
}

/// Events (first deliveries) without a correlation id, grouped by topic, type and source.
#[derive(Default)]
pub struct MissingCorrelation {
    groups: FxMap<(Sym, Option<Sym>, Option<Sym>), Group>,
}

impl MissingCorrelation {
    const KIND: AnomalyKind = AnomalyKind::MissingCorrelation;
}

impl Detector for MissingCorrelation {
    fn kind(&self) -> AnomalyKind {
        Self::KIND
    }
    fn summary(&self) -> &'static str {
        "records have no correlation id (one finding per topic, type and source)"
    }
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, _now: i64) -> Vec<Anomaly> {
        let (Some(m), Some(row)) = (log.meta(idx), log.row(idx)) else {
            return Vec::new();
        };
        if !m.first_delivery || m.correlation_id.is_some() {
            return Vec::new();
        }
        let g = self
            .groups
            .entry((row.topic, m.event_type, m.source))
            .or_insert(Group {
                count: 0,
                first: idx,
            });
        g.count += 1;
        let (count, first) = (g.count, g.first);
        let (topic, ty) = (log.resolve(row.topic), type_of(log, idx));
        let source = log.resolve_opt(m.source).unwrap_or("?");
        let Some(first_row) = log.row(first) else {
            return Vec::new();
        };
        let detail = if count == 1 {
            format!(
                "{ty} from {source} on {topic} has no correlation id (at {}/{})",
                row.partition, row.offset
            )
        } else {
            format!(
                "{count} {ty} records from {source} on {topic} have no correlation id (first at {}/{}, last at {}/{})",
                first_row.partition, first_row.offset, row.partition, row.offset
            )
        };
        let mut a = Anomaly::at(Self::KIND, log, first, detail);
        if first != idx {
            a = a.with(idx);
        }
        a.group = Some(AnomalyGroup {
            key: format!("{topic}|{ty}|{source}"),
            count,
            first_partition: first_row.partition,
            first_offset: first_row.offset,
            last_partition: row.partition,
            last_offset: row.offset,
        });
        vec![a]
    }
}
