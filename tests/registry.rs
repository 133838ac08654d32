//! Records in the Confluent wire format: Avro, Protobuf and JSON Schema values encoded with the
//! real encoders (apache-avro, prost-reflect, serde_json), framed as the Confluent serializers
//! frame them, written to `eventscope broker`, and read back by `eventscope inspect
//! --schema-registry` against a registry serving the real REST shapes (hyper, in the test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::broker::{Broker, BIN};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Value as PValue};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

/// A Schema Registry serving the REST shapes of Confluent's: schemas by id (with
/// `schemaType`, absent for Avro), an id's subject/versions, 404s as its error JSON. It counts
/// the requests per path. `html` makes it answer every request with an HTML page instead.
/// A registered schema: subject, version, `schemaType` (None for Avro), schema text.
type Registered = (String, i64, Option<&'static str>, String);

#[derive(Clone, Default)]
struct FakeRegistry {
    schemas: Arc<Mutex<HashMap<u32, Registered>>>,
    requests: Arc<Mutex<Vec<String>>>,
    html: bool,
}

impl FakeRegistry {
    fn count(&self, prefix: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }

    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reg = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let reg = reg.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| reg.clone().handle(req));
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        addr
    }

    async fn handle(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let post = req.method() == hyper::Method::POST;
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        self.requests
            .lock()
            .unwrap()
            .push(format!("{path}?{query}"));
        let reply = |status: u16, body: Value| {
            Ok(Response::builder()
                .status(status)
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap())
        };
        if self.html {
            return Ok(Response::builder()
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from("<html><body>Login</body></html>")))
                .unwrap());
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // Registering: POST /subjects/{subject}/versions {"schemaType", "schema"}; the same
        // schema under the same subject keeps its id.
        if let (true, ["subjects", subject, "versions"]) = (post, parts.as_slice()) {
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return reply(422, json!({"error_code": 42201, "message": "bad body"}));
            };
            let schema = v["schema"].as_str().unwrap_or_default().to_owned();
            let t: Option<&'static str> = match v["schemaType"].as_str() {
                Some("JSON") => Some("JSON"),
                Some("PROTOBUF") => Some("PROTOBUF"),
                _ => None,
            };
            let mut all = self.schemas.lock().unwrap();
            if let Some((id, _)) = all.iter().find(|(_, r)| r.0 == *subject && r.3 == schema) {
                return reply(200, json!({"id": id}));
            }
            let id = all.keys().max().copied().unwrap_or(0).max(100) + 1;
            let version = all.values().filter(|r| r.0 == *subject).count() as i64 + 1;
            all.insert(id, ((*subject).to_owned(), version, t, schema));
            return reply(200, json!({"id": id}));
        }
        let schemas = self.schemas.lock().unwrap().clone();
        let entry = |id: &str| id.parse::<u32>().ok().and_then(|id| schemas.get(&id));
        let with_type = |mut v: Value, t: Option<&str>| {
            if let Some(t) = t {
                v["schemaType"] = json!(t);
            }
            v
        };
        match parts.as_slice() {
            ["schemas", "ids", id] => match entry(id) {
                Some((_, _, t, text)) => reply(200, with_type(json!({"schema": text}), *t)),
                None => reply(
                    404,
                    json!({"error_code": 40403, "message": format!("Schema {id} not found")}),
                ),
            },
            ["schemas", "ids", id, "versions"] => match entry(id) {
                Some((s, v, _, _)) => reply(200, json!([{"subject": s, "version": v}])),
                None => reply(404, json!({"error_code": 40403, "message": "not found"})),
            },
            _ => reply(404, json!({"error_code": 40401, "message": "no such path"})),
        }
    }
}

const PAYMENT_AVSC: &str = r#"{"type": "record", "name": "PaymentEvent", "namespace": "acme",
  "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "type", "type": "string"},
    {"name": "correlation_id", "type": "string"},
    {"name": "causation_id", "type": ["null", "string"], "default": null},
    {"name": "payment_id", "type": "string"},
    {"name": "amount_cents", "type": "long"}
  ]}"#;

/// shipping.proto: `Envelope` (message 0) and `Shipped` (message 1) with a nested `Parcel`.
fn shipping_proto() -> FileDescriptorProto {
    let field = |name: &str, number: i32, ty: Type| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(ty as i32),
        json_name: Some(name.into()),
        ..Default::default()
    };
    let mut parcels = field("parcels", 6, Type::Message);
    parcels.label = Some(Label::Repeated as i32);
    parcels.type_name = Some(".acme.Shipped.Parcel".into());
    FileDescriptorProto {
        name: Some("shipping.proto".into()),
        package: Some("acme".into()),
        syntax: Some("proto3".into()),
        message_type: vec![
            DescriptorProto {
                name: Some("Envelope".into()),
                field: vec![field("note", 1, Type::String)],
                ..Default::default()
            },
            DescriptorProto {
                name: Some("Shipped".into()),
                field: vec![
                    field("event_id", 1, Type::String),
                    field("type", 2, Type::String),
                    field("correlation_id", 3, Type::String),
                    field("causation_id", 4, Type::String),
                    field("order_id", 5, Type::String),
                    parcels,
                ],
                nested_type: vec![DescriptorProto {
                    name: Some("Parcel".into()),
                    field: vec![field("weight_grams", 1, Type::Int32)],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

const AUDIT_SCHEMA: &str = r#"{"type": "object", "required": ["event_id", "type", "amount"],
  "properties": {"amount": {"type": "integer"}}}"#;

fn frame(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend(id.to_be_bytes());
    v.extend(payload);
    v
}

fn avro_payment(
    schema: &apache_avro::Schema,
    id: &str,
    ty: &str,
    corr: &str,
    cause: Option<&str>,
    amount: i64,
) -> Vec<u8> {
    use apache_avro::types::Value as A;
    let mut r = apache_avro::types::Record::new(schema).unwrap();
    r.put("event_id", id);
    r.put("type", ty);
    r.put("correlation_id", corr);
    r.put(
        "causation_id",
        match cause {
            Some(c) => A::Union(1, Box::new(A::String(c.into()))),
            None => A::Union(0, Box::new(A::Null)),
        },
    );
    r.put("payment_id", "pay-1");
    r.put("amount_cents", amount);
    frame(1, &apache_avro::to_avro_datum(schema, r).unwrap())
}

async fn produce(addr: &str, records: Vec<(&str, Vec<u8>)>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    for (topic, value) in records {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(topic)
                    .key("k")
                    .partition(0)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn inspect(addr: &str, registry: &str, out: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(["inspect", "--brokers", addr, "--topics", "payments,shipments,audit"])
        .args(["--schema-registry", registry])
        .args([
            "--json-paths",
            "id=event_id,type=type,correlation=correlation_id,causation=causation_id,aggregate=payment_id",
        ])
        .args(["--filter", ".amount_cents > 1000 or (.parcels | length) == 2"])
        .arg("--report")
        .arg(out)
        .output()
        .expect("inspect runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_protobuf_and_json_schema_records_are_decoded_through_the_registry() {
    let broker = tokio::task::spawn_blocking(Broker::start).await.unwrap();
    let proto = shipping_proto();
    let pool = DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
        file: vec![proto.clone()],
    })
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let registry = FakeRegistry {
        schemas: Arc::new(Mutex::new(HashMap::from([
            (1, ("payments-value".into(), 3, None, PAYMENT_AVSC.into())),
            (
                2,
                (
                    "shipments-value".into(),
                    1,
                    Some("PROTOBUF"),
                    b64.encode(proto.encode_to_vec()),
                ),
            ),
            (
                4,
                ("audit-value".into(), 1, Some("JSON"), AUDIT_SCHEMA.into()),
            ),
        ]))),
        ..FakeRegistry::default()
    };
    let url = format!("http://{}", registry.serve().await);

    // Avro: a chain of three, one of them delivered twice (same event_id), and a record whose
    // schema id the registry does not know.
    let avsc = apache_avro::Schema::parse_str(PAYMENT_AVSC).unwrap();
    let requested = avro_payment(&avsc, "p-1", "PaymentRequested", "c-1", None, 1200);
    let mut records = vec![
        ("payments", requested.clone()),
        (
            "payments",
            avro_payment(&avsc, "p-2", "PaymentAuthorized", "c-1", Some("p-1"), 1200),
        ),
        ("payments", requested),
        (
            "payments",
            avro_payment(&avsc, "p-3", "PaymentCaptured", "c-1", Some("p-2"), 1200),
        ),
        ("payments", frame(999, b"\x02\x04")),
    ];
    // Protobuf: `Shipped` is message 1 (index list [1]: count 1, index 1, zigzag-encoded).
    let shipped = pool.get_message_by_name("acme.Shipped").unwrap();
    let parcel = pool.get_message_by_name("acme.Shipped.Parcel").unwrap();
    let mut msg = DynamicMessage::new(shipped);
    for (k, v) in [
        ("event_id", "s-1"),
        ("type", "OrderShipped"),
        ("correlation_id", "c-1"),
        ("causation_id", "p-3"),
        ("order_id", "o-1"),
    ] {
        msg.set_field_by_name(k, PValue::String(v.into()));
    }
    let parcels = [250, 900]
        .map(|w| {
            let mut p = DynamicMessage::new(parcel.clone());
            p.set_field_by_name("weight_grams", PValue::I32(w));
            PValue::Message(p)
        })
        .to_vec();
    msg.set_field_by_name("parcels", PValue::List(parcels));
    let mut framed = vec![2u8, 2];
    framed.extend(msg.encode_to_vec());
    records.push(("shipments", frame(2, &framed)));
    // JSON Schema: one that keeps it, one that does not.
    records.push((
        "audit",
        frame(
            4,
            json!({"event_id": "a-1", "type": "Audited", "correlation_id": "c-1",
                   "causation_id": "s-1", "amount": 3})
            .to_string()
            .as_bytes(),
        ),
    ));
    records.push((
        "audit",
        frame(
            4,
            json!({"event_id": "a-2", "type": "Audited", "amount": "three"})
                .to_string()
                .as_bytes(),
        ),
    ));
    produce(&broker.addr, records).await;

    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let (addr, u, p) = (broker.addr.clone(), url.clone(), report_path.clone());
    let out = tokio::task::spawn_blocking(move || inspect(&addr, &u, &p))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["events"]["observed"], 8, "{report:#}");
    assert_eq!(report["events"]["poison"], 2, "{report:#}");
    let anomalies = report["anomalies"].as_array().unwrap();
    let details = |kind: &str| -> Vec<String> {
        anomalies
            .iter()
            .filter(|a| a["kind"] == kind)
            .map(|a| a["detail"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let poison = details("poison-message");
    assert!(
        poison
            .iter()
            .any(|d| d.contains("schema 999 not found in the registry")),
        "{poison:?}"
    );
    assert!(
        poison
            .iter()
            .any(|d| d.contains("schema 4") && d.contains("/amount")),
        "{poison:?}"
    );
    // The duplicate found by the Avro event id; the chain links across Avro, Protobuf and
    // JSON Schema records (no broken causation).
    assert_eq!(details("duplicate-delivery").len(), 1, "{anomalies:#?}");
    assert!(details("broken-chain").is_empty(), "{anomalies:#?}");
    // Decoded payloads are what the jq filter sees: the Avro amounts, the Protobuf parcels.
    assert_eq!(report["filter"]["matched"], 5, "{:#}", report["filter"]);
    // One request per schema id (and one for its subject), never one per record.
    assert_eq!(registry.count("/schemas/ids/1?"), 1);
    assert_eq!(registry.count("/schemas/ids/1/versions"), 1);
    assert_eq!(registry.count("/schemas/ids/999?"), 1);
}

/// A registry that answers with a login page, one that is not there, framing that is cut
/// short, and framing eventscope does not support: each record is kept and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_failures_and_unsupported_framing_are_named() {
    let broker = tokio::task::spawn_blocking(Broker::start).await.unwrap();
    let html = FakeRegistry {
        html: true,
        ..FakeRegistry::default()
    };
    let html_url = format!("http://{}", html.serve().await);
    let mut guid = vec![1u8];
    guid.extend([7u8; 16]);
    guid.extend(b"payload");
    produce(
        &broker.addr,
        vec![
            ("payments", frame(1, b"\x02")),
            ("shipments", vec![0, 0, 1]),
            ("audit", guid),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let (addr, p) = (broker.addr.clone(), report.clone());
    let (details, stderr) = tokio::task::spawn_blocking(move || details_for(&addr, &html_url, &p))
        .await
        .unwrap();
    let all = details.join("\n");
    assert!(all.contains("text/html"), "{all}");
    assert!(all.contains("truncated Confluent wire format"), "{all}");
    assert!(all.contains("magic byte 1"), "{all}");
    assert!(stderr.contains("does not answer"), "{stderr}");

    // Nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (addr, p) = (broker.addr.clone(), report.clone());
    let (details, _) =
        tokio::task::spawn_blocking(move || details_for(&addr, &format!("http://{closed}"), &p))
            .await
            .unwrap();
    assert!(
        details.iter().any(|d| d.contains("does not answer")),
        "{details:?}"
    );

    // Without --schema-registry the framing is recognised, not taken for garbage.
    let addr = broker.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["inspect", "--brokers", &addr, "--topics", "payments"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["anomalies"]
            .to_string()
            .contains("give --schema-registry URL"),
        "{report:#}"
    );
}

/// `inspect` with this registry: every record kept (three, all poison), the findings' details
/// and stderr.
fn details_for(addr: &str, registry: &str, report: &std::path::Path) -> (Vec<String>, String) {
    let out = inspect(addr, registry, report);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(report["events"]["observed"], 3, "{report:#}");
    assert_eq!(report["events"]["poison"], 3, "{report:#}");
    let details = report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["detail"].as_str().unwrap_or("").to_owned())
        .collect();
    (details, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A producer nobody here wrote: Python's fastavro encodes, the Confluent framing is added as
/// Confluent's serializers add it, kafka-python writes to `eventscope broker`; `inspect
/// --schema-registry` reads the records decoded and links their chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastavro_records_from_kafka_python_are_decoded() {
    assert!(
        Command::new("python3")
            .args(["-c", "import fastavro, kafka"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "fastavro and kafka-python are not installed (python3 -m pip install fastavro \
         kafka-python; .ci/test does)"
    );
    let broker = tokio::task::spawn_blocking(Broker::start).await.unwrap();
    let registry = FakeRegistry {
        schemas: Arc::new(Mutex::new(HashMap::from([(
            1,
            ("py-payments-value".into(), 1, None, PAYMENT_AVSC.into()),
        )]))),
        ..FakeRegistry::default()
    };
    let url = format!("http://{}", registry.serve().await);
    let script = r#"
import io, json, struct, sys
from fastavro import parse_schema, schemaless_writer
from kafka import KafkaProducer
addr, avsc = sys.argv[1], sys.argv[2]
schema = parse_schema(json.loads(avsc))
p = KafkaProducer(bootstrap_servers=addr)
events = [("py-1", "PaymentRequested", None, 500), ("py-2", "PaymentAuthorized", "py-1", 500),
          ("py-3", "PaymentCaptured", "py-2", 500)]
for eid, ty, cause, amount in events:
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", 1))
    schemaless_writer(buf, schema, {"event_id": eid, "type": ty, "correlation_id": "py-c",
                                    "causation_id": cause, "payment_id": "py-pay",
                                    "amount_cents": amount})
    p.send("py-payments", key=b"py-pay", value=buf.getvalue(), partition=0)
p.flush(timeout=20)
p.close()
"#;
    let addr = broker.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", script, &addr, PAYMENT_AVSC])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.json");
    let (addr, u, rp) = (broker.addr.clone(), url.clone(), p.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["inspect", "--brokers", &addr, "--topics", "py-payments"])
            .args(["--schema-registry", &u])
            .args([
                "--json-paths",
                "id=event_id,type=type,correlation=correlation_id,causation=causation_id,aggregate=payment_id",
            ])
            .args(["--filter", ".amount_cents == 500 and .payment_id == \"py-pay\""])
            .arg("--report")
            .arg(&rp)
            .arg("--export")
            .arg(rp.with_extension("jsonl"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(report["events"]["observed"], 3, "{report:#}");
    assert_eq!(report["events"]["poison"], 0, "{report:#}");
    assert_eq!(report["filter"]["matched"], 3, "{report:#}");
    assert_eq!(report["anomaly_counts"]["broken-chain"], 0, "{report:#}");
    assert_eq!(registry.count("/schemas/ids/1?"), 1);

    // The recording keeps the raw bytes; imported with the registry, it decodes the same.
    let recording = p.with_extension("jsonl");
    let profile = p.with_extension("toml");
    std::fs::write(
        &profile,
        "[json_paths]\nid = \"event_id\"\nevent_type = \"type\"\n\
         correlation = \"correlation_id\"\ncausation = \"causation_id\"\n",
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("import")
            .arg(&recording)
            .arg("--profile")
            .arg(&profile)
            .args(["--schema-registry", &url])
            .args(["--filter", ".amount_cents == 500"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["events"]["poison"], 0, "{again:#}");
    assert_eq!(again["filter"]["matched"], 3, "{again:#}");
}

/// The demo writing `format` values with an in-test registry, `faults` on, `orders` placed
/// and settled; every saga terminal, no duplicate effect, the read model equal to a replay.
async fn demo_through_registry(
    format: eventscope::cli::ValueFormat,
    faults: &str,
    orders: u64,
) -> (FakeRegistry, eventscope::headless::Finished) {
    let registry = FakeRegistry::default();
    let url = format!("http://{}", registry.serve().await);
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut conn = common::conn(dir);
    conn.schema_registry = Some(url);
    conn.value_format = format;
    let faults = std::sync::Arc::new(eventscope_demo::faults::Faults::from_spec(
        5,
        &faults.parse().unwrap(),
    ));
    let s = eventscope::headless::Session::start(&conn, |_| {}, faults)
        .await
        .expect("the demo starts");
    let fin = common::place_and_settle(s, orders).await;
    assert!(fin.facts.all_sagas_terminal());
    assert!(fin.facts.duplicate_effects.is_empty());
    assert!(fin.facts.read_model_mismatches.is_empty());
    (registry, fin)
}

/// `--value-format json-schema`: the demo registers its contracts with the registry and
/// writes each value in the Confluent wire format with its schema id; its own consumers read
/// them, every invariant holds, and the observer decodes every record through the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_writes_framed_json_schema_values_and_the_observer_decodes_them() {
    let (registry, fin) =
        demo_through_registry(eventscope::cli::ValueFormat::JsonSchema, "", 10).await;
    // Every contract registered once, under its type.
    let registered = registry.schemas.lock().unwrap().len();
    let contracts: usize = {
        let reg = eventscope_demo::contracts::Registry::demo().unwrap();
        reg.types().map(|t| reg.versions(t).len()).sum()
    };
    assert_eq!(registered, contracts);
    // On the topics: framed values; in the observer: decoded, none poison.
    let log = fin.model.log();
    assert!(log.len() > 50, "{} records", log.len());
    assert_eq!(log.stats().poison, 0);
    for i in 0..log.len() as u32 {
        let rec = log.record(i).unwrap();
        assert_eq!(
            rec.value.as_deref().map(|v| v[0]),
            Some(0),
            "framed: {rec:?}"
        );
        let ev = log.event(i).unwrap();
        assert!(ev.value_schema.is_some(), "decoded through the registry");
        assert!(ev.payload.is_some());
    }
}

/// `--value-format avro`: the demo registers the Avro rendering of each contract and writes
/// its values as Confluent-framed Avro (`content-type: application/avro`); its consumers read
/// them back through the schemas, every invariant holds, and the observer decodes them
/// through the registry to the same JSON: chains, folds and lints as with JSON, including
/// the compatible evolution of `OrderCreated` (v2's optional `currency`), with no finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_writes_avro_values_and_the_observer_decodes_them() {
    let (registry, fin) =
        demo_through_registry(eventscope::cli::ValueFormat::Avro, "schema-evolve=0.5", 12).await;
    // Registered as Avro (no schemaType), records named after the event types.
    {
        let all = registry.schemas.lock().unwrap();
        assert!(!all.is_empty());
        for (subject, _, t, text) in all.values() {
            assert_eq!(*t, None, "{subject}: Avro has no schemaType");
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["name"], json!(subject), "{text}");
            assert_eq!(v["type"], "record");
        }
    }
    let log = fin.model.log();
    assert!(log.len() > 50, "{} records", log.len());
    assert_eq!(log.stats().poison, 0);
    let mut versions = std::collections::BTreeSet::new();
    for i in 0..log.len() as u32 {
        let rec = log.record(i).unwrap();
        let ev = log.event(i).unwrap();
        if rec.topic == "dlq" {
            continue;
        }
        assert_eq!(rec.value.as_deref().map(|v| v[0]), Some(0), "{rec:?}");
        assert_eq!(
            rec.header_str("content-type"),
            Some("application/avro"),
            "{rec:?}"
        );
        let schema = ev
            .value_schema
            .clone()
            .expect("decoded through the registry");
        assert_eq!(schema.format, eventscope::registry::SchemaFormat::Avro);
        let payload = ev.payload.clone().expect("a JSON payload");
        if ev.event_type.as_deref() == Some("OrderCreated") {
            assert!(payload["items"][0]["quantity"].is_i64(), "{payload}");
            versions.insert(payload.get("currency").is_some_and(|c| c.is_string()));
        }
    }
    assert_eq!(
        versions.len(),
        2,
        "v1 and v2 OrderCreated both written (schema-evolve=0.5)"
    );
    assert!(
        fin.model.anomalies().is_empty(),
        "{:#?}",
        fin.model.anomalies()
    );
    // Time travel through Avro: the demo's Order fold reads the decoded events.
    let order = (0..log.len() as u32)
        .filter_map(|i| log.event(i))
        .find(|e| e.event_type.as_deref() == Some("OrderCreated"))
        .and_then(|e| e.aggregate_id)
        .expect("an order id");
    let fold = eventscope::folds::fold_for(log, &order);
    assert_eq!(fold.name(), "demo-order");
    let state = eventscope::model::timetravel::replay(log, fold, &order, log.len() as u32 - 1)
        .expect("a state");
    assert!(
        state.state["total_cents"].as_i64().unwrap_or(0) > 0,
        "{}",
        state.state
    );
}
