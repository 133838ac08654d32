//! The schema catalog: per event type, the versions its records show, learned
//! from the records alone (what the Schemas view lists).
//!
//! A record that names its contract with `dataschema` belongs to that version
//! (`v2` for a URI ending in `<Type>/v2.json`); a record that names none
//! belongs to the version of its payload's shape (field paths and JSON kinds,
//! top level and one level down), numbered in order of appearance. Per version
//! the catalog keeps the field table (kinds, how often present), the record
//! count, producers, topics, and the first and last record. [`diff`] compares
//! two versions field by field and marks what breaks a reader of the older one.
//!
//! Only first deliveries count (a redelivery is the same event) and dead-letter
//! copies are skipped. The catalog is filled incrementally, a bounded number of
//! records per call, so a view can catch up over 1M records without stalling.

use std::collections::{BTreeMap, BTreeSet};

use eventscope_demo::contracts::{parse_uri, Registry, URI_BASE};
use serde_json::Value;

use super::log::{LogIndex, ObservedLog};

/// How a field has been seen: the JSON kinds (bits, see [`kind_names`]) and in
/// how many records it was present.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FieldStat {
    pub kinds: u8,
    pub present: u64,
}

/// JSON kinds as bits.
fn kind_bit(v: &Value) -> u8 {
    match v {
        Value::Null => 1,
        Value::Bool(_) => 2,
        Value::Number(_) => 4,
        Value::String(_) => 8,
        Value::Array(_) => 16,
        Value::Object(_) => 32,
    }
}

/// The kinds in `bits`, e.g. `number|null`.
pub fn kind_names(bits: u8) -> String {
    let names = ["null", "boolean", "number", "string", "array", "object"];
    let v: Vec<&str> = (0..6)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| names[i])
        .collect();
    v.join("|")
}

/// The payload's fields: path and kind bit, sorted by path. Nested objects and
/// the first element of arrays (`items[].sku`) are walked one level down.
pub fn fields(payload: &Value) -> Vec<(String, u8)> {
    fn walk(prefix: &str, v: &Value, depth: u8, out: &mut Vec<(String, u8)>) {
        let Value::Object(map) = v else { return };
        for (k, child) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push((path.clone(), kind_bit(child)));
            if depth == 0 {
                continue;
            }
            match child {
                Value::Object(_) => walk(&path, child, depth - 1, out),
                Value::Array(items) => {
                    if let Some(first) = items.first() {
                        walk(&format!("{path}[]"), first, depth - 1, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk("", payload, 1, &mut out);
    out.sort();
    out
}

/// A hash of a field list (the shape's identity).
pub fn shape_hash(fields: &[(String, u8)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fields.hash(&mut h);
    h.finish()
}

/// The registry that holds the contract a `dataschema` URI names: the demo's
/// for the demo's own URIs, else the user's (`--schemas DIR`, any URI ending in
/// `<Type>/v<N>.json`), if given.
pub fn registry_for<'a>(user: Option<&'a Registry>, uri: &str) -> Option<&'a Registry> {
    if uri.starts_with(URI_BASE) {
        Registry::demo().ok()
    } else {
        user
    }
}

/// One version of an event type, as its records show it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaVersion {
    /// `v2` for a declared version, `shape 3` for a learned one.
    pub label: String,
    /// The `dataschema` its records name, if they name one.
    pub dataschema: Option<String>,
    /// Field path → kinds and presence.
    pub fields: BTreeMap<String, FieldStat>,
    pub records: u64,
    /// CloudEvents `source` of the producers (or "unknown").
    pub producers: BTreeSet<String>,
    pub topics: BTreeSet<String>,
    pub first: LogIndex,
    pub last: LogIndex,
    /// Shape hash of an undeclared version (its key).
    shape: Option<u64>,
}

impl SchemaVersion {
    /// Whether the field was in every record of this version.
    pub fn required(&self, path: &str) -> bool {
        self.fields
            .get(path)
            .is_some_and(|f| f.present == self.records)
    }
}

/// The versions of one event type, in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeSchemas {
    pub versions: Vec<SchemaVersion>,
    pub records: u64,
    shapes: u32,
}

/// Per event type, its versions (see the module docs).
#[derive(Debug, Default)]
pub struct SchemaCatalog {
    /// Log rows read so far.
    next: usize,
    types: BTreeMap<String, TypeSchemas>,
}

/// The version key of a record: its declared schema, else its shape.
enum Key<'a> {
    Declared(&'a str),
    Shape(u64),
}

impl SchemaCatalog {
    /// Read up to `budget` more rows of `log`; true when every row has been read.
    /// A log shorter than what was read (a new model) starts the catalog over.
    pub fn update(&mut self, log: &ObservedLog, budget: usize) -> bool {
        if log.len() < self.next {
            *self = SchemaCatalog::default();
        }
        // Records the memory limit dropped are not read.
        self.next = self.next.max(log.first_held() as usize);
        let end = log.len().min(self.next.saturating_add(budget));
        for i in self.next..end {
            let Ok(idx) = LogIndex::try_from(i) else {
                break;
            };
            self.add(log, idx);
        }
        self.next = end;
        self.next == log.len()
    }

    /// Rows not read yet.
    pub fn pending(&self, log: &ObservedLog) -> usize {
        log.len().saturating_sub(self.next)
    }

    pub fn types(&self) -> &BTreeMap<String, TypeSchemas> {
        &self.types
    }

    fn add(&mut self, log: &ObservedLog, idx: LogIndex) {
        let Some(m) = log.meta(idx).filter(|m| m.first_delivery && !m.dead_letter) else {
            return;
        };
        let (Some(ty), Some(row)) = (log.resolve_opt(m.event_type), log.row(idx)) else {
            return;
        };
        let Some(event) = log.event(idx) else { return };
        let Some(payload) = event.payload.as_ref().filter(|p| p.is_object()) else {
            return;
        };
        let now = fields(payload);
        let key = match event.dataschema.as_deref() {
            Some(d) => Key::Declared(d),
            None => Key::Shape(shape_hash(&now)),
        };
        let t = self.types.entry(ty.to_owned()).or_default();
        t.records += 1;
        let pos = t.versions.iter().position(|v| match &key {
            Key::Declared(d) => v.dataschema.as_deref() == Some(*d),
            Key::Shape(h) => v.dataschema.is_none() && v.shape == Some(*h),
        });
        let pos = match pos {
            Some(p) => p,
            None => {
                let (label, dataschema, shape) = match key {
                    Key::Declared(d) => (
                        parse_uri(d).map_or_else(|| d.to_owned(), |(_, v)| format!("v{v}")),
                        Some(d.to_owned()),
                        None,
                    ),
                    Key::Shape(h) => {
                        t.shapes += 1;
                        (format!("shape {}", t.shapes), None, Some(h))
                    }
                };
                t.versions.push(SchemaVersion {
                    label,
                    dataschema,
                    fields: BTreeMap::new(),
                    records: 0,
                    producers: BTreeSet::new(),
                    topics: BTreeSet::new(),
                    first: idx,
                    last: idx,
                    shape,
                });
                t.versions.len() - 1
            }
        };
        let Some(v) = t.versions.get_mut(pos) else {
            return;
        };
        v.records += 1;
        v.last = idx;
        for (path, k) in now {
            let f = v.fields.entry(path).or_default();
            f.kinds |= k;
            f.present += 1;
        }
        let producer = log.resolve_opt(m.source).unwrap_or("unknown");
        if !v.producers.contains(producer) {
            v.producers.insert(producer.to_owned());
        }
        let topic = log.resolve(row.topic);
        if !v.topics.contains(topic) {
            v.topics.insert(topic.to_owned());
        }
    }

    /// The type and version the record at `idx` belongs to (read so far).
    pub fn version_of(&self, log: &ObservedLog, idx: LogIndex) -> Option<(&str, &SchemaVersion)> {
        let ty = log.resolve_opt(log.meta(idx)?.event_type)?;
        let (name, t) = self.types.get_key_value(ty)?;
        let event = log.event(idx)?;
        let v = match event.dataschema.as_deref() {
            Some(d) => t
                .versions
                .iter()
                .find(|v| v.dataschema.as_deref() == Some(d)),
            None => {
                let h = shape_hash(&fields(event.payload.as_ref()?));
                t.versions
                    .iter()
                    .find(|v| v.dataschema.is_none() && v.shape == Some(h))
            }
        }?;
        Some((name.as_str(), v))
    }
}

/// What happened to a field between two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldChangeKind {
    Added,
    Removed,
    Retyped,
}

/// One field's change from an older to a newer version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub path: String,
    pub kind: FieldChangeKind,
    /// Kinds before (empty when added) and after (empty when removed).
    pub old: String,
    pub new: String,
    /// Breaks a consumer that reads the older version: a field that was always
    /// there is gone, or a field's kind changed.
    pub breaking: bool,
}

/// Field by field, what `new` changes from `old`.
pub fn diff(old: &SchemaVersion, new: &SchemaVersion) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let paths: BTreeSet<&String> = old.fields.keys().chain(new.fields.keys()).collect();
    for path in paths {
        let (o, n) = (old.fields.get(path), new.fields.get(path));
        let change = match (o, n) {
            (None, Some(n)) => FieldChange {
                path: path.clone(),
                kind: FieldChangeKind::Added,
                old: String::new(),
                new: kind_names(n.kinds),
                breaking: false,
            },
            (Some(o), None) => FieldChange {
                path: path.clone(),
                kind: FieldChangeKind::Removed,
                old: kind_names(o.kinds),
                new: String::new(),
                // A field inside array elements may be unseen (empty arrays);
                // an optional field was never promised.
                breaking: old.required(path) && !path.contains("[]"),
            },
            // Null mixes with anything: a nullable field that gets a value is not retyped.
            (Some(o), Some(n)) if o.kinds & n.kinds & !1 == 0 && o.kinds != 1 && n.kinds != 1 => {
                FieldChange {
                    path: path.clone(),
                    kind: FieldChangeKind::Retyped,
                    old: kind_names(o.kinds),
                    new: kind_names(n.kinds),
                    breaking: true,
                }
            }
            _ => continue,
        };
        out.push(change);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::log::ObservedLog;
    use crate::model::record::Record;

    fn log_of(records: &[(&str, Option<&str>, &str)]) -> ObservedLog {
        let mut log = ObservedLog::new(Default::default());
        for (i, (ty, schema, value)) in records.iter().enumerate() {
            let mut r = Record::new("t", 0, i as i64)
                .with_header("ce_specversion", "1.0")
                .with_header("ce_id", &format!("e{i}"))
                .with_header("ce_type", ty)
                .with_header("ce_source", "/svc")
                .with_header("content-type", "application/json")
                .with_value(value.as_bytes().to_vec());
            if let Some(s) = schema {
                r = r.with_header("ce_dataschema", s);
            }
            log.append(&r, 0).unwrap();
        }
        log
    }

    #[test]
    fn versions_by_dataschema_or_by_shape() {
        let v1 = "https://x.example/schemas/Paid/v1.json";
        let v2 = "https://x.example/schemas/Paid/v2.json";
        let log = log_of(&[
            ("Paid", Some(v1), r#"{"id":"a","amount":1}"#),
            ("Paid", Some(v1), r#"{"id":"b","amount":2}"#),
            (
                "Paid",
                Some(v2),
                r#"{"id":"c","amount":3,"currency":"EUR"}"#,
            ),
            ("Moved", None, r#"{"to":"x"}"#),
            ("Moved", None, r#"{"to":"y"}"#),
            ("Moved", None, r#"{"to":7}"#),
        ]);
        let mut cat = SchemaCatalog::default();
        assert!(!cat.update(&log, 4));
        assert_eq!(cat.pending(&log), 2);
        assert!(cat.update(&log, 100));
        let paid = &cat.types()["Paid"];
        let labels: Vec<&str> = paid.versions.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(labels, ["v1", "v2"]);
        assert_eq!(paid.versions[0].records, 2);
        assert_eq!((paid.versions[0].first, paid.versions[0].last), (0, 1));
        assert!(paid.versions[1].producers.contains("/svc"));
        let changes = diff(&paid.versions[0], &paid.versions[1]);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (
                changes[0].path.as_str(),
                changes[0].kind,
                changes[0].breaking
            ),
            ("currency", FieldChangeKind::Added, false)
        );

        let moved = &cat.types()["Moved"];
        let labels: Vec<&str> = moved.versions.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(labels, ["shape 1", "shape 2"]);
        let changes = diff(&moved.versions[0], &moved.versions[1]);
        assert_eq!(changes[0].kind, FieldChangeKind::Retyped);
        assert!(changes[0].breaking);
        assert_eq!(
            (changes[0].old.as_str(), changes[0].new.as_str()),
            ("string", "number")
        );
        let back = diff(&paid.versions[1], &paid.versions[0]);
        assert!(
            back[0].breaking,
            "dropping a field every record had breaks readers"
        );

        assert_eq!(
            cat.version_of(&log, 5).map(|(t, v)| (t, v.label.as_str())),
            Some(("Moved", "shape 2"))
        );
        assert_eq!(
            cat.version_of(&log, 2).map(|(_, v)| v.label.as_str()),
            Some("v2")
        );

        // A new model (a shorter log) starts over.
        let fresh = log_of(&[("Paid", None, r#"{"id":"z"}"#)]);
        assert!(cat.update(&fresh, 100));
        assert_eq!(cat.types().len(), 1);
    }
}
