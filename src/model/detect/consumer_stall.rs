//! `consumer-stall`: a consumer group whose committed offset stalls, stops or
//! rewinds on a partition while records wait. Its findings come from samples
//! of the groups' committed offsets (see `crate::model::groups` and
//! [`crate::model::Model::observe_groups`]), not from the records: the unit
//! here only carries the switch and the description.

use super::{Anomaly, AnomalyKind, DetectConfig, Detector};
use crate::model::log::{LogIndex, ObservedLog};

pub(super) fn make(_: &DetectConfig) -> Box<dyn Detector> {
    Box::new(ConsumerStall)
}

pub struct ConsumerStall;

impl Detector for ConsumerStall {
    fn kind(&self) -> AnomalyKind {
        AnomalyKind::ConsumerStall
    }
    fn summary(&self) -> &'static str {
        "a consumer group's committed offset stalls, stops or goes back while records wait"
    }
    fn on_append(&mut self, _: &ObservedLog, _: LogIndex, _: i64) -> Vec<Anomaly> {
        Vec::new()
    }
}
