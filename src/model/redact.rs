//! Personal data (PII) masking: fields named like one of the profile's `pii_fields`
//! (`email`, `address`, …; a name matches when it contains one, ASCII case ignored) have
//! their scalar values replaced by [`MASK`], at any depth. The inspector shows payloads
//! masked this way by default, and exports with `--redact` write them so.
//!
//! Two forms: on a parsed [`Value`] ([`mask_value`]), and on JSON text ([`mask_json_text`]),
//! which keeps every other byte as it was and also works on text cut short (the inspector's
//! first kilobytes of a large value).

use std::borrow::Cow;

use serde_json::Value;

use super::record::Record;

/// What a masked value becomes.
pub const MASK: &str = "••••••";

/// Whether a field name is personal data: it contains one of `fields` (ASCII case ignored).
pub fn is_pii<S: AsRef<str>>(key: &str, fields: &[S]) -> bool {
    let k = key.to_ascii_lowercase();
    fields.iter().any(|w| {
        let w = w.as_ref();
        !w.is_empty() && k.contains(&w.to_ascii_lowercase())
    })
}

/// Replace the scalar values of fields named like one of `fields` with [`MASK`], recursively
/// (an object or array under such a name is searched, not replaced).
pub fn mask_value<S: AsRef<str>>(v: &Value, fields: &[S]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if is_pii(k, fields) && !v.is_object() && !v.is_array() {
                        Value::String(MASK.into())
                    } else {
                        mask_value(v, fields)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| mask_value(x, fields)).collect()),
        other => other.clone(),
    }
}

/// The end (exclusive) of the JSON string literal starting at `start` (a `"`), or `None`
/// when the text ends inside it.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Mask PII values in JSON text (see the module docs). Only the masked values change; text
/// that is not JSON is scanned the same way (string literals followed by `:` are names) and
/// usually comes back unchanged. Borrowed when nothing was masked.
pub fn mask_json_text<'a, S: AsRef<str>>(text: &'a str, fields: &[S]) -> Cow<'a, str> {
    let b = text.as_bytes();
    let mut out = String::new();
    // Bytes of `text` before `copied` are in `out` (or replaced there).
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let Some(end) = string_end(b, i) else {
            break;
        };
        let after = skip_ws(b, end);
        if b.get(after) != Some(&b':') {
            i = end;
            continue;
        }
        let raw = &text[i..end];
        let name: Cow<str> = serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .unwrap_or(Cow::Borrowed(&raw[1..raw.len() - 1]));
        let v = skip_ws(b, after + 1);
        if !is_pii(&name, fields) || v >= b.len() || matches!(b[v], b'{' | b'[') {
            i = v;
            continue;
        }
        let v_end = if b[v] == b'"' {
            string_end(b, v).unwrap_or(b.len())
        } else {
            let mut j = v;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            j
        };
        if v_end == v {
            i = v;
            continue;
        }
        out.push_str(&text[copied..v]);
        out.push('"');
        out.push_str(MASK);
        out.push('"');
        copied = v_end;
        i = v_end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The record with the PII values of its value masked, when the value is UTF-8 text
/// (JSON: CloudEvents structured or binary data, Debezium, plain JSON). Key and headers are
/// kept as they are; a value that is not text (Avro, Protobuf) is kept as it is.
pub fn redact_record<S: AsRef<str>>(rec: &Record, fields: &[S]) -> Record {
    let mut out = rec.clone();
    if let Some(text) = rec
        .value
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok())
    {
        if let Cow::Owned(masked) = mask_json_text(text, fields) {
            out.value = Some(masked.into_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DEFAULT_PII_FIELDS;
    use proptest::prelude::*;

    #[test]
    fn masks_values_recursively() {
        let v = serde_json::json!({"customer_email": "a@b", "items": [{"shipping_address": "x", "qty": 1}], "total": 3});
        let m = mask_value(&v, &DEFAULT_PII_FIELDS);
        assert_eq!(m["customer_email"], MASK);
        assert_eq!(m["items"][0]["shipping_address"], MASK);
        assert_eq!(m["items"][0]["qty"], 1);
        assert_eq!(m["total"], 3);
    }

    #[test]
    fn masks_text_in_place() {
        let fields = ["email", "phone", "address"];
        for (text, want) in [
            (
                r#"{"id":1,"email":"a@b.c","n":2}"#,
                r#"{"id":1,"email":"••••••","n":2}"#,
            ),
            (
                r#"{"Email" : "x\"y", "phone": 12345, "ok": true}"#,
                r#"{"Email" : "••••••", "phone": "••••••", "ok": true}"#,
            ),
            (
                r#"{"address":{"street":"s","zip":1},"shippingAddress":["a"],"note":"email: me"}"#,
                r#"{"address":{"street":"s","zip":1},"shippingAddress":["a"],"note":"email: me"}"#,
            ),
            (
                r#"{"data":{"emailAddress":null}}"#,
                r#"{"data":{"emailAddress":"••••••"}}"#,
            ),
            // Cut short in the middle of a masked value or a name.
            (r#"{"a":1,"email":"a@b."#, r#"{"a":1,"email":"••••••""#),
            (r#"{"a":1,"ema"#, r#"{"a":1,"ema"#),
            ("not json at all", "not json at all"),
            (r#"{"\u0065mail":"x"}"#, r#"{"\u0065mail":"••••••"}"#),
        ] {
            assert_eq!(mask_json_text(text, &fields), want, "{text}");
        }
    }

    #[test]
    fn a_redacted_record_keeps_everything_but_the_masked_values() {
        let rec = Record::new("orders", 0, 1)
            .with_key("k")
            .with_header("ce_id", "e-1")
            .with_value(br#"{"orderId":"o-1","customer":{"email":"jo@example.com","name":"Jo"},"total":42}"#.to_vec());
        let r = redact_record(&rec, &DEFAULT_PII_FIELDS);
        assert_eq!(
            r.value.as_deref(),
            Some(
                r#"{"orderId":"o-1","customer":{"email":"••••••","name":"••••••"},"total":42}"#
                    .as_bytes()
            )
        );
        assert_eq!((r.key, r.headers), (rec.key, rec.headers));
        let bin = Record::new("t", 0, 0).with_value(vec![0xff, b'"', b'e']);
        assert_eq!(redact_record(&bin, &DEFAULT_PII_FIELDS), bin);
    }

    proptest! {
        /// On any JSON, masking the text equals masking the parsed value.
        #[test]
        fn text_and_value_masking_agree(v in json_value()) {
            let text = serde_json::to_string(&v).unwrap();
            let masked = mask_json_text(&text, &DEFAULT_PII_FIELDS);
            let back: Value = serde_json::from_str(&masked).unwrap();
            prop_assert_eq!(back, mask_value(&v, &DEFAULT_PII_FIELDS));
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z@\" :,{}\\\\]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("email".to_owned()),
                        Just("Shipping_Address".to_owned()),
                        "[a-z:\" ]{0,6}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
