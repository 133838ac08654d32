//! Decoding a raw [`Record`] into an [`ObservedEvent`].
//!
//! One envelope format per file, registered in [`FORMATS`] and tried in this order (first match
//! wins):
//! 1. CloudEvents structured mode by content type: `content-type` is `application/cloudevents…`.
//! 2. CloudEvents binary mode: a `ce_specversion`, `ce_id`, `ce_type` or `ce_source` header.
//! 3. Debezium outbox-router shape: topic starts with [`DecodeConfig::outbox_topic_prefix`]
//!    (default `outbox.event.`) or a header `id` is present.
//! 4. CloudEvents structured mode by shape: the value is a JSON object with `specversion`, `id`,
//!    `type` and `source`, whatever its `content-type` (which then tells the data content type;
//!    the official Python SDK's Kafka binding writes `application/json` there).
//! 5. Plain JSON: the value is JSON and [`PlainJsonPaths::id`] resolves in it.
//!
//! Anything else is a [`DecodeError`]; the log keeps such records as poison entries.
//! Nothing here panics, whatever the bytes.

mod cloudevents_binary;
mod cloudevents_structured;
mod debezium_outbox;
mod fields;
mod plain_json;

use std::cell::OnceCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::{is_command_topic, HeaderValue, Record, COMMAND_TOPIC_SUFFIX};
use crate::registry::SchemaRef;
use fields::parse_json;
pub use fields::{lookup, parse_rfc3339_ms, trace_id_of};
pub use plain_json::{ConfigError, PlainJsonPaths};

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
    /// CloudEvents `dataschema`: the schema the data adheres to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// Every other CloudEvents attribute or extension (name → value as text), so nothing the
    /// producer wrote is lost.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
    /// The event payload (`data`) as JSON; `None` when absent or not JSON.
    pub payload: Option<Value>,
    /// The registry schema the value was decoded with (Confluent wire format).
    #[serde(skip)]
    pub value_schema: Option<crate::registry::SchemaRef>,
    /// The payload's structural fingerprint with its `dataschema` folded in, taken in the
    /// decoder's own pass over the value: equal fingerprints, equal field lists (the
    /// schema-drift lint judges each fingerprint once). `None` when the decoder could not
    /// take it for free (an outbox payload, JSON text inside `data`, no data).
    #[serde(skip)]
    pub shape: Option<u64>,
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

    pub(crate) fn empty(format: EnvelopeFormat, event_id: String) -> Self {
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
            dataschema: None,
            extensions: BTreeMap::new(),
            payload: None,
            value_schema: None,
            shape: None,
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
    /// A Confluent-framed value that could not be decoded (the reason names the schema id).
    #[error("{0}")]
    Registry(String),
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
    /// Topics that carry commands, not events: glob patterns (`*` any run, `?` one character).
    pub command_topics: Vec<String>,
    /// Schemas for Confluent-framed values and keys (`--schema-registry`).
    #[serde(skip)]
    pub registry: crate::registry::RegistryHandle,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            plain_enabled: true,
            plain: PlainJsonPaths::default(),
            outbox_topic_prefix: "outbox.event.".into(),
            max_value_bytes: 16 * 1024 * 1024,
            command_topics: vec![format!("*{COMMAND_TOPIC_SUFFIX}")],
            registry: crate::registry::RegistryHandle::default(),
        }
    }
}

impl DecodeConfig {
    /// Whether `topic` carries commands (matches one of [`DecodeConfig::command_topics`]).
    pub fn is_command_topic(&self, topic: &str) -> bool {
        self.command_topics.iter().any(|g| glob_match(g, topic))
    }
}

/// Whether a record sits on a command topic by the default rule (name ends with `.commands`).
pub fn is_command(rec: &Record) -> bool {
    is_command_topic(&rec.topic)
}

/// Glob match: `*` matches any run of characters (also none), `?` exactly one; the rest is
/// literal. Linear time (backtracks only to the last `*`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || t.get(ti) == Some(&c) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// What a format's matcher and decoder see: the record, the settings, and the value parsed as
/// JSON at most once (shared by the formats that look inside it).
pub(crate) struct Input<'a> {
    pub rec: &'a Record,
    pub cfg: &'a DecodeConfig,
    /// The `content-type` header (checked to be UTF-8).
    pub content_type: Option<&'a str>,
    /// Build the JSON payload, or only validate it.
    pub with_payload: bool,
    json: OnceCell<Result<(Value, Option<SchemaRef>), DecodeError>>,
    /// The value's top-level members, read in one pass without a tree (structured mode).
    top: OnceCell<Option<cloudevents_structured::Top<'a>>>,
}

/// Decode Confluent-framed bytes through the registry; `None` when not framed.
fn unframe(bytes: &[u8], cfg: &DecodeConfig) -> Option<Result<(Value, SchemaRef), DecodeError>> {
    cfg.registry
        .unframe(bytes)
        .map(|r| r.map_err(DecodeError::Registry))
}

impl<'a> Input<'a> {
    /// The value's top-level members when it is a JSON object (not Confluent-framed), read on
    /// first use in one pass over the bytes: no tree, attributes borrowed from the record.
    /// A Confluent-framed value is decoded through the registry, into a tree. `None` when the
    /// value is not a JSON object: [`Input::json`] says why.
    pub fn top(&self) -> Option<&cloudevents_structured::Top<'a>> {
        self.top
            .get_or_init(|| {
                let top = cloudevents_structured::Top::read(self.rec.value.as_deref()?);
                if top.is_none() && self.is_framed() {
                    if let Ok(Value::Object(obj)) = self.json() {
                        return Some(cloudevents_structured::Top::from_tree(obj));
                    }
                }
                top
            })
            .as_ref()
    }

    /// The value as JSON, parsed on first use: decoded through the schema registry when it is
    /// Confluent-framed. An absent or empty value is [`DecodeError::EmptyValue`].
    pub fn json(&self) -> Result<&Value, DecodeError> {
        self.decoded().map(|(v, _)| v)
    }

    fn decoded(&self) -> Result<&(Value, Option<SchemaRef>), DecodeError> {
        self.json
            .get_or_init(|| {
                let bytes = self
                    .rec
                    .value
                    .as_deref()
                    .filter(|v| !v.is_empty())
                    .ok_or(DecodeError::EmptyValue)?;
                if let Some(r) = unframe(bytes, self.cfg) {
                    return r.map(|(v, s)| (v, Some(s)));
                }
                parse_json(bytes).map(|v| (v, None)).map_err(|e| {
                    // A schema id in a header (Apicurio, some serdes) instead of the framing.
                    match crate::registry::SCHEMA_ID_HEADERS
                        .iter()
                        .find(|h| self.rec.header_str(h).is_some())
                    {
                        Some(h) => DecodeError::Registry(format!(
                            "the schema id travels in header {h}: not supported, only the \
                             Confluent wire format (magic byte 0 + schema id)"
                        )),
                        None => e,
                    }
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Whether the value is Confluent-framed (decoded through the registry, whatever its
    /// content type says).
    pub fn is_framed(&self) -> bool {
        self.rec
            .value
            .as_deref()
            .is_some_and(|v| crate::registry::frame(v).is_some())
    }

    /// The registry schema the value was decoded with, if it was.
    pub fn value_schema(&self) -> Option<SchemaRef> {
        match self.json.get() {
            Some(Ok((_, s))) => s.clone(),
            _ => None,
        }
    }

    /// The record key as text: a Confluent-framed key decoded through the registry (a
    /// string as it is, anything else as JSON), else the key if it is UTF-8.
    pub fn key_text(&self) -> Option<String> {
        let key = self.rec.key.as_deref()?;
        match unframe(key, self.cfg) {
            Some(Ok((Value::String(s), _))) => Some(s),
            Some(Ok((v, _))) => Some(v.to_string()),
            Some(Err(_)) => None,
            None => self.rec.key_str().map(str::to_owned),
        }
    }
}

/// One envelope format: when it applies, and how it decodes.
pub(crate) struct Format {
    pub name: &'static str,
    pub matches: fn(&Input<'_>) -> bool,
    pub decode: fn(&Input<'_>) -> Result<ObservedEvent, DecodeError>,
}

/// The envelope formats, tried in this order; the first whose `matches` holds decodes the record.
/// Adding a format is one file in this folder and one line here.
pub(crate) const FORMATS: &[Format] = &[
    cloudevents_structured::BY_CONTENT_TYPE,
    cloudevents_binary::FORMAT,
    debezium_outbox::FORMAT,
    cloudevents_structured::BY_SHAPE,
    plain_json::FORMAT,
];

/// The envelope formats' names, in the order they are tried.
pub fn format_names() -> Vec<&'static str> {
    FORMATS.iter().map(|f| f.name).collect()
}

/// Decode one record, payload included. Never panics.
pub fn decode(rec: &Record, cfg: &DecodeConfig) -> Result<ObservedEvent, DecodeError> {
    decode_with(rec, cfg, true)
}

/// Decode the envelope only: the same checks and the same result as [`decode`] (the value is
/// still validated as JSON), but `payload` is left `None`, which saves building (binary mode,
/// outbox) or copying (structured mode, plain JSON) the JSON tree. The log uses this on append.
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
    let input = Input {
        rec,
        cfg,
        content_type,
        with_payload,
        json: OnceCell::new(),
        top: OnceCell::new(),
    };
    match FORMATS.iter().find(|f| (f.matches)(&input)) {
        Some(f) => (f.decode)(&input).map(|mut ev| {
            if ev.value_schema.is_none() {
                ev.value_schema = input.value_schema();
            }
            ev.shape = ev
                .shape
                .map(|s| fields::with_dataschema(s, ev.dataschema.as_deref()));
            ev
        }),
        None if input.is_framed() => Err(input
            .json()
            .err()
            .unwrap_or_else(|| DecodeError::Unrecognised("a framed value, no envelope".into()))),
        None => Err(DecodeError::Unrecognised(
            "no CloudEvents headers or shape, no outbox shape, plain JSON disabled".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
