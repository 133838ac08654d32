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
    pub headers: Headers,
    pub value: Option<Vec<u8>>,
}

/// A record's headers in wire order, kept in two buffers whatever their number (names back
/// to back, values back to back) where a list of owned pairs took two allocations per
/// header: a binary-mode CloudEvent carries a dozen, and the tap copies every record out of
/// librdkafka. A value may be absent (null) and need not be UTF-8.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    names: String,
    values: Vec<u8>,
    /// Per header: where its name and its value end in `names` and `values`, and whether
    /// it has a value (a null one ends where the header before it ended).
    ends: Vec<(usize, usize, bool)>,
}

impl Headers {
    /// Room for `n` headers whose names take `names` bytes and values `values` bytes.
    pub fn with_capacity(n: usize, names: usize, values: usize) -> Self {
        Headers {
            names: String::with_capacity(names),
            values: Vec::with_capacity(values),
            ends: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, name: &str, value: Option<&[u8]>) {
        self.names.push_str(name);
        if let Some(v) = value {
            self.values.extend_from_slice(v);
        }
        self.ends
            .push((self.names.len(), self.values.len(), value.is_some()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Names and values, in wire order.
    pub fn iter(&self) -> HeadersIter<'_> {
        HeadersIter {
            headers: self,
            next: 0,
        }
    }

    fn at(&self, i: usize) -> (&str, Option<&[u8]>) {
        let (name_from, value_from) = match i.checked_sub(1).and_then(|p| self.ends.get(p)) {
            Some(&(n, v, _)) => (n, v),
            None => (0, 0),
        };
        let (name_to, value_to, has_value) = self.ends.get(i).copied().unwrap_or_default();
        let name = self.names.get(name_from..name_to).unwrap_or("");
        let value = has_value.then(|| self.values.get(value_from..value_to).unwrap_or(&[]));
        (name, value)
    }

    /// Bytes of the names and values together.
    pub fn bytes(&self) -> usize {
        self.names.len() + self.values.len()
    }

    /// Keep the headers for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, Option<&[u8]>) -> bool) {
        *self = self.iter().filter(|(n, v)| keep(n, *v)).collect();
    }

    /// Give the first header called `name` the value `value` (the others as they were);
    /// false if there is none.
    pub fn set(&mut self, name: &str, value: Option<&[u8]>) -> bool {
        let Some(at) = self.iter().position(|(n, _)| n == name) else {
            return false;
        };
        *self = self
            .iter()
            .enumerate()
            .map(|(i, (n, v))| (n, if i == at { value } else { v }))
            .collect();
        true
    }
}

/// [`Headers::iter`].
#[derive(Clone)]
pub struct HeadersIter<'a> {
    headers: &'a Headers,
    next: usize,
}

impl<'a> Iterator for HeadersIter<'a> {
    type Item = (&'a str, Option<&'a [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        (self.next < self.headers.len()).then(|| {
            self.next += 1;
            self.headers.at(self.next - 1)
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.headers.len() - self.next.min(self.headers.len());
        (n, Some(n))
    }
}

impl ExactSizeIterator for HeadersIter<'_> {}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, Option<&'a [u8]>);
    type IntoIter = HeadersIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl From<Vec<(String, Option<Vec<u8>>)>> for Headers {
    fn from(pairs: Vec<(String, Option<Vec<u8>>)>) -> Self {
        pairs.into_iter().collect()
    }
}

impl<'a> FromIterator<(&'a str, Option<&'a [u8]>)> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>>(it: I) -> Self {
        let mut h = Headers::default();
        for (n, v) in it {
            h.push(n, v);
        }
        h
    }
}

impl FromIterator<(String, Option<Vec<u8>>)> for Headers {
    fn from_iter<I: IntoIterator<Item = (String, Option<Vec<u8>>)>>(it: I) -> Self {
        let mut h = Headers::default();
        for (n, v) in it {
            h.push(&n, v.as_deref());
        }
        h
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(n, v)| (n, v.map(String::from_utf8_lossy))),
            )
            .finish()
    }
}

/// Serialised as the list of `(name, value)` pairs it replaced (a value as a list of bytes).
impl serde::Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Bytes<'a>(&'a [u8]);
        impl serde::Serialize for Bytes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0)
            }
        }
        s.collect_seq(self.iter().map(|(n, v)| (n, v.map(Bytes))))
    }
}

impl<'de> serde::Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(String, Option<Vec<u8>>)>::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
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
            headers: Headers::default(),
            value: None,
        }
    }

    /// Bytes of the first header called `name` (exact match). `None` if absent or null.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v)
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
            + self.headers.bytes()
    }

    /// Builder helper: add a UTF-8 header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, Some(value.as_bytes()));
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
        r.headers.push("bin", Some(&[0xff, 0xfe]));
        r.headers.push("null", None);
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

    /// Headers keep wire order, nulls, empty values and repeated names, are edited in
    /// place, and serialise as the list of pairs they replaced.
    #[test]
    fn headers_in_two_buffers() {
        let pairs: Vec<(String, Option<Vec<u8>>)> = vec![
            ("ce_id".into(), Some(b"a".to_vec())),
            ("null".into(), None),
            ("".into(), Some(Vec::new())),
            ("bin".into(), Some(vec![0xff, 0x00])),
            ("ce_id".into(), Some(b"second".to_vec())),
            ("null".into(), None),
        ];
        let mut h: Headers = pairs.clone().into();
        let got: Vec<(String, Option<Vec<u8>>)> = h
            .iter()
            .map(|(n, v)| (n.to_owned(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(got, pairs);
        assert_eq!((h.len(), h.iter().len(), h.bytes()), (6, 6, 21 + 9));
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            serde_json::to_string(&pairs).unwrap()
        );
        let back: Headers = serde_json::from_str(&serde_json::to_string(&pairs).unwrap()).unwrap();
        assert_eq!(back, h);
        assert!(h.set("ce_id", None));
        assert!(!h.set("nope", None));
        assert_eq!(h.iter().next(), Some(("ce_id", None)));
        assert_eq!(h.iter().nth(4), Some(("ce_id", Some(&b"second"[..]))));
        h.retain(|n, _| n != "null");
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["ce_id", "", "bin", "ce_id"]);
        assert_eq!(h.iter().nth(2), Some(("bin", Some(&[0xff, 0x00][..]))));
        assert!(Headers::default().iter().next().is_none());
    }
}
