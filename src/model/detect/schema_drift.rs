//! `schema-drift`: a record whose payload shape breaks what its type has
//! established, or its declared schema.
//!
//! Per (topic, event type) the lint learns the payload's shape from the
//! records it sees: field paths (top level, nested objects and the objects in
//! arrays, one level down), their JSON kinds, and how often each is present.
//! At the first record where a field that was always there is missing, or a
//! field changes kind, it reports the drift, naming the field, the old and new
//! shape, the producer and the offset. New fields are additive: a new version,
//! not an anomaly. A record that names a `dataschema` the demo's registry
//! holds is also validated against it. Shapes seen before are recognised by a
//! hash, so a steady stream costs one payload walk per first delivery.

use std::collections::{BTreeMap, HashSet};

use eventscope_demo::contracts::{parse_uri, Registry};
use serde_json::Value;

use super::{loc, Anomaly, AnomalyKind, DetectConfig, Detector};
use crate::model::log::{FxMap, LogIndex, ObservedLog, Sym};
use crate::model::schemas::{fields, kind_names, registry_for, shape_hash, FieldStat};

pub(super) fn make(cfg: &DetectConfig) -> Box<dyn Detector> {
    // The directory was checked when the flag or profile was read; a directory
    // that broke since then leaves the demo's contracts.
    let registry = cfg.schemas_dir.as_deref().and_then(|d| match Registry::load_dir(d) {
        Ok(r) => Some(std::sync::Arc::new(r)),
        Err(e) => {
            tracing::warn!("--schemas: {e}");
            None
        }
    });
    Box::new(SchemaDrift {
        registry,
        ..SchemaDrift::default()
    })
}

/// Records of a type before a missing field counts as drift.
const MIN_RECORDS: u64 = 3;

#[derive(Default)]
pub struct SchemaDrift {
    /// Shapes per (topic, event type, declared schema): a record that names another
    /// version of its contract starts that version's shape (the declared check covers it);
    /// records that name none share one (hash 0).
    types: FxMap<(Sym, Sym, u64), TypeShape>,
    /// The user's contracts (`--schemas DIR`), if given.
    registry: Option<std::sync::Arc<Registry>>,
    /// Fingerprints already judged, per (topic, type): the shape's key and field-list hash.
    seen: FxMap<(Sym, Sym, u64), (u64, u64)>,
}

#[derive(Default)]
struct TypeShape {
    records: u64,
    fields: BTreeMap<String, FieldStat>,
    /// Hashes of the field lists seen (a known shape needs no comparison).
    known: HashSet<u64>,
    /// The field list of each known hash (a record with a known fingerprint counts with it).
    lists: FxMap<u64, Vec<(String, u8)>>,
    /// Distinct shapes seen so far (the learned versions).
    versions: u32,
}

impl SchemaDrift {
    const KIND: AnomalyKind = AnomalyKind::SchemaDrift;
}

impl TypeShape {
    /// What `now` breaks in the shape learned so far.
    fn breaks(&self, now: &[(String, u8)]) -> Vec<String> {
        let mut out = Vec::new();
        if self.records < MIN_RECORDS {
            return out;
        }
        let present: BTreeMap<&str, u8> = now.iter().map(|(p, k)| (p.as_str(), *k)).collect();
        // Every record so far had the field: every shape learned has it (each shape was
        // learned from a record, and a record of a known shape is one of them).
        let in_all = |path: &str| self.lists.values().all(|l| l.iter().any(|(p, _)| p == path));
        for (path, stat) in &self.fields {
            let parent_present = match path.rsplit_once('.') {
                // A nested field can only be missing where its parent is present.
                Some((parent, _)) => present.contains_key(parent.trim_end_matches("[]")),
                None => true,
            };
            match present.get(path.as_str()) {
                // Fields inside array elements are judged by kind only (an
                // empty array has none).
                None if parent_present && !path.contains("[]") && in_all(path) => out.push(format!(
                    "field '{path}' ({}, in all {} records so far) is missing",
                    kind_names(stat.kinds),
                    self.records
                )),
                Some(&k) if stat.kinds & k == 0 && stat.kinds & 1 == 0 && k != 1 => {
                    out.push(format!(
                        "field '{path}' was {}, is {} now",
                        kind_names(stat.kinds),
                        kind_names(k)
                    ))
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            let added: Vec<&str> = now
                .iter()
                .filter(|(p, _)| !self.fields.contains_key(p))
                .map(|(p, _)| p.as_str())
                .collect();
            if !added.is_empty() {
                out.push(format!("new: {} (renamed?)", added.join(", ")));
            }
        }
        out
    }

    /// Count one more record of a shape already learned.
    fn learn_known(&mut self, hash: u64) {
        if self.lists.contains_key(&hash) {
            self.records += 1;
        }
    }

    fn learn(&mut self, now: &[(String, u8)], hash: u64) {
        self.records += 1;
        if self.known.insert(hash) {
            self.versions += 1;
            self.lists.insert(hash, now.to_vec());
        }
        for (p, k) in now {
            self.fields.entry(p.clone()).or_default().kinds |= *k;
        }
    }
}

/// Check a payload against the contract its `dataschema` names, where the
/// registry holds that type: the named version, or, for a version nobody
/// registered, the latest registered one (what its consumers read).
fn declared(reg: Option<&Registry>, uri: &str, payload: &Value) -> Option<String> {
    let (t, v) = parse_uri(uri)?;
    let reg = registry_for(reg, uri)?;
    reg.versions(t).first()?;
    match reg.get(t, v) {
        Some(c) => c
            .validate(payload)
            .err()
            .map(|e| format!("violates its declared schema: {e}")),
        None => {
            let latest = reg.get(t, reg.latest(t)?)?;
            latest.validate(payload).err().map(|e| {
                format!(
                    "names {t} v{v}, which is not registered, and breaks v{}, the latest registered version: {e}",
                    latest.version
                )
            })
        }
    }
}

impl Detector for SchemaDrift {
    fn kind(&self) -> AnomalyKind {
        Self::KIND
    }
    fn summary(&self) -> &'static str {
        "a payload whose shape breaks its type's established or declared schema"
    }
    fn on_append(&mut self, log: &ObservedLog, idx: LogIndex, _now: i64) -> Vec<Anomaly> {
        let Some(m) = log.meta(idx).filter(|m| m.first_delivery) else {
            return Vec::new();
        };
        let (Some(ty), Some(row)) = (m.event_type, log.row(idx)) else {
            return Vec::new();
        };
        // A fingerprint judged before: same shape, nothing new to say; count it and go. The
        // decoder took it in its own pass over the value (0: it took none).
        let fp = Some(m.shape).filter(|&f| f != 0);
        if let Some(&(declared_key, hash)) = fp.and_then(|f| self.seen.get(&(row.topic, ty, f))) {
            if let Some(shape) = self.types.get_mut(&(row.topic, ty, declared_key)) {
                shape.learn_known(hash);
            }
            return Vec::new();
        }
        let Some(event) = log.event(idx) else {
            return Vec::new();
        };
        let Some(payload) = event.payload.as_ref().filter(|p| p.is_object()) else {
            return Vec::new();
        };
        let now = fields(payload);
        let hash = shape_hash(&now);
        let declared_key = event.dataschema.as_deref().map_or(0, |d| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            d.hash(&mut h);
            h.finish() | 1
        });
        let shape = self.types.entry((row.topic, ty, declared_key)).or_default();
        let mut problems = Vec::new();
        if !shape.known.contains(&hash) {
            problems = shape.breaks(&now);
            if let Some(uri) = event.dataschema.as_deref() {
                problems.extend(declared(self.registry.as_deref(), uri, payload));
            }
        }
        shape.learn(&now, hash);
        if let Some(f) = fp {
            self.seen.insert((row.topic, ty, f), (declared_key, hash));
        }
        if problems.is_empty() {
            return Vec::new();
        }
        let declared = event
            .dataschema
            .as_deref()
            .map(|d| format!(" (dataschema {d})"))
            .unwrap_or_default();
        let detail = format!(
            "{} on {} changed shape at {}{declared}: {}; producer {}",
            log.resolve(ty),
            log.resolve(row.topic),
            loc(log, idx),
            problems.join("; "),
            log.resolve_opt(m.source).unwrap_or("unknown"),
        );
        vec![Anomaly::at(Self::KIND, log, idx, detail)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn learns_shapes_and_names_what_broke() {
        let mut t = TypeShape::default();
        let v1 = json!({"id": "a", "items": [{"q": 1}], "total": 3});
        for _ in 0..3 {
            let f = fields(&v1);
            assert!(t.breaks(&f).is_empty());
            t.learn(&f, shape_hash(&f));
        }
        // Additive: a new optional field is not drift.
        let v2 = json!({"id": "a", "items": [{"q": 1}], "total": 3, "currency": "EUR"});
        assert!(t.breaks(&fields(&v2)).is_empty());
        // Renamed: items gone, line_items new.
        let renamed = json!({"id": "a", "line_items": [{"q": 1}], "total": 3});
        let b = t.breaks(&fields(&renamed));
        assert!(b[0].contains("'items'") && b[0].contains("missing"), "{b:?}");
        assert!(b.iter().any(|x| x.contains("line_items")), "{b:?}");
        // Retyped, nested too.
        let retyped = json!({"id": "a", "items": [{"q": "1"}], "total": "3"});
        let b = t.breaks(&fields(&retyped));
        assert!(b.iter().any(|x| x.contains("'total' was number, is string")), "{b:?}");
        assert!(b.iter().any(|x| x.contains("'items[].q'")), "{b:?}");
        // An empty array hides nothing: its element fields are not "missing".
        let empty = json!({"id": "a", "items": [], "total": 3});
        assert!(t.breaks(&fields(&empty)).is_empty());
    }

    /// Records of two declared versions arrive in any order (partitions are read in
    /// parallel): a v1 after v2s is its own version, not a v2 missing a field.
    #[test]
    fn declared_versions_learn_their_own_shapes() {
        use crate::model::record::Record;
        use eventscope_demo::contracts::uri;
        let rec = |offset: i64, version: u32, data: &str| {
            Record::new("orders", 0, offset)
                .with_header("ce_specversion", "1.0")
                .with_header("ce_id", &format!("e{offset}"))
                .with_header("ce_type", "OrderCreated")
                .with_header("ce_source", "/orders")
                .with_header("ce_dataschema", &uri("OrderCreated", version))
                .with_value(data.as_bytes().to_vec())
        };
        let v1 = r#"{"order_id":"o","customer_email":"e","shipping_address":"a","items":[],"total_cents":1}"#;
        let v2 = r#"{"order_id":"o","customer_email":"e","shipping_address":"a","items":[],"total_cents":1,"currency":"EUR"}"#;
        let mut m = crate::model::Model::default();
        for (i, (v, d)) in [(2, v2), (2, v2), (2, v2), (1, v1), (1, v1), (1, v1)]
            .into_iter()
            .enumerate()
        {
            m.ingest(&rec(i as i64, v, d), 0).unwrap();
        }
        assert_eq!(m.anomaly_counts()[&AnomalyKind::SchemaDrift], 0, "{:?}", m.anomalies());
        // Within one declared version a missing field is still drift.
        let broken = r#"{"order_id":"o","customer_email":"e","shipping_address":"a","total_cents":1}"#;
        m.ingest(&rec(6, 1, broken), 0).unwrap();
        assert_eq!(m.anomaly_counts()[&AnomalyKind::SchemaDrift], 1, "{:?}", m.anomalies());
    }

    /// Records of a known fingerprint are counted without being decoded, and still count:
    /// after five alike, the first one without a field is drift.
    #[test]
    fn known_fingerprints_count_towards_the_shape() {
        use crate::model::record::Record;
        let rec = |offset: i64, data: &str| {
            Record::new("bank", 0, offset)
                .with_header("ce_specversion", "1.0")
                .with_header("ce_id", &format!("e{offset}"))
                .with_header("ce_type", "Paid")
                .with_header("ce_source", "/bank")
                .with_value(data.as_bytes().to_vec())
        };
        let mut m = crate::model::Model::default();
        for i in 0..5 {
            m.ingest(&rec(i, &format!(r#"{{"id":"p{i}","amount":{i},"to":{{"iban":"x"}}}}"#)), 0)
                .unwrap();
        }
        assert_eq!(m.anomaly_counts()[&AnomalyKind::SchemaDrift], 0);
        m.ingest(&rec(5, r#"{"id":"p5","to":{"iban":"x"}}"#), 0).unwrap();
        m.ingest(&rec(6, r#"{"id":"p6","to":{"iban":"x"}}"#), 0).unwrap();
        m.ingest(&rec(7, r#"{"id":"p7","amount":1,"to":{"iban":3}}"#), 0).unwrap();
        let found: Vec<&str> = m
            .anomalies()
            .iter()
            .filter(|a| a.kind == AnomalyKind::SchemaDrift)
            .map(|a| a.detail.as_str())
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("'amount'") && found[0].contains("all 5 records"), "{found:?}");
        assert!(found[1].contains("'to.iban' was string, is number"), "{found:?}");
    }

    #[test]
    fn declared_contracts_are_checked() {
        use eventscope_demo::contracts::uri;
        let v1 = json!({"order_id": "o", "customer_email": "e", "shipping_address": "a",
                        "items": [], "total_cents": 1});
        assert_eq!(declared(None, &uri("OrderCreated", 1), &v1), None);
        let v3 = json!({"order_id": "o", "customer_email": "e", "shipping_address": "a",
                        "line_items": [], "total_cents": 1});
        let why = declared(None, &uri("OrderCreated", 3), &v3).unwrap();
        assert!(why.contains("v3") && why.contains("items"), "{why}");
        let bad = json!({"order_id": "o", "amount_cents": "12"});
        assert!(declared(None, &uri("ProcessPayment", 1), &bad).unwrap().contains("amount_cents"));
        assert_eq!(declared(None, "urn:unknown", &bad), None);
        // A foreign URI is not judged by the demo's contracts...
        let foreign = "https://acme.example/schemas/ProcessPayment/v1.json";
        assert_eq!(declared(None, foreign, &bad), None);
        // ...but by the user's, given with --schemas DIR.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ProcessPayment")).unwrap();
        std::fs::write(
            dir.path().join("ProcessPayment/v1.json"),
            r#"{"type": "object", "properties": {"amount_cents": {"type": "integer"}}}"#,
        )
        .unwrap();
        let user = Registry::load_dir(dir.path()).unwrap();
        let why = declared(Some(&user), foreign, &bad).unwrap();
        assert!(why.contains("amount_cents"), "{why}");
        assert_eq!(declared(Some(&user), foreign, &json!({"amount_cents": 3})), None);
    }
}
