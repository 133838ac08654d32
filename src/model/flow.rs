//! The flow map: who publishes what where, and who consumes it, from the
//! records alone.
//!
//! Nodes are services (a record's CloudEvents `source`, or the profile's
//! source path; `unknown` without one) and topics. A record from service S on
//! topic T is an edge S → T ("publishes", counted per event type); a record
//! from S whose cause is a record on topic U is an edge U → S ("consumes": S
//! read U to do it). Per edge: records, event types, first and last time (so
//! a rate), and what went wrong on it: duplicate deliveries, dead-letter
//! copies, and findings of the lints at its records (duplicate effects,
//! schema drift, ...).
//!
//! Built incrementally in log order ([`FlowMap::add`]), so a view can follow
//! a cursor that only moves forward without starting over.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

use super::detect::{Anomaly, AnomalyKind};
use super::log::{FxMap, LogIndex, ObservedLog, Sym};

/// An edge's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// service → topic
    Publishes,
    /// topic → service
    Consumes,
}

/// What flowed along one edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EdgeStats {
    pub records: u64,
    /// Event type → records.
    pub types: BTreeMap<String, u64>,
    #[serde(skip)]
    pub first_ms: Option<i64>,
    #[serde(skip)]
    pub last_ms: Option<i64>,
    /// Deliveries of an event already delivered (publishes edges).
    pub duplicates: u64,
    /// Copies on a dead-letter topic.
    pub dead_letters: u64,
    /// Lint findings at records of this edge, by kind.
    pub anomalies: BTreeMap<String, u64>,
}

impl EdgeStats {
    /// Records per second over the edge's own time span (at least one second).
    pub fn rate(&self) -> f64 {
        match (self.first_ms, self.last_ms) {
            (Some(a), Some(b)) => {
                self.records as f64 / ((b.saturating_sub(a) as f64) / 1000.0).max(1.0)
            }
            _ => 0.0,
        }
    }

    /// Whether anything went wrong on it.
    pub fn troubled(&self) -> bool {
        self.duplicates > 0 || self.dead_letters > 0 || !self.anomalies.is_empty()
    }
}

/// One edge's key: kind, from, to.
pub type EdgeKey = (EdgeKind, String, String);

/// A node while counting: a service (source; None: unknown) or a topic, as interned.
type NodeSym = Option<Sym>;

/// An edge while counting (interned names, no allocation per record).
#[derive(Debug, Clone, Default, PartialEq)]
struct Acc {
    records: u64,
    types: FxMap<Option<Sym>, u64>,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    duplicates: u64,
    dead_letters: u64,
    anomalies: BTreeMap<AnomalyKind, u64>,
}

impl Acc {
    fn count(&mut self, ty: Option<Sym>, time_ms: i64) {
        self.records += 1;
        *self.types.entry(ty).or_default() += 1;
        self.first_ms = Some(self.first_ms.map_or(time_ms, |t| t.min(time_ms)));
        self.last_ms = Some(self.last_ms.map_or(time_ms, |t| t.max(time_ms)));
    }
}

/// The map being built, in log order (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct FlowMap {
    edges: FxMap<(EdgeKind, NodeSym, NodeSym), Acc>,
    /// The next log index [`FlowMap::add`] expects (for callers that extend it).
    pub next: usize,
}

/// The map with names: what the view draws and the report lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flow {
    pub services: BTreeSet<String>,
    pub topics: BTreeSet<String>,
    pub edges: BTreeMap<EdgeKey, EdgeStats>,
}

/// The service a record comes from.
pub fn service_of(log: &ObservedLog, idx: LogIndex) -> Option<&str> {
    let m = log.meta(idx)?;
    Some(log.resolve_opt(m.source).unwrap_or("unknown"))
}

/// The publishes edge a record is on (names).
fn publish_key(log: &ObservedLog, idx: LogIndex) -> Option<EdgeKey> {
    let row = log.row(idx)?;
    Some((
        EdgeKind::Publishes,
        service_of(log, idx)?.to_owned(),
        log.resolve(row.topic).to_owned(),
    ))
}

/// The publishes edge a record is on (interned).
fn publish_sym(log: &ObservedLog, idx: LogIndex) -> Option<(EdgeKind, NodeSym, NodeSym)> {
    let (row, m) = (log.row(idx)?, log.meta(idx)?);
    Some((EdgeKind::Publishes, m.source, Some(row.topic)))
}

/// The first delivery of the record's cause, if it was seen (before or after the record:
/// topics are read in parallel, an effect may arrive before its cause).
fn cause_of(log: &ObservedLog, idx: LogIndex) -> Option<LogIndex> {
    let cause = log.meta(idx)?.causation_id?;
    log.deliveries_of(cause).first().copied()
}

/// The topic of the first delivery of the record's cause, if it was seen.
fn cause_topic(log: &ObservedLog, idx: LogIndex) -> Option<&str> {
    let first = cause_of(log, idx)?;
    log.row(first).map(|r| log.resolve(r.topic))
}

impl FlowMap {
    /// Build from these records (in log order) and the findings at them.
    pub fn build(
        log: &ObservedLog,
        indices: impl IntoIterator<Item = LogIndex>,
        anomalies: &[Anomaly],
    ) -> FlowMap {
        let mut map = FlowMap::default();
        let mut upto = None;
        for idx in indices {
            map.add(log, idx);
            upto = Some(idx);
        }
        if let Some(upto) = upto {
            map.add_anomalies(log, anomalies, upto);
        }
        map
    }

    /// Add one record (call in log order).
    pub fn add(&mut self, log: &ObservedLog, idx: LogIndex) {
        self.next = self.next.max(idx as usize + 1);
        let (Some(row), Some(m)) = (log.row(idx), log.meta(idx)) else {
            return;
        };
        let key = (EdgeKind::Publishes, m.source, Some(row.topic));
        // Judged once per topic by the log (`is_dead_letter_topic`), not per record.
        let dead = m.dead_letter;
        let e = self.edges.entry(key).or_default();
        if dead {
            e.dead_letters += 1;
            e.count(m.event_type, row.time_ms);
            return;
        }
        if !m.first_delivery {
            e.duplicates += 1;
            return;
        }
        e.count(m.event_type, row.time_ms);
        // Effects that arrived before this record, their cause: their consume edge now.
        for &child in log.children_of(m.event_id) {
            if child >= idx
                || !log
                    .meta(child)
                    .is_some_and(|c| c.first_delivery && !c.dead_letter)
            {
                continue;
            }
            let (Some(cm), Some(cr)) = (log.meta(child), log.row(child)) else {
                continue;
            };
            self.edges
                .entry((EdgeKind::Consumes, Some(row.topic), cm.source))
                .or_default()
                .count(m.event_type, cr.time_ms);
        }
        // This record's cause, read before it: its consume edge.
        if let Some(first) = cause_of(log, idx).filter(|&f| f < idx) {
            let (Some(cr), cause_ty) = (log.row(first), log.meta(first).and_then(|c| c.event_type))
            else {
                return;
            };
            self.edges
                .entry((EdgeKind::Consumes, Some(cr.topic), m.source))
                .or_default()
                .count(cause_ty, row.time_ms);
        }
    }

    /// Count the findings reported at records up to `upto` on the edges of those records
    /// (duplicate effects on the consume edge that caused them, the rest on the publish edge).
    pub fn add_anomalies(&mut self, log: &ObservedLog, anomalies: &[Anomaly], upto: LogIndex) {
        for e in self.edges.values_mut() {
            e.anomalies.clear();
        }
        for a in anomalies {
            let Some(&idx) = a.log_indices.first().filter(|&&i| i <= upto) else {
                continue;
            };
            if a.kind == AnomalyKind::DuplicateDelivery {
                continue; // counted as `duplicates`
            }
            let consume = (a.kind == AnomalyKind::DuplicateEffect)
                .then(|| {
                    let first = cause_of(log, idx)?;
                    let topic = log.row(first)?.topic;
                    Some((EdgeKind::Consumes, Some(topic), log.meta(idx)?.source))
                })
                .flatten();
            if let Some(e) = consume
                .or_else(|| publish_sym(log, idx))
                .and_then(|k| self.edges.get_mut(&k))
            {
                *e.anomalies.entry(a.kind).or_default() += 1;
            }
        }
    }

    /// The map with names resolved.
    pub fn view(&self, log: &ObservedLog) -> Flow {
        let name = |kind: EdgeKind, service: bool, n: NodeSym| -> String {
            let _ = kind;
            match n {
                Some(s) => log.resolve(s).to_owned(),
                None if service => "unknown".to_owned(),
                None => "?".to_owned(),
            }
        };
        let mut flow = Flow::default();
        for ((kind, from, to), a) in &self.edges {
            let (from_service, to_service) = match kind {
                EdgeKind::Publishes => (true, false),
                EdgeKind::Consumes => (false, true),
            };
            let (from, to) = (
                name(*kind, from_service, *from),
                name(*kind, to_service, *to),
            );
            for (n, service) in [(&from, from_service), (&to, to_service)] {
                if service {
                    flow.services.insert(n.clone());
                } else {
                    flow.topics.insert(n.clone());
                }
            }
            let stats = EdgeStats {
                records: a.records,
                types: a
                    .types
                    .iter()
                    .map(|(t, n)| (log.resolve_opt(*t).unwrap_or("?").to_owned(), *n))
                    .collect(),
                first_ms: a.first_ms,
                last_ms: a.last_ms,
                duplicates: a.duplicates,
                dead_letters: a.dead_letters,
                anomalies: a
                    .anomalies
                    .iter()
                    .map(|(k, n)| (k.as_str().to_owned(), *n))
                    .collect(),
            };
            flow.edges.insert((*kind, from, to), stats);
        }
        flow
    }

    /// Log indices of the records an edge stands for: a publish edge's records, or, for a
    /// consume edge, the consumer's records caused by records on the topic.
    pub fn records_of(log: &ObservedLog, key: &EdgeKey, upto: LogIndex) -> Vec<LogIndex> {
        (0..=upto)
            .filter(|&idx| match key.0 {
                EdgeKind::Publishes => publish_key(log, idx).as_ref() == Some(key),
                EdgeKind::Consumes => {
                    log.meta(idx).is_some_and(|m| m.first_delivery)
                        && service_of(log, idx) == Some(key.2.as_str())
                        && cause_topic(log, idx) == Some(key.1.as_str())
                }
            })
            .collect()
    }

    /// The report's `flow` section.
    pub fn to_json(&self, log: &ObservedLog) -> Value {
        self.view(log).to_json()
    }
}

impl Flow {
    /// Consume edges from consumer groups (what they committed on which topic): topic →
    /// `group NAME`, with the records committed and, for a group that stalls, stops or
    /// rewinds there, a `consumer-stall`.
    pub fn add_groups(&mut self, lags: &[super::groups::GroupLag]) {
        for p in lags.iter().flat_map(|g| &g.partitions) {
            let node = format!("group {}", p.group);
            self.services.insert(node.clone());
            self.topics.insert(p.topic.clone());
            let e = self
                .edges
                .entry((EdgeKind::Consumes, p.topic.clone(), node))
                .or_default();
            e.records += p.committed.unwrap_or(0).max(0) as u64;
            if p.verdict != super::groups::Verdict::Ok && p.verdict != super::groups::Verdict::Warn
            {
                *e.anomalies.entry("consumer-stall".into()).or_default() += 1;
            }
        }
    }

    /// The report's `flow` section.
    pub fn to_json(&self) -> Value {
        let edges: Vec<Value> = self
            .edges
            .iter()
            .map(|((kind, from, to), e)| {
                json!({
                    "kind": kind,
                    "from": from,
                    "to": to,
                    "records": e.records,
                    "per_second": (e.rate() * 100.0).round() / 100.0,
                    "types": e.types,
                    "duplicates": e.duplicates,
                    "dead_letters": e.dead_letters,
                    "anomalies": e.anomalies,
                })
            })
            .collect();
        json!({
            "services": self.services,
            "topics": self.topics,
            "edges": edges,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Record;

    fn rec(
        topic: &str,
        offset: i64,
        id: &str,
        ty: &str,
        source: &str,
        cause: Option<&str>,
    ) -> Record {
        let mut r = Record::new(topic, 0, offset)
            .with_timestamp(1_000 * offset)
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", id)
            .with_header("ce_type", ty)
            .with_header("ce_source", source)
            .with_header("ce_correlationid", "c")
            .with_value(b"{}".to_vec());
        if let Some(c) = cause {
            r = r.with_header("ce_causationid", c);
        }
        r
    }

    #[test]
    fn publishes_and_consumes_from_the_records() {
        let mut m = crate::model::Model::default();
        for r in [
            rec("orders", 0, "e1", "OrderCreated", "/order", None),
            rec(
                "inventory",
                1,
                "e2",
                "StockReserved",
                "/inventory",
                Some("e1"),
            ),
            rec(
                "inventory",
                2,
                "e2",
                "StockReserved",
                "/inventory",
                Some("e1"),
            ),
            rec(
                "payments",
                3,
                "e3",
                "PaymentCompleted",
                "/payment",
                Some("e2"),
            ),
            rec("dlq", 4, "e1", "OrderCreated", "/order", None),
            // An effect read before its cause.
            rec("shipping", 5, "e5", "Shipped", "/shipping", Some("e4")),
            rec(
                "payments",
                6,
                "e4",
                "PaymentCompleted",
                "/payment",
                Some("e3"),
            ),
        ] {
            m.ingest(&r, 0).unwrap();
        }
        let log = m.log();
        let built = FlowMap::build(log, 0..7, m.anomalies());
        let map = built.view(log);
        assert_eq!(map.services.len(), 4);
        assert_eq!(map.topics.len(), 5);
        let key = |k, a: &str, b: &str| (k, a.to_owned(), b.to_owned());
        let inv = &map.edges[&key(EdgeKind::Publishes, "/inventory", "inventory")];
        assert_eq!((inv.records, inv.duplicates), (1, 1));
        assert!(inv.troubled());
        assert_eq!(inv.types["StockReserved"], 1);
        let c = &map.edges[&key(EdgeKind::Consumes, "orders", "/inventory")];
        assert_eq!((c.records, c.types["OrderCreated"]), (1, 1));
        assert!(map
            .edges
            .contains_key(&key(EdgeKind::Consumes, "inventory", "/payment")));
        let late = &map.edges[&key(EdgeKind::Consumes, "payments", "/shipping")];
        assert_eq!((late.records, late.types["PaymentCompleted"]), (1, 1));
        assert_eq!(
            map.edges[&key(EdgeKind::Consumes, "payments", "/payment")].records,
            1,
            "e4 caused by e3"
        );
        assert_eq!(
            map.edges[&key(EdgeKind::Publishes, "/order", "dlq")].dead_letters,
            1
        );
        assert_eq!(
            FlowMap::records_of(log, &key(EdgeKind::Consumes, "inventory", "/payment"), 4),
            vec![3]
        );
        let j = map.to_json();
        assert_eq!(j["edges"].as_array().unwrap().len(), 9, "{j:#}");
        // Incremental equals built at once.
        let mut inc = FlowMap::default();
        for i in 0..7 {
            inc.add(log, i);
        }
        inc.add_anomalies(log, m.anomalies(), 6);
        assert_eq!(inc.view(log), map);
        assert_eq!(inc.next, 7);
    }
}
