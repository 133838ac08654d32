//! CloudEvents structured mode: the whole event (attributes and data) is a JSON object in the
//! value. Recognised by its content type (`application/cloudevents+json`) or, whatever the
//! content type, by its shape: an object with `specversion`, `id`, `type` and `source`. The
//! official Python SDK's Kafka binding writes `content-type: application/json` (the *data*
//! content type) on structured records, and a producer may leave it out altogether.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{
    is_json_media, media_type, non_empty, parse_rfc3339_ms, scalar_int, scalar_string, set_trace,
    shape_of,
};
use super::{DecodeError, EnvelopeFormat, Format, Input, ObservedEvent};

/// The attributes that have a field of their own in [`ObservedEvent`]; every other member of
/// the object (but the data) is kept in [`ObservedEvent::extensions`].
const KNOWN: [&str; 15] = [
    "specversion",
    "id",
    "type",
    "source",
    "subject",
    "time",
    "correlationid",
    "causationid",
    "aggregateversion",
    "sequence",
    "traceparent",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// The attributes whose presence makes a JSON object a structured CloudEvent.
const REQUIRED: [&str; 4] = ["specversion", "id", "type", "source"];

/// `content-type: application/cloudevents…` (checked before binary mode, as the spec says).
pub(super) const BY_CONTENT_TYPE: Format = Format {
    name: "cloudevents-structured",
    matches: |i| {
        i.content_type
            .is_some_and(|ct| media_type(ct).starts_with("application/cloudevents"))
    },
    decode: decode_by_content_type,
};

/// A JSON object value with the four required attributes, whatever the content type.
pub(super) const BY_SHAPE: Format = Format {
    name: "cloudevents-structured (by shape)",
    matches: |i| {
        let looks_like_object = i
            .rec
            .value
            .as_deref()
            .and_then(|v| v.iter().find(|b| !b.is_ascii_whitespace()))
            == Some(&b'{');
        looks_like_object
            && matches!(i.json(), Ok(Value::Object(o))
                if REQUIRED.iter().all(|k| o.get(*k).is_some_and(|v| !v.is_null())))
    },
    decode: decode_by_shape,
};

fn decode_by_content_type(input: &Input<'_>) -> Result<ObservedEvent, DecodeError> {
    if let Some(ct) = input.content_type {
        if media_type(ct) == "application/cloudevents-batch+json" {
            return Err(DecodeError::UnsupportedContentType(ct.to_owned()));
        }
    }
    decode(input, None)
}

fn decode_by_shape(input: &Input<'_>) -> Result<ObservedEvent, DecodeError> {
    // Here `content-type` is the data's media type (unless `datacontenttype` says otherwise).
    decode(input, input.content_type)
}

fn decode(input: &Input<'_>, header_data_type: Option<&str>) -> Result<ObservedEvent, DecodeError> {
    let rec = input.rec;
    let Value::Object(obj) = input.json()? else {
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
    req(obj, "specversion")?;
    let mut ev = ObservedEvent::empty(EnvelopeFormat::CloudEventsStructured, req(obj, "id")?);
    ev.event_type = Some(req(obj, "type")?);
    ev.source = Some(req(obj, "source")?);
    ev.subject = obj.get("subject").and_then(scalar_string);
    ev.aggregate_id = ev
        .subject
        .clone()
        .or_else(|| non_empty(input.key_text().as_deref()));
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
    ev.content_type = obj
        .get("datacontenttype")
        .and_then(scalar_string)
        .or_else(|| non_empty(header_data_type));
    ev.dataschema = obj.get("dataschema").and_then(scalar_string);
    ev.extensions = obj
        .iter()
        .filter(|(k, v)| !KNOWN.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect::<BTreeMap<_, _>>();
    ev.shape = match obj.get("data") {
        Some(Value::String(_)) if is_json_media(ev.content_type.as_deref()) => None,
        Some(d) => Some(shape_of(d)),
        None => None,
    };
    if input.with_payload {
        ev.payload = match obj.get("data") {
            Some(Value::String(s)) if is_json_media(ev.content_type.as_deref()) => {
                // Some producers put JSON text in `data`; keep the string if it is not JSON.
                Some(serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())))
            }
            Some(d) => Some(d.clone()),
            None => None, // `data_base64` or no data: no JSON payload
        };
    }
    Ok(ev)
}
