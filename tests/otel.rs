//! OpenTelemetry end to end: an OTLP receiver inside the test (the protocol's
//! own protobuf types, over HTTP/1.1 and over gRPC on loopback) receives the
//! spans of a demo run on the embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eventscope::cli::DemoArgs;
use eventscope::headless::{execute, Session};
use eventscope_demo::faults::{FaultSpec, Faults};
use eventscope_demo::telemetry::OtlpProtocol;
use eventscope_demo::topics;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A received span and the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value_text(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(value_text)
    }
    fn id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn trace(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn parent(&self) -> Option<String> {
        (!self.span.parent_span_id.is_empty()).then(|| hex(&self.span.parent_span_id))
    }
    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }
    fn hop(&self) -> String {
        self.attr("eventscope.hop").unwrap_or_default()
    }
}

/// An OTLP trace receiver: HTTP/1.1 POST /v1/traces with a protobuf body, and
/// gRPC TraceService/Export over HTTP/2, on one loopback port.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
    /// (path, grpc?) of each request.
    requests: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Receiver {
    fn take(&self, req: ExportTraceServiceRequest) {
        let mut out = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(value_text)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push(Got {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rcv = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let rcv = rcv.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| rcv.clone().handle(req));
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

    async fn handle(
        self,
        req: Request<Incoming>,
    ) -> Result<Response<BoxBody<Bytes, Infallible>>, hyper::Error> {
        let path = req.uri().path().to_owned();
        let grpc = req
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let body = req.into_body().collect().await?.to_bytes();
        self.requests.lock().unwrap().push((path.clone(), grpc));
        let reply = ExportTraceServiceResponse::default().encode_to_vec();
        if grpc {
            // One length-prefixed message: a compression flag, a 4-byte length.
            assert_eq!(path, GRPC_PATH);
            assert_eq!(body[0], 0, "compressed gRPC message");
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            self.take(ExportTraceServiceRequest::decode(&body[5..5 + len]).unwrap());
            let mut framed = vec![0u8];
            framed.extend((reply.len() as u32).to_be_bytes());
            framed.extend(reply);
            let mut trailers = hyper::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = Full::new(Bytes::from(framed))
                .with_trailers(async move { Some(Ok(trailers)) })
                .boxed();
            return Ok(Response::builder()
                .header("content-type", "application/grpc")
                .body(body)
                .unwrap());
        }
        if path != "/v1/traces" {
            return Ok(Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()).boxed())
                .unwrap());
        }
        self.take(ExportTraceServiceRequest::decode(body).unwrap());
        Ok(Response::builder()
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(reply)).boxed())
            .unwrap())
    }
}

fn header(r: &eventscope::model::record::Record, name: &str) -> Option<String> {
    r.header_str(name).map(str::to_owned)
}

const SERVICES: [&str; 6] = [
    "order-service",
    "saga-orchestrator",
    "payment-service",
    "inventory-service",
    "shipping-service",
    "order-view",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_run_exports_one_trace_per_order_over_http() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    one_trace_per_order(common::conn(dir), "outbox-relay").await;
}

/// The CDC relay (PostgreSQL only) sends the context stored with the row too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_relay_carries_the_rows_trace_context() {
    if !common::wants_postgres() {
        return;
    }
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut conn = common::conn(dir);
    conn.relay = eventscope::cli::RelayArg::Cdc;
    one_trace_per_order(conn, "cdc-relay").await;
}

/// Run orders with compensations, export to a receiver here, check the traces.
async fn one_trace_per_order(mut conn: eventscope::cli::Connection, relay: &str) {
    let rcv = Receiver::default();
    let addr = rcv.serve().await;
    conn.otlp_endpoint = Some(format!("http://{addr}"));
    const ORDERS: u64 = 16;
    let spec: FaultSpec = "payment-decline=0.2,shipping-failure=0.25".parse().unwrap();
    let mut s = Session::start(&conn, |_| {}, Arc::new(Faults::from_spec(7, &spec)))
        .await
        .expect("session starts");
    s.place_orders(ORDERS, false).await.unwrap();
    common::settle(&mut s, ORDERS as i64, 90).await;
    let fin = s.finish().await.unwrap();
    let export = fin.tracing.clone().expect("export is on");
    assert!(!export.failed(), "{}", export.summary());
    let spans = rcv.spans();
    assert_eq!(
        export.exported_spans as usize,
        spans.len(),
        "every span arrived"
    );
    let requests = rcv.requests.lock().unwrap().clone();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|(p, grpc)| p == "/v1/traces" && !grpc),
        "{requests:?}"
    );
    let by_id: HashMap<String, &Got> = spans.iter().map(|g| (g.id(), g)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");

    // Spans from every service.
    let services: BTreeSet<&str> = spans.iter().map(|g| g.service.as_str()).collect();
    for s in SERVICES.iter().chain([&relay]) {
        assert!(services.contains(s), "no span from {s}: {services:?}");
    }

    // One trace per order: the root is `place order`, and every span names one order.
    let roots: Vec<&Got> = spans.iter().filter(|g| g.parent().is_none()).collect();
    assert_eq!(roots.len(), ORDERS as usize, "one root per order");
    for r in &roots {
        assert_eq!(r.span.name, "place order");
        assert_eq!(r.hop(), "order placed");
        assert_eq!(r.service, "order-service");
        assert_eq!(r.kind(), SpanKind::Server);
    }
    let traces: HashSet<String> = roots.iter().map(|r| r.trace()).collect();
    assert_eq!(traces.len(), ORDERS as usize);
    let mut order_of_trace: HashMap<String, String> = HashMap::new();
    for r in &roots {
        order_of_trace.insert(r.trace(), r.attr("eventscope.order_id").expect("order id"));
    }
    let mut traces_of_order: HashMap<String, BTreeSet<String>> = HashMap::new();
    for g in &spans {
        assert!(
            traces.contains(&g.trace()),
            "{} of {} is in no order's trace",
            g.span.name,
            g.service
        );
        // Every parent is a span that arrived (no dangling links).
        if let Some(p) = g.parent() {
            assert!(
                by_id.contains_key(&p),
                "{}: parent {p} never arrived",
                g.span.name
            );
            assert_eq!(by_id[&p].trace(), g.trace(), "parent in another trace");
        }
        for key in ["eventscope.order_id", "messaging.kafka.message.key"] {
            if let Some(order) = g.attr(key) {
                assert_eq!(order_of_trace[&g.trace()], order, "{} {key}", g.span.name);
                traces_of_order.entry(order).or_default().insert(g.trace());
            }
        }
    }
    assert_eq!(traces_of_order.len(), ORDERS as usize);
    assert!(traces_of_order.values().all(|t| t.len() == 1));

    // From placement to the terminal state: every trace ends its saga.
    let (mut completed, mut compensated) = (0, 0);
    for t in &traces {
        let names: Vec<&str> = spans
            .iter()
            .filter(|g| &g.trace() == t)
            .map(|g| g.span.name.as_str())
            .collect();
        assert!(names.contains(&"saga start"), "{names:?}");
        if names.contains(&"saga completed") {
            completed += 1;
        } else if names.contains(&"saga compensated") {
            compensated += 1;
            assert!(
                names.iter().any(|n| n.starts_with("saga compensate ")),
                "{names:?}"
            );
        } else {
            panic!("trace {t} never reaches a terminal saga state: {names:?}");
        }
    }
    assert_eq!(completed, fin.facts.orders_completed);
    assert_eq!(compensated, fin.facts.orders_compensated);
    assert!(compensated > 0, "the faults compensate some orders");

    // Outbox writes: producer spans of operation `create`, under the span that did the work.
    let writes: Vec<&Got> = spans.iter().filter(|g| g.hop() == "outbox write").collect();
    assert_eq!(writes.len() as i64, fin.facts.outbox_written);
    for w in &writes {
        assert_eq!(w.kind(), SpanKind::Producer);
        assert_eq!(
            w.attr("messaging.operation.type").as_deref(),
            Some("create")
        );
        assert!(w.attr("messaging.message.id").is_some());
        let parent = by_id[&w.parent().expect("an outbox write has a parent")];
        assert!(
            ["order placed", "consume", "saga step", "saga compensation"]
                .contains(&parent.hop().as_str()),
            "outbox write under {}",
            parent.span.name
        );
        assert_eq!(
            parent.service, w.service,
            "written by the service that did the work"
        );
    }

    // Relay: a `send` span per publish, a child of the row's context, with where it landed.
    let sends: Vec<&Got> = spans
        .iter()
        .filter(|g| g.hop() == "relay publish")
        .collect();
    assert!(sends.len() >= writes.len());
    for g in &sends {
        assert_eq!(g.service, relay);
        assert_eq!(g.kind(), SpanKind::Producer);
        assert_eq!(g.attr("messaging.operation.type").as_deref(), Some("send"));
        let parent = by_id[&g.parent().expect("relay span has a parent")];
        assert_eq!(parent.hop(), "outbox write", "not the row's span");
        assert_eq!(
            parent.attr("messaging.message.id"),
            g.attr("messaging.message.id")
        );
        for key in [
            "messaging.destination.partition.id",
            "messaging.kafka.destination.partition",
            "messaging.kafka.offset",
        ] {
            assert!(g.attr(key).is_some(), "relay span without {key}");
        }
    }

    // Consumers: the handling span's parent is the span that wrote the outbox row,
    // across the Kafka hop, with the messaging attributes of the record.
    let consumes: Vec<&Got> = spans
        .iter()
        .filter(|g| g.kind() == SpanKind::Consumer)
        .collect();
    let mut consumer_services = BTreeSet::new();
    for c in &consumes {
        assert_eq!(c.hop(), "consume");
        consumer_services.insert(c.service.as_str());
        assert_eq!(
            c.span.name,
            format!("process {}", c.attr("messaging.destination.name").unwrap())
        );
        assert_eq!(c.attr("messaging.system").as_deref(), Some("kafka"));
        assert_eq!(
            c.attr("messaging.operation.type").as_deref(),
            Some("process")
        );
        assert_eq!(c.attr("messaging.operation").as_deref(), Some("process"));
        assert_eq!(
            c.attr("messaging.consumer.group.name").as_deref(),
            Some(c.service.as_str())
        );
        for key in [
            "messaging.destination.partition.id",
            "messaging.kafka.destination.partition",
            "messaging.kafka.offset",
            "messaging.kafka.message.key",
            "messaging.message.id",
        ] {
            assert!(c.attr(key).is_some(), "{} without {key}", c.span.name);
        }
        let parent = by_id[&c
            .parent()
            .expect("a consumer span has the producer's parent")];
        assert_eq!(
            parent.hop(),
            "outbox write",
            "{} under {}",
            c.span.name,
            parent.span.name
        );
        assert_eq!(parent.kind(), SpanKind::Producer);
        assert_eq!(
            parent.attr("messaging.message.id"),
            c.attr("messaging.message.id")
        );
        assert_eq!(
            parent.attr("messaging.destination.name"),
            c.attr("messaging.destination.name")
        );
    }
    assert_eq!(
        consumer_services.len(),
        6,
        "every consumer handled: {consumer_services:?}"
    );
    // Hops across services: the orchestrator's commands are handled by the services.
    assert!(consumes.iter().any(|c| {
        c.service == "payment-service" && by_id[&c.parent().unwrap()].service == "saga-orchestrator"
    }));

    // Saga steps and compensations hang off the orchestrator's handling span.
    for g in spans.iter().filter(|g| g.hop().starts_with("saga ")) {
        assert_eq!(g.service, "saga-orchestrator");
        assert_eq!(by_id[&g.parent().unwrap()].hop(), "consume");
    }

    // On the topics: every record carries the context of the span that wrote its row,
    // as `traceparent` and as CloudEvents' `ce_traceparent`.
    let mut seen = 0;
    for r in fin.model.records().filter(|r| r.topic != topics::DLQ) {
        let tp = header(&r, "traceparent").expect("traceparent header");
        assert_eq!(header(&r, "ce_traceparent").as_deref(), Some(tp.as_str()));
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        let writer = by_id.get(parts[2]).expect("the writing span arrived");
        assert_eq!(writer.hop(), "outbox write");
        assert_eq!(writer.trace(), parts[1]);
        assert_eq!(writer.attr("messaging.message.id"), header(&r, "ce_id"));
        seen += 1;
    }
    assert_eq!(seen as i64, fin.facts.outbox_published);
}

fn args(orders: u64) -> DemoArgs {
    DemoArgs {
        headless: true,
        orders,
        faults: "".parse().expect("fault spec"),
        seed: 3,
        report: None,
        timeout: 120,
        partitions: 3,
        snapshot_every: 100,
        step_timeout: 30,
        saga: Default::default(),
        rate: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_completes_and_says_so_when_the_collector_is_down() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut conn = common::conn(dir);
    // Nothing listens on port 1.
    conn.otlp_endpoint = Some("http://127.0.0.1:1".into());
    let started = Instant::now();
    let (report, quiescent) = execute(&conn, &args(10)).await.expect("the demo runs");
    assert!(quiescent, "{report}");
    assert_eq!(report["orders"]["completed"], 10, "{report}");
    assert_eq!(report["invariants"]["no_lost_events"], true);
    let t = &report["run"]["tracing"];
    assert_eq!(t["export"], "failed", "{t}");
    assert_eq!(t["endpoint"], "http://127.0.0.1:1/v1/traces");
    assert_eq!(t["protocol"], "http/protobuf");
    assert_eq!(t["exported_spans"], 0);
    assert!(t["failed_spans"].as_u64().unwrap() > 0, "{t}");
    assert!(t["last_error"].is_string(), "{t}");
    eprintln!("run with the collector down took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_reaches_a_grpc_receiver() {
    let _slot = common::slot().await;
    let rcv = Receiver::default();
    let addr = rcv.serve().await;
    let (_d, dir) = common::temp_dir();
    let mut conn = common::conn(dir);
    conn.otlp_endpoint = Some(format!("http://{addr}"));
    conn.otlp_protocol = OtlpProtocol::Grpc;
    let (report, quiescent) = execute(&conn, &args(4)).await.expect("the demo runs");
    assert!(quiescent, "{report}");
    let t = &report["run"]["tracing"];
    assert_eq!(t["export"], "ok", "{t}");
    assert_eq!(t["protocol"], "grpc");
    let spans = rcv.spans();
    assert_eq!(t["exported_spans"].as_u64(), Some(spans.len() as u64));
    let requests = rcv.requests.lock().unwrap().clone();
    assert!(
        requests.iter().all(|(p, grpc)| p == GRPC_PATH && *grpc),
        "{requests:?}"
    );
    let roots: Vec<&Got> = spans.iter().filter(|g| g.parent().is_none()).collect();
    assert_eq!(roots.len(), 4);
    let services: BTreeSet<&str> = spans.iter().map(|g| g.service.as_str()).collect();
    for s in SERVICES.iter().chain([&"outbox-relay"]) {
        assert!(services.contains(s), "no span from {s}: {services:?}");
    }
}
