//! Helpers the envelope formats share: media types, JSON scalars and paths, W3C trace context,
//! RFC 3339 times.

use std::hash::Hasher;

use serde_json::Value;

use super::{DecodeError, ObservedEvent};
use crate::model::log::FxHasher;

/// The media type of a content type, parameters and spaces cut (`Application/JSON;
/// charset=utf-8` → `Application/JSON`): compare it with [`str::eq_ignore_ascii_case`] or
/// [`starts_with_ci`].
pub(super) fn media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// `s` starts with `prefix`, ASCII case ignored.
pub(super) fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

pub(super) fn is_json_media(ct: Option<&str>) -> bool {
    match ct {
        None => true,
        Some(ct) => {
            let m = media_type(ct);
            m.eq_ignore_ascii_case("application/json")
                || m.eq_ignore_ascii_case("text/json")
                || (m.len() >= 5 && m.as_bytes()[m.len() - 5..].eq_ignore_ascii_case(b"+json"))
        }
    }
}

pub(super) fn parse_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::InvalidJson(e.to_string()))
}

/// The same checks as [`parse_json`] without building the tree: strings are unescaped
/// (a lone surrogate `\ud800` is an error) and numbers read (`1e999` is out of range), as
/// `serde::de::IgnoredAny` would not (found by fuzzing: the envelope-only decode accepted
/// what the full decode refused).
pub(super) fn validate_json(bytes: &[u8]) -> Result<(), DecodeError> {
    serde_json::from_slice::<Validated>(bytes)
        .map(|_| ())
        .map_err(|e| DecodeError::InvalidJson(e.to_string()))
}

/// Any JSON, read fully and kept nowhere.
struct Validated;

impl<'de> serde::Deserialize<'de> for Validated {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValidatedVisitor)
    }
}

struct ValidatedVisitor;

impl<'de> serde::de::Visitor<'de> for ValidatedVisitor {
    type Value = Validated;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_str<E>(self, _: &str) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_unit<E>(self) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Validated, A::Error> {
        while a.next_element::<Validated>()?.is_some() {}
        Ok(Validated)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Validated, A::Error> {
        while a.next_entry::<Validated, Validated>()?.is_some() {}
        Ok(Validated)
    }
}

/// Parse an integer version/sequence, from a header string.
pub(super) fn parse_int_header(name: &str, s: &str) -> Result<i64, DecodeError> {
    s.trim()
        .parse::<i64>()
        .map_err(|e| DecodeError::InvalidHeader {
            name: name.to_owned(),
            reason: format!("`{s}` is not an integer: {e}"),
        })
}

/// Look up a dot path (`a.b.0.c`) in a JSON value. The empty path is the value itself.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(o) => o.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

pub(super) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn scalar_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty()).map(str::to_owned)
}

/// Strip one level of JSON string quoting (`"abc"` → `abc`), as Debezium may write headers.
pub(super) fn unquote(s: &str) -> String {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::String(inner)) => inner,
        _ => s.to_owned(),
    }
}

pub(super) fn set_trace(ev: &mut ObservedEvent, traceparent: Option<&str>) {
    if let Some(tp) = traceparent.filter(|s| !s.trim().is_empty()) {
        ev.traceparent = Some(tp.to_owned());
        ev.trace_id = trace_id_of(tp).map(str::to_owned);
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well-formed.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2)
    {
        Some(trace)
    } else {
        None
    }
}

/// Parse an RFC 3339 timestamp (`2026-11-05T10:20:30.123Z`, `...+01:00`) to epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    // Fixed-width fields of ASCII digits (at most 4: no overflow).
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r).filter(|p| !p.is_empty())?;
        part.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How deep a payload's structural fingerprint looks: the keys and kinds of the top level,
/// of nested objects and of the first element of arrays, three levels down (the schema-drift
/// lint's field list looks two).
pub(super) const SHAPE_DEPTH: u8 = 3;

/// [`validate_json`] and the value's structural fingerprint ([`shape_of`]) in the same pass:
/// the keys and JSON kinds, hashed while serde_json scans the bytes; no tree is built.
pub(super) fn validate_json_shape(bytes: &[u8]) -> Result<u64, DecodeError> {
    use serde::de::DeserializeSeed;
    let mut h = FxHasher::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Shape {
        h: &mut h,
        depth: SHAPE_DEPTH,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    Ok(h.finish())
}

/// The structural fingerprint of a parsed value: equal fingerprints, equal field lists (keys
/// and JSON kinds down to [`SHAPE_DEPTH`]). Key order counts, so the same shape written in
/// another order has another fingerprint; that costs its reader one more look, never a
/// wrong verdict.
pub(super) fn shape_of(v: &Value) -> u64 {
    fn walk(v: &Value, depth: u8, h: &mut FxHasher) {
        match v {
            Value::Null => h.write_u8(1),
            Value::Bool(_) => h.write_u8(2),
            Value::Number(_) => h.write_u8(4),
            Value::String(_) => h.write_u8(8),
            Value::Array(items) => {
                h.write_u8(16);
                if let Some(first) = items.first().filter(|_| depth > 0) {
                    walk(first, depth - 1, h);
                }
                h.write_u8(END);
            }
            Value::Object(map) => {
                h.write_u8(32);
                if depth > 0 {
                    for (k, child) in map {
                        h.write(k.as_bytes());
                        h.write_u8(KEY_END);
                        walk(child, depth - 1, h);
                    }
                }
                h.write_u8(END);
            }
        }
    }
    let mut h = FxHasher::default();
    walk(v, SHAPE_DEPTH, &mut h);
    h.finish()
}

/// Fold the declared schema into a shape fingerprint: the same shape under another
/// `dataschema` is another fingerprint. Never 0 (0 is "no fingerprint" in the log).
pub(super) fn with_dataschema(shape: u64, dataschema: Option<&str>) -> u64 {
    let mut h = FxHasher::default();
    h.write_u64(shape);
    h.write(dataschema.unwrap_or("-").as_bytes());
    h.finish() | 1
}

/// Markers that keep `{a:{b:1},c:2}` and `{a:{b:1,c:2}}` apart.
const END: u8 = 0xfe;
const KEY_END: u8 = 0xff;

/// The fingerprinting visitor of [`validate_json_shape`]: hashes like [`shape_of`] down to
/// its depth, and below it validates like [`validate_json`].
struct Shape<'h> {
    h: &'h mut FxHasher,
    depth: u8,
}

/// A key, into the hash.
struct Key<'h>(&'h mut FxHasher);

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.write(v.as_bytes());
        self.0.write_u8(KEY_END);
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Shape<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Shape<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.h.write_u8(1);
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.h.write_u8(2);
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.h.write_u8(4);
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.h.write_u8(4);
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.h.write_u8(4);
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.h.write_u8(8);
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        self.h.write_u8(16);
        if self.depth > 0 {
            a.next_element_seed(Shape {
                h: &mut *self.h,
                depth: self.depth - 1,
            })?;
        }
        while a.next_element::<Validated>()?.is_some() {}
        self.h.write_u8(END);
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        self.h.write_u8(32);
        if self.depth == 0 {
            while a.next_entry::<Validated, Validated>()?.is_some() {}
        } else {
            while a.next_key_seed(Key(&mut *self.h))?.is_some() {
                a.next_value_seed(Shape {
                    h: &mut *self.h,
                    depth: self.depth - 1,
                })?;
            }
        }
        self.h.write_u8(END);
        Ok(())
    }
}
