//! `poison-message`: a record that could not be decoded.

use super::{Anomaly, AnomalyKind, DetectConfig, Detector};
use crate::model::log::{LogIndex, ObservedLog, RowKind};

pub(super) fn make(_: &DetectConfig) -> Box<dyn Detector> {
    Box::new(PoisonMessage)
}

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
