//! CloudEvents binary mode: attributes in `ce_` headers, the data in the value, its media type
//! in `content-type`.

use std::collections::BTreeMap;

use super::fields::{
    is_json_media, non_empty, parse_int_header, parse_json, parse_rfc3339_ms, set_trace, shape_of,
    validate_json_shape, SHAPE_DEPTH,
};
use super::{DecodeError, EnvelopeFormat, Format, Input, ObservedEvent};

/// Any of these headers makes a record a binary-mode CloudEvent (required ones missing then make
/// it poison rather than something else).
const MARKERS: [&str; 4] = ["ce_specversion", "ce_id", "ce_type", "ce_source"];

pub(super) const FORMAT: Format = Format {
    name: "cloudevents-binary",
    matches: |i| i.rec.headers.iter().any(|(n, _)| MARKERS.contains(&n)),
    decode,
};

fn decode(input: &Input<'_>) -> Result<ObservedEvent, DecodeError> {
    let (rec, content_type, with_payload) = (input.rec, input.content_type, input.with_payload);
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
    let mut dataschema = None;
    let mut extensions = BTreeMap::new();
    for (name, value) in &rec.headers {
        let Some(attr) = name.strip_prefix("ce_") else {
            continue;
        };
        let Some(bytes) = value else {
            continue; // a null ce_ header counts as absent
        };
        let s =
            std::str::from_utf8(bytes).map_err(|_| DecodeError::HeaderNotUtf8(name.to_owned()))?;
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
            "dataschema" => &mut dataschema,
            _ => {
                extensions
                    .entry(attr.to_owned())
                    .or_insert_with(|| s.to_owned());
                continue;
            }
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
    ev.aggregate_id = ev
        .subject
        .clone()
        .or_else(|| non_empty(input.key_text().as_deref()));
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
    ev.dataschema = non_empty(dataschema);
    ev.extensions = extensions;
    if input.is_framed() && may_be_framed(content_type) {
        // Avro, Protobuf or JSON Schema through the registry. Without one the headers still
        // make the event; its data stays unread.
        if input.cfg.registry.0.is_some() {
            // Avro is checked by a skim over its bytes, which also takes the fingerprint; the
            // data is decoded only when it is wanted (or when the skim cannot tell).
            let skimmed = rec
                .value
                .as_deref()
                .and_then(|v| input.cfg.registry.skim(v, SHAPE_DEPTH));
            match skimmed {
                Some((shape, schema)) if !with_payload => {
                    ev.shape = Some(shape);
                    ev.value_schema = Some(schema);
                }
                _ => {
                    let v = input.json()?;
                    ev.shape = Some(skimmed.map_or_else(|| shape_of(v), |(s, _)| s));
                    if with_payload {
                        ev.payload = Some(v.clone());
                    }
                }
            }
        }
    } else if is_json_media(content_type) {
        if let Some(v) = rec.value.as_deref().filter(|v| !v.is_empty()) {
            // One fingerprint for both: the bytes' key order, whichever way the value is read.
            ev.shape = Some(validate_json_shape(v)?);
            if with_payload {
                ev.payload = Some(parse_json(v)?);
            }
        }
    }
    Ok(ev)
}

/// Content types a Confluent-framed value travels with (or none); an explicit other
/// type (e.g. `application/octet-stream`) is taken at its word.
fn may_be_framed(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|ct| {
        let ct = ct.to_ascii_lowercase();
        ["avro", "protobuf", "json", "confluent", "schema"]
            .iter()
            .any(|m| ct.contains(m))
    })
}
