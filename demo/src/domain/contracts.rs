//! Event contracts: a JSON Schema per event or command type and version
//! (`demo/schemas/<Type>/v<N>.json`), the registry the producers validate
//! against before an outbox row is written, and the compatibility check a new
//! version must pass against the latest registered one.
//!
//! Records name their contract with the CloudEvents `dataschema` attribute
//! (`ce_dataschema` in binary mode): [`uri`] builds it, [`parse_uri`] reads
//! the type and version back from any URI that ends in `<Type>/v<N>.json`.
//!
//! Compatibility uses `json-schema-diff` (getsentry), whose notion of a
//! breaking change is "a message valid under the right-hand schema is no longer
//! valid under the left-hand one". BACKWARD (the default, as in a schema
//! registry: the new schema reads data written with the old one) diffs new
//! against old; FORWARD (old readers read new data) diffs old against new;
//! FULL is both.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde_json::Value;

/// Where the demo's contracts claim to live; `.invalid` never resolves: the URI
/// names the contract, the files in the repo hold it.
pub const URI_BASE: &str = "https://eventscope.invalid/demo/schemas/";

/// The registered contracts, embedded at build time. Adding a version is one
/// file under `demo/schemas/` and one line here (a test checks the two agree).
const FILES: &[(&str, u32, &str)] = &[
    (
        "ApproveOrder",
        1,
        include_str!("../../schemas/ApproveOrder/v1.json"),
    ),
    (
        "CancelOrder",
        1,
        include_str!("../../schemas/CancelOrder/v1.json"),
    ),
    (
        "CancelShipment",
        1,
        include_str!("../../schemas/CancelShipment/v1.json"),
    ),
    (
        "OrderCancelled",
        1,
        include_str!("../../schemas/OrderCancelled/v1.json"),
    ),
    (
        "OrderCompleted",
        1,
        include_str!("../../schemas/OrderCompleted/v1.json"),
    ),
    (
        "OrderCreated",
        1,
        include_str!("../../schemas/OrderCreated/v1.json"),
    ),
    (
        "OrderCreated",
        2,
        include_str!("../../schemas/OrderCreated/v2.json"),
    ),
    (
        "OrderNoteAdded",
        1,
        include_str!("../../schemas/OrderNoteAdded/v1.json"),
    ),
    (
        "PaymentCompleted",
        1,
        include_str!("../../schemas/PaymentCompleted/v1.json"),
    ),
    (
        "PaymentDeclined",
        1,
        include_str!("../../schemas/PaymentDeclined/v1.json"),
    ),
    (
        "PaymentRefunded",
        1,
        include_str!("../../schemas/PaymentRefunded/v1.json"),
    ),
    (
        "ProcessPayment",
        1,
        include_str!("../../schemas/ProcessPayment/v1.json"),
    ),
    (
        "RefundPayment",
        1,
        include_str!("../../schemas/RefundPayment/v1.json"),
    ),
    (
        "ReserveStock",
        1,
        include_str!("../../schemas/ReserveStock/v1.json"),
    ),
    (
        "RestoreStock",
        1,
        include_str!("../../schemas/RestoreStock/v1.json"),
    ),
    (
        "ScheduleShipment",
        1,
        include_str!("../../schemas/ScheduleShipment/v1.json"),
    ),
    (
        "ShipmentCancelled",
        1,
        include_str!("../../schemas/ShipmentCancelled/v1.json"),
    ),
    (
        "ShipmentFailed",
        1,
        include_str!("../../schemas/ShipmentFailed/v1.json"),
    ),
    (
        "ShipmentScheduled",
        1,
        include_str!("../../schemas/ShipmentScheduled/v1.json"),
    ),
    (
        "StockRejected",
        1,
        include_str!("../../schemas/StockRejected/v1.json"),
    ),
    (
        "StockReserved",
        1,
        include_str!("../../schemas/StockReserved/v1.json"),
    ),
    (
        "StockRestored",
        1,
        include_str!("../../schemas/StockRestored/v1.json"),
    ),
];

/// Versions a producer has written but the registry does not hold: the
/// breaking `OrderCreated` v3 that the `schema-drift` fault ships.
const DRAFTS: &[(&str, u32, &str)] = &[(
    "OrderCreated",
    3,
    include_str!("../../drift/OrderCreated/v3.json"),
)];

/// The `dataschema` URI of a contract.
pub fn uri(event_type: &str, version: u32) -> String {
    format!("{URI_BASE}{event_type}/v{version}.json")
}

/// Type and version from a URI ending in `<Type>/v<N>.json` (or `<Type>/v<N>`).
pub fn parse_uri(uri: &str) -> Option<(&str, u32)> {
    let path = uri.split(['?', '#']).next()?;
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let file = parts.next()?;
    let event_type = parts.next().filter(|t| !t.is_empty())?;
    let version = file
        .strip_suffix(".json")
        .unwrap_or(file)
        .strip_prefix('v')?
        .parse()
        .ok()?;
    Some((event_type, version))
}

/// How a new version must relate to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compatibility {
    /// The new schema reads data written with the old one (consumers upgrade first).
    #[default]
    Backward,
    /// The old schema reads data written with the new one (producers upgrade first).
    Forward,
    /// Both.
    Full,
}

impl FromStr for Compatibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "backward" => Ok(Compatibility::Backward),
            "forward" => Ok(Compatibility::Forward),
            "full" => Ok(Compatibility::Full),
            _ => Err(format!(
                "'{s}' is not a compatibility mode (backward, forward, full)"
            )),
        }
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::Forward => "FORWARD",
            Compatibility::Full => "FULL",
        })
    }
}

/// One difference between two versions of a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    /// JSON path of the schema node, e.g. `.properties.items`.
    pub path: String,
    pub what: String,
    pub breaking: bool,
}

impl fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        let tag = if self.breaking {
            "BREAKING"
        } else {
            "compatible"
        };
        write!(f, "{tag:<10} {path}: {}", self.what)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContractError {
    #[error("no contract for {event_type} v{version} (registered: {registered})")]
    Unknown {
        event_type: String,
        version: u32,
        registered: String,
    },
    #[error("the record names no dataschema")]
    Unnamed,
    #[error("{event_type} v{version}: payload does not match its schema: {reason}")]
    InvalidPayload {
        event_type: String,
        version: u32,
        reason: String,
    },
    #[error("{event_type} v{version} is not {mode} compatible with v{against}: {}", changes.join("; "))]
    Breaking {
        event_type: String,
        version: u32,
        against: u32,
        mode: Compatibility,
        changes: Vec<String>,
    },
    #[error("{what} is not a usable JSON Schema: {reason}")]
    BadSchema { what: String, reason: String },
}

/// One version of one contract, compiled.
pub struct Contract {
    pub event_type: String,
    pub version: u32,
    pub schema: Value,
    validator: jsonschema::Validator,
}

impl Contract {
    pub fn new(
        event_type: &str,
        version: u32,
        schema: Value,
        what: &str,
    ) -> Result<Self, ContractError> {
        let validator = jsonschema::validator_for(&schema).map_err(|e| bad(what, e))?;
        Ok(Contract {
            event_type: event_type.to_owned(),
            version,
            schema,
            validator,
        })
    }

    /// Check a payload; the error names the first failing field.
    pub fn validate(&self, data: &Value) -> Result<(), ContractError> {
        self.validator
            .validate(data)
            .map_err(|e| ContractError::InvalidPayload {
                event_type: self.event_type.clone(),
                version: self.version,
                reason: describe_violation(&e),
            })
    }
}

fn bad(what: &str, reason: impl fmt::Display) -> ContractError {
    ContractError::BadSchema {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

fn describe_violation(e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.instance_path().to_string();
    if path.is_empty() {
        e.to_string()
    } else {
        format!("at {path}: {e}")
    }
}

/// Parse a schema document, with a clear error naming `what` (a file, a URI).
pub fn parse_schema(what: &str, text: &str) -> Result<Value, ContractError> {
    let schema: Value = serde_json::from_str(text).map_err(|e| bad(what, e))?;
    jsonschema::validator_for(&schema).map_err(|e| bad(what, e))?;
    if !schema.is_object() {
        return Err(bad(what, "a schema must be a JSON object"));
    }
    Ok(schema)
}

/// Every change from `old` to `new`, each marked breaking or not under `mode`.
pub fn diff(
    old: &Value,
    new: &Value,
    mode: Compatibility,
) -> Result<Vec<SchemaChange>, ContractError> {
    let run = |lhs: &Value, rhs: &Value| {
        json_schema_diff::diff(lhs.clone(), rhs.clone()).map_err(|e| bad("schema pair", e))
    };
    // json-schema-diff marks a change lhs -> rhs breaking when data valid under
    // lhs can fail rhs: old -> new is the BACKWARD question, new -> old FORWARD.
    let ahead = run(old, new)?;
    let back = run(new, old)?;
    let backward_mode = matches!(mode, Compatibility::Backward | Compatibility::Full);
    let forward_mode = matches!(mode, Compatibility::Forward | Compatibility::Full);
    let mut out: Vec<SchemaChange> = ahead
        .iter()
        .map(|c| SchemaChange {
            path: c.path.clone(),
            what: describe_change(&c.change),
            breaking: backward_mode && breaks(&c.change)
                || forward_mode && back.iter().any(|b| b.path == c.path && breaks(&b.change)),
        })
        .collect();
    // What breaks old readers without a breaking old -> new change at that
    // path (a field that stopped being required is a RequiredAdd backwards).
    if forward_mode {
        for b in back.iter().filter(|b| breaks(&b.change)) {
            if !out.iter().any(|c| c.path == b.path && c.breaking) {
                out.push(SchemaChange {
                    path: b.path.clone(),
                    what: format!("for old readers: {}", describe_change(&b.change)),
                    breaking: true,
                });
            }
        }
    }
    Ok(out)
}

/// json-schema-diff's verdict, but for properties added or removed: in an
/// open content model it calls adding an optional field breaking (old data
/// could carry that name with another type). A tolerant reader does not care;
/// what matters is whether the field is required, which RequiredAdd and
/// RequiredRemove report on their own.
fn breaks(kind: &json_schema_diff::ChangeKind) -> bool {
    use json_schema_diff::ChangeKind as K;
    match kind {
        K::PropertyAdd { .. } | K::PropertyRemove { .. } => false,
        other => other.is_breaking(),
    }
}

fn describe_change(c: &json_schema_diff::ChangeKind) -> String {
    use json_schema_diff::ChangeKind as K;
    match c {
        K::TypeAdd { added } => format!("type {added:?} now allowed"),
        K::TypeRemove { removed } => format!("type {removed:?} no longer allowed"),
        K::PropertyAdd { added, .. } => format!("property '{added}' added"),
        K::PropertyRemove { removed, .. } => format!("property '{removed}' removed"),
        K::RequiredAdd { property } => format!("'{property}' became required"),
        K::RequiredRemove { property } => format!("'{property}' is no longer required"),
        other => format!("{other:?}"),
    }
}

/// The contracts a producer may write and a consumer may read.
pub struct Registry {
    by_type: BTreeMap<String, Vec<Contract>>,
    drafts: Vec<Contract>,
}

static DEMO: LazyLock<Result<Registry, ContractError>> = LazyLock::new(Registry::load_demo);

impl Registry {
    /// The demo's registry (compiled once). An error here is a bad file in the repo.
    pub fn demo() -> Result<&'static Registry, ContractError> {
        DEMO.as_ref().map_err(Clone::clone)
    }

    fn load_demo() -> Result<Registry, ContractError> {
        let compile = |(t, v, text): &(&str, u32, &str)| -> Result<Contract, ContractError> {
            let what = format!("demo/schemas/{t}/v{v}.json");
            Contract::new(t, *v, parse_schema(&what, text)?, &what)
        };
        let mut by_type: BTreeMap<String, Vec<Contract>> = BTreeMap::new();
        for f in FILES {
            let c = compile(f)?;
            by_type.entry(c.event_type.clone()).or_default().push(c);
        }
        for versions in by_type.values_mut() {
            versions.sort_by_key(|c| c.version);
        }
        let drafts = DRAFTS.iter().map(compile).collect::<Result<_, _>>()?;
        Ok(Registry { by_type, drafts })
    }

    /// The contracts in a directory laid out like `demo/schemas/`:
    /// `<dir>/<Type>/v<N>.json`. Other files are ignored; a file in that layout
    /// that is not a usable JSON Schema is an error naming it, and so is a
    /// directory holding no contract at all.
    pub fn load_dir(dir: &std::path::Path) -> Result<Registry, ContractError> {
        let shown = dir.display().to_string();
        let read_dir = |d: &std::path::Path| {
            std::fs::read_dir(d).map_err(|e| bad(&d.display().to_string(), e))
        };
        let mut by_type: BTreeMap<String, Vec<Contract>> = BTreeMap::new();
        for entry in read_dir(dir)? {
            let entry = entry.map_err(|e| bad(&shown, e))?;
            let type_dir = entry.path();
            let Some(event_type) = type_dir
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|_| type_dir.is_dir())
                .map(str::to_owned)
            else {
                continue;
            };
            for file in read_dir(&type_dir)? {
                let path = file.map_err(|e| bad(&shown, e))?.path();
                let Some(version) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.strip_prefix('v'))
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let what = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|e| bad(&what, e))?;
                let c = Contract::new(&event_type, version, parse_schema(&what, &text)?, &what)?;
                by_type.entry(event_type.clone()).or_default().push(c);
            }
        }
        if by_type.is_empty() {
            return Err(bad(
                &shown,
                "holds no contract (expected files <Type>/v<N>.json)",
            ));
        }
        for versions in by_type.values_mut() {
            versions.sort_by_key(|c| c.version);
        }
        Ok(Registry {
            by_type,
            drafts: Vec::new(),
        })
    }

    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }

    pub fn versions(&self, event_type: &str) -> Vec<u32> {
        self.by_type
            .get(event_type)
            .map(|v| v.iter().map(|c| c.version).collect())
            .unwrap_or_default()
    }

    pub fn latest(&self, event_type: &str) -> Option<u32> {
        self.versions(event_type).last().copied()
    }

    pub fn get(&self, event_type: &str, version: u32) -> Option<&Contract> {
        self.by_type
            .get(event_type)?
            .iter()
            .find(|c| c.version == version)
    }

    /// A version the producer has but the registry does not (a draft).
    pub fn draft(&self, event_type: &str, version: u32) -> Option<&Contract> {
        self.drafts
            .iter()
            .find(|c| c.event_type == event_type && c.version == version)
    }

    fn unknown(&self, event_type: &str, version: u32) -> ContractError {
        let registered = self.versions(event_type);
        ContractError::Unknown {
            event_type: event_type.to_owned(),
            version,
            registered: if registered.is_empty() {
                "none".into()
            } else {
                registered
                    .iter()
                    .map(|v| format!("v{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }
    }

    /// What a consumer that reads `event_type` from this registry does with a
    /// record naming `dataschema`: Ok when it knows the version and the payload
    /// matches it; records that name no schema are read as they are.
    pub fn read(&self, dataschema: Option<&str>, data: &Value) -> Result<(), ContractError> {
        let Some(uri) = dataschema else {
            return Ok(());
        };
        let (t, v) = parse_uri(uri).ok_or(ContractError::Unnamed)?;
        self.get(t, v)
            .ok_or_else(|| self.unknown(t, v))?
            .validate(data)
    }

    /// The producer-side check before an outbox row is written: the payload
    /// must match the version it names; a version the registry does not hold
    /// must first pass the compatibility check against the latest registered
    /// one (as registering it with a schema registry would), and is refused
    /// when it breaks it.
    pub fn admit(&self, dataschema: Option<&str>, data: &Value) -> Result<(), ContractError> {
        let uri = dataschema.ok_or(ContractError::Unnamed)?;
        let (t, v) = parse_uri(uri).ok_or(ContractError::Unnamed)?;
        if let Some(c) = self.get(t, v) {
            return c.validate(data);
        }
        let draft = self.draft(t, v).ok_or_else(|| self.unknown(t, v))?;
        if let Some(latest) = self.latest(t).and_then(|l| self.get(t, l)) {
            let mode = Compatibility::Backward;
            let changes = diff(&latest.schema, &draft.schema, mode)?;
            let breaking: Vec<String> = changes
                .iter()
                .filter(|c| c.breaking)
                .map(|c| format!("{}: {}", c.path, c.what))
                .collect();
            if !breaking.is_empty() {
                return Err(ContractError::Breaking {
                    event_type: t.to_owned(),
                    version: v,
                    against: latest.version,
                    mode,
                    changes: breaking,
                });
            }
        }
        draft.validate(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uris_round_trip() {
        assert_eq!(
            parse_uri(&uri("OrderCreated", 2)),
            Some(("OrderCreated", 2))
        );
        assert_eq!(parse_uri("file:///x/Foo/v12"), Some(("Foo", 12)));
        assert_eq!(parse_uri("urn:nothing"), None);
        assert_eq!(parse_uri("/v1.json"), None);
        assert_eq!(parse_uri("https://h/Foo/version1.json"), None);
    }

    #[test]
    fn every_file_in_demo_schemas_is_registered_and_compiles() {
        let reg = Registry::demo().unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let mut on_disk = Vec::new();
        for t in std::fs::read_dir(&dir).unwrap() {
            let t = t.unwrap();
            for f in std::fs::read_dir(t.path()).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                let v: u32 = name
                    .trim_start_matches('v')
                    .trim_end_matches(".json")
                    .parse()
                    .unwrap();
                on_disk.push((t.file_name().into_string().unwrap(), v));
            }
        }
        on_disk.sort();
        let mut registered: Vec<(String, u32)> = FILES
            .iter()
            .map(|(t, v, _)| ((*t).to_owned(), *v))
            .collect();
        registered.sort();
        assert_eq!(on_disk, registered);
        assert_eq!(reg.versions("OrderCreated"), vec![1, 2]);
    }

    #[test]
    fn a_directory_of_contracts_loads_like_the_demos() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let reg = Registry::load_dir(&dir).unwrap();
        let demo = Registry::demo().unwrap();
        assert_eq!(
            reg.types().collect::<Vec<_>>(),
            demo.types().collect::<Vec<_>>()
        );
        assert_eq!(reg.versions("OrderCreated"), vec![1, 2]);

        let tmp = tempfile::tempdir().unwrap();
        let err = Registry::load_dir(tmp.path()).err().unwrap().to_string();
        assert!(err.contains("holds no contract"), "{err}");
        std::fs::create_dir(tmp.path().join("Paid")).unwrap();
        std::fs::write(tmp.path().join("Paid/README.md"), "ignored").unwrap();
        std::fs::write(tmp.path().join("Paid/v1.json"), "{\"type\": 12}").unwrap();
        let err = Registry::load_dir(tmp.path()).err().unwrap().to_string();
        assert!(
            err.contains("Paid/v1.json") && err.contains("not a usable JSON Schema"),
            "{err}"
        );
        std::fs::write(
            tmp.path().join("Paid/v1.json"),
            r#"{"type": "object", "required": ["id"]}"#,
        )
        .unwrap();
        let reg = Registry::load_dir(tmp.path()).unwrap();
        assert!(reg.get("Paid", 1).unwrap().validate(&json!({})).is_err());
        assert!(Registry::load_dir(&tmp.path().join("missing")).is_err());
    }

    /// The code-level check: each registered version is BACKWARD compatible
    /// with the one before it.
    #[test]
    fn every_contract_is_backward_compatible_with_its_predecessor() {
        let reg = Registry::demo().unwrap();
        for t in reg.types() {
            let versions = reg.versions(t);
            for pair in versions.windows(2) {
                let (old, new) = (reg.get(t, pair[0]).unwrap(), reg.get(t, pair[1]).unwrap());
                let changes = diff(&old.schema, &new.schema, Compatibility::Backward).unwrap();
                assert!(
                    changes.iter().all(|c| !c.breaking),
                    "{t} v{} -> v{}: {changes:?}",
                    pair[0],
                    pair[1]
                );
                assert!(
                    !changes.is_empty(),
                    "{t} v{} is v{} again",
                    pair[1],
                    pair[0]
                );
            }
        }
    }

    #[test]
    fn the_drift_draft_is_refused_and_named() {
        let reg = Registry::demo().unwrap();
        let data = json!({"order_id": "o", "customer_email": "e", "shipping_address": "a",
                          "line_items": [], "total_cents": 1});
        let err = reg.admit(Some(&uri("OrderCreated", 3)), &data).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ContractError::Breaking { against: 2, .. }),
            "{text}"
        );
        assert!(text.contains("items"), "{text}");
    }

    #[test]
    fn payloads_are_validated_with_the_field_named() {
        let reg = Registry::demo().unwrap();
        let ok = json!({"order_id": "o", "amount_cents": 5});
        reg.admit(Some(&uri("ProcessPayment", 1)), &ok).unwrap();
        let bad = json!({"order_id": "o", "amount_cents": "5"});
        let err = reg
            .admit(Some(&uri("ProcessPayment", 1)), &bad)
            .unwrap_err();
        assert!(err.to_string().contains("amount_cents"), "{err}");
        assert!(matches!(
            reg.read(Some(&uri("ProcessPayment", 7)), &ok),
            Err(ContractError::Unknown { .. })
        ));
        reg.read(None, &ok).unwrap();
    }

    #[test]
    fn diff_modes() {
        let old =
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
        let added_optional = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]});
        let added_required = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a", "b"]});
        let retyped =
            json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]});
        let breaking = |n: &Value, m| diff(&old, n, m).unwrap().iter().any(|c| c.breaking);
        assert!(!breaking(&added_optional, Compatibility::Backward));
        assert!(breaking(&added_required, Compatibility::Backward));
        assert!(!breaking(&added_required, Compatibility::Forward));
        assert!(breaking(&retyped, Compatibility::Backward));
        assert!(breaking(&retyped, Compatibility::Forward));
        assert!(breaking(&retyped, Compatibility::Full));
        assert!(!diff(&old, &added_optional, Compatibility::Full)
            .unwrap()
            .is_empty());
        assert!(matches!(
            parse_schema("x.json", "{\"type\": 12}"),
            Err(ContractError::BadSchema { .. })
        ));
        assert!(matches!(
            parse_schema("x.json", "not json"),
            Err(ContractError::BadSchema { .. })
        ));
    }
}
