//! CloudEvents 1.0 envelope in Kafka binary content mode.
//!
//! The CloudEvents SDK's rdkafka binding pins an older rdkafka, and two
//! librdkafka builds cannot be linked into one binary, so the few headers of
//! the Kafka protocol binding are written here.

use serde::{Deserialize, Serialize};

use crate::saga::SagaMode;

pub const SPECVERSION: &str = "ce_specversion";
pub const ID: &str = "ce_id";
pub const TYPE: &str = "ce_type";
pub const SOURCE: &str = "ce_source";
pub const TIME: &str = "ce_time";
pub const SUBJECT: &str = "ce_subject";
pub const CORRELATION: &str = "ce_correlationid";
pub const CAUSATION: &str = "ce_causationid";
pub const AGGREGATE_VERSION: &str = "ce_aggregateversion";
pub const TRACEPARENT: &str = "ce_traceparent";
pub const DATASCHEMA: &str = "ce_dataschema";
/// Extension: how the order's saga is run (`orchestration` | `choreography`).
pub const SAGAMODE: &str = "ce_sagamode";
pub const CONTENT_TYPE: &str = "content-type";

/// A message of the demo as it travels: CloudEvents attributes plus JSON data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub event_type: String,
    pub source: String,
    /// RFC 3339.
    pub time: String,
    /// The aggregate (order) id; also the Kafka key.
    pub subject: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub aggregate_version: Option<i64>,
    /// The contract the data follows (CloudEvents `dataschema`), see `contracts`.
    pub dataschema: Option<String>,
    /// How the order's saga is run (the `sagamode` extension); None on
    /// records written before the two modes (orchestrated) and foreign ones.
    #[serde(default)]
    pub saga_mode: Option<SagaMode>,
    pub data: serde_json::Value,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("header {0} is not a number: {1}")]
    BadNumber(&'static str, String),
    #[error("unsupported specversion {0}")]
    SpecVersion(String),
    #[error("no value")]
    NoValue,
    #[error("value is not JSON: {0}")]
    BadJson(String),
}

impl Envelope {
    /// The Kafka headers of binary content mode, in a stable order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (SPECVERSION, "1.0".to_owned()),
            (ID, self.id.clone()),
            (TYPE, self.event_type.clone()),
            (SOURCE, self.source.clone()),
            (TIME, self.time.clone()),
            (SUBJECT, self.subject.clone()),
            (CONTENT_TYPE, "application/json".to_owned()),
        ];
        if let Some(c) = &self.correlation_id {
            h.push((CORRELATION, c.clone()));
        }
        if let Some(c) = &self.causation_id {
            h.push((CAUSATION, c.clone()));
        }
        if let Some(v) = self.aggregate_version {
            h.push((AGGREGATE_VERSION, v.to_string()));
        }
        if let Some(s) = &self.dataschema {
            h.push((DATASCHEMA, s.clone()));
        }
        if let Some(m) = self.saga_mode {
            h.push((SAGAMODE, m.as_str().to_owned()));
        }
        h
    }

    /// Parse binary content mode from header lookups and the record value.
    pub fn from_parts<'a>(
        header: impl Fn(&str) -> Option<&'a [u8]>,
        value: Option<&[u8]>,
    ) -> Result<Self, EnvelopeError> {
        let text = |name: &'static str| -> Result<Option<String>, EnvelopeError> {
            match header(name) {
                None => Ok(None),
                Some(b) => std::str::from_utf8(b)
                    .map(|s| Some(s.to_owned()))
                    .map_err(|_| EnvelopeError::NotUtf8(name)),
            }
        };
        let required = |name: &'static str| text(name)?.ok_or(EnvelopeError::MissingHeader(name));
        let spec = required(SPECVERSION)?;
        if spec != "1.0" {
            return Err(EnvelopeError::SpecVersion(spec));
        }
        let aggregate_version = match text(AGGREGATE_VERSION)? {
            None => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| EnvelopeError::BadNumber(AGGREGATE_VERSION, v))?,
            ),
        };
        let value = value.ok_or(EnvelopeError::NoValue)?;
        // The Confluent wire format (JSON Schema): magic byte 0 and a 4-byte schema id before
        // the JSON (which never starts with a 0 byte).
        let value = match value {
            [0, _, _, _, _, json @ ..] => json,
            other => other,
        };
        let data =
            serde_json::from_slice(value).map_err(|e| EnvelopeError::BadJson(e.to_string()))?;
        Ok(Envelope {
            id: required(ID)?,
            event_type: required(TYPE)?,
            source: required(SOURCE)?,
            time: text(TIME)?.unwrap_or_default(),
            subject: required(SUBJECT)?,
            correlation_id: text(CORRELATION)?,
            causation_id: text(CAUSATION)?,
            aggregate_version,
            dataschema: text(DATASCHEMA)?,
            // A value this demo does not know is somebody else's extension.
            saga_mode: header(SAGAMODE)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(SagaMode::parse),
            data,
        })
    }
}

/// Current time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            id: "e1".into(),
            event_type: "OrderCreated".into(),
            source: "/eventscope-demo/order-service".into(),
            time: "2026-11-26T00:00:00.000Z".into(),
            subject: "o1".into(),
            correlation_id: Some("c1".into()),
            causation_id: None,
            aggregate_version: Some(1),
            dataschema: Some(crate::contracts::uri("OrderCreated", 1)),
            saga_mode: Some(SagaMode::Choreography),
            data: serde_json::json!({"order_id": "o1"}),
        }
    }

    #[test]
    fn headers_round_trip() {
        let env = sample();
        let headers: Vec<(&str, Vec<u8>)> = env
            .headers()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        let value = serde_json::to_vec(&env.data).unwrap();
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_slice())
        };
        assert_eq!(Envelope::from_parts(lookup, Some(&value)).unwrap(), env);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let none = |_: &str| None;
        assert_eq!(
            Envelope::from_parts(none, Some(b"\xff\x00")),
            Err(EnvelopeError::MissingHeader(SPECVERSION))
        );
        let bad_utf8: &[u8] = b"\xff";
        let only_spec = |name: &str| (name == SPECVERSION).then_some(bad_utf8);
        assert_eq!(
            Envelope::from_parts(only_spec, None),
            Err(EnvelopeError::NotUtf8(SPECVERSION))
        );
    }
}
