//! The raw Kafka record, exactly as an observer of the cluster sees it.

/// One Kafka record exactly as an observer of the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, if the broker gave one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// Headers in wire order; a header value may be absent and need not be UTF-8.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub value: Option<Vec<u8>>,
}

/// Topics whose name ends with this suffix carry commands, not events.
pub const COMMAND_TOPIC_SUFFIX: &str = ".commands";

/// A header looked up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    /// No header with that name.
    Absent,
    /// The header is there but has no value (null).
    Null,
    /// The header value is UTF-8.
    Str(&'a str),
    /// The header value is not UTF-8.
    Bytes(&'a [u8]),
}

impl Record {
    /// A record with no key, headers or value (handy in tests and fixtures).
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Record {
            topic: topic.into(),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            headers: Vec::new(),
            value: None,
        }
    }

    /// Bytes of the first header called `name` (exact match). `None` if absent or null.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The first header called `name` (exact match) as UTF-8. `None` if absent, null or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The first header whose name equals `name` ignoring ASCII case, classified.
    pub fn header_ci(&self, name: &str) -> HeaderValue<'_> {
        match self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            None => HeaderValue::Absent,
            Some((_, None)) => HeaderValue::Null,
            Some((_, Some(b))) => match std::str::from_utf8(b) {
                Ok(s) => HeaderValue::Str(s),
                Err(_) => HeaderValue::Bytes(b),
            },
        }
    }

    /// The key as UTF-8, if there is one and it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Whether this record sits on a command topic (name ends with `.commands`).
    pub fn is_command(&self) -> bool {
        is_command_topic(&self.topic)
    }

    /// Rough size on the wire: key + header names and values + value.
    pub fn approx_size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }

    /// Builder helper: add a UTF-8 header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_owned(), Some(value.as_bytes().to_vec())));
        self
    }

    /// Builder helper: set the value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Builder helper: set the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Builder helper: set the timestamp.
    pub fn with_timestamp(mut self, ts_ms: i64) -> Self {
        self.timestamp_ms = Some(ts_ms);
        self
    }
}

/// Whether a topic carries commands (name ends with `.commands`).
pub fn is_command_topic(topic: &str) -> bool {
    topic.ends_with(COMMAND_TOPIC_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup() {
        let mut r = Record::new("orders", 0, 1).with_header("ce_id", "a");
        r.headers.push(("bin".into(), Some(vec![0xff, 0xfe])));
        r.headers.push(("null".into(), None));
        assert_eq!(r.header_str("ce_id"), Some("a"));
        assert_eq!(r.header_str("bin"), None);
        assert_eq!(r.header("bin"), Some(&[0xff, 0xfe][..]));
        assert_eq!(r.header_ci("CE_ID"), HeaderValue::Str("a"));
        assert_eq!(r.header_ci("null"), HeaderValue::Null);
        assert_eq!(r.header_ci("nope"), HeaderValue::Absent);
        assert!(matches!(r.header_ci("bin"), HeaderValue::Bytes(_)));
        assert!(!r.is_command());
        assert!(Record::new("payments.commands", 0, 0).is_command());
    }
}
