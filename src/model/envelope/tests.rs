use super::*;
use serde_json::json;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

pub(crate) fn ce_binary(topic: &str, id: &str, ty: &str) -> Record {
    Record::new(topic, 0, 0)
        .with_key("order-1")
        .with_header("ce_specversion", "1.0")
        .with_header("ce_id", id)
        .with_header("ce_type", ty)
        .with_header("ce_source", "/eventscope-demo/order-service")
        .with_header("ce_time", "2026-11-05T10:20:30.123Z")
        .with_header("ce_subject", "order-1")
        .with_header("ce_correlationid", "corr-1")
        .with_header("ce_causationid", "cause-1")
        .with_header("ce_aggregateversion", "3")
        .with_header("ce_traceparent", TP)
        .with_header("content-type", "application/json")
        .with_value(br#"{"orderId":"order-1","total":42}"#.to_vec())
}

#[test]
fn cloudevents_binary() {
    let ev = decode(
        &ce_binary("orders", "e1", "OrderCreated"),
        &DecodeConfig::default(),
    );
    let ev = ev.unwrap();
    assert_eq!(ev.format, EnvelopeFormat::CloudEventsBinary);
    assert_eq!(ev.event_id, "e1");
    assert_eq!(ev.event_type.as_deref(), Some("OrderCreated"));
    assert_eq!(ev.source.as_deref(), Some("/eventscope-demo/order-service"));
    assert_eq!(ev.aggregate_id.as_deref(), Some("order-1"));
    assert_eq!(ev.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(ev.causation_id.as_deref(), Some("cause-1"));
    assert_eq!(ev.aggregate_version, Some(3));
    assert_eq!(ev.order_key(), Some((VersionKind::AggregateVersion, 3)));
    assert_eq!(ev.time_ms, Some(1_793_874_030_123));
    assert_eq!(
        ev.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(ev.payload, Some(json!({"orderId":"order-1","total":42})));
}

#[test]
fn cloudevents_binary_sequence_and_key_fallback() {
    let rec = Record::new("payments", 1, 5)
        .with_key("k-9")
        .with_header("ce_specversion", "1.0")
        .with_header("ce_id", "e2")
        .with_header("ce_type", "PaymentCompleted")
        .with_header("ce_source", "/x")
        .with_header("ce_sequence", "0007");
    let ev = decode(&rec, &DecodeConfig::default()).unwrap();
    assert_eq!(ev.sequence, Some(7));
    assert_eq!(ev.aggregate_id.as_deref(), Some("k-9"));
    assert_eq!(ev.payload, None);
    assert_eq!(ev.order_key(), Some((VersionKind::Sequence, 7)));
}

#[test]
fn cloudevents_structured() {
    let v = json!({
        "specversion": "1.0", "id": "s1", "type": "OrderCreated", "source": "/kcat",
        "subject": "order-7", "correlationid": "c7", "aggregateversion": 1,
        "traceparent": TP, "time": "2026-01-01T00:00:00+01:00",
        "datacontenttype": "application/json", "data": {"a": 1}
    });
    let rec = Record::new("orders", 0, 0)
        .with_header(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )
        .with_value(serde_json::to_vec(&v).unwrap());
    let ev = decode(&rec, &DecodeConfig::default()).unwrap();
    assert_eq!(ev.format, EnvelopeFormat::CloudEventsStructured);
    assert_eq!(ev.event_id, "s1");
    assert_eq!(ev.aggregate_id.as_deref(), Some("order-7"));
    assert_eq!(ev.correlation_id.as_deref(), Some("c7"));
    assert_eq!(ev.aggregate_version, Some(1));
    assert_eq!(ev.time_ms, Some(1_767_222_000_000));
    assert!(ev.trace_id.is_some());
    assert_eq!(ev.payload, Some(json!({"a": 1})));
}

#[test]
fn debezium_outbox() {
    let inner = r#"{"orderId":"o-1","qty":2}"#;
    let value = serde_json::to_vec(&Value::String(inner.into())).unwrap();
    let rec = Record::new("outbox.event.order", 0, 3)
        .with_key(br#""o-1""#.to_vec())
        .with_header("id", "9f1c")
        .with_header("eventType", "OrderCreated")
        .with_value(value);
    let ev = decode(&rec, &DecodeConfig::default()).unwrap();
    assert_eq!(ev.format, EnvelopeFormat::DebeziumOutbox);
    assert_eq!(ev.event_id, "9f1c");
    assert_eq!(ev.event_type.as_deref(), Some("OrderCreated"));
    assert_eq!(ev.aggregate_id.as_deref(), Some("o-1"));
    assert_eq!(ev.aggregate_type.as_deref(), Some("order"));
    assert_eq!(ev.payload, Some(json!({"orderId":"o-1","qty":2})));

    // schema-wrapped payload, raw key, `type` header
    let rec = Record::new("outbox.event.order", 0, 4)
        .with_key("o-2")
        .with_header("id", "x2")
        .with_header("type", "OrderPaid")
        .with_value(br#"{"schema":{"type":"string"},"payload":"{\"a\":1}"}"#.to_vec());
    let ev = decode(&rec, &DecodeConfig::default()).unwrap();
    assert_eq!(ev.aggregate_id.as_deref(), Some("o-2"));
    assert_eq!(ev.event_type.as_deref(), Some("OrderPaid"));
    assert_eq!(ev.payload, Some(json!({"a": 1})));

    // outbox topic without id header → poison
    let rec = Record::new("outbox.event.order", 0, 5).with_value(b"{}".to_vec());
    assert_eq!(
        decode(&rec, &DecodeConfig::default()),
        Err(DecodeError::MissingHeader("id".into()))
    );
}

#[test]
fn plain_json_with_paths() {
    let cfg = DecodeConfig {
        plain: "id=meta.id,type=meta.kind,correlation=meta.trace.0,causation=,aggregate=entity,version=meta.v"
            .parse()
            .unwrap(),
        ..DecodeConfig::default()
    };
    let rec = Record::new("foreign", 2, 9).with_value(
        br#"{"meta":{"id":17,"kind":"Thing","trace":["c-1"],"v":"4"},"entity":"e-5","x":true}"#
            .to_vec(),
    );
    let ev = decode(&rec, &cfg).unwrap();
    assert_eq!(ev.format, EnvelopeFormat::PlainJson);
    assert_eq!(ev.event_id, "17");
    assert_eq!(ev.event_type.as_deref(), Some("Thing"));
    assert_eq!(ev.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(ev.causation_id, None);
    assert_eq!(ev.aggregate_id.as_deref(), Some("e-5"));
    assert_eq!(ev.aggregate_version, Some(4));
    // default paths
    let rec = Record::new("t", 0, 0).with_value(br#"{"id":"a","type":"T"}"#.to_vec());
    assert_eq!(
        decode(&rec, &DecodeConfig::default()).unwrap().event_id,
        "a"
    );
    // no id → error
    let rec = Record::new("t", 0, 0).with_value(br#"{"x":1}"#.to_vec());
    assert_eq!(
        decode(&rec, &DecodeConfig::default()),
        Err(DecodeError::MissingField("id".into()))
    );
}

#[test]
fn config_parse_errors() {
    assert!(matches!(
        "id".parse::<PlainJsonPaths>(),
        Err(ConfigError::NotKeyValue(_))
    ));
    assert!(matches!(
        "foo=a".parse::<PlainJsonPaths>(),
        Err(ConfigError::UnknownKey(_))
    ));
    assert_eq!("id=".parse::<PlainJsonPaths>(), Err(ConfigError::EmptyId));
    assert_eq!("".parse::<PlainJsonPaths>(), Ok(PlainJsonPaths::default()));
}

#[test]
fn malformed_inputs_are_errors_not_panics() {
    let cfg = DecodeConfig::default();
    // missing required CE header
    let mut r = ce_binary("orders", "e1", "OrderCreated");
    r.headers.retain(|n, _| n != "ce_type");
    assert_eq!(
        decode(&r, &cfg),
        Err(DecodeError::MissingHeader("ce_type".into()))
    );
    // null ce_id
    let mut r = ce_binary("orders", "e1", "OrderCreated");
    assert!(r.headers.set("ce_id", None));
    assert_eq!(
        decode(&r, &cfg),
        Err(DecodeError::MissingHeader("ce_id".into()))
    );
    // bad version
    let mut r = ce_binary("orders", "e1", "OrderCreated");
    assert!(r.headers.set("ce_aggregateversion", Some(b"three")));
    assert!(matches!(
        decode(&r, &cfg),
        Err(DecodeError::InvalidHeader { .. })
    ));
    // non-UTF-8 ce_ header value
    let mut r = ce_binary("orders", "e1", "OrderCreated");
    r.headers.push("ce_correlationid", Some(&[0xc3, 0x28]));
    r.headers = std::iter::once(("ce_extra", Some(&[0xff, 0xff][..])))
        .chain(r.headers.iter())
        .collect();
    assert_eq!(
        decode(&r, &cfg),
        Err(DecodeError::HeaderNotUtf8("ce_extra".into()))
    );
    // non-UTF-8 foreign header is ignored
    let mut r = ce_binary("orders", "e1", "OrderCreated");
    r.headers.push("x-bin", Some(&[0xff, 0x00, 0xfe]));
    assert!(decode(&r, &cfg).is_ok());
    // non-UTF-8 content-type
    let mut r = ce_binary("orders", "e1", "OrderCreated");
    r.headers.push("Content-Type", Some(&[0xff]));
    r.headers.retain(|n, _| n != "content-type");
    assert!(matches!(
        decode(&r, &cfg),
        Err(DecodeError::HeaderNotUtf8(_))
    ));
    // truncated JSON
    let r = ce_binary("orders", "e1", "OrderCreated").with_value(br#"{"orderId":"ord"#.to_vec());
    assert!(matches!(decode(&r, &cfg), Err(DecodeError::InvalidJson(_))));
    let r = Record::new("t", 0, 0).with_value(br#"{"id":"a","x":[1,2"#.to_vec());
    assert!(matches!(decode(&r, &cfg), Err(DecodeError::InvalidJson(_))));
    // binary garbage (plain path)
    let garbage: Vec<u8> = (0..2048u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = Record::new("t", 0, 0).with_value(garbage.clone());
    assert!(decode(&r, &cfg).is_err());
    // binary garbage in a CE binary record with text/plain is fine (no JSON payload)
    let mut r = ce_binary("orders", "e1", "OrderCreated").with_value(garbage);
    r.headers.retain(|n, _| n != "content-type");
    r.headers
        .push("content-type", Some(b"application/octet-stream"));
    assert_eq!(decode(&r, &cfg).unwrap().payload, None);
    // structured: not an object, missing id, batch mode, empty
    let s = |v: &[u8]| {
        Record::new("t", 0, 0)
            .with_header("content-type", "application/cloudevents+json")
            .with_value(v.to_vec())
    };
    assert!(matches!(
        decode(&s(b"[1]"), &cfg),
        Err(DecodeError::InvalidJson(_))
    ));
    assert_eq!(
        decode(
            &s(br#"{"specversion":"1.0","type":"T","source":"/s"}"#),
            &cfg
        ),
        Err(DecodeError::MissingField("id".into()))
    );
    assert!(matches!(
        decode(
            &s(br#"{"specversion":"1.0","id":5,"type":"T","source":"/s"}"#),
            &cfg
        ),
        Err(DecodeError::InvalidField { .. })
    ));
    assert_eq!(decode(&s(b""), &cfg), Err(DecodeError::EmptyValue));
    let mut b = s(b"[]");
    assert!(b
        .headers
        .set("content-type", Some(b"application/cloudevents-batch+json")));
    assert!(matches!(
        decode(&b, &cfg),
        Err(DecodeError::UnsupportedContentType(_))
    ));
    // deeply nested JSON hits serde_json's recursion limit, not the stack
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = Record::new("t", 0, 0).with_value(deep.into_bytes());
    assert!(matches!(decode(&r, &cfg), Err(DecodeError::InvalidJson(_))));
    // no value at all
    assert_eq!(
        decode(&Record::new("t", 0, 0), &cfg),
        Err(DecodeError::EmptyValue)
    );
}

#[test]
fn envelope_only_agrees_with_decode() {
    let cfg = DecodeConfig::default();
    let mut recs = vec![
        ce_binary("orders", "e1", "OrderCreated"),
        ce_binary("orders", "e1", "OrderCreated").with_value(b"{\"trunc".to_vec()),
        Record::new("outbox.event.o", 0, 0)
            .with_header("id", "x")
            .with_value(b"[1,".to_vec()),
        Record::new("outbox.event.o", 0, 0)
            .with_header("id", "x")
            .with_value(b"{}".to_vec()),
    ];
    recs.push(Record::new("t", 0, 0).with_value(br#"{"id":"p"}"#.to_vec()));
    for r in &recs {
        let full = decode(r, &cfg);
        let env = decode_envelope(r, &cfg);
        match (full, env) {
            (Ok(mut a), Ok(b)) => {
                if b.payload.is_none() {
                    a.payload = None;
                }
                assert_eq!(a, b);
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("{a:?} vs {b:?}"),
        }
    }
}

#[test]
fn huge_values() {
    let cfg = DecodeConfig {
        max_value_bytes: 1024 * 1024,
        ..DecodeConfig::default()
    };
    let big = format!(r#"{{"id":"h","blob":"{}"}}"#, "x".repeat(900_000));
    let r = Record::new("t", 0, 0).with_value(big.into_bytes());
    assert!(decode(&r, &cfg).is_ok());
    let r = Record::new("t", 0, 0).with_value(vec![b'x'; 2 * 1024 * 1024]);
    assert!(matches!(
        decode(&r, &cfg),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn traceparent_and_time_parsing() {
    assert_eq!(trace_id_of(TP), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(
        trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        None
    );
    assert_eq!(trace_id_of("garbage"), None);
    assert_eq!(trace_id_of("00-4bf9-00f0-01"), None);
    assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
    assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
    assert_eq!(
        parse_rfc3339_ms("2000-02-29T00:00:00.123456Z"),
        Some(951_782_400_123)
    );
    for bad in [
        "",
        "2026",
        "2026-13-01T00:00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00.Z",
        "é2026-01-01T00:00:00Z",
    ] {
        assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
    }
}

/// As the official Python SDK's Kafka binding (`cloudevents.kafka.to_structured`) writes a
/// structured event: `content-type` is the *data* content type, or absent when the event has no
/// `datacontenttype`; extensions sit next to the attributes.
#[test]
fn cloudevents_structured_by_shape() {
    let value = br#"{"type": "TransferInitiated", "source": "/bank", "correlationid": "c1", "causationid": "e0", "sequence": "2", "subject": "acct-1", "partitionkey": "acct-1", "tenant": "t-9", "priority": 3, "specversion": "1.0", "id": "8f1", "time": "2026-11-27T10:19:43.410573+00:00", "dataschema": "https://example.com/transfer.json", "data": {"amount": 5}}"#;
    for ct in [Some("application/json"), None, Some("text/plain")] {
        let mut rec = Record::new("bank", 0, 0)
            .with_key("acct-1")
            .with_value(value.to_vec());
        if let Some(ct) = ct {
            rec = rec.with_header("content-type", ct);
        }
        let ev = decode(&rec, &DecodeConfig::default()).unwrap();
        assert_eq!(ev.format, EnvelopeFormat::CloudEventsStructured, "{ct:?}");
        assert_eq!(ev.event_id, "8f1");
        assert_eq!(ev.event_type.as_deref(), Some("TransferInitiated"));
        assert_eq!(ev.correlation_id.as_deref(), Some("c1"));
        assert_eq!(ev.causation_id.as_deref(), Some("e0"));
        assert_eq!(ev.sequence, Some(2));
        assert_eq!(ev.aggregate_id.as_deref(), Some("acct-1"));
        assert_eq!(ev.time_ms, Some(1_795_774_783_410));
        assert_eq!(ev.content_type.as_deref(), ct);
        assert_eq!(
            ev.dataschema.as_deref(),
            Some("https://example.com/transfer.json")
        );
        assert_eq!(ev.extensions["tenant"], "t-9");
        assert_eq!(ev.extensions["priority"], "3");
        assert_eq!(ev.extensions["partitionkey"], "acct-1");
        assert!(!ev.extensions.contains_key("data"));
        assert_eq!(ev.payload, Some(json!({"amount": 5})));
        let env = decode_envelope(&rec, &DecodeConfig::default()).unwrap();
        assert_eq!(env.correlation_id.as_deref(), Some("c1"));
    }
    // A JSON object without the four attributes stays plain JSON.
    let rec = Record::new("t", 0, 0)
        .with_header("content-type", "application/json")
        .with_value(br#"{"id":"p1","type":"T","source":"/s"}"#.to_vec());
    assert_eq!(
        decode(&rec, &DecodeConfig::default()).unwrap().format,
        EnvelopeFormat::PlainJson
    );
    // The shape with a bad attribute is a broken CloudEvent, not plain JSON.
    let rec = Record::new("t", 0, 0)
        .with_value(br#"{"specversion":"1.0","id":7,"type":"T","source":"/s"}"#.to_vec());
    assert!(matches!(
        decode(&rec, &DecodeConfig::default()),
        Err(DecodeError::InvalidField { .. })
    ));
    // Binary-mode headers win over the shape of the value.
    let rec = ce_binary("orders", "b1", "OrderCreated")
        .with_value(br#"{"specversion":"1.0","id":"s","type":"T","source":"/s"}"#.to_vec());
    assert_eq!(
        decode(&rec, &DecodeConfig::default()).unwrap().event_id,
        "b1"
    );
}

#[test]
fn cloudevents_binary_text_data_extensions_and_missing_id() {
    let cfg = DecodeConfig::default();
    // text/plain data is fine: no JSON payload, not poison
    let mut r = ce_binary("orders", "t1", "NoteAdded")
        .with_header("ce_tenant", "t-9")
        .with_header("ce_dataschema", "urn:note")
        .with_value(b"hello, plain text".to_vec());
    r.headers.retain(|n, _| n != "content-type");
    r = r.with_header("content-type", "text/plain");
    let ev = decode(&r, &cfg).unwrap();
    assert_eq!(ev.payload, None);
    assert_eq!(ev.content_type.as_deref(), Some("text/plain"));
    assert_eq!(ev.extensions["tenant"], "t-9");
    assert_eq!(ev.dataschema.as_deref(), Some("urn:note"));
    assert!(!ev.extensions.contains_key("correlationid"));
    // ce_ headers without ce_id (or without ce_specversion) are poison
    let mut r = ce_binary("orders", "x", "OrderCreated");
    r.headers
        .retain(|n, _| n != "ce_id" && n != "ce_specversion");
    assert_eq!(
        decode(&r, &cfg),
        Err(DecodeError::MissingHeader("ce_specversion".into()))
    );
    let mut r = ce_binary("orders", "x", "OrderCreated");
    r.headers.retain(|n, _| n != "ce_id");
    assert_eq!(
        decode(&r, &cfg),
        Err(DecodeError::MissingHeader("ce_id".into()))
    );
}

#[test]
fn command_topic_globs() {
    for (g, t, yes) in [
        ("*.commands", "payments.commands", true),
        ("*.commands", "payments.events", false),
        ("*.commands", ".commands", true),
        ("bank.*.cmd", "bank.transfers.cmd", true),
        ("bank.*.cmd", "bank.cmd", false),
        ("cmd-?", "cmd-1", true),
        ("cmd-?", "cmd-12", false),
        ("*", "", true),
        ("", "", true),
        ("", "x", false),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
    ] {
        assert_eq!(glob_match(g, t), yes, "{g} vs {t}");
    }
    let cfg = DecodeConfig::default();
    assert!(cfg.is_command_topic("orders.commands"));
    assert!(!cfg.is_command_topic("orders"));
}

/// The decoder's fingerprint: the byte scan and the tree walk agree (for keys in sorted
/// order, the tree's order), nesting is told apart, values do not count, kinds and the
/// declared schema do, and bad JSON is refused as `validate_json` refuses it.
#[test]
fn shape_fingerprints() {
    use super::fields::{shape_of, validate_json, validate_json_shape};
    let bytes = br#"{"a":{"b":1},"c":[{"d":"x","e":null}],"f":true}"#;
    let tree: Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(validate_json_shape(bytes).unwrap(), shape_of(&tree));
    let shape = |b: &[u8]| validate_json_shape(b).unwrap();
    assert_ne!(
        shape(br#"{"a":{"b":1},"c":2}"#),
        shape(br#"{"a":{"b":1,"c":2}}"#)
    );
    assert_eq!(shape(br#"{"a":1,"b":"x"}"#), shape(br#"{"a":2.5,"b":"y"}"#));
    assert_ne!(shape(br#"{"a":1}"#), shape(br#"{"a":"1"}"#));
    assert_ne!(shape(br#"{"a":1}"#), shape(br#"{"b":1}"#));
    for bad in [
        &br#"{"a":"\ud800"}"#[..],
        br#"{"a":1e999}"#,
        br#"{"a":1} x"#,
        br#"{"a""#,
    ] {
        assert!(validate_json(bad).is_err());
        assert!(
            validate_json_shape(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // Deep values are still validated below the fingerprint's depth.
    assert!(validate_json_shape(br#"{"a":{"b":{"c":{"d":{"e":"\ud800"}}}}}"#).is_err());

    let ev = |schema: Option<&str>| {
        let mut r = ce_binary("orders", "e-1", "OrderCreated");
        if let Some(s) = schema {
            r = r.with_header("ce_dataschema", s);
        }
        decode_envelope(&r, &DecodeConfig::default()).unwrap().shape
    };
    assert!(ev(None).is_some());
    assert_ne!(ev(None), ev(Some("urn:OrderCreated/v2")));
    assert_eq!(
        ev(None),
        decode(
            &ce_binary("orders", "e-2", "OrderCreated"),
            &DecodeConfig::default()
        )
        .unwrap()
        .shape
    );
}

/// Structured mode is read in one pass without a tree: escaped names, repeated names (the
/// last wins), every kind of extension value, JSON text in `data` whatever the order of
/// `datacontenttype`, and bad JSON anywhere come out as a parsed tree would have them, and
/// the envelope-only decode agrees with the full one.
#[test]
fn cloudevents_structured_read_in_one_pass() {
    let cfg = DecodeConfig::default();
    let rec = |v: &str| {
        Record::new("orders", 0, 0)
            .with_key("order-k")
            .with_header("content-type", "application/cloudevents+json")
            .with_value(v.as_bytes().to_vec())
    };
    let both = |v: &str| {
        let r = rec(v);
        let full = decode(&r, &cfg);
        let env = decode_envelope(&r, &cfg);
        match (&full, env) {
            (Ok(a), Ok(b)) => {
                let mut a = a.clone();
                a.payload = None;
                assert_eq!(a, b, "{v}");
            }
            (Err(a), Err(b)) => assert_eq!(a, &b, "{v}"),
            (a, b) => panic!("{v}: {a:?} vs {b:?}"),
        }
        full
    };
    let ev = both(
        r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","id":"b",
            "corr\u0065lationid":"c-1","n":1.5,"big":18446744073709551615,"flag":true,
            "obj":{"b":1,"a":[2]},"quote":"x\"y","gone":null,"aggregateversion":"7",
            "data":"{\"x\":1}","datacontenttype":"application/json"}"#,
    )
    .unwrap();
    assert_eq!(ev.event_id, "b");
    assert_eq!(ev.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(ev.aggregate_version, Some(7));
    assert_eq!(ev.aggregate_id.as_deref(), Some("order-k"));
    let ext: Vec<(&str, &str)> = ev
        .extensions
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        ext,
        [
            ("big", "18446744073709551615"),
            ("flag", "true"),
            ("n", "1.5"),
            ("obj", r#"{"a":[2],"b":1}"#),
            ("quote", "x\"y")
        ]
    );
    // JSON text in `data` (declared JSON after it): the text parsed, no fingerprint.
    assert_eq!(ev.payload, Some(json!({"x": 1})));
    assert_eq!(ev.shape, None);
    // Not JSON text: the string kept.
    let ev =
        both(r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","data":"hi"}"#).unwrap();
    assert_eq!(ev.payload, Some(json!("hi")));
    // Text data under another media type: a string, fingerprinted as one.
    let ev = both(
        r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","datacontenttype":"text/plain","data":"{}"}"#,
    )
    .unwrap();
    assert_eq!(ev.payload, Some(json!("{}")));
    assert!(ev.shape.is_some());
    // The data's fingerprint is binary mode's for the same bytes (their key order).
    let data = r#"{"z":1,"a":{"k":[true]}}"#;
    let structured = both(&format!(
        r#"{{"specversion":"1.0","id":"a","type":"T","source":"/s","data":{data}}}"#
    ))
    .unwrap();
    let binary = decode(
        &ce_binary("orders", "a", "T").with_value(data.as_bytes().to_vec()),
        &cfg,
    )
    .unwrap();
    assert_eq!(structured.shape, binary.shape);
    assert_eq!(structured.payload, binary.payload);
    // `data: null` is a null payload with a fingerprint, as before.
    let ev =
        both(r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","data":null}"#).unwrap();
    assert_eq!(ev.payload, Some(Value::Null));
    // What a tree refuses, the one pass refuses, with the same words.
    for bad in [
        r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","data":{"a":"\ud800"}}"#,
        r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","x":"\ud800"}"#,
        r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","data":1e999}"#,
        r#"{"specversion":"1.0","id":"a","type":"T","source":"/s"} x"#,
        r#"[{"specversion":"1.0","id":"a","type":"T","source":"/s"}]"#,
        r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","aggregateversion":true}"#,
        r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","aggregateversion":3.0}"#,
        r#"{"specversion":"1.0","id":"","type":"T","source":"/s"}"#,
        r#"{"specversion":"1.0","id":"a","type":7,"source":"/s"}"#,
    ] {
        let err = both(bad).unwrap_err();
        let tree: Result<Value, _> = serde_json::from_str(bad);
        if let Err(e) = tree {
            assert_eq!(err, DecodeError::InvalidJson(e.to_string()), "{bad}");
        }
    }
    assert_eq!(
        both(r#"{"specversion":"1.0","id":"a","type":"T","source":"/s","aggregateversion":3.0}"#)
            .unwrap_err()
            .to_string(),
        DecodeError::InvalidField {
            name: "aggregateversion".into(),
            reason: "`3.0` is not an integer".into()
        }
        .to_string()
    );
}
