//! Plain JSON values: the envelope facts are read at configurable paths
//! ([`PlainJsonPaths`], `--json-paths` or the profile).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::fields::{
    lookup, non_empty, parse_rfc3339_ms, scalar_int, scalar_string, set_trace, shape_of,
};
use super::{DecodeError, EnvelopeFormat, Format, Input, ObservedEvent};

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

pub(super) const FORMAT: Format = Format {
    name: "plain-json",
    matches: |i| i.cfg.plain_enabled,
    decode,
};

fn decode(input: &Input<'_>) -> Result<ObservedEvent, DecodeError> {
    let (rec, paths) = (input.rec, &input.cfg.plain);
    let v = input.json()?;
    let get = |p: &Option<String>| p.as_deref().and_then(|p| lookup(v, p));
    let id = lookup(v, &paths.id)
        .and_then(scalar_string)
        .ok_or_else(|| DecodeError::MissingField(paths.id.clone()))?;
    let mut ev = ObservedEvent::empty(EnvelopeFormat::PlainJson, id);
    ev.event_type = get(&paths.event_type).and_then(scalar_string);
    ev.source = get(&paths.source).and_then(scalar_string);
    ev.correlation_id = get(&paths.correlation).and_then(scalar_string);
    ev.causation_id = get(&paths.causation).and_then(scalar_string);
    ev.subject = get(&paths.aggregate_id).and_then(scalar_string);
    ev.aggregate_id = ev
        .subject
        .clone()
        .or_else(|| non_empty(input.key_text().as_deref()));
    ev.aggregate_version = get(&paths.version).and_then(scalar_int);
    ev.time = get(&paths.time).and_then(scalar_string);
    ev.time_ms = ev.time.as_deref().and_then(parse_rfc3339_ms);
    set_trace(&mut ev, rec.header_str("traceparent"));
    ev.content_type = rec.header_str("content-type").map(str::to_owned);
    let payload = match &paths.payload {
        Some(p) => lookup(v, p),
        None => Some(v),
    };
    ev.shape = payload.map(shape_of);
    if input.with_payload {
        ev.payload = match &paths.payload {
            Some(p) => lookup(v, p).cloned(),
            None => Some(v.clone()),
        };
    }
    Ok(ev)
}
