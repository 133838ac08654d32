//! Decoding a raw [`Record`] into an [`ObservedEvent`].
//!
//! Tried in this order (first match wins):
//! 1. CloudEvents structured mode: header `content-type` starts with `application/cloudevents+json`.
//! 2. CloudEvents binary mode: a `ce_specversion` or `ce_id` header is present.
//! 3. Debezium outbox-router shape: topic starts with [`DecodeConfig::outbox_topic_prefix`]
//!    (default `outbox.event.`) or a header `id` is present.
//! 4. Plain JSON: the value is JSON and [`PlainJsonPaths::id`] resolves in it.
//!
//! Anything else is a [`DecodeError`]; the log keeps such records as poison entries.
//! Nothing here panics, whatever the bytes.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::{is_command_topic, HeaderValue, Record};

/// Which envelope a record was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvelopeFormat {
    CloudEventsBinary,
    CloudEventsStructured,
    DebeziumOutbox,
    PlainJson,
}

impl EnvelopeFormat {
    pub fn as_u8(self) -> u8 {
        match self {
            EnvelopeFormat::CloudEventsBinary => 0,
            EnvelopeFormat::CloudEventsStructured => 1,
            EnvelopeFormat::DebeziumOutbox => 2,
            EnvelopeFormat::PlainJson => 3,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(EnvelopeFormat::CloudEventsBinary),
            1 => Some(EnvelopeFormat::CloudEventsStructured),
            2 => Some(EnvelopeFormat::DebeziumOutbox),
            3 => Some(EnvelopeFormat::PlainJson),
            _ => None,
        }
    }
}

/// What the observer knows about one record once its envelope is understood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedEvent {
    pub format: EnvelopeFormat,
    pub event_id: String,
    pub event_type: Option<String>,
    pub source: Option<String>,
    /// CloudEvents `subject` (or the plain-JSON aggregate path).
    pub subject: Option<String>,
    /// The aggregate this event belongs to: the subject, else the record key (UTF-8).
    pub aggregate_id: Option<String>,
    /// Debezium outbox: the `<aggregatetype>` part of the topic name.
    pub aggregate_type: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    /// `aggregateversion` extension (or the plain-JSON version path).
    pub aggregate_version: Option<i64>,
    /// CloudEvents `sequence` extension, when it is an integer.
    pub sequence: Option<i64>,
    /// Event time as written by the producer (RFC 3339 for CloudEvents).
    pub time: Option<String>,
    /// `time` parsed to milliseconds since the Unix epoch, if it parsed.
    pub time_ms: Option<i64>,
    pub traceparent: Option<String>,
    /// The W3C trace id (32 hex digits) from `traceparent`, if well-formed.
    pub trace_id: Option<String>,
    pub content_type: Option<String>,
    /// The event payload (`data`) as JSON; `None` when absent or not JSON.
    pub payload: Option<Value>,
}

/// Which ordering number an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionKind {
    AggregateVersion,
    Sequence,
}

impl ObservedEvent {
    /// The per-aggregate ordering number: the aggregate version, else the sequence.
    pub fn order_key(&self) -> Option<(VersionKind, i64)> {
        self.aggregate_version
            .map(|v| (VersionKind::AggregateVersion, v))
            .or(self.sequence.map(|s| (VersionKind::Sequence, s)))
    }

    fn empty(format: EnvelopeFormat, event_id: String) -> Self {
        ObservedEvent {
            format,
            event_id,
            event_type: None,
            source: None,
            subject: None,
            aggregate_id: None,
            aggregate_type: None,
            correlation_id: None,
            causation_id: None,
            aggregate_version: None,
            sequence: None,
            time: None,
            time_ms: None,
            traceparent: None,
            trace_id: None,
            content_type: None,
            payload: None,
        }
    }
}

/// Why a record could not be decoded. The record is then kept as a poison entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("missing required header `{0}`")]
    MissingHeader(String),
    #[error("header `{0}` is not UTF-8")]
    HeaderNotUtf8(String),
    #[error("header `{name}` is invalid: {reason}")]
    InvalidHeader { name: String, reason: String },
    #[error("value is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("missing required field `{0}`")]
    MissingField(String),
    #[error("field `{name}` is invalid: {reason}")]
    InvalidField { name: String, reason: String },
    #[error("record has no value")]
    EmptyValue,
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("unsupported content type `{0}`")]
    UnsupportedContentType(String),
    #[error("no known envelope: {0}")]
    Unrecognised(String),
}

/// Field paths (dot separated; numeric segments index arrays) for plain JSON values.
/// An empty or absent path means "not available".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlainJsonPaths {
    pub id: String,
    pub event_type: Option<String>,
    pub source: Option<String>,
    pub correlation: Option<String>,
    pub causation: Option<String>,
    pub aggregate_id: Option<String>,
    pub version: Option<String>,
    pub time: Option<String>,
    /// Where the payload lives; `None` means the whole value.
    pub payload: Option<String>,
}

impl Default for PlainJsonPaths {
    fn default() -> Self {
        PlainJsonPaths {
            id: "id".into(),
            event_type: Some("type".into()),
            source: Some("source".into()),
            correlation: Some("correlationId".into()),
            causation: Some("causationId".into()),
            aggregate_id: Some("aggregateId".into()),
            version: Some("version".into()),
            time: Some("time".into()),
            payload: None,
        }
    }
}

/// A bad `key=path,...` string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("`{0}` is not of the form key=path")]
    NotKeyValue(String),
    #[error("unknown key `{0}` (expected id, type, source, correlation, causation, aggregate, version, time, payload)")]
    UnknownKey(String),
    #[error("the id path cannot be empty")]
    EmptyId,
}

impl FromStr for PlainJsonPaths {
    type Err = ConfigError;

    /// Parses `id=meta.id,type=meta.type,correlation=meta.corr,causation=meta.cause,aggregate=entity.id,version=meta.v`.
    /// Keys not mentioned keep their default; `key=` (empty path) turns a field off.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = PlainJsonPaths::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| ConfigError::NotKeyValue(part.to_owned()))?;
            let v = v.trim();
            let opt = if v.is_empty() {
                None
            } else {
                Some(v.to_owned())
            };
            match k.trim() {
                "id" => p.id = opt.ok_or(ConfigError::EmptyId)?,
                "type" => p.event_type = opt,
                "source" => p.source = opt,
                "correlation" => p.correlation = opt,
                "causation" => p.causation = opt,
                "aggregate" | "aggregate_id" => p.aggregate_id = opt,
                "version" => p.version = opt,
                "time" => p.time = opt,
                "payload" => p.payload = opt,
                other => return Err(ConfigError::UnknownKey(other.to_owned())),
            }
        }
        Ok(p)
    }
}

/// How to decode records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecodeConfig {
    /// Try plain JSON with [`DecodeConfig::plain`] when no other envelope matches.
    pub plain_enabled: bool,
    pub plain: PlainJsonPaths,
    /// Topics with this prefix are Debezium outbox-router topics.
    pub outbox_topic_prefix: String,
    /// Values larger than this are poison (the raw bytes are still kept).
    pub max_value_bytes: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            plain_enabled: true,
            plain: PlainJsonPaths::default(),
            outbox_topic_prefix: "outbox.event.".into(),
            max_value_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Whether a record sits on a command topic (name ends with `.commands`).
pub fn is_command(rec: &Record) -> bool {
    is_command_topic(&rec.topic)
}

/// Decode one record, payload included. Never panics.
pub fn decode(rec: &Record, cfg: &DecodeConfig) -> Result<ObservedEvent, DecodeError> {
    decode_with(rec, cfg, true)
}

/// Decode the envelope only: the same checks and the same result as [`decode`] (the value is
/// still validated as JSON), but `payload` is left `None` for binary-mode and outbox records,
/// which saves building the JSON tree. The log uses this on append.
pub fn decode_envelope(rec: &Record, cfg: &DecodeConfig) -> Result<ObservedEvent, DecodeError> {
    decode_with(rec, cfg, false)
}

fn decode_with(
    rec: &Record,
    cfg: &DecodeConfig,
    with_payload: bool,
) -> Result<ObservedEvent, DecodeError> {
    if let Some(v) = &rec.value {
        if v.len() > cfg.max_value_bytes {
            return Err(DecodeError::TooLarge {
                len: v.len(),
                max: cfg.max_value_bytes,
            });
        }
    }
    let content_type = match rec.header_ci("content-type") {
        HeaderValue::Str(s) => Some(s),
        HeaderValue::Bytes(_) => return Err(DecodeError::HeaderNotUtf8("content-type".into())),
        HeaderValue::Absent | HeaderValue::Null => None,
    };
    if let Some(ct) = content_type {
        let media = media_type(ct);
        if media == "application/cloudevents-batch+json" {
            return Err(DecodeError::UnsupportedContentType(ct.to_owned()));
        }
        if media.starts_with("application/cloudevents") {
            return decode_structured(rec);
        }
    }
    if rec
        .headers
        .iter()
        .any(|(n, _)| n == "ce_specversion" || n == "ce_id")
    {
        return decode_binary(rec, content_type, with_payload);
    }
    if rec.topic.starts_with(cfg.outbox_topic_prefix.as_str())
        || !matches!(rec.header_ci("id"), HeaderValue::Absent)
    {
        return decode_outbox(rec, cfg, with_payload);
    }
    if cfg.plain_enabled {
        return decode_plain(rec, &cfg.plain);
    }
    Err(DecodeError::Unrecognised(
        "no CloudEvents headers, no outbox shape, plain JSON disabled".into(),
    ))
}

fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media(ct: Option<&str>) -> bool {
    match ct {
        None => true,
        Some(ct) => {
            let m = media_type(ct);
            m == "application/json" || m == "text/json" || m.ends_with("+json")
        }
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::InvalidJson(e.to_string()))
}

fn validate_json(bytes: &[u8]) -> Result<(), DecodeError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| DecodeError::InvalidJson(e.to_string()))
}

/// Parse an integer version/sequence, from a header string.
fn parse_int_header(name: &str, s: &str) -> Result<i64, DecodeError> {
    s.trim()
        .parse::<i64>()
        .map_err(|e| DecodeError::InvalidHeader {
            name: name.to_owned(),
            reason: format!("`{s}` is not an integer: {e}"),
        })
}

fn decode_binary(
    rec: &Record,
    content_type: Option<&str>,
    with_payload: bool,
) -> Result<ObservedEvent, DecodeError> {
    let mut specversion = None;
    let mut id = None;
    let mut ty = None;
    let mut source = None;
    let mut subject = None;
    let mut time = None;
    let mut corr = None;
    let mut cause = None;
    let mut aggver = None;
    let mut seq = None;
    let mut traceparent = None;
    for (name, value) in &rec.headers {
        let Some(attr) = name.strip_prefix("ce_") else {
            continue;
        };
        let Some(bytes) = value.as_deref() else {
            continue; // a null ce_ header counts as absent
        };
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::HeaderNotUtf8(name.clone()))?;
        let slot = match attr {
            "specversion" => &mut specversion,
            "id" => &mut id,
            "type" => &mut ty,
            "source" => &mut source,
            "subject" => &mut subject,
            "time" => &mut time,
            "correlationid" => &mut corr,
            "causationid" => &mut cause,
            "aggregateversion" => &mut aggver,
            "sequence" => &mut seq,
            "traceparent" => &mut traceparent,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(s);
        }
    }
    // `traceparent` may also travel as a plain W3C header.
    if traceparent.is_none() {
        traceparent = rec.header_str("traceparent");
    }
    let required = |v: Option<&str>, n: &str| -> Result<String, DecodeError> {
        match v {
            Some(s) if !s.trim().is_empty() => Ok(s.to_owned()),
            _ => Err(DecodeError::MissingHeader(format!("ce_{n}"))),
        }
    };
    required(specversion, "specversion")?;
    let mut ev = ObservedEvent::empty(EnvelopeFormat::CloudEventsBinary, required(id, "id")?);
    ev.event_type = Some(required(ty, "type")?);
    ev.source = Some(required(source, "source")?);
    ev.subject = non_empty(subject);
    ev.aggregate_id = ev.subject.clone().or_else(|| non_empty(rec.key_str()));
    ev.correlation_id = non_empty(corr);
    ev.causation_id = non_empty(cause);
    ev.aggregate_version = aggver
        .map(|s| parse_int_header("ce_aggregateversion", s))
        .transpose()?;
    ev.sequence = seq.and_then(|s| s.trim().parse().ok());
    ev.time = time.map(str::to_owned);
    ev.time_ms = time.and_then(parse_rfc3339_ms);
    set_trace(&mut ev, traceparent);
    ev.content_type = content_type.map(str::to_owned);
    if is_json_media(content_type) {
        if let Some(v) = rec.value.as_deref().filter(|v| !v.is_empty()) {
            if with_payload {
                ev.payload = Some(parse_json(v)?);
            } else {
                validate_json(v)?;
            }
        }
    }
    Ok(ev)
}

fn decode_structured(rec: &Record) -> Result<ObservedEvent, DecodeError> {
    let bytes = rec
        .value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or(DecodeError::EmptyValue)?;
    let v = parse_json(bytes)?;
    let Value::Object(mut obj) = v else {
        return Err(DecodeError::InvalidJson(
            "structured CloudEvent is not a JSON object".into(),
        ));
    };
    let req = |obj: &serde_json::Map<String, Value>, n: &str| -> Result<String, DecodeError> {
        match obj.get(n) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(Value::Null) | None => Err(DecodeError::MissingField(n.to_owned())),
            Some(_) => Err(DecodeError::InvalidField {
                name: n.to_owned(),
                reason: "not a non-empty string".into(),
            }),
        }
    };
    req(&obj, "specversion")?;
    let mut ev = ObservedEvent::empty(EnvelopeFormat::CloudEventsStructured, req(&obj, "id")?);
    ev.event_type = Some(req(&obj, "type")?);
    ev.source = Some(req(&obj, "source")?);
    ev.subject = obj.get("subject").and_then(scalar_string);
    ev.aggregate_id = ev.subject.clone().or_else(|| non_empty(rec.key_str()));
    ev.correlation_id = obj.get("correlationid").and_then(scalar_string);
    ev.causation_id = obj.get("causationid").and_then(scalar_string);
    ev.aggregate_version = match obj.get("aggregateversion") {
        None | Some(Value::Null) => None,
        Some(v) => Some(scalar_int(v).ok_or_else(|| DecodeError::InvalidField {
            name: "aggregateversion".into(),
            reason: format!("`{v}` is not an integer"),
        })?),
    };
    ev.sequence = obj.get("sequence").and_then(scalar_int);
    ev.time = obj.get("time").and_then(scalar_string);
    ev.time_ms = ev.time.as_deref().and_then(parse_rfc3339_ms);
    let tp = obj.get("traceparent").and_then(scalar_string);
    set_trace(&mut ev, tp.as_deref().or(rec.header_str("traceparent")));
    ev.content_type = obj.get("datacontenttype").and_then(scalar_string);
    ev.payload = match obj.remove("data") {
        Some(Value::String(s)) if is_json_media(ev.content_type.as_deref()) => {
            // Some producers put JSON text in `data`; keep the string if it is not JSON.
            Some(serde_json::from_str(&s).unwrap_or(Value::String(s)))
        }
        Some(d) => Some(d),
        None => None, // `data_base64` or no data: no JSON payload
    };
    Ok(ev)
}

fn decode_outbox(
    rec: &Record,
    cfg: &DecodeConfig,
    with_payload: bool,
) -> Result<ObservedEvent, DecodeError> {
    let id = match rec.header_ci("id") {
        HeaderValue::Str(s) if !s.trim().is_empty() => unquote(s),
        HeaderValue::Bytes(_) => return Err(DecodeError::HeaderNotUtf8("id".into())),
        _ => return Err(DecodeError::MissingHeader("id".into())),
    };
    let mut ev = ObservedEvent::empty(EnvelopeFormat::DebeziumOutbox, id);
    let hdr = |names: &[&str]| -> Option<String> {
        names.iter().find_map(|n| match rec.header_ci(n) {
            HeaderValue::Str(s) if !s.trim().is_empty() => Some(unquote(s)),
            _ => None,
        })
    };
    ev.event_type = hdr(&["eventType", "type"]);
    ev.correlation_id = hdr(&["correlationId", "correlation_id", "correlation-id"]);
    ev.causation_id = hdr(&["causationId", "causation_id", "causation-id"]);
    ev.aggregate_type = rec
        .topic
        .strip_prefix(cfg.outbox_topic_prefix.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    ev.aggregate_id = rec.key.as_deref().and_then(outbox_key);
    ev.subject = ev.aggregate_id.clone();
    ev.aggregate_version = hdr(&["aggregateVersion", "version"]).and_then(|s| s.parse().ok());
    set_trace(&mut ev, rec.header_str("traceparent"));
    if let Some(bytes) = rec.value.as_deref().filter(|v| !v.is_empty()) {
        if with_payload {
            ev.payload = Some(unwrap_outbox_payload(parse_json(bytes)?));
        } else {
            validate_json(bytes)?;
        }
    }
    Ok(ev)
}

/// Debezium keys may be raw strings, JSON strings, or `{"schema":..,"payload":..}`.
fn outbox_key(key: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(key).ok()?;
    match serde_json::from_str::<Value>(s) {
        Ok(Value::String(inner)) => non_empty(Some(&inner)),
        Ok(Value::Object(o)) if o.contains_key("payload") => {
            o.get("payload").and_then(scalar_string)
        }
        _ => non_empty(Some(s)),
    }
}

/// The payload may be wrapped in a JsonConverter envelope and/or be a JSON string holding JSON.
fn unwrap_outbox_payload(v: Value) -> Value {
    let v = match v {
        Value::Object(mut o) if o.len() == 2 && o.contains_key("schema") => {
            o.remove("payload").unwrap_or(Value::Null)
        }
        other => other,
    };
    match v {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    }
}

fn decode_plain(rec: &Record, paths: &PlainJsonPaths) -> Result<ObservedEvent, DecodeError> {
    let bytes = rec
        .value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or(DecodeError::EmptyValue)?;
    let v = parse_json(bytes)?;
    let get = |p: &Option<String>| p.as_deref().and_then(|p| lookup(&v, p));
    let id = lookup(&v, &paths.id)
        .and_then(scalar_string)
        .ok_or_else(|| DecodeError::MissingField(paths.id.clone()))?;
    let mut ev = ObservedEvent::empty(EnvelopeFormat::PlainJson, id);
    ev.event_type = get(&paths.event_type).and_then(scalar_string);
    ev.source = get(&paths.source).and_then(scalar_string);
    ev.correlation_id = get(&paths.correlation).and_then(scalar_string);
    ev.causation_id = get(&paths.causation).and_then(scalar_string);
    ev.subject = get(&paths.aggregate_id).and_then(scalar_string);
    ev.aggregate_id = ev.subject.clone().or_else(|| non_empty(rec.key_str()));
    ev.aggregate_version = get(&paths.version).and_then(scalar_int);
    ev.time = get(&paths.time).and_then(scalar_string);
    ev.time_ms = ev.time.as_deref().and_then(parse_rfc3339_ms);
    set_trace(&mut ev, rec.header_str("traceparent"));
    ev.content_type = rec.header_str("content-type").map(str::to_owned);
    ev.payload = match &paths.payload {
        Some(p) => lookup(&v, p).cloned(),
        None => Some(v),
    };
    Ok(ev)
}

/// Look up a dot path (`a.b.0.c`) in a JSON value. The empty path is the value itself.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(o) => o.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn scalar_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty()).map(str::to_owned)
}

/// Strip one level of JSON string quoting (`"abc"` → `abc`), as Debezium may write headers.
fn unquote(s: &str) -> String {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::String(inner)) => inner,
        _ => s.to_owned(),
    }
}

fn set_trace(ev: &mut ObservedEvent, traceparent: Option<&str>) {
    if let Some(tp) = traceparent.filter(|s| !s.trim().is_empty()) {
        ev.traceparent = Some(tp.to_owned());
        ev.trace_id = trace_id_of(tp).map(str::to_owned);
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well-formed.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2)
    {
        Some(trace)
    } else {
        None
    }
}

/// Parse an RFC 3339 timestamp (`2026-11-05T10:20:30.123Z`, `...+01:00`) to epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    pub(crate) fn ce_binary(topic: &str, id: &str, ty: &str) -> Record {
        Record::new(topic, 0, 0)
            .with_key("order-1")
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", id)
            .with_header("ce_type", ty)
            .with_header("ce_source", "/eventscope-demo/order-service")
            .with_header("ce_time", "2026-11-05T10:20:30.123Z")
            .with_header("ce_subject", "order-1")
            .with_header("ce_correlationid", "corr-1")
            .with_header("ce_causationid", "cause-1")
            .with_header("ce_aggregateversion", "3")
            .with_header("ce_traceparent", TP)
            .with_header("content-type", "application/json")
            .with_value(br#"{"orderId":"order-1","total":42}"#.to_vec())
    }

    #[test]
    fn cloudevents_binary() {
        let ev = decode(
            &ce_binary("orders", "e1", "OrderCreated"),
            &DecodeConfig::default(),
        );
        let ev = ev.unwrap();
        assert_eq!(ev.format, EnvelopeFormat::CloudEventsBinary);
        assert_eq!(ev.event_id, "e1");
        assert_eq!(ev.event_type.as_deref(), Some("OrderCreated"));
        assert_eq!(ev.source.as_deref(), Some("/eventscope-demo/order-service"));
        assert_eq!(ev.aggregate_id.as_deref(), Some("order-1"));
        assert_eq!(ev.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(ev.causation_id.as_deref(), Some("cause-1"));
        assert_eq!(ev.aggregate_version, Some(3));
        assert_eq!(ev.order_key(), Some((VersionKind::AggregateVersion, 3)));
        assert_eq!(ev.time_ms, Some(1_793_874_030_123));
        assert_eq!(
            ev.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(ev.payload, Some(json!({"orderId":"order-1","total":42})));
    }

    #[test]
    fn cloudevents_binary_sequence_and_key_fallback() {
        let rec = Record::new("payments", 1, 5)
            .with_key("k-9")
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", "e2")
            .with_header("ce_type", "PaymentCompleted")
            .with_header("ce_source", "/x")
            .with_header("ce_sequence", "0007");
        let ev = decode(&rec, &DecodeConfig::default()).unwrap();
        assert_eq!(ev.sequence, Some(7));
        assert_eq!(ev.aggregate_id.as_deref(), Some("k-9"));
        assert_eq!(ev.payload, None);
        assert_eq!(ev.order_key(), Some((VersionKind::Sequence, 7)));
    }

    #[test]
    fn cloudevents_structured() {
        let v = json!({
            "specversion": "1.0", "id": "s1", "type": "OrderCreated", "source": "/kcat",
            "subject": "order-7", "correlationid": "c7", "aggregateversion": 1,
            "traceparent": TP, "time": "2026-01-01T00:00:00+01:00",
            "datacontenttype": "application/json", "data": {"a": 1}
        });
        let rec = Record::new("orders", 0, 0)
            .with_header(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )
            .with_value(serde_json::to_vec(&v).unwrap());
        let ev = decode(&rec, &DecodeConfig::default()).unwrap();
        assert_eq!(ev.format, EnvelopeFormat::CloudEventsStructured);
        assert_eq!(ev.event_id, "s1");
        assert_eq!(ev.aggregate_id.as_deref(), Some("order-7"));
        assert_eq!(ev.correlation_id.as_deref(), Some("c7"));
        assert_eq!(ev.aggregate_version, Some(1));
        assert_eq!(ev.time_ms, Some(1_767_222_000_000));
        assert!(ev.trace_id.is_some());
        assert_eq!(ev.payload, Some(json!({"a": 1})));
    }

    #[test]
    fn debezium_outbox() {
        let inner = r#"{"orderId":"o-1","qty":2}"#;
        let value = serde_json::to_vec(&Value::String(inner.into())).unwrap();
        let rec = Record::new("outbox.event.order", 0, 3)
            .with_key(br#""o-1""#.to_vec())
            .with_header("id", "9f1c")
            .with_header("eventType", "OrderCreated")
            .with_value(value);
        let ev = decode(&rec, &DecodeConfig::default()).unwrap();
        assert_eq!(ev.format, EnvelopeFormat::DebeziumOutbox);
        assert_eq!(ev.event_id, "9f1c");
        assert_eq!(ev.event_type.as_deref(), Some("OrderCreated"));
        assert_eq!(ev.aggregate_id.as_deref(), Some("o-1"));
        assert_eq!(ev.aggregate_type.as_deref(), Some("order"));
        assert_eq!(ev.payload, Some(json!({"orderId":"o-1","qty":2})));

        // schema-wrapped payload, raw key, `type` header
        let rec = Record::new("outbox.event.order", 0, 4)
            .with_key("o-2")
            .with_header("id", "x2")
            .with_header("type", "OrderPaid")
            .with_value(br#"{"schema":{"type":"string"},"payload":"{\"a\":1}"}"#.to_vec());
        let ev = decode(&rec, &DecodeConfig::default()).unwrap();
        assert_eq!(ev.aggregate_id.as_deref(), Some("o-2"));
        assert_eq!(ev.event_type.as_deref(), Some("OrderPaid"));
        assert_eq!(ev.payload, Some(json!({"a": 1})));

        // outbox topic without id header → poison
        let rec = Record::new("outbox.event.order", 0, 5).with_value(b"{}".to_vec());
        assert_eq!(
            decode(&rec, &DecodeConfig::default()),
            Err(DecodeError::MissingHeader("id".into()))
        );
    }

    #[test]
    fn plain_json_with_paths() {
        let cfg = DecodeConfig {
            plain: "id=meta.id,type=meta.kind,correlation=meta.trace.0,causation=,aggregate=entity,version=meta.v"
                .parse()
                .unwrap(),
            ..DecodeConfig::default()
        };
        let rec = Record::new("foreign", 2, 9).with_value(
            br#"{"meta":{"id":17,"kind":"Thing","trace":["c-1"],"v":"4"},"entity":"e-5","x":true}"#
                .to_vec(),
        );
        let ev = decode(&rec, &cfg).unwrap();
        assert_eq!(ev.format, EnvelopeFormat::PlainJson);
        assert_eq!(ev.event_id, "17");
        assert_eq!(ev.event_type.as_deref(), Some("Thing"));
        assert_eq!(ev.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(ev.causation_id, None);
        assert_eq!(ev.aggregate_id.as_deref(), Some("e-5"));
        assert_eq!(ev.aggregate_version, Some(4));
        // default paths
        let rec = Record::new("t", 0, 0).with_value(br#"{"id":"a","type":"T"}"#.to_vec());
        assert_eq!(
            decode(&rec, &DecodeConfig::default()).unwrap().event_id,
            "a"
        );
        // no id → error
        let rec = Record::new("t", 0, 0).with_value(br#"{"x":1}"#.to_vec());
        assert_eq!(
            decode(&rec, &DecodeConfig::default()),
            Err(DecodeError::MissingField("id".into()))
        );
    }

    #[test]
    fn config_parse_errors() {
        assert!(matches!(
            "id".parse::<PlainJsonPaths>(),
            Err(ConfigError::NotKeyValue(_))
        ));
        assert!(matches!(
            "foo=a".parse::<PlainJsonPaths>(),
            Err(ConfigError::UnknownKey(_))
        ));
        assert_eq!("id=".parse::<PlainJsonPaths>(), Err(ConfigError::EmptyId));
        assert_eq!("".parse::<PlainJsonPaths>(), Ok(PlainJsonPaths::default()));
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let cfg = DecodeConfig::default();
        // missing required CE header
        let mut r = ce_binary("orders", "e1", "OrderCreated");
        r.headers.retain(|(n, _)| n != "ce_type");
        assert_eq!(
            decode(&r, &cfg),
            Err(DecodeError::MissingHeader("ce_type".into()))
        );
        // null ce_id
        let mut r = ce_binary("orders", "e1", "OrderCreated");
        for h in &mut r.headers {
            if h.0 == "ce_id" {
                h.1 = None;
            }
        }
        assert_eq!(
            decode(&r, &cfg),
            Err(DecodeError::MissingHeader("ce_id".into()))
        );
        // bad version
        let mut r = ce_binary("orders", "e1", "OrderCreated");
        for h in &mut r.headers {
            if h.0 == "ce_aggregateversion" {
                h.1 = Some(b"three".to_vec());
            }
        }
        assert!(matches!(
            decode(&r, &cfg),
            Err(DecodeError::InvalidHeader { .. })
        ));
        // non-UTF-8 ce_ header value
        let mut r = ce_binary("orders", "e1", "OrderCreated");
        r.headers
            .push(("ce_correlationid".into(), Some(vec![0xc3, 0x28])));
        r.headers
            .insert(0, ("ce_extra".into(), Some(vec![0xff, 0xff])));
        assert_eq!(
            decode(&r, &cfg),
            Err(DecodeError::HeaderNotUtf8("ce_extra".into()))
        );
        // non-UTF-8 foreign header is ignored
        let mut r = ce_binary("orders", "e1", "OrderCreated");
        r.headers
            .push(("x-bin".into(), Some(vec![0xff, 0x00, 0xfe])));
        assert!(decode(&r, &cfg).is_ok());
        // non-UTF-8 content-type
        let mut r = ce_binary("orders", "e1", "OrderCreated");
        r.headers.push(("Content-Type".into(), Some(vec![0xff])));
        r.headers.retain(|(n, _)| n != "content-type");
        assert!(matches!(
            decode(&r, &cfg),
            Err(DecodeError::HeaderNotUtf8(_))
        ));
        // truncated JSON
        let r =
            ce_binary("orders", "e1", "OrderCreated").with_value(br#"{"orderId":"ord"#.to_vec());
        assert!(matches!(decode(&r, &cfg), Err(DecodeError::InvalidJson(_))));
        let r = Record::new("t", 0, 0).with_value(br#"{"id":"a","x":[1,2"#.to_vec());
        assert!(matches!(decode(&r, &cfg), Err(DecodeError::InvalidJson(_))));
        // binary garbage (plain path)
        let garbage: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let r = Record::new("t", 0, 0).with_value(garbage.clone());
        assert!(decode(&r, &cfg).is_err());
        // binary garbage in a CE binary record with text/plain is fine (no JSON payload)
        let mut r = ce_binary("orders", "e1", "OrderCreated").with_value(garbage);
        r.headers.retain(|(n, _)| n != "content-type");
        r.headers.push((
            "content-type".into(),
            Some(b"application/octet-stream".to_vec()),
        ));
        assert_eq!(decode(&r, &cfg).unwrap().payload, None);
        // structured: not an object, missing id, batch mode, empty
        let s = |v: &[u8]| {
            Record::new("t", 0, 0)
                .with_header("content-type", "application/cloudevents+json")
                .with_value(v.to_vec())
        };
        assert!(matches!(
            decode(&s(b"[1]"), &cfg),
            Err(DecodeError::InvalidJson(_))
        ));
        assert_eq!(
            decode(
                &s(br#"{"specversion":"1.0","type":"T","source":"/s"}"#),
                &cfg
            ),
            Err(DecodeError::MissingField("id".into()))
        );
        assert!(matches!(
            decode(
                &s(br#"{"specversion":"1.0","id":5,"type":"T","source":"/s"}"#),
                &cfg
            ),
            Err(DecodeError::InvalidField { .. })
        ));
        assert_eq!(decode(&s(b""), &cfg), Err(DecodeError::EmptyValue));
        let mut b = s(b"[]");
        b.headers[0].1 = Some(b"application/cloudevents-batch+json".to_vec());
        assert!(matches!(
            decode(&b, &cfg),
            Err(DecodeError::UnsupportedContentType(_))
        ));
        // deeply nested JSON hits serde_json's recursion limit, not the stack
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let r = Record::new("t", 0, 0).with_value(deep.into_bytes());
        assert!(matches!(decode(&r, &cfg), Err(DecodeError::InvalidJson(_))));
        // no value at all
        assert_eq!(
            decode(&Record::new("t", 0, 0), &cfg),
            Err(DecodeError::EmptyValue)
        );
    }

    #[test]
    fn envelope_only_agrees_with_decode() {
        let cfg = DecodeConfig::default();
        let mut recs = vec![
            ce_binary("orders", "e1", "OrderCreated"),
            ce_binary("orders", "e1", "OrderCreated").with_value(b"{\"trunc".to_vec()),
            Record::new("outbox.event.o", 0, 0)
                .with_header("id", "x")
                .with_value(b"[1,".to_vec()),
            Record::new("outbox.event.o", 0, 0)
                .with_header("id", "x")
                .with_value(b"{}".to_vec()),
        ];
        recs.push(Record::new("t", 0, 0).with_value(br#"{"id":"p"}"#.to_vec()));
        for r in &recs {
            let full = decode(r, &cfg);
            let env = decode_envelope(r, &cfg);
            match (full, env) {
                (Ok(mut a), Ok(b)) => {
                    if b.payload.is_none() {
                        a.payload = None;
                    }
                    assert_eq!(a, b);
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("{a:?} vs {b:?}"),
            }
        }
    }

    #[test]
    fn huge_values() {
        let cfg = DecodeConfig {
            max_value_bytes: 1024 * 1024,
            ..DecodeConfig::default()
        };
        let big = format!(r#"{{"id":"h","blob":"{}"}}"#, "x".repeat(900_000));
        let r = Record::new("t", 0, 0).with_value(big.into_bytes());
        assert!(decode(&r, &cfg).is_ok());
        let r = Record::new("t", 0, 0).with_value(vec![b'x'; 2 * 1024 * 1024]);
        assert!(matches!(
            decode(&r, &cfg),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn traceparent_and_time_parsing() {
        assert_eq!(trace_id_of(TP), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
        assert_eq!(trace_id_of("00-4bf9-00f0-01"), None);
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00.123456Z"),
            Some(951_782_400_123)
        );
        for bad in [
            "",
            "2026",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "é2026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
