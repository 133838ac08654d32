//! The observer's model: pure, deterministic, fed only with Kafka records.

pub mod record;

use std::collections::HashMap;

use record::Record;
use serde_json::json;

/// Interim model until the full observer lands: counts deliveries by `ce_id`.
#[derive(Default)]
pub struct Model {
    records: Vec<Record>,
    deliveries: HashMap<String, u32>,
    poison: u64,
}

impl Model {
    pub fn ingest(&mut self, r: Record, _now_ms: i64) {
        let id = r
            .headers
            .iter()
            .find(|(k, _)| k == "ce_id")
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned);
        match id {
            Some(id) => *self.deliveries.entry(id).or_default() += 1,
            None => self.poison += 1,
        }
        self.records.push(r);
    }
    pub fn tick(&mut self, _now_ms: i64) {}
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }
    pub fn positions(&self) -> HashMap<(String, i32), i64> {
        crate::kafka::tap::positions(self.records.iter())
    }
    pub fn has_event(&self, id: &str) -> bool {
        self.deliveries.contains_key(id)
    }
    pub fn events_json(&self) -> serde_json::Value {
        let unique = self.deliveries.len() as u64;
        let total: u64 = self.deliveries.values().map(|n| u64::from(*n)).sum();
        json!({"observed": self.records.len(), "unique": unique, "duplicate_deliveries": total - unique, "poison": self.poison})
    }
    pub fn anomalies_json(&self) -> Vec<serde_json::Value> {
        vec![]
    }
    pub fn anomaly_counts_json(&self) -> serde_json::Value {
        json!({})
    }
}
