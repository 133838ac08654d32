//! CloudEvents structured mode: the whole event (attributes and data) is a JSON object in the
//! value. Recognised by its content type (`application/cloudevents+json`) or, whatever the
//! content type, by its shape: an object with `specversion`, `id`, `type` and `source`. The
//! official Python SDK's Kafka binding writes `content-type: application/json` (the *data*
//! content type) on structured records, and a producer may leave it out altogether.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Number, Value};

use super::fields::{
    is_json_media, media_type, non_empty, parse_rfc3339_ms, set_trace, shape_of, starts_with_ci,
    validate_json_shape,
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
            .is_some_and(|ct| starts_with_ci(media_type(ct), "application/cloudevents"))
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
            && i.top().is_some_and(|top| {
                REQUIRED
                    .iter()
                    .all(|k| top.get(k).is_some_and(|v| !matches!(v, Member::Null)))
            })
    },
    decode: decode_by_shape,
};

fn decode_by_content_type(input: &Input<'_>) -> Result<ObservedEvent, DecodeError> {
    if let Some(ct) = input.content_type {
        if media_type(ct).eq_ignore_ascii_case("application/cloudevents-batch+json") {
            return Err(DecodeError::UnsupportedContentType(ct.to_owned()));
        }
    }
    decode(input, None)
}

fn decode_by_shape(input: &Input<'_>) -> Result<ObservedEvent, DecodeError> {
    // Here `content-type` is the data's media type (unless `datacontenttype` says otherwise).
    decode(input, input.content_type)
}

/// The top level of a JSON object value, read in one pass over the bytes (no tree): each
/// member's name and value, strings borrowed from the record where they hold no escape,
/// `data` as its raw text with its structural fingerprint. A name written twice keeps its
/// last value, as a parsed tree does.
pub(crate) struct Top<'a> {
    members: Vec<(Cow<'a, str>, Member<'a>)>,
}

/// A top-level member's value.
pub(crate) enum Member<'a> {
    Null,
    Str(Cow<'a, str>),
    Num(Number),
    /// A boolean, array or object (but `data`).
    Other(Value),
    /// `data` and its structural fingerprint.
    Data {
        data: Data<'a>,
        shape: u64,
    },
}

/// The value of `data`.
pub(crate) enum Data<'a> {
    /// Its JSON text, validated as [`super::fields::validate_json`] does; fingerprinted in
    /// the bytes' key order, as binary mode does.
    Raw(&'a RawValue),
    /// From a value decoded through the schema registry.
    Parsed(Value),
}

impl Data<'_> {
    fn value(&self) -> Result<Value, DecodeError> {
        match self {
            Data::Raw(raw) => {
                serde_json::from_str(raw.get()).map_err(|e| DecodeError::InvalidJson(e.to_string()))
            }
            Data::Parsed(v) => Ok(v.clone()),
        }
    }
}

impl<'a> Top<'a> {
    /// `None` unless `bytes` are exactly one well-formed JSON object (a Confluent-framed
    /// value is not: its first byte is 0).
    pub(crate) fn read(bytes: &'a [u8]) -> Option<Self> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let top = Top::deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(top)
    }

    /// The members of a value decoded another way (through the schema registry).
    pub(crate) fn from_tree(obj: &serde_json::Map<String, Value>) -> Top<'static> {
        let members = obj
            .iter()
            .map(|(k, v)| {
                let member = match v {
                    _ if k == "data" => Member::Data {
                        data: Data::Parsed(v.clone()),
                        shape: shape_of(v),
                    },
                    Value::Null => Member::Null,
                    Value::String(s) => Member::Str(Cow::Owned(s.clone())),
                    Value::Number(n) => Member::Num(n.clone()),
                    other => Member::Other(other.clone()),
                };
                (Cow::Owned(k.clone()), member)
            })
            .collect();
        Top { members }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Member<'a>> {
        self.members.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

impl Member<'_> {
    /// A non-blank string, or a number as text (what [`super::fields::scalar_string`] takes).
    fn scalar_string(&self) -> Option<String> {
        match self {
            Member::Str(s) if !s.trim().is_empty() => Some(s.as_ref().to_owned()),
            Member::Num(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// An integer, or a string that is one (what [`super::fields::scalar_int`] takes).
    fn scalar_int(&self) -> Option<i64> {
        match self {
            Member::Num(n) => n.as_i64(),
            Member::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// As compact JSON text, as a parsed value prints.
    fn json_text(&self) -> String {
        match self {
            Member::Null => "null".to_owned(),
            Member::Str(s) => Value::String(s.as_ref().to_owned()).to_string(),
            Member::Num(n) => n.to_string(),
            Member::Other(v) => v.to_string(),
            Member::Data { data, .. } => data
                .value()
                .map_or_else(|e| e.to_string(), |v| v.to_string()),
        }
    }

    /// `data` holds a JSON string.
    fn is_string(&self) -> bool {
        match self {
            Member::Data {
                data: Data::Raw(raw),
                ..
            } => raw.get().starts_with('"'),
            Member::Data {
                data: Data::Parsed(v),
                ..
            } => v.is_string(),
            _ => matches!(self, Member::Str(_)),
        }
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Top<'de>, A::Error> {
                let mut members: Vec<(Cow<'de, str>, Member<'de>)> = Vec::with_capacity(16);
                while let Some(Name(name)) = a.next_key()? {
                    let value = if name == "data" {
                        let raw: &'de RawValue = a.next_value()?;
                        let shape = validate_json_shape(raw.get().as_bytes())
                            .map_err(serde::de::Error::custom)?;
                        Member::Data {
                            data: Data::Raw(raw),
                            shape,
                        }
                    } else {
                        a.next_value()?
                    };
                    match members.iter_mut().find(|(k, _)| *k == name) {
                        Some(slot) => slot.1 = value,
                        None => members.push((name, value)),
                    }
                }
                Ok(Top { members })
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A member's name, borrowed when it holds no escape.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
}

impl<'de> Deserialize<'de> for Member<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Member<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Member<'de>, E> {
                Ok(Member::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Member<'de>, E> {
                Ok(Member::Other(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Member<'de>, E> {
                Ok(Member::Num(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Member<'de>, E> {
                Ok(Member::Num(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Member<'de>, E> {
                Number::from_f64(v)
                    .map(Member::Num)
                    .ok_or_else(|| E::custom("a number out of range"))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Member<'de>, E> {
                Ok(Member::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Member<'de>, E> {
                Ok(Member::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                a: A,
            ) -> Result<Member<'de>, A::Error> {
                Value::deserialize(serde::de::value::SeqAccessDeserializer::new(a))
                    .map(Member::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Member<'de>, A::Error> {
                Value::deserialize(serde::de::value::MapAccessDeserializer::new(a))
                    .map(Member::Other)
            }
        }
        d.deserialize_any(Visit)
    }
}

fn decode(input: &Input<'_>, header_data_type: Option<&str>) -> Result<ObservedEvent, DecodeError> {
    let rec = input.rec;
    let Some(top) = input.top() else {
        // Not one well-formed JSON object: the parser says what is wrong.
        input.json()?;
        return Err(DecodeError::InvalidJson(
            "structured CloudEvent is not a JSON object".into(),
        ));
    };
    let req = |n: &str| -> Result<String, DecodeError> {
        match top.get(n) {
            Some(Member::Str(s)) if !s.trim().is_empty() => Ok(s.as_ref().to_owned()),
            Some(Member::Null) | None => Err(DecodeError::MissingField(n.to_owned())),
            Some(_) => Err(DecodeError::InvalidField {
                name: n.to_owned(),
                reason: "not a non-empty string".into(),
            }),
        }
    };
    let scalar_string = |n: &str| top.get(n).and_then(Member::scalar_string);
    req("specversion")?;
    let mut ev = ObservedEvent::empty(EnvelopeFormat::CloudEventsStructured, req("id")?);
    ev.event_type = Some(req("type")?);
    ev.source = Some(req("source")?);
    ev.subject = scalar_string("subject");
    ev.aggregate_id = ev
        .subject
        .clone()
        .or_else(|| non_empty(input.key_text().as_deref()));
    ev.correlation_id = scalar_string("correlationid");
    ev.causation_id = scalar_string("causationid");
    ev.aggregate_version = match top.get("aggregateversion") {
        None | Some(Member::Null) => None,
        Some(v) => Some(v.scalar_int().ok_or_else(|| DecodeError::InvalidField {
            name: "aggregateversion".into(),
            reason: format!("`{}` is not an integer", v.json_text()),
        })?),
    };
    ev.sequence = top.get("sequence").and_then(Member::scalar_int);
    ev.time = scalar_string("time");
    ev.time_ms = ev.time.as_deref().and_then(parse_rfc3339_ms);
    let tp = scalar_string("traceparent");
    set_trace(&mut ev, tp.as_deref().or(rec.header_str("traceparent")));
    ev.content_type = scalar_string("datacontenttype").or_else(|| non_empty(header_data_type));
    ev.dataschema = scalar_string("dataschema");
    ev.extensions = top
        .members
        .iter()
        .filter(|(k, v)| !KNOWN.contains(&k.as_ref()) && !matches!(v, Member::Null))
        .map(|(k, v)| {
            let text = match v {
                Member::Str(s) => s.as_ref().to_owned(),
                other => other.json_text(),
            };
            (k.as_ref().to_owned(), text)
        })
        .collect::<BTreeMap<_, _>>();
    let data = top.get("data");
    // JSON text inside a string `data`: no fingerprint of the string's.
    let data_is_json_text =
        data.is_some_and(|d| d.is_string()) && is_json_media(ev.content_type.as_deref());
    ev.shape = match data {
        Some(Member::Data { shape, .. }) if !data_is_json_text => Some(*shape),
        _ => None,
    };
    if input.with_payload {
        ev.payload = match data {
            Some(Member::Data { data, .. }) => {
                match data.value()? {
                    // Some producers put JSON text in `data`; keep the string if it is not JSON.
                    Value::String(s) if data_is_json_text => {
                        Some(serde_json::from_str(&s).unwrap_or(Value::String(s)))
                    }
                    d => Some(d),
                }
            }
            _ => None, // `data_base64` or no data: no JSON payload
        };
    }
    Ok(ev)
}
