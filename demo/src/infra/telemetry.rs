//! OpenTelemetry: W3C trace context through the outbox and the Kafka headers,
//! a span for every hop with the messaging semantic conventions, OTLP export.
//!
//! Every service has a tracer of its own (with export on, a tracer provider of its
//! own too, so `service.name` tells the services apart in Jaeger). Trace context
//! is always made and always travels; only the export is optional.
//!
//! The path of one order's trace:
//! `place order` (root) → `create orders` (the outbox write; its context is stored
//! in the outbox row) → `send orders` (the relay, a child of the row's context) and
//! `process orders` (each consumer, whose parent is the row's context, carried by
//! the `traceparent` header) → `saga step …` → `create payments.commands` → …
//!
//! Export runs in the SDK's batch span processor: spans are queued without
//! blocking (a full queue drops them) and exported from the processor's thread.
//! The OTLP clients need Tokio, so each export is run on the demo's runtime by
//! [`OnRuntime`], which also counts exported spans and failures: a collector that
//! is down costs nothing but a status line.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;

/// The plain W3C header; CloudEvents' extension is `ce_traceparent`.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Attribute names of the OpenTelemetry messaging semantic conventions (and the
/// older names some backends still read), plus the demo's own.
pub mod attr {
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    /// Semantic conventions before 1.26.
    pub const OPERATION_LEGACY: &str = "messaging.operation";
    pub const DESTINATION: &str = "messaging.destination.name";
    pub const PARTITION_ID: &str = "messaging.destination.partition.id";
    /// Semantic conventions before 1.26 (an int).
    pub const KAFKA_PARTITION: &str = "messaging.kafka.destination.partition";
    pub const KAFKA_OFFSET: &str = "messaging.kafka.offset";
    pub const KAFKA_KEY: &str = "messaging.kafka.message.key";
    pub const MESSAGE_ID: &str = "messaging.message.id";
    pub const CONSUMER_GROUP: &str = "messaging.consumer.group.name";
    /// Semantic conventions before 1.26.
    pub const KAFKA_CONSUMER_GROUP: &str = "messaging.kafka.consumer.group";
    pub const CE_ID: &str = "cloudevents.event_id";
    pub const CE_TYPE: &str = "cloudevents.event_type";
    pub const CE_SOURCE: &str = "cloudevents.event_source";
    pub const CE_SUBJECT: &str = "cloudevents.event_subject";
    /// Which hop of the demo a span is: `order placed`, `outbox write`,
    /// `relay publish`, `consume`, `saga step`, `saga compensation`.
    pub const HOP: &str = "eventscope.hop";
    pub const ORDER_ID: &str = "eventscope.order_id";
    pub const CORRELATION_ID: &str = "eventscope.correlation_id";
    pub const SAGA_PHASE: &str = "eventscope.saga.phase";
    pub const SAGA_INPUT: &str = "eventscope.saga.input";
    pub const DUPLICATE: &str = "eventscope.duplicate";
}

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies, POSTed to `<endpoint>/v1/traces`.
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC (tonic) to `<endpoint>`.
    Grpc,
}

impl FromStr for OtlpProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http" | "http/protobuf" | "http-proto" | "http/proto" => {
                Ok(OtlpProtocol::HttpProtobuf)
            }
            "grpc" => Ok(OtlpProtocol::Grpc),
            other => Err(format!(
                "unknown OTLP protocol '{other}': use http (HTTP/protobuf) or grpc"
            )),
        }
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        })
    }
}

/// Where to export spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318` (HTTP) or `http://127.0.0.1:4317` (gRPC).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

impl OtlpSettings {
    pub fn new(endpoint: impl Into<String>, protocol: OtlpProtocol) -> OtlpSettings {
        OtlpSettings {
            endpoint: endpoint.into(),
            protocol,
        }
    }

    /// The URL spans are sent to: `/v1/traces` under the base for HTTP, the base for gRPC.
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim().trim_end_matches('/');
        match self.protocol {
            OtlpProtocol::HttpProtobuf if base.ends_with("/v1/traces") => base.to_owned(),
            OtlpProtocol::HttpProtobuf => format!("{base}/v1/traces"),
            OtlpProtocol::Grpc => base.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP endpoint '{endpoint}': {why}")]
    Endpoint { endpoint: String, why: String },
    #[error("OTLP export needs to be started inside a Tokio runtime")]
    NoRuntime,
}

/// Counters shared by the exporters of every service.
#[derive(Debug, Default)]
struct ExportCounters {
    exported_spans: AtomicU64,
    failed_spans: AtomicU64,
    failed_batches: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// A failure not yet told to the user (one notice per run of failures).
    untold_failure: AtomicBool,
    failing: AtomicBool,
}

impl ExportCounters {
    fn record(&self, spans: usize, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                self.exported_spans
                    .fetch_add(spans as u64, Ordering::Relaxed);
                self.failing.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed_spans.fetch_add(spans as u64, Ordering::Relaxed);
                self.failed_batches.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(e.to_string());
                }
                if !self.failing.swap(true, Ordering::Relaxed) {
                    self.untold_failure.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// What the export did so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub exported_spans: u64,
    pub failed_spans: u64,
    pub failed_batches: u64,
    pub last_error: Option<String>,
}

impl ExportReport {
    pub fn failed(&self) -> bool {
        self.failed_batches > 0
    }

    /// One line for a status bar or stderr.
    pub fn summary(&self) -> String {
        if self.failed() {
            format!(
                "tracing: export to {} ({}) failed: {} batches ({} spans) lost, {} spans exported; last error: {}",
                self.endpoint,
                self.protocol,
                self.failed_batches,
                self.failed_spans,
                self.exported_spans,
                self.last_error.as_deref().unwrap_or("unknown")
            )
        } else {
            format!(
                "tracing: {} spans exported to {} ({})",
                self.exported_spans, self.endpoint, self.protocol
            )
        }
    }
}

/// Runs the OTLP exporter's futures on the Tokio runtime (the batch processor
/// exports from a thread of its own, where the HTTP and gRPC clients cannot run)
/// and counts what was exported and what failed.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
    counters: Arc<ExportCounters>,
    timeout: Duration,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let inner = self.inner.clone();
        let timeout = self.timeout;
        let job = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, inner.export(batch)).await });
        let result = match job.await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(OTelSdkError::Timeout(timeout)),
            Err(e) => Err(OTelSdkError::InternalFailure(format!(
                "export task ended: {e}"
            ))),
        };
        self.counters.record(n, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

fn build_exporter(
    otlp: &OtlpSettings,
    runtime: &tokio::runtime::Handle,
    counters: &Arc<ExportCounters>,
) -> Result<OnRuntime, TelemetryError> {
    let url = otlp.traces_url();
    let bad = |why: String| TelemetryError::Endpoint {
        endpoint: otlp.endpoint.clone(),
        why,
    };
    let host = url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
    if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
        return Err(bad(
            "not an http(s) URL with a host (e.g. http://127.0.0.1:4318)".into(),
        ));
    }
    // The gRPC channel spawns its worker on the runtime it is built in.
    let _entered = runtime.enter();
    let inner = match otlp.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(HashMap::new())
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
    .map_err(|e| bad(e.to_string()))?;
    Ok(OnRuntime {
        inner: Arc::new(inner),
        runtime: runtime.clone(),
        counters: counters.clone(),
        timeout: EXPORT_TIMEOUT + Duration::from_secs(1),
    })
}

/// The demo's tracers and, with export on, their providers and export counters.
pub struct Telemetry {
    tracers: HashMap<&'static str, SdkTracer>,
    fallback: SdkTracer,
    providers: Vec<SdkTracerProvider>,
    export: Option<(OtlpSettings, Arc<ExportCounters>)>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("services", &self.tracers.keys().collect::<Vec<_>>())
            .field("export", &self.export.as_ref().map(|(s, _)| s))
            .finish()
    }
}

/// The service name of spans from tracers not set up by name.
pub const DEFAULT_SERVICE: &str = "eventscope-demo";

fn resource(service: &'static str) -> Resource {
    Resource::builder_empty()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.namespace", DEFAULT_SERVICE))
        .build()
}

impl Telemetry {
    /// Trace context only, no export.
    pub fn off() -> Telemetry {
        let provider = SdkTracerProvider::builder().build();
        Telemetry {
            tracers: HashMap::new(),
            fallback: provider.tracer(DEFAULT_SERVICE),
            providers: vec![provider],
            export: None,
        }
    }

    /// A tracer for each of `services`; with `otlp`, a batch exporter each.
    /// Must run inside a Tokio runtime when `otlp` is given.
    pub fn new(
        services: &[&'static str],
        otlp: Option<&OtlpSettings>,
    ) -> Result<Telemetry, TelemetryError> {
        let Some(otlp) = otlp else {
            let mut t = Telemetry::off();
            if let Some(p) = t.providers.first().cloned() {
                for s in services {
                    t.tracers.insert(s, p.tracer(*s));
                }
            }
            return Ok(t);
        };
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
        let counters = Arc::new(ExportCounters::default());
        let mut tracers = HashMap::new();
        let mut providers = Vec::new();
        let mut names: Vec<&'static str> = services.to_vec();
        names.push(DEFAULT_SERVICE);
        let mut fallback = None;
        for name in names {
            let exporter = build_exporter(otlp, &runtime, &counters)?;
            let batch = BatchConfigBuilder::default()
                .with_max_queue_size(16_384)
                .with_max_export_batch_size(1024)
                .with_scheduled_delay(Duration::from_millis(500))
                .build();
            let provider = SdkTracerProvider::builder()
                .with_resource(resource(name))
                .with_span_processor(
                    BatchSpanProcessor::builder(exporter)
                        .with_batch_config(batch)
                        .build(),
                )
                .build();
            let tracer = provider.tracer(name);
            if name == DEFAULT_SERVICE {
                fallback = Some(tracer);
            } else {
                tracers.insert(name, tracer);
            }
            providers.push(provider);
        }
        let fallback = match fallback {
            Some(f) => f,
            None => SdkTracerProvider::builder().build().tracer(DEFAULT_SERVICE),
        };
        Ok(Telemetry {
            tracers,
            fallback,
            providers,
            export: Some((otlp.clone(), counters)),
        })
    }

    /// The tracer of `service` (spans carry its `service.name` when exported).
    pub fn tracer(&self, service: &str) -> SdkTracer {
        self.tracers.get(service).unwrap_or(&self.fallback).clone()
    }

    /// A handle to start traces of `service` with.
    pub fn trace_for(&self, service: &str) -> Trace {
        Trace {
            tracer: Some(self.tracer(service)),
            cx: Context::new(),
        }
    }

    /// None when export is off.
    pub fn export_report(&self) -> Option<ExportReport> {
        let (s, c) = self.export.as_ref()?;
        Some(ExportReport {
            endpoint: s.traces_url(),
            protocol: s.protocol,
            exported_spans: c.exported_spans.load(Ordering::Relaxed),
            failed_spans: c.failed_spans.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            last_error: c.last_error.lock().ok().and_then(|l| l.clone()),
        })
    }

    /// A notice when the export started failing since the last call.
    pub fn take_failure_notice(&self) -> Option<String> {
        let (_, c) = self.export.as_ref()?;
        if c.untold_failure.swap(false, Ordering::Relaxed) {
            self.export_report().map(|r| r.summary())
        } else {
            None
        }
    }

    /// Export what is queued and stop the exporters; never blocks the runtime
    /// and gives up after a few seconds when the collector does not answer.
    pub async fn shutdown(&self) {
        if self.export.is_none() {
            return;
        }
        let mut jobs = Vec::new();
        for p in &self.providers {
            let p = p.clone();
            // Shutting the batch processor down exports what is still queued.
            jobs.push(tokio::task::spawn_blocking(move || {
                let _ = p.shutdown_with_timeout(Duration::from_secs(5));
            }));
        }
        for j in jobs {
            let _ = j.await;
        }
    }
}

/// The trace context of a `traceparent` as a remote parent; an empty context
/// (a new trace) when absent or malformed.
pub fn remote_parent(traceparent: Option<&str>) -> Context {
    let Some(tp) = traceparent.map(str::trim).filter(|s| !s.is_empty()) else {
        return Context::new();
    };
    let carrier: HashMap<String, String> =
        HashMap::from([(TRACEPARENT_HEADER.to_owned(), tp.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The W3C `traceparent` of the span in `cx`, if it has a valid one.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT_HEADER)
}

/// The messaging operation of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The outbox write: the message is made (its context travels with it).
    Create,
    /// The relay hands it to Kafka.
    Send,
    /// A consumer handles it.
    Process,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Send => "send",
            Operation::Process => "process",
        }
    }

    fn legacy(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Send => "publish",
            Operation::Process => "process",
        }
    }

    fn kind(self) -> SpanKind {
        match self {
            Operation::Create | Operation::Send => SpanKind::Producer,
            Operation::Process => SpanKind::Consumer,
        }
    }
}

/// A Kafka message as the messaging conventions describe it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub key: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
}

/// `messaging.*` attributes of `op` on `m`.
pub fn messaging_attributes(op: Operation, m: &Message<'_>) -> Vec<KeyValue> {
    let mut v = vec![
        KeyValue::new(attr::MESSAGING_SYSTEM, "kafka"),
        KeyValue::new(attr::OPERATION_TYPE, op.name()),
        KeyValue::new(attr::OPERATION_NAME, op.name()),
        KeyValue::new(attr::OPERATION_LEGACY, op.legacy()),
        KeyValue::new(attr::DESTINATION, m.topic.to_owned()),
    ];
    if let Some(k) = m.key {
        v.push(KeyValue::new(attr::KAFKA_KEY, k.to_owned()));
    }
    if let Some(id) = m.message_id {
        v.push(KeyValue::new(attr::MESSAGE_ID, id.to_owned()));
    }
    v.extend(partition_attributes(m.partition, m.offset));
    v
}

/// Where a record landed (known to a producer only after the broker's ack).
pub fn partition_attributes(partition: Option<i32>, offset: Option<i64>) -> Vec<KeyValue> {
    let mut v = Vec::new();
    if let Some(p) = partition {
        v.push(KeyValue::new(attr::PARTITION_ID, p.to_string()));
        v.push(KeyValue::new(attr::KAFKA_PARTITION, i64::from(p)));
    }
    if let Some(o) = offset {
        v.push(KeyValue::new(attr::KAFKA_OFFSET, o));
    }
    v
}

/// Where a piece of work sits in its trace: the tracer of the service doing
/// it and the context of the current span. The default has no tracer: spans
/// are not made and nothing carries trace context (unit tests of the store).
#[derive(Clone, Default)]
pub struct Trace {
    tracer: Option<SdkTracer>,
    cx: Context,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("tracing", &self.tracer.is_some())
            .field("traceparent", &self.traceparent())
            .finish()
    }
}

impl Trace {
    /// Start a span of `tracer` under `parent` (an empty context starts a new trace).
    pub fn start(
        tracer: &SdkTracer,
        parent: &Context,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Trace {
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        Trace {
            tracer: Some(tracer.clone()),
            cx: parent.with_span(span),
        }
    }

    /// A child span of the current one, by the same service.
    pub fn child(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Trace {
        match &self.tracer {
            Some(t) => Trace::start(t, &self.cx, name, kind, attributes),
            None => Trace::default(),
        }
    }

    /// The span that writes an outbox row for `topic`: its context is stored
    /// with the row and travels with the record.
    pub fn outbox_write(&self, topic: &str, key: &str, event_id: &str, event_type: &str) -> Trace {
        let mut attributes = messaging_attributes(
            Operation::Create,
            &Message {
                topic,
                key: Some(key),
                message_id: Some(event_id),
                partition: None,
                offset: None,
            },
        );
        attributes.push(KeyValue::new(attr::HOP, "outbox write"));
        attributes.push(KeyValue::new(attr::CE_TYPE, event_type.to_owned()));
        self.child(
            format!("{} {topic}", Operation::Create.name()),
            Operation::Create.kind(),
            attributes,
        )
    }

    /// The span of `op` on a message, under `parent`.
    pub fn messaging(
        tracer: &SdkTracer,
        parent: &Context,
        op: Operation,
        m: &Message<'_>,
        mut extra: Vec<KeyValue>,
    ) -> Trace {
        let mut attributes = messaging_attributes(op, m);
        attributes.append(&mut extra);
        Trace::start(
            tracer,
            parent,
            format!("{} {}", op.name(), m.topic),
            op.kind(),
            attributes,
        )
    }

    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// The W3C `traceparent` of the current span.
    pub fn traceparent(&self) -> Option<String> {
        traceparent_of(&self.cx)
    }

    pub fn set_attributes(&self, attributes: Vec<KeyValue>) {
        if self.tracer.is_some() {
            self.cx.span().set_attributes(attributes);
        }
    }

    pub fn add_event(&self, name: &'static str, attributes: Vec<KeyValue>) {
        if self.tracer.is_some() {
            self.cx.span().add_event(name, attributes);
        }
    }

    /// Mark the current span failed.
    pub fn fail(&self, why: impl Into<Cow<'static, str>>) {
        if self.tracer.is_some() {
            self.cx.span().set_status(Status::error(why));
        }
    }

    /// End the current span (it is exported when its batch goes out).
    pub fn end(&self) {
        if self.tracer.is_some() {
            self.cx.span().end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn protocols_and_urls() {
        assert_eq!("grpc".parse(), Ok(OtlpProtocol::Grpc));
        assert_eq!("http/protobuf".parse(), Ok(OtlpProtocol::HttpProtobuf));
        assert!("carrier-pigeon".parse::<OtlpProtocol>().is_err());
        let http = OtlpSettings::new("http://127.0.0.1:4318/", OtlpProtocol::HttpProtobuf);
        assert_eq!(http.traces_url(), "http://127.0.0.1:4318/v1/traces");
        let full = OtlpSettings::new("http://h:4318/v1/traces", OtlpProtocol::HttpProtobuf);
        assert_eq!(full.traces_url(), "http://h:4318/v1/traces");
        let grpc = OtlpSettings::new("http://127.0.0.1:4317", OtlpProtocol::Grpc);
        assert_eq!(grpc.traces_url(), "http://127.0.0.1:4317");
    }

    #[test]
    fn traceparent_round_trip_and_garbage() {
        let cx = remote_parent(Some(TP));
        assert_eq!(traceparent_of(&cx).as_deref(), Some(TP));
        for bad in [None, Some(""), Some("garbage"), Some("00-zz-yy-01")] {
            assert_eq!(traceparent_of(&remote_parent(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn children_keep_the_trace_and_name_their_parent() {
        let t = Telemetry::new(&["svc"], None).unwrap();
        let root = t
            .trace_for("svc")
            .child("place order", SpanKind::Server, vec![]);
        let write = root.outbox_write("orders", "o1", "e1", "OrderCreated");
        let tp_root = root.traceparent().unwrap();
        let tp_write = write.traceparent().unwrap();
        assert_eq!(tp_root[3..35], tp_write[3..35], "one trace");
        assert_ne!(tp_root[36..52], tp_write[36..52], "another span");
        // A consumer continues from the header.
        let consumer = Trace::messaging(
            &t.tracer("svc"),
            &remote_parent(Some(&tp_write)),
            Operation::Process,
            &Message {
                topic: "orders",
                key: Some("o1"),
                message_id: Some("e1"),
                partition: Some(0),
                offset: Some(7),
            },
            vec![],
        );
        assert_eq!(consumer.traceparent().unwrap()[3..35], tp_root[3..35]);
        // No tracer: nothing is made.
        let none = Trace::default().outbox_write("orders", "o1", "e1", "OrderCreated");
        assert_eq!(none.traceparent(), None);
    }

    #[test]
    fn a_malformed_endpoint_is_an_error_not_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for bad in ["", "not a url", "127.0.0.1:4318"] {
                let s = OtlpSettings::new(bad, OtlpProtocol::HttpProtobuf);
                assert!(Telemetry::new(&["svc"], Some(&s)).is_err(), "{bad}");
            }
        });
        let s = OtlpSettings::new("http://127.0.0.1:4318", OtlpProtocol::HttpProtobuf);
        assert!(matches!(
            Telemetry::new(&["svc"], Some(&s)),
            Err(TelemetryError::NoRuntime)
        ));
    }
}
