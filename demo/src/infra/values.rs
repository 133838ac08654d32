//! How the demo writes record values when a Schema Registry is in play
//! (`--value-format json-schema|avro`): the Confluent wire format, magic byte
//! `0`, the 4-byte big-endian schema id, then the payload: the data's JSON
//! (JSON Schema) or its Avro binary encoding (Avro). The contracts are JSON
//! Schemas (`demo/schemas/`); their Avro rendering is derived here, so one
//! contract is the source of both.
//!
//! A contract the registry does not hold (the breaking `schema-drift` draft)
//! is written as plain JSON; the consumers read either.

use std::collections::{BTreeSet, HashMap};

use apache_avro::types::Value as Avro;
use serde_json::{json, Value};

use crate::envelope::Envelope;

/// Namespace of the demo's Avro records.
pub const AVRO_NAMESPACE: &str = "eventscope.demo";

/// The value encodings that carry a registry schema id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    JsonSchema,
    Avro,
}

/// The schema ids a registry gave the contracts, and how values are written with them.
pub struct ValueCodec {
    framing: Framing,
    /// Schema id by (type, version).
    ids: HashMap<(String, u32), u32>,
    /// Avro schemas by id (Avro only).
    avro: HashMap<u32, apache_avro::Schema>,
}

impl std::fmt::Debug for ValueCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueCodec")
            .field("framing", &self.framing)
            .field("ids", &self.ids)
            .finish()
    }
}

impl ValueCodec {
    /// JSON payloads framed with the ids of the contracts' JSON Schemas.
    pub fn json_schema(ids: HashMap<(String, u32), u32>) -> Self {
        ValueCodec {
            framing: Framing::JsonSchema,
            ids,
            avro: HashMap::new(),
        }
    }

    /// Avro payloads: each contract's Avro rendering ([`avro_schema`]) and its id.
    pub fn avro(schemas: HashMap<(String, u32), (u32, Value)>) -> Result<Self, String> {
        let mut ids = HashMap::new();
        let mut avro = HashMap::new();
        for ((t, v), (id, schema)) in schemas {
            let parsed = apache_avro::Schema::parse(&schema)
                .map_err(|e| format!("the Avro rendering of {t} v{v}: {e}"))?;
            ids.insert((t, v), id);
            avro.insert(id, parsed);
        }
        Ok(ValueCodec {
            framing: Framing::Avro,
            ids,
            avro,
        })
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The schema id of the contract `env` names, if the registry holds it.
    fn id(&self, env: &Envelope) -> Option<u32> {
        let (t, v) = crate::contracts::parse_uri(env.dataschema.as_deref()?)?;
        self.ids.get(&(t.to_owned(), v)).copied()
    }

    /// The value of `env` and its media type (the CloudEvents `datacontenttype`, which the
    /// Kafka binding puts in `content-type`).
    pub fn encode(&self, env: &Envelope) -> Result<(Vec<u8>, &'static str), String> {
        let Some(id) = self.id(env) else {
            let json = serde_json::to_vec(&env.data).map_err(|e| e.to_string())?;
            return Ok((json, JSON));
        };
        let mut framed = vec![0];
        framed.extend(id.to_be_bytes());
        match (self.framing, self.avro.get(&id)) {
            (Framing::Avro, Some(schema)) => {
                let value = apache_avro::to_value(&env.data)
                    .and_then(|v| v.resolve(schema))
                    .map_err(|e| format!("{} as Avro: {e}", env.event_type))?;
                let bytes = apache_avro::to_avro_datum(schema, value)
                    .map_err(|e| format!("{} as Avro: {e}", env.event_type))?;
                framed.extend(bytes);
                Ok((framed, AVRO))
            }
            _ => {
                serde_json::to_writer(&mut framed, &env.data).map_err(|e| e.to_string())?;
                Ok((framed, JSON))
            }
        }
    }

    /// The data of an Avro-framed value written with one of this codec's ids, as JSON; None
    /// for any other value (plain or JSON Schema-framed JSON, which the envelope reads).
    pub fn decode(&self, value: &[u8]) -> Option<Result<Value, String>> {
        let [0, a, b, c, d, payload @ ..] = value else {
            return None;
        };
        let mut payload: &[u8] = payload;
        let id = u32::from_be_bytes([*a, *b, *c, *d]);
        let schema = self.avro.get(&id)?;
        Some(
            apache_avro::from_avro_datum(schema, &mut payload, None)
                .map(to_json)
                .map_err(|e| format!("value is not Avro of schema {id}: {e}")),
        )
    }
}

const JSON: &str = "application/json";
const AVRO: &str = "application/avro";

/// Avro data as the contract's JSON: records as objects without their absent optional
/// fields (a `null` branch of a union), longs and doubles as numbers.
fn to_json(v: Avro) -> Value {
    match v {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Bool(b),
        Avro::Int(n) => Value::from(n),
        Avro::Long(n) => Value::from(n),
        Avro::Float(x) => Value::from(f64::from(x)),
        Avro::Double(x) => Value::from(x),
        Avro::String(s) | Avro::Enum(_, s) => Value::String(s),
        Avro::Union(_, inner) => to_json(*inner),
        Avro::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Avro::Map(m) => Value::Object(m.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        Avro::Record(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(_, v)| !matches!(v, Avro::Union(_, inner) if **inner == Avro::Null))
                .map(|(k, v)| (k, to_json(v)))
                .collect(),
        ),
        other => Value::String(format!("{other:?}")),
    }
}

/// The Avro rendering of a JSON Schema contract: objects become records (named after the
/// type and the path, in [`AVRO_NAMESPACE`]), integers longs, numbers doubles, arrays
/// arrays; a property the schema does not require becomes a union with `null`, default
/// `null`, so that a new optional field is a compatible change in Avro as in JSON Schema.
pub fn avro_schema(event_type: &str, contract: &Value) -> Result<Value, String> {
    fn render(name: &str, s: &Value) -> Result<Value, String> {
        match s.get("type").and_then(Value::as_str) {
            Some("string") => Ok(json!("string")),
            Some("integer") => Ok(json!("long")),
            Some("number") => Ok(json!("double")),
            Some("boolean") => Ok(json!("boolean")),
            Some("array") => {
                let items = s
                    .get("items")
                    .ok_or_else(|| format!("{name}: an array without `items`"))?;
                Ok(json!({ "type": "array", "items": render(name, items)? }))
            }
            Some("object") => {
                let required: BTreeSet<&str> = s
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut fields = Vec::new();
                for (k, p) in s
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let t = render(&format!("{name}_{k}"), p)?;
                    fields.push(if required.contains(k.as_str()) {
                        json!({ "name": k, "type": t })
                    } else {
                        json!({ "name": k, "type": ["null", t], "default": null })
                    });
                }
                Ok(json!({ "type": "record", "name": name, "fields": fields }))
            }
            other => Err(format!(
                "{name}: JSON Schema type {} has no Avro rendering",
                other.map_or_else(|| s.to_string(), str::to_owned)
            )),
        }
    }
    let mut root = render(event_type, contract)?;
    if let Some(o) = root.as_object_mut() {
        o.insert("namespace".into(), json!(AVRO_NAMESPACE));
        if let Some(doc) = contract.get("description") {
            o.insert("doc".into(), doc.clone());
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{uri, Registry};

    fn order_created(version: u32, data: Value) -> Envelope {
        let mut env: Envelope = serde_json::from_value(json!({
            "id": "e-1", "event_type": "OrderCreated", "source": "/orders",
            "time": "", "subject": "o-1", "correlation_id": null, "causation_id": null,
            "aggregate_version": 1, "data": null
        }))
        .unwrap();
        env.dataschema = Some(uri("OrderCreated", version));
        env.data = data;
        env
    }

    /// Every contract has an Avro rendering Avro accepts; data valid under the contract
    /// goes through Avro and comes back equal, optional fields absent or present.
    #[test]
    fn every_contract_renders_and_round_trips() {
        let reg = Registry::demo().unwrap();
        let mut schemas = HashMap::new();
        let mut id = 1;
        for t in reg.types() {
            for v in reg.versions(t) {
                let c = reg.get(t, v).unwrap();
                let avro = avro_schema(t, &c.schema).unwrap();
                apache_avro::Schema::parse(&avro).unwrap_or_else(|e| panic!("{t} v{v}: {e}"));
                schemas.insert((t.to_owned(), v), (id, avro));
                id += 1;
            }
        }
        let codec = ValueCodec::avro(schemas).unwrap();
        let v1 = json!({"order_id":"o-1","customer_email":"a@b","shipping_address":"x",
            "items":[{"product_id":"lamp","quantity":2,"unit_price_cents":2900}],"total_cents":5800});
        let mut v2 = v1.clone();
        v2["currency"] = json!("USD");
        for (version, data) in [(1, v1.clone()), (2, v1), (2, v2)] {
            let env = order_created(version, data.clone());
            let (bytes, ct) = codec.encode(&env).unwrap();
            assert_eq!((bytes[0], ct), (0, AVRO));
            let back = codec.decode(&bytes).expect("an id of this codec").unwrap();
            assert_eq!(back, data);
            reg.read(env.dataschema.as_deref(), &back).unwrap();
        }
        // Data that does not fit its Avro schema is refused with the type named.
        let bad = order_created(1, json!({"order_id": 7}));
        assert!(codec.encode(&bad).unwrap_err().contains("OrderCreated"));
        // A contract without an id: plain JSON.
        let draft = order_created(3, json!({"a": 1}));
        assert_eq!(
            codec.encode(&draft).unwrap(),
            (br#"{"a":1}"#.to_vec(), JSON)
        );
        // Bytes that are not Avro of the schema: an error, not a panic.
        let id = codec.ids[&("OrderCreated".to_owned(), 1)];
        let mut cut = vec![0];
        cut.extend(id.to_be_bytes());
        cut.push(0x7f);
        assert!(codec.decode(&cut).unwrap().is_err());
        assert!(codec.decode(b"{}").is_none());
    }

    #[test]
    fn a_type_without_rendering_is_named() {
        let e = avro_schema(
            "X",
            &json!({"type":"object","properties":{"a":{"enum":[1]}}}),
        )
        .unwrap_err();
        assert!(e.contains("X_a"), "{e}");
    }
}
