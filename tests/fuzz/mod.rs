//! Fuzz targets and a seeded mutation engine (stable toolchain, no sanitizers), shared by the
//! long campaign (`benches/fuzz.rs`) and the short smoke + regression test
//! (`tests/fuzz_regressions.rs`).
//!
//! Each target takes bytes, feeds them to one parser or decoder of user input and checks
//! what must hold (a property); a panic anywhere is a finding. The engine mutates a pool of
//! inputs (seed corpus, then inputs a target accepted): bit flips, byte inserts and deletes,
//! truncation, splices, repeated chunks, dictionary tokens (`ce_`, `{`, `"`, `\u`, huge
//! numbers), deep nesting. Same seed, same inputs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;
use std::time::{Duration, Instant};

use eventscope::model::envelope::{decode, decode_envelope, DecodeConfig, PlainJsonPaths};
use eventscope::model::record::Record;
use eventscope::model::{jsonl, redact, Model, ModelConfig};
use eventscope::profile::{Profile, DEFAULT_PII_FIELDS};

/// What one input did: accepted (parsed/decoded), or refused as bad input (a value).
/// `Err` is a broken property.
pub type Outcome = Result<bool, String>;

pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> Outcome,
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Inputs are cut to this many bytes.
    pub max_len: usize,
    /// Relative cost: the smoke test runs `count / cost` inputs of it.
    pub cost: usize,
}

pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "envelope",
            run: envelope,
            seeds: record_seeds,
            max_len: 8 << 10,
            cost: 1,
        },
        Target {
            name: "model",
            run: model,
            seeds: model_seeds,
            max_len: 16 << 10,
            cost: 2,
        },
        Target {
            name: "jsonl",
            run: jsonl_import,
            seeds: jsonl_seeds,
            max_len: 16 << 10,
            cost: 1,
        },
        Target {
            name: "profile",
            run: profile,
            seeds: profile_seeds,
            max_len: 4 << 10,
            cost: 1,
        },
        Target {
            name: "properties",
            run: properties,
            seeds: properties_seeds,
            max_len: 2 << 10,
            cost: 1,
        },
        Target {
            name: "json-paths",
            run: json_paths,
            seeds: json_paths_seeds,
            max_len: 1 << 10,
            cost: 1,
        },
        Target {
            name: "faults",
            run: faults,
            seeds: faults_seeds,
            max_len: 1 << 10,
            cost: 1,
        },
        Target {
            name: "cdc-change",
            run: cdc_change,
            seeds: cdc_seeds,
            max_len: 4 << 10,
            cost: 1,
        },
        Target {
            name: "redact",
            run: redact_text,
            seeds: redact_seeds,
            max_len: 4 << 10,
            cost: 1,
        },
        Target {
            name: "registry",
            run: registry,
            seeds: registry_seeds,
            max_len: 1024,
            cost: 2,
        },
        Target {
            name: "query",
            run: query,
            seeds: query_seeds,
            max_len: 512,
            cost: 40,
        },
    ]
}

// ---------------------------------------------------------------- records as bytes

const FIELD: u8 = 0x1e;
const PAIR: u8 = 0x1f;
const RECORD: u8 = 0x1d;

/// A record from fuzz bytes: `topic FIELD key FIELD (name PAIR value FIELD)* value`; a
/// header without `PAIR` has a null value. Fewer than three fields: the bytes are the value
/// of a record on `orders`.
pub fn record_from(bytes: &[u8]) -> Record {
    let fields: Vec<&[u8]> = bytes.split(|&b| b == FIELD).collect();
    if fields.len() < 3 {
        return Record::new("orders", 0, 0).with_value(bytes.to_vec());
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let last = fields.len() - 1;
    let headers = fields[2..last]
        .iter()
        .map(|h| match h.iter().position(|&b| b == PAIR) {
            Some(i) => (text(&h[..i]), Some(h[i + 1..].to_vec())),
            None => (text(h), None),
        })
        .collect();
    Record {
        topic: text(fields[0]),
        partition: (bytes.len() % 3) as i32,
        offset: bytes.len() as i64,
        timestamp_ms: Some(1_790_000_000_000 + bytes.len() as i64),
        key: (!fields[1].is_empty()).then(|| fields[1].to_vec()),
        headers,
        value: Some(fields[last].to_vec()),
    }
}

/// The inverse of [`record_from`] for seeds.
pub fn record_bytes(
    topic: &str,
    key: &str,
    headers: &[(&str, Option<&str>)],
    value: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(topic.as_bytes());
    out.push(FIELD);
    out.extend_from_slice(key.as_bytes());
    out.push(FIELD);
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        if let Some(v) = v {
            out.push(PAIR);
            out.extend_from_slice(v.as_bytes());
        }
        out.push(FIELD);
    }
    out.extend_from_slice(value.as_bytes());
    out
}

fn ce_headers<'a>(id: &'a str, ty: &'a str, corr: &'a str) -> Vec<(&'a str, Option<&'a str>)> {
    vec![
        ("ce_specversion", Some("1.0")),
        ("ce_id", Some(id)),
        ("ce_type", Some(ty)),
        ("ce_source", Some("/shop/orders")),
        ("ce_time", Some("2026-11-27T10:00:00.123Z")),
        ("ce_subject", Some("order-1")),
        ("ce_correlationid", Some(corr)),
        ("ce_causationid", Some("e-0")),
        ("ce_aggregateversion", Some("3")),
        (
            "ce_traceparent",
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ),
        (
            "ce_dataschema",
            Some("https://example.com/schemas/OrderCreated/v2.json"),
        ),
        ("content-type", Some("application/json")),
    ]
}

pub fn record_seeds() -> Vec<Vec<u8>> {
    let structured = r#"{"specversion":"1.0","id":"s-1","type":"PaymentCompleted","source":"/pay","time":"2026-11-27T10:00:00+00:00","subject":"order-2","correlationid":"c-2","causationid":"e-9","aggregateversion":"4","datacontenttype":"application/json","data":{"orderId":"order-2","amount":12.5,"email":"a@b.c"}}"#;
    let outbox =
        r#"{"schema":{"type":"string"},"payload":"{\"orderId\":\"order-3\",\"total\":3}"}"#;
    vec![
        record_bytes(
            "orders",
            "order-1",
            &ce_headers("e-1", "OrderCreated", "c-1"),
            r#"{"orderId":"order-1","items":[{"sku":"lamp","qty":2}],"total":58.0,"customer":{"email":"x@y.z"}}"#,
        ),
        record_bytes(
            "payments",
            "order-2",
            &[(
                "content-type",
                Some("application/cloudevents+json; charset=utf-8"),
            )],
            structured,
        ),
        record_bytes("payments", "", &[], structured),
        record_bytes(
            "outbox.event.Order",
            "order-3",
            &[
                ("id", Some("o-3")),
                ("eventType", Some("OrderShipped")),
                (
                    "traceparent",
                    Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                ),
                ("x-null", None),
            ],
            outbox,
        ),
        record_bytes(
            "shop.purchases",
            "k",
            &[],
            r#"{"id":"p-1","type":"Purchased","correlation":"c-9","version":7,"time":1790000000000,"data":{"amount":3}}"#,
        ),
        record_bytes(
            "payment.commands",
            "order-1",
            &ce_headers("cmd-1", "ProcessPayment", "c-1"),
            r#"{"orderId":"order-1","amount":58}"#,
        ),
        record_bytes(
            "dlq",
            "",
            &[("dlq_error", Some("bad"))],
            "\u{0}\u{1}not json",
        ),
        b"{\"a\":[1,2,{\"b\":null}]}".to_vec(),
        // Confluent wire format (magic byte 0, schema id 3): no registry is given, so the
        // framing is read and the record refused with the schema id; magic byte 1 (GUID).
        record_bytes("orders", "k", &[], "\0\0\0\0\u{3}\u{2}\u{6}abc"),
        record_bytes(
            "orders",
            "k",
            &[("content-type", Some("application/json"))],
            "\0\0\0",
        ),
        b"\x01\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11{}".to_vec(),
    ]
}

fn decode_configs() -> [DecodeConfig; 2] {
    let paths = DecodeConfig {
        plain: "id=id,type=type,correlation=correlation,version=version,time=time,payload=data"
            .parse()
            .expect("paths"),
        command_topics: vec!["*.commands".into(), "shop.?urchases".into()],
        ..DecodeConfig::default()
    };
    [DecodeConfig::default(), paths]
}

thread_local! {
    static CONFIGS: [DecodeConfig; 2] = decode_configs();
}

/// Every envelope decoder (the formats are tried in order) under two settings: the full
/// decode and the envelope-only decode agree.
pub fn envelope(bytes: &[u8]) -> Outcome {
    let rec = record_from(bytes);
    CONFIGS.with(|cfgs| {
        let mut ok = false;
        for cfg in cfgs {
            let full = decode(&rec, cfg);
            let env = decode_envelope(&rec, cfg);
            match (&full, &env) {
                (Ok(a), Ok(b)) => {
                    if a.event_id != b.event_id
                        || a.event_type != b.event_type
                        || a.format != b.format
                    {
                        return Err(format!("decode and decode_envelope differ: {a:?} / {b:?}"));
                    }
                    ok = true;
                }
                (Err(_), Err(_)) => {}
                _ => {
                    return Err(format!(
                        "decode and decode_envelope disagree: {:?} / {:?}",
                        full.map(|e| e.event_id),
                        env.map(|e| e.event_id)
                    ))
                }
            }
        }
        Ok(ok)
    })
}

pub fn model_seeds() -> Vec<Vec<u8>> {
    let seeds = record_seeds();
    let mut out = seeds.clone();
    let mut all = Vec::new();
    for s in &seeds {
        all.extend_from_slice(s);
        all.push(RECORD);
    }
    out.push(all);
    out
}

/// Records (split at 0x1d) ingested into a model: every lint runs; the log gives each
/// record back byte for byte, and clipped consistently.
pub fn model(bytes: &[u8]) -> Outcome {
    let mut m = Model::new(ModelConfig::default());
    let mut now = 1_790_000_000_000i64;
    let mut ok = false;
    for (i, part) in bytes.split(|&b| b == RECORD).take(16).enumerate() {
        let mut rec = record_from(part);
        rec.offset = i as i64;
        now += (part.len() as i64 % 7) * 1000;
        match m.ingest(&rec, now) {
            Ok((idx, _)) => {
                ok = true;
                let back = m.log().record(idx);
                if back.as_ref() != Some(&rec) {
                    return Err(format!("the log gave back {back:?} for {rec:?}"));
                }
                let (clipped, sizes) = m.log().record_clipped(idx, 5).ok_or("no clipped record")?;
                let v = rec.value.as_deref().unwrap_or_default();
                if sizes.value != v.len() || clipped.value.as_deref() != Some(&v[..v.len().min(5)])
                {
                    return Err("record_clipped disagrees with record".into());
                }
            }
            Err(e) => return Err(format!("ingest refused a small record: {e}")),
        }
    }
    m.end_of_backlog(now);
    m.tick(now + 3_600_000);
    let _ = m.report();
    Ok(ok)
}

pub fn jsonl_seeds() -> Vec<Vec<u8>> {
    let mut text = String::new();
    for s in record_seeds() {
        let mut r = record_from(&s);
        r.headers.push("x-bin", Some(&[0xff, 0, 0x80]));
        text.push_str(&jsonl::to_line(&r).expect("line"));
        text.push('\n');
    }
    vec![
        text.clone().into_bytes(),
        text.lines().next().unwrap_or_default().as_bytes().to_vec(),
        br#"{"topic":"t","partition":0,"offset":1,"key":{"base64":"AP8="},"headers":[{"key":"h","value":{"utf8":"v"}}],"value":{"json":[1,2]}}"#.to_vec(),
    ]
}

/// The JSONL importer: every line is a record or a named bad line; a line read back
/// writes out to itself again.
pub fn jsonl_import(bytes: &[u8]) -> Outcome {
    let rec = Model::from_jsonl(ModelConfig::default(), bytes, 0)
        .map_err(|e| format!("reading from memory failed: {e}"))?;
    let lines = bytes.split(|&b| b == b'\n').count();
    if rec.bad_line_count + rec.model.log().len() > lines {
        return Err(format!(
            "{} bad + {} good lines out of {lines}",
            rec.bad_line_count,
            rec.model.log().len()
        ));
    }
    if rec.bad_lines.iter().any(|b| b.line == 0 || b.line > lines) {
        return Err("a bad line number outside the file".into());
    }
    for (n, item) in jsonl::read_numbered(bytes) {
        if let Ok(r) = item {
            let line = jsonl::to_line(&r).map_err(|e| e.to_string())?;
            let again = jsonl::from_line(&line, n).map_err(|e| format!("re-read: {e}"))?;
            if again != r {
                return Err(format!("round trip changed {r:?} into {again:?}"));
            }
        }
    }
    Ok(rec.bad_line_count == 0 && !rec.model.log().is_empty())
}

pub fn profile_seeds() -> Vec<Vec<u8>> {
    vec![
        Profile::default().to_toml().into_bytes(),
        br#"command_topics = ["*.commands", "bank.?"]
stuck_saga_timeout_ms = 60000
pii_fields = ["email", "iban"]
trace_link = "http://localhost:16686/trace/{trace_id}"
topics = ["a", "b"]

[json_paths]
id = "meta.id"
type = "meta.type"
correlation = "meta.corr"

[[flows]]
name = "transfer"
start_types = ["TransferInitiated"]
terminal_types = ["TransferCompleted", "TransferFailed"]
"#
        .to_vec(),
    ]
}

/// The profile (TOML): parsed or refused with a reason; an accepted profile writes out to
/// TOML that parses again to the same profile.
pub fn profile(bytes: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(bytes);
    match Profile::parse(&text, "fuzz.toml") {
        Ok(p) => {
            let _ = p.model_config();
            let toml = p.to_toml();
            let again = Profile::parse(&toml, "again.toml")
                .map_err(|e| format!("to_toml does not parse again: {e}: {toml}"))?;
            if again.to_toml() != toml {
                return Err(format!(
                    "to_toml changed the profile: {toml} -> {}",
                    again.to_toml()
                ));
            }
            Ok(true)
        }
        Err(e) => {
            if e.to_string().is_empty() {
                return Err("an error without a reason".into());
            }
            Ok(false)
        }
    }
}

pub fn properties_seeds() -> Vec<Vec<u8>> {
    vec![
        b"# SASL\nsecurity.protocol=SASL_SSL\nsasl.mechanism = SCRAM-SHA-512\nsasl.username=alice\nsasl.password=a=b:c\n! comment\nssl.ca.location: /etc/ca.pem\n".to_vec(),
        b"bootstrap.servers=h1:9092,h2:9092\n\n".to_vec(),
    ]
}

/// The Kafka client properties file: pairs with trimmed, non-empty keys, or a line number
/// in the file; the error never repeats the line (it may hold a password).
pub fn properties(bytes: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(bytes);
    match eventscope::cli::parse_properties(&text) {
        Ok(pairs) => {
            if pairs.iter().any(|(k, _)| k.is_empty() || k.trim() != k) {
                return Err(format!("a bad key in {pairs:?}"));
            }
            Ok(true)
        }
        Err((line, why)) => {
            if line == 0 || line > text.lines().count() {
                return Err(format!("line {line} is not in the file"));
            }
            if text
                .lines()
                .nth(line - 1)
                .is_some_and(|l| l.trim().len() > 3 && why.contains(l.trim()))
            {
                return Err("the error repeats the line".into());
            }
            Ok(false)
        }
    }
}

pub fn json_paths_seeds() -> Vec<Vec<u8>> {
    vec![
        b"id=meta.id,type=meta.type,correlation=meta.corr,causation=meta.cause,aggregate=a.b,version=v,time=t,payload=data".to_vec(),
        b"id=id".to_vec(),
    ]
}

/// `--json-paths`: parsed or refused.
pub fn json_paths(bytes: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(bytes);
    Ok(PlainJsonPaths::from_str(&text).is_ok())
}

pub fn faults_seeds() -> Vec<Vec<u8>> {
    vec![
        b"duplicate-publish=0.1,payment-decline=0.2,poison-message=3,broker-outage=4s,no-idempotency".to_vec(),
        b"consumer-crash=0.3,relay-crash=2,orchestrator-crash=1e-3,schema-drift=0.5,no-schema-check".to_vec(),
    ]
}

/// `--faults`: parsed (every value in range) or refused naming the fault.
pub fn faults(bytes: &[u8]) -> Outcome {
    use eventscope_demo::faults::FaultSpec;
    let text = String::from_utf8_lossy(bytes);
    match FaultSpec::from_str(&text) {
        Ok(spec) => {
            if let Some((f, v)) = spec.0.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
                return Err(format!("{f:?}={v} accepted"));
            }
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

pub fn cdc_seeds() -> Vec<Vec<u8>> {
    vec![
        b"table public.outbox: INSERT: id[bigint]:17 event_id[text]:'e-1' topic[text]:'orders' msg_key[text]:'o 1' payload[text]:'{\"note\":\"it''s [x]: y\"}' causation_id[text]:null aggregate_version[bigint]:3".to_vec(),
        b"table public.outbox: UPDATE: id[bigint]:17 published_at[bigint]:null".to_vec(),
        b"BEGIN 745".to_vec(),
        b"COMMIT 745".to_vec(),
    ]
}

/// The CDC relay's reader of `test_decoding` lines.
pub fn cdc_change(bytes: &[u8]) -> Outcome {
    use eventscope_demo::cdc::{parse_change, Change};
    let text = String::from_utf8_lossy(bytes);
    Ok(matches!(parse_change(&text), Change::OutboxInsert(_)))
}

pub fn redact_seeds() -> Vec<Vec<u8>> {
    vec![
        br#"{"orderId":"o-1","customer":{"email":"jo@example.com","name":"Jo","address":{"street":"s"}},"phone":123,"items":[{"email":null}]}"#.to_vec(),
        b"postgres://user:s3cret@host:5432/db?sslmode=require&password=x".to_vec(),
    ]
}

/// PII masking on text: on JSON it gives JSON equal to masking the parsed value; database
/// URLs lose their passwords.
pub fn redact_text(bytes: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(bytes);
    let masked = redact::mask_json_text(&text, &DEFAULT_PII_FIELDS);
    let url = eventscope_demo::store::redact_url(&text);
    // The user info's password is gone from the URL's head (a query may hold anything).
    if let (Some((_, rest)), Some((_, out))) = (text.split_once("://"), url.split_once("://")) {
        let head = &rest[..rest.find('?').unwrap_or(rest.len())];
        let out_head = &out[..out.find('?').unwrap_or(out.len())];
        if let Some(at) = head.rfind('@') {
            if let Some((_, pw)) = head[..at].split_once(':') {
                let out_user = &out_head[..out_head.rfind('@').unwrap_or(0)];
                // Only a password that appears once in the input can be looked for.
                if pw.len() >= 4 && text.matches(pw).count() == 1 && out_user.contains(pw) {
                    return Err(format!("the password stays in {url}"));
                }
            }
        }
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => {
            let back: serde_json::Value = serde_json::from_str(&masked)
                .map_err(|e| format!("masked JSON does not parse: {e}: {masked}"))?;
            if back != redact::mask_value(&v, &DEFAULT_PII_FIELDS) {
                return Err(format!("text and value masking differ: {masked}"));
            }
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

// ---------------------------------------------------------------- registry decoders

const FUZZ_AVSC: &str = r#"{"type": "record", "name": "Paid", "namespace": "acme", "fields": [
  {"name": "id", "type": "string"},
  {"name": "amount", "type": "long"},
  {"name": "note", "type": ["null", "string"], "default": null},
  {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
  {"name": "tags", "type": {"type": "array", "items": "string"}},
  {"name": "attrs", "type": {"type": "map", "values": "double"}},
  {"name": "line", "type": {"type": "record", "name": "Line", "fields": [
    {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"},
    {"name": "hash", "type": {"type": "fixed", "name": "H", "size": 4}}]}}
]}"#;

fn fuzz_proto() -> prost_types::FileDescriptorProto {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FieldDescriptorProto};
    let field = |name: &str, number: i32, ty: Type, label: Label| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(label as i32),
        r#type: Some(ty as i32),
        json_name: Some(name.into()),
        ..Default::default()
    };
    let mut inner = field("parcels", 4, Type::Message, Label::Repeated);
    inner.type_name = Some(".acme.Shipped.Parcel".into());
    prost_types::FileDescriptorProto {
        name: Some("fuzz.proto".into()),
        package: Some("acme".into()),
        syntax: Some("proto3".into()),
        message_type: vec![
            DescriptorProto {
                name: Some("Note".into()),
                field: vec![field("text", 1, Type::String, Label::Optional)],
                ..Default::default()
            },
            DescriptorProto {
                name: Some("Shipped".into()),
                field: vec![
                    field("id", 1, Type::String, Label::Optional),
                    field("weight", 2, Type::Int64, Label::Optional),
                    field("ok", 3, Type::Bool, Label::Optional),
                    inner,
                ],
                nested_type: vec![DescriptorProto {
                    name: Some("Parcel".into()),
                    field: vec![field("grams", 1, Type::Sint32, Label::Optional)],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

thread_local! {
    /// Avro (id 1), Protobuf (id 2) and JSON Schema (id 3), as a registry would serve them.
    static REGISTRY: DecodeConfig = {
        use base64::Engine as _;
        use prost::Message as _;
        let cache = eventscope::registry::SchemaCache::new("http://fuzz");
        cache.insert(1, None, FUZZ_AVSC).expect("avro");
        let proto = base64::engine::general_purpose::STANDARD.encode(fuzz_proto().encode_to_vec());
        cache.insert(2, Some("PROTOBUF"), &proto).expect("protobuf");
        cache
            .insert(3, Some("JSON"), r#"{"type": "object", "required": ["id"], "properties": {"n": {"type": "integer"}}}"#)
            .expect("json schema");
        DecodeConfig {
            registry: eventscope::registry::RegistryHandle(Some(std::sync::Arc::new(cache))),
            plain: "id=id".parse().expect("paths"),
            ..Default::default()
        }
    };
}

fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend(id.to_be_bytes());
    v.extend(payload);
    v
}

/// Valid framed values of each kind, encoded with the real encoders.
pub fn registry_seeds() -> Vec<Vec<u8>> {
    use apache_avro::types::Value as A;
    use prost::Message as _;
    let schema = apache_avro::Schema::parse_str(FUZZ_AVSC).expect("avsc");
    let mut r = apache_avro::types::Record::new(&schema).expect("record");
    r.put("id", "p-1");
    r.put("amount", 1200i64);
    r.put("note", A::Union(1, Box::new(A::String("hi".into()))));
    r.put("kind", A::Enum(2, "C".into()));
    r.put(
        "tags",
        A::Array(vec![A::String("a".into()), A::String("b".into())]),
    );
    r.put(
        "attrs",
        A::Map([("x".to_owned(), A::Double(1.5))].into_iter().collect()),
    );
    r.put(
        "line",
        A::Record(vec![
            ("sku".into(), A::String("kb".into())),
            ("qty".into(), A::Int(2)),
            ("hash".into(), A::Fixed(4, vec![1, 2, 3, 4])),
        ]),
    );
    let avro = apache_avro::to_avro_datum(&schema, r).expect("encode");
    let pool =
        prost_reflect::DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
            file: vec![fuzz_proto()],
        })
        .expect("pool");
    let shipped = pool.get_message_by_name("acme.Shipped").expect("Shipped");
    let parcel = pool
        .get_message_by_name("acme.Shipped.Parcel")
        .expect("Parcel");
    let mut m = prost_reflect::DynamicMessage::new(shipped);
    m.set_field_by_name("id", prost_reflect::Value::String("s-1".into()));
    m.set_field_by_name("weight", prost_reflect::Value::I64(-7));
    m.set_field_by_name("ok", prost_reflect::Value::Bool(true));
    let mut p = prost_reflect::DynamicMessage::new(parcel);
    p.set_field_by_name("grams", prost_reflect::Value::I32(-250));
    m.set_field_by_name(
        "parcels",
        prost_reflect::Value::List(vec![prost_reflect::Value::Message(p)]),
    );
    let mut proto = vec![2u8, 2];
    proto.extend(m.encode_to_vec());
    let note = vec![0u8, 0x0a, 2, b'h', b'i'];
    vec![
        framed(1, &avro),
        framed(2, &proto),
        framed(2, &note),
        framed(3, br#"{"id":"j-1","n":3}"#),
        framed(3, br#"{"id":"j-2","n":"x"}"#),
        framed(9, b"\x02"),
        vec![0, 0, 1],
    ]
}

/// A framed value through the registry decoders, in a plain-JSON and a CloudEvents record:
/// no panic, and the full decode and the envelope-only decode agree.
pub fn registry(bytes: &[u8]) -> Outcome {
    REGISTRY.with(|cfg| {
        let plain = Record::new("payments", 0, 0).with_value(bytes.to_vec());
        let ce = Record::new("payments", 0, 1)
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", "e1")
            .with_header("ce_type", "Paid")
            .with_header("ce_source", "/fuzz")
            .with_value(bytes.to_vec());
        let mut ok = false;
        for rec in [plain, ce] {
            match (decode(&rec, cfg), decode_envelope(&rec, cfg)) {
                // The envelope-only path skims Avro instead of decoding it: same verdict,
                // same fingerprint, same schema.
                (Ok(a), Ok(b)) if a.shape != b.shape || a.value_schema != b.value_schema => {
                    return Err(format!(
                        "decode and decode_envelope differ: shape {:?} / {:?}, schema {:?} / {:?}",
                        a.shape, b.shape, a.value_schema, b.value_schema
                    ))
                }
                (Ok(_), Ok(_)) => ok = true,
                (Err(_), Err(_)) => {}
                (a, b) => {
                    return Err(format!(
                        "decode and decode_envelope disagree: {:?} / {:?}",
                        a.map(|e| e.event_id),
                        b.map(|e| e.event_id)
                    ))
                }
            }
        }
        Ok(ok)
    })
}

pub fn query_seeds() -> Vec<Vec<u8>> {
    vec![
        b".data.amount > 100".to_vec(),
        b"$headers.ce_type == \"OrderCreated\" and ($key | startswith(\"order\"))".to_vec(),
        b"[.items[]? | .qty] | add // 0 | . >= 2".to_vec(),
        b"$topic | test(\"^ord\")".to_vec(),
    ]
}

/// The query filter (jq): compiled or refused. Compiled filters are not run: jq is a
/// programming language, and `until(false; .)` runs for ever by design.
pub fn query(bytes: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(bytes);
    Ok(eventscope::query::Query::parse(&text).is_ok())
}

// ---------------------------------------------------------------- the engine

/// xorshift64*: small, seeded, good enough to choose mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

pub const DICTIONARY: &[&[u8]] = &[
    b"ce_",
    b"ce_id",
    b"ce_type",
    b"ce_source",
    b"ce_specversion",
    b"ce_time",
    b"ce_subject",
    b"ce_correlationid",
    b"ce_causationid",
    b"ce_aggregateversion",
    b"ce_traceparent",
    b"ce_dataschema",
    b"content-type",
    b"application/cloudevents+json",
    b"application/json",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\\udc00",
    b"\\u0000",
    b":",
    b",",
    b"null",
    b"true",
    b"false",
    b"-0",
    b"1e309",
    b"-1e309",
    b"0.000000000000000000001e-400",
    b"99999999999999999999999999999",
    b"-9223372036854775808",
    b"9223372036854775807",
    b"18446744073709551616",
    b"4294967296",
    b"NaN",
    b"\"specversion\":\"1.0\"",
    b"\"id\":",
    b"\"type\":",
    b"\"source\":",
    b"\"data\":",
    b"\"data_base64\":",
    b"\"time\":",
    b"\"payload\":",
    b"\"schema\":",
    b"\"aggregateversion\":",
    b"\"correlationid\":",
    b"2026-11-27T10:00:00Z",
    b"9999-12-31T23:59:59.999999999+14:00",
    b"0000-00-00T24:60:60-25:99",
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    b"ff-",
    b"\x1e",
    b"\x1f",
    b"\x1d",
    b"\n",
    b"\r\n",
    b"=",
    b"#",
    b"'",
    b"''",
    b"[[flows]]",
    b"[json_paths]",
    b"\"\"\"",
    b"'''",
    b"=\"",
    b"{\"utf8\":\"",
    b"{\"base64\":\"",
    b"{\"json\":",
    b"\"headers\":[",
    b"\"topic\":",
    b"\"offset\":",
    b"[text]:",
    b"[bigint]:",
    b"null ",
    b"table public.outbox: INSERT: ",
    b"published_at[bigint]:null",
    b"\xff",
    b"\xc3",
    b"\xf0\x9f\x92",
    b"\xe2\x80\xa8",
    b"*",
    b"?",
    b"..",
    b".[]",
    b"|",
    b"$__loc__",
    b"def f: f; f",
    b"email",
    b"address",
    b"://",
    b"@",
    b"=0.5",
    b"=1.5",
    b"=-1",
    b"=inf",
    b"s,",
];

/// One to four mutations of `input` (pool members for splices).
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>], max_len: usize) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(12) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                const SPECIAL: &[u8] = b"\0\xff\x7f\x80\"\\{}[]:,0-.e\n\x1e\x1f";
                input[i] = if rng.chance(2) {
                    SPECIAL[rng.below(SPECIAL.len())]
                } else {
                    rng.next() as u8
                };
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(4);
                for k in 0..n {
                    input.insert(i + k, rng.next() as u8);
                }
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                input.drain(i..i + n);
            }
            4 if len > 0 => {
                input.truncate(rng.below(len));
            }
            5 if len > 0 => {
                // Repeat a chunk.
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let chunk = input[i..i + n].to_vec();
                let most = if rng.chance(8) { 512 } else { 8 };
                let times = 1 + rng.below(most);
                let at = rng.below(input.len() + 1);
                let rep: Vec<u8> = chunk.iter().copied().cycle().take(n * times).collect();
                input.splice(at..at, rep);
            }
            6 if !pool.is_empty() => {
                // Splice: a prefix of this input, a suffix of another.
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            7 | 8 => {
                let tok = DICTIONARY[rng.below(DICTIONARY.len())];
                let at = rng.below(len + 1);
                if rng.chance(3) && len > 0 {
                    // Overwrite instead of insert.
                    let end = (at + tok.len()).min(len);
                    input.splice(at..end, tok.iter().copied());
                } else {
                    input.splice(at..at, tok.iter().copied());
                }
            }
            9 if len > 0 => {
                // A run of digits becomes a huge or odd number.
                let start = rng.below(len);
                if let Some(p) = input[start..].iter().position(u8::is_ascii_digit) {
                    let s = start + p;
                    let e = s + input[s..].iter().take_while(|b| b.is_ascii_digit()).count();
                    const NUMS: &[&[u8]] = &[
                        b"99999999999999999999999999999999999999",
                        b"18446744073709551615",
                        b"9223372036854775808",
                        b"2147483648",
                        b"0",
                        b"1e999",
                        b"-1",
                        b"4294967295",
                    ];
                    let n = NUMS[rng.below(NUMS.len())];
                    input.splice(s..e, n.iter().copied());
                }
            }
            10 => {
                // Deep nesting.
                let most = if rng.chance(4) { 4096 } else { 64 };
                let depth = 1 + rng.below(most);
                let open: &[u8] = match rng.below(3) {
                    0 => b"[",
                    1 => b"{\"a\":",
                    _ => b"[{\"b\":",
                };
                let at = rng.below(len + 1);
                let rep: Vec<u8> = open
                    .iter()
                    .copied()
                    .cycle()
                    .take(open.len() * depth)
                    .collect();
                input.splice(at..at, rep);
            }
            _ => {
                // Swap two bytes.
                if len > 1 {
                    let (a, b) = (rng.below(len), rng.below(len));
                    input.swap(a, b);
                }
            }
        }
    }
    input.truncate(max_len);
}

/// What a run of one target found.
#[derive(Debug, Default)]
pub struct Stats {
    pub inputs: u64,
    pub accepted: u64,
    pub panics: u64,
    pub broken: u64,
    /// The first findings: (input, what happened).
    pub findings: Vec<(Vec<u8>, String)>,
    pub elapsed: Duration,
    pub slowest: Duration,
    pub slowest_len: usize,
}

thread_local! {
    static PANIC_AT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Panics are caught and counted: keep them quiet, but remember where they happened.
pub fn quiet_panics() {
    panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    }));
}

/// Run one input; `Err` is a finding (a panic or a broken property).
pub fn run_one(t: &Target, input: &[u8]) -> Result<bool, (bool, String)> {
    match panic::catch_unwind(AssertUnwindSafe(|| (t.run)(input))) {
        Ok(Ok(accepted)) => Ok(accepted),
        Ok(Err(broken)) => Err((false, broken)),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            let at = PANIC_AT.with(|p| p.borrow().clone());
            Err((true, format!("panic at {at}: {msg}")))
        }
    }
}

/// Fuzz `t` with `count` inputs from `seed`.
pub fn run_target(t: &Target, count: u64, seed: u64) -> Stats {
    let mut rng = Rng::new(
        seed ^ t
            .name
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b)),
    );
    let seeds = (t.seeds)();
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    let mut stats = Stats::default();
    let started = Instant::now();
    let mut input = Vec::new();
    for i in 0..count {
        input.clear();
        if i < seeds.len() as u64 {
            input.extend_from_slice(&seeds[i as usize]);
        } else {
            let base = if rng.chance(4) {
                &seeds[rng.below(seeds.len())]
            } else {
                &pool[rng.below(pool.len())]
            };
            input.extend_from_slice(base);
            mutate(&mut rng, &mut input, &pool, t.max_len);
        }
        let t0 = Instant::now();
        let result = run_one(t, &input);
        let took = t0.elapsed();
        if took > stats.slowest {
            stats.slowest = took;
            stats.slowest_len = input.len();
        }
        stats.inputs += 1;
        match result {
            Ok(true) => {
                stats.accepted += 1;
                // Accepted inputs feed the pool: mutations of them reach deeper.
                if pool.len() < 512 {
                    pool.push(input.clone());
                } else if rng.chance(8) {
                    let k = rng.below(pool.len());
                    pool[k] = input.clone();
                }
            }
            Ok(false) => {
                if pool.len() < 512 && rng.chance(64) {
                    pool.push(input.clone());
                }
            }
            Err((panicked, what)) => {
                if panicked {
                    stats.panics += 1;
                } else {
                    stats.broken += 1;
                }
                if stats.findings.len() < 20 && !stats.findings.iter().any(|(_, w)| *w == what) {
                    stats.findings.push((input.clone(), what));
                }
            }
        }
    }
    stats.elapsed = started.elapsed();
    stats
}
