//! The Debezium outbox event router's shape: header `id` (event id), `eventType`/`type`, the
//! aggregate id in the key, the payload (maybe JSON text, maybe schema-wrapped) in the value;
//! the topic is `<prefix><aggregatetype>`.

use serde_json::Value;

use super::fields::{non_empty, parse_json, scalar_string, set_trace, unquote, validate_json};
use super::{DecodeError, EnvelopeFormat, Format, Input, ObservedEvent};
use crate::model::record::HeaderValue;

pub(super) const FORMAT: Format = Format {
    name: "debezium-outbox",
    matches: |i| {
        i.rec.topic.starts_with(i.cfg.outbox_topic_prefix.as_str())
            || !matches!(i.rec.header_ci("id"), HeaderValue::Absent)
    },
    decode,
};

fn decode(input: &Input<'_>) -> Result<ObservedEvent, DecodeError> {
    let (rec, cfg, with_payload) = (input.rec, input.cfg, input.with_payload);
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
