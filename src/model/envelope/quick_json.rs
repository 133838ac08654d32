//! A fast path for [`super::fields::validate_json_shape`]: one pass over the bytes of the JSON
//! this observer sees nearly always (no escapes in strings, no exponents, plain nesting),
//! taking the same fingerprint as the serde_json pass. Anything else (an escape, an exponent,
//! a long number, deep nesting, an error) it declines, and serde_json decides: it says yes only
//! to what serde_json accepts, with the same fingerprint (checked against serde_json by a
//! property test over generated and mangled JSON).

use std::hash::Hasher;

use super::fields::{END, KEY_END};
use crate::model::log::FxHasher;

/// Nesting beyond this is left to serde_json (which stops at 128).
const MAX_NEST: u32 = 64;
/// Digits of a number's integer part beyond this are left to serde_json (no overflow below).
const MAX_INT_DIGITS: usize = 18;
/// Digits of a fraction beyond this are left to serde_json.
const MAX_FRACTION_DIGITS: usize = 40;

/// The fingerprint of `bytes` hashed `depth` levels deep, if the fast path can take it; `None`
/// says nothing about the bytes (serde_json then decides).
pub(super) fn shape(bytes: &[u8], depth: u8) -> Option<u64> {
    let mut s = Scan {
        b: bytes,
        i: 0,
        h: FxHasher::default(),
    };
    s.ws();
    s.value(Some(depth), 0)?;
    s.ws();
    (s.i == bytes.len()).then(|| s.h.finish())
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    h: FxHasher,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    /// One value; `depth`: `Some(d)` hashes it with `d` levels below, `None` only checks it.
    fn value(&mut self, depth: Option<u8>, nest: u32) -> Option<()> {
        let kind = match self.peek()? {
            b'n' => self.word(b"null", 1)?,
            b't' => self.word(b"true", 2)?,
            b'f' => self.word(b"false", 2)?,
            b'"' => {
                self.string()?;
                8
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
                4
            }
            b'[' => return self.array(depth, nest + 1),
            b'{' => return self.object(depth, nest + 1),
            _ => return None,
        };
        if depth.is_some() {
            self.h.write_u8(kind);
        }
        Some(())
    }

    fn word(&mut self, w: &[u8], kind: u8) -> Option<u8> {
        let end = self.i + w.len();
        (self.b.get(self.i..end)? == w).then(|| {
            self.i = end;
            kind
        })
    }

    /// A string without escapes or control characters, valid UTF-8; its bytes.
    fn string(&mut self) -> Option<&'a [u8]> {
        let b: &'a [u8] = self.b;
        self.i += 1;
        let start = self.i;
        let mut ascii = true;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                c => {
                    ascii &= c < 0x80;
                    self.i += 1;
                }
            }
        }
        let s = b.get(start..self.i)?;
        self.i += 1;
        if !ascii {
            std::str::from_utf8(s).ok()?;
        }
        Some(s)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, short enough that it cannot overflow.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = |s: &mut Self| {
            let start = s.i;
            while matches!(s.peek(), Some(b'0'..=b'9')) {
                s.i += 1;
            }
            s.i - start
        };
        let first = self.peek()?;
        let n = digits(self);
        if n == 0 || n > MAX_INT_DIGITS || (first == b'0' && n > 1) {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let f = digits(self);
            if f == 0 || f > MAX_FRACTION_DIGITS {
                return None;
            }
        }
        match self.peek() {
            Some(b'e' | b'E') => None,
            _ => Some(()),
        }
    }

    fn array(&mut self, depth: Option<u8>, nest: u32) -> Option<()> {
        if nest > MAX_NEST {
            return None;
        }
        self.i += 1;
        if depth.is_some() {
            self.h.write_u8(16);
        }
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
        } else {
            // The first element is hashed one level down; the others only checked.
            let mut d = depth.and_then(|d| d.checked_sub(1));
            loop {
                self.value(d.take(), nest)?;
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        self.ws();
                    }
                    b']' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if depth.is_some() {
            self.h.write_u8(END);
        }
        Some(())
    }

    fn object(&mut self, depth: Option<u8>, nest: u32) -> Option<()> {
        if nest > MAX_NEST {
            return None;
        }
        self.i += 1;
        if depth.is_some() {
            self.h.write_u8(32);
        }
        // Keys and values are hashed only above depth 0.
        let below = depth.and_then(|d| d.checked_sub(1));
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.string()?;
                if below.is_some() {
                    self.h.write(key);
                    self.h.write_u8(KEY_END);
                }
                self.ws();
                if self.peek()? != b':' {
                    return None;
                }
                self.i += 1;
                self.ws();
                self.value(below, nest)?;
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        self.ws();
                    }
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if depth.is_some() {
            self.h.write_u8(END);
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::{serde_shape, SHAPE_DEPTH};
    use super::shape;
    use proptest::prelude::*;

    /// What the fast path takes, serde_json takes with the same fingerprint.
    fn agrees(b: &[u8]) -> Result<bool, TestCaseError> {
        match shape(b, SHAPE_DEPTH) {
            Some(h) => {
                prop_assert_eq!(
                    serde_shape(b).ok(),
                    Some(h),
                    "{}",
                    String::from_utf8_lossy(b)
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }

    #[test]
    fn the_usual_json_takes_the_fast_path_and_the_rest_declines() {
        for ok in [
            &br#"{"a":{"b":1},"c":[{"d":"x","e":null}],"f":true}"#[..],
            " [ 1 , -0.5 , \"\u{e9}t\u{e9}\" , false , { } , [ ] ] ".as_bytes(),
            "{\"caf\u{e9}\":\"\u{1f600}\",\"n\":-12345678901234567.25}".as_bytes(),
            br#"{"a":{"b":{"c":{"d":{"e":[1,[2,[3]]]}}}}}"#,
            b"0",
        ] {
            assert!(agrees(ok).unwrap(), "{}", String::from_utf8_lossy(ok));
        }
        for declined in [
            &br#"{"a":"\n"}"#[..],
            br#"{"a":1e3}"#,
            br#"{"a":01}"#,
            br#"{"a":1.}"#,
            br#"{"a":-}"#,
            br#"{"a":1,}"#,
            br#"[1,]"#,
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\xff\"}",
            br#"{"a":1} x"#,
            br#"{"a""#,
            b"",
            br#"nul"#,
            br#"1234567890123456789"#,
        ] {
            assert_eq!(
                shape(declined, SHAPE_DEPTH),
                None,
                "{}",
                String::from_utf8_lossy(declined)
            );
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(shape(deep.as_bytes(), SHAPE_DEPTH), None);
    }

    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            "-?[0-9]{1,22}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{1,3})?",
            "\"([a-z\u{e9}\u{1f600} ]|\\\\[nt\"\\\\/u]|\\\\u[0-9a-fA-F]{4}){0,8}\"",
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            let ws = "[ \t\r\n]{0,2}";
            prop_oneof![
                (proptest::collection::vec(inner.clone(), 0..6), ws)
                    .prop_map(|(v, w)| format!("[{w}{}{w}]", v.join(","))),
                (
                    proptest::collection::vec(("[a-z_\u{e9}]{0,6}", inner), 0..6),
                    ws
                )
                    .prop_map(|(kv, w)| {
                        let kv: Vec<String> = kv
                            .iter()
                            .map(|(k, v)| format!("\"{k}\"{w}:{w}{v}"))
                            .collect();
                        format!("{{{w}{}{w}}}", kv.join(","))
                    }),
            ]
        })
    }

    proptest! {
        /// Generated JSON, and the same mangled (a byte changed, cut short), never makes the
        /// fast path disagree with serde_json.
        #[test]
        fn the_fast_path_agrees_with_serde_json(
            text in json_text(),
            at in any::<usize>(),
            byte in any::<u8>(),
            how in 0..3u8,
        ) {
            let mut b = text.into_bytes();
            agrees(&b)?;
            if !b.is_empty() {
                let i = at % b.len();
                match how {
                    0 => b[i] = byte,
                    1 => b.truncate(i),
                    _ => b.insert(i, byte),
                }
                agrees(&b)?;
            }
        }
    }
}
