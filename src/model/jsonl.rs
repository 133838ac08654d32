//! Recorded sessions as JSON Lines: one record per line.
//!
//! ```text
//! {"topic":"orders","partition":0,"offset":42,"timestamp_ms":1767225600000,
//!  "key":{"utf8":"order-1"},
//!  "headers":[{"key":"ce_id","value":{"utf8":"…"}},{"key":"x-null","value":null}],
//!  "value":{"json":{"orderId":"order-1","total":42}}}
//! ```
//!
//! Byte fields (`key`, header `value`, `value`) are `null` when absent, else exactly one of:
//! - `{"json": …}`: the bytes are a JSON object or array; embedded verbatim (byte-exact: only
//!   used when the text has no line breaks and no surrounding whitespace);
//! - `{"utf8": "…"}`: any other UTF-8 text;
//! - `{"base64": "…"}`: anything else (standard alphabet, with padding).
//!
//! Importing gives back records identical to the exported ones. Blank lines are skipped.

use std::io::{BufRead, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::record::Record;

/// Encoded bytes (see the module docs).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Bytes {
    Json(Box<RawValue>),
    Utf8(String),
    Base64(String),
}

impl Bytes {
    pub fn encode(b: &[u8]) -> Bytes {
        match std::str::from_utf8(b) {
            Ok(s) => {
                let structured =
                    matches!(s.as_bytes().first(), Some(b'{' | b'[')) && !s.contains(['\n', '\r']);
                if structured {
                    if let Ok(raw) = serde_json::from_str::<Box<RawValue>>(s) {
                        if raw.get() == s {
                            return Bytes::Json(raw);
                        }
                    }
                }
                Bytes::Utf8(s.to_owned())
            }
            Err(_) => Bytes::Base64(base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }

    pub fn decode(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Bytes::Json(raw) => Ok(raw.get().as_bytes().to_vec()),
            Bytes::Utf8(s) => Ok(s.as_bytes().to_vec()),
            Bytes::Base64(s) => base64::engine::general_purpose::STANDARD.decode(s),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlHeader {
    key: String,
    value: Option<Bytes>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JsonlRecord {
    topic: String,
    partition: i32,
    offset: i64,
    #[serde(default)]
    timestamp_ms: Option<i64>,
    #[serde(default)]
    key: Option<Bytes>,
    #[serde(default)]
    headers: Vec<JsonlHeader>,
    #[serde(default)]
    value: Option<Bytes>,
}

/// A line that could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: cannot read: {source}")]
    Io {
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: malformed record: {message}")]
    Malformed { line: usize, message: String },
}

impl ImportError {
    /// 1-based line number.
    pub fn line(&self) -> usize {
        match self {
            ImportError::Io { line, .. } | ImportError::Malformed { line, .. } => *line,
        }
    }
}

/// One record as one JSON line (without the trailing newline).
pub fn to_line(rec: &Record) -> Result<String, serde_json::Error> {
    let j = JsonlRecord {
        topic: rec.topic.clone(),
        partition: rec.partition,
        offset: rec.offset,
        timestamp_ms: rec.timestamp_ms,
        key: rec.key.as_deref().map(Bytes::encode),
        headers: rec
            .headers
            .iter()
            .map(|(k, v)| JsonlHeader {
                key: k.to_owned(),
                value: v.map(Bytes::encode),
            })
            .collect(),
        value: rec.value.as_deref().map(Bytes::encode),
    };
    serde_json::to_string(&j)
}

/// Parse one line (`line_no` is 1-based, for the error).
pub fn from_line(line: &str, line_no: usize) -> Result<Record, ImportError> {
    let bad = |message: String| ImportError::Malformed {
        line: line_no,
        message,
    };
    let j: JsonlRecord = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let dec = |b: Option<Bytes>, what: &str| -> Result<Option<Vec<u8>>, ImportError> {
        b.map(|b| b.decode())
            .transpose()
            .map_err(|e| bad(format!("{what}: invalid base64: {e}")))
    };
    let mut headers = crate::model::record::Headers::default();
    for h in j.headers {
        let what = format!("header `{}`", h.key);
        headers.push(&h.key, dec(h.value, &what)?.as_deref());
    }
    Ok(Record {
        topic: j.topic,
        partition: j.partition,
        offset: j.offset,
        timestamp_ms: j.timestamp_ms,
        key: dec(j.key, "key")?,
        headers,
        value: dec(j.value, "value")?,
    })
}

/// Write records as JSON Lines.
pub fn write<'a, W: Write>(
    records: impl IntoIterator<Item = &'a Record>,
    mut w: W,
) -> std::io::Result<()> {
    for r in records {
        let line = to_line(r).map_err(std::io::Error::other)?;
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Read JSON Lines lazily; each item is a record or the error of that line. A bad line (not
/// UTF-8, not a record, cut short) is the error of that line and reading goes on with the
/// next one; an I/O error is the last item.
pub fn read<R: BufRead>(r: R) -> impl Iterator<Item = Result<Record, ImportError>> {
    read_numbered(r).map(|(_, item)| item)
}

/// As [`read`], each item with its 1-based line number.
pub fn read_numbered<R: BufRead>(
    r: R,
) -> impl Iterator<Item = (usize, Result<Record, ImportError>)> {
    Lines {
        r,
        line: 0,
        done: false,
        buf: Vec::new(),
    }
}

struct Lines<R> {
    r: R,
    line: usize,
    done: bool,
    buf: Vec<u8>,
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = (usize, Result<Record, ImportError>);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            self.line += 1;
            let line = self.line;
            match self.r.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    let mut bytes = self.buf.as_slice();
                    bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                    bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
                    let text = match std::str::from_utf8(bytes) {
                        Ok(t) => t,
                        Err(e) => {
                            let message = format!(
                                "not UTF-8 text (bad byte at column {})",
                                e.valid_up_to() + 1
                            );
                            return Some((line, Err(ImportError::Malformed { line, message })));
                        }
                    };
                    if !text.trim().is_empty() {
                        return Some((line, from_line(text, line)));
                    }
                }
                Err(source) => {
                    self.done = true;
                    return Some((line, Err(ImportError::Io { line, source })));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Record> {
        let mut r1 = Record::new("orders", 2, 42)
            .with_timestamp(1_767_225_600_000)
            .with_key("order-1")
            .with_header("ce_id", "e-1")
            .with_header("ce_aggregateversion", "3")
            .with_value(br#"{"orderId":"order-1","z":1,"a":[1,2.50,"x"]}"#.to_vec());
        r1.headers.push("x-null", None);
        r1.headers.push("x-bin", Some(&[0xff, 0x00, 0x80]));
        r1.headers.push("x-json", Some(b"[1, 2]"));
        let r2 = Record::new("dlq", 0, 0).with_value(vec![0xde, 0xad, 0xbe, 0xef]);
        let r3 = Record::new("t", -1, -1)
            .with_key(vec![0u8, 159, 146, 150])
            .with_value(b"{\n  \"pretty\": true\n}".to_vec());
        let r4 = Record::new("t", 0, 1).with_value(b" {\"ws\":1} ".to_vec());
        let r5 = Record::new("t", 0, 2).with_value(b"\"a json string\"".to_vec());
        let r6 = Record::new("t", 0, 3).with_value(Vec::new());
        let r7 = Record::new("t", 0, 4).with_value(b"{\"unicode\":\"\\u00e9\xc3\xa9\"}".to_vec());
        vec![r1, r2, r3, r4, r5, r6, r7]
    }

    #[test]
    fn round_trip() {
        let recs = sample();
        let mut buf = Vec::new();
        write(&recs, &mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), recs.len());
        assert!(text
            .lines()
            .next()
            .unwrap()
            .contains(r#""value":{"json":{"orderId":"order-1","z":1,"a":[1,2.50,"x"]}}"#));
        assert!(text.contains(r#"{"key":"x-null","value":null}"#));
        assert!(text.contains(r#""base64":"/wCA""#));
        let back: Vec<Record> = read(&buf[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, recs);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let good = to_line(&sample()[1]).unwrap();
        let input = format!(
            "{good}\n\n{{\"topic\":\"t\",\"partition\":0}}\n{{\"topic\":\"t\",\"partition\":0,\"offset\":1,\"value\":{{\"base64\":\"!!\"}}}}\n{{\"topic\":\"t\",\"partition\":0,\"offset\":1,\"value\":{{\"hex\":\"00\"}}}}\nnot json\n{good}"
        );
        let res: Vec<_> = read(input.as_bytes()).collect();
        assert_eq!(res.len(), 6);
        assert!(res[0].is_ok() && res[5].is_ok());
        let lines: Vec<usize> = res
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(ImportError::line)
            .collect();
        assert_eq!(lines, [3, 4, 5, 6]);
        let msg = res[2].as_ref().unwrap_err().to_string();
        assert!(
            msg.starts_with("line 4:") && msg.contains("base64"),
            "{msg}"
        );
        let mut invalid_utf8 = b"{\"topic\":\"\xff\"}\r\n".to_vec();
        invalid_utf8.extend_from_slice(good.as_bytes());
        invalid_utf8.extend_from_slice(b"\r\n");
        invalid_utf8.extend_from_slice(&good.as_bytes()[..good.len() / 2]);
        let res: Vec<_> = read_numbered(&invalid_utf8[..]).collect();
        assert_eq!(res.len(), 3);
        assert!(
            matches!(&res[0], (1, Err(ImportError::Malformed { line: 1, message })) if message.contains("not UTF-8") && message.contains("column 11")),
            "{:?}",
            res[0]
        );
        assert!(
            matches!(&res[1], (2, Ok(_))),
            "the line after a bad one is read"
        );
        let cut = res[2].1.as_ref().unwrap_err().to_string();
        assert!(cut.starts_with("line 3:") && cut.contains("EOF"), "{cut}");
    }

    proptest! {
        #[test]
        fn arbitrary_records_round_trip(
            topic in ".{0,12}",
            partition in any::<i32>(),
            offset in any::<i64>(),
            ts in proptest::option::of(any::<i64>()),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            headers in proptest::collection::vec((".{0,8}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20))), 0..5),
            value in proptest::option::of(prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                "[{}\\[\\]\",:0-9a-z ]{0,40}".prop_map(String::into_bytes),
            ]),
        ) {
            let rec = Record { topic, partition, offset, timestamp_ms: ts, key, headers: headers.into(), value };
            let line = to_line(&rec).unwrap();
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(from_line(&line, 1).unwrap(), rec);
        }
    }
}
