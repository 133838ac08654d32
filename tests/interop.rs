//! Interop: records written by the `kcat` command-line client (librdkafka, not
//! our code) to an `eventscope broker` — CloudEvents structured mode and the
//! Debezium outbox-router shape — are decoded by `eventscope inspect`, linked
//! into chains, exported as JSON Lines and rebuilt by `eventscope import`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::broker::{kcat_available, kcat_produce, Broker, BIN};

#[test]
fn kcat_records_are_decoded_and_linked_by_inspect() {
    assert!(
        kcat_available(),
        "kcat is not installed (Debian package kcat; .ci/test installs it)"
    );
    let broker = Broker::start();
    let addr = broker.addr.as_str();
    let ce = [("content-type", "application/cloudevents+json")];
    // A chain in CloudEvents structured mode: placed -> paid -> shipped.
    kcat_produce(
        addr,
        "shop.events",
        "order-1",
        &ce,
        r#"{"specversion":"1.0","id":"ce-1","type":"OrderPlaced","source":"/shop","subject":"order-1","correlationid":"corr-1","sequence":"1","data":{"total":42}}"#,
    );
    kcat_produce(
        addr,
        "shop.events",
        "order-1",
        &ce,
        r#"{"specversion":"1.0","id":"ce-2","type":"PaymentTaken","source":"/pay","subject":"order-1","correlationid":"corr-1","causationid":"ce-1","sequence":"2","data":{"amount":42}}"#,
    );
    kcat_produce(
        addr,
        "shop.events",
        "order-1",
        &ce,
        r#"{"specversion":"1.0","id":"ce-3","type":"OrderShipped","source":"/ship","subject":"order-1","correlationid":"corr-1","causationid":"ce-2","sequence":"3","data":{}}"#,
    );
    // The Debezium outbox-router shape: header id, key = aggregate id, value = payload.
    kcat_produce(
        addr,
        "outbox.event.customer",
        "cust-7",
        &[
            ("id", "dbz-1"),
            ("eventType", "CustomerRegistered"),
            ("correlationId", "corr-2"),
        ],
        r#"{"customerId":"cust-7","email":"a@example.com"}"#,
    );
    kcat_produce(
        addr,
        "outbox.event.customer",
        "cust-7",
        &[
            ("id", "dbz-2"),
            ("eventType", "CustomerVerified"),
            ("correlationId", "corr-2"),
            ("causationId", "dbz-1"),
        ],
        r#"{"customerId":"cust-7"}"#,
    );
    // And something nobody can decode: kept as a poison entry, not dropped.
    kcat_produce(addr, "shop.events", "order-1", &[], "not json at all");

    let dir = tempfile::tempdir().expect("dir");
    let report_path = dir.path().join("report.json");
    let export_path = dir.path().join("session.jsonl");
    let out = Command::new(BIN)
        .args([
            "inspect",
            "--brokers",
            addr,
            "--topics",
            "shop.events,outbox.event.customer",
            "--timeout",
            "60",
            "--report",
        ])
        .arg(&report_path)
        .arg("--export")
        .arg(&export_path)
        .output()
        .expect("inspect runs");
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    assert_eq!(report["events"]["observed"], 6, "{report}");
    assert_eq!(report["events"]["poison"], 1, "{report}");
    assert_eq!(report["anomaly_counts"]["poison-message"], 1, "{report}");
    for kind in ["broken-chain", "duplicate-delivery", "out-of-order"] {
        assert_eq!(report["anomaly_counts"][kind], 0, "{kind}: {report}");
    }

    // The exported session rebuilds the same model offline, chains linked.
    let model = eventscope::inspect::load(&export_path).expect("import");
    let log = model.log();
    assert_eq!(log.len(), 6);
    assert_eq!(log.chain("corr-1").len(), 3, "structured-mode chain");
    assert_eq!(log.chain("corr-2").len(), 2, "outbox chain");
    let child_of = |parent: &str| -> Vec<String> {
        log.children(parent)
            .iter()
            .filter_map(|&i| log.meta(i).map(|m| log.resolve(m.event_id).to_owned()))
            .collect()
    };
    assert_eq!(child_of("ce-1"), vec!["ce-2"]);
    assert_eq!(child_of("ce-2"), vec!["ce-3"]);
    assert_eq!(child_of("dbz-1"), vec!["dbz-2"]);
    assert_eq!(
        log.aggregate("cust-7").len(),
        2,
        "outbox key is the aggregate"
    );

    let out = Command::new(BIN)
        .arg("import")
        .arg(&export_path)
        .output()
        .expect("import runs");
    assert!(out.status.success());
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report json");
    assert_eq!(again["events"], report["events"]);
    assert_eq!(again["anomaly_counts"], report["anomaly_counts"]);
}

/// A foreign producer: the official CloudEvents Python SDK builds Kafka messages (its Kafka
/// binding's structured mode) and the script hands them to kcat. Argv: broker, topic.
/// `cloudevents.kafka` is the 1.x module; 2.x keeps the same binding as `cloudevents.v1.kafka`
/// and adds `cloudevents.core.bindings.kafka` (content-type `application/cloudevents+json`).
const SDK_PRODUCER: &str = r#"
import subprocess, sys
try:
    from cloudevents.kafka import to_structured
    from cloudevents.http import CloudEvent
except ImportError:
    from cloudevents.v1.kafka import to_structured
    from cloudevents.v1.http import CloudEvent

broker, topic = sys.argv[1], sys.argv[2]

def produce(msg):
    cmd = ["kcat", "-b", broker, "-t", topic, "-P"]
    if msg.key is not None:
        key = msg.key.decode() if isinstance(msg.key, bytes) else msg.key
        cmd += ["-k", key]
    for k, v in msg.headers.items():
        cmd += ["-H", k + "=" + v.decode()]
    subprocess.run(cmd, input=msg.value + b"\n", check=True)

attrs = {"type": "TransferInitiated", "source": "/bank/transfers", "id": "t-1",
         "subject": "acct-1", "partitionkey": "acct-1", "correlationid": "corr-t",
         "sequence": "1", "datacontenttype": "application/json"}
produce(to_structured(CloudEvent(attrs, {"amount": 5, "to": "acct-2"})))
attrs = {"type": "FundsReserved", "source": "/bank/ledger", "id": "t-2",
         "subject": "acct-1", "partitionkey": "acct-1", "correlationid": "corr-t",
         "causationid": "t-1", "sequence": "2", "tenant": "eu-1"}
produce(to_structured(CloudEvent(attrs, {"amount": 5})))
try:
    from cloudevents.core.v1.event import CloudEvent as CoreEvent
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.bindings.kafka import to_structured as core_structured
except ImportError:
    sys.exit(0)
attrs = {"type": "FundsMoved", "source": "/bank/ledger", "id": "t-3",
         "subject": "acct-1", "partitionkey": "acct-1", "correlationid": "corr-t",
         "causationid": "t-2", "sequence": "3"}
produce(core_structured(CoreEvent(attributes=attrs, data={"amount": 5}), JSONFormat()))
"#;

fn python_cloudevents_available() -> bool {
    Command::new("python3")
        .args(["-c", "import cloudevents"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Headers of a binary-mode CloudEvent.
fn ce(
    id: &str,
    ty: &str,
    corr: &str,
    extra: &[(&'static str, &'static str)],
) -> Vec<(String, String)> {
    let mut h = vec![
        ("ce_specversion".to_owned(), "1.0".to_owned()),
        ("ce_id".to_owned(), id.to_owned()),
        ("ce_type".to_owned(), ty.to_owned()),
        ("ce_source".to_owned(), "/kcat".to_owned()),
        ("ce_correlationid".to_owned(), corr.to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    for (k, v) in extra {
        h.retain(|(n, _)| n != k);
        h.push(((*k).to_owned(), (*v).to_owned()));
    }
    h
}

fn kcat_ce(addr: &str, topic: &str, key: &str, headers: &[(String, String)], value: &str) {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    kcat_produce(addr, topic, key, &h, value);
}

/// Issue 11's acceptance: records written by kcat and by the official CloudEvents Python SDK;
/// a one-shot `inspect` (no `--settle`) reports exactly what is wrong with them.
#[test]
fn one_shot_inspect_of_sdk_and_kcat_records_reports_exactly_what_is_wrong() {
    assert!(
        kcat_available(),
        "kcat is not installed (Debian package kcat; .ci/test installs it)"
    );
    assert!(
        python_cloudevents_available(),
        "the CloudEvents Python SDK is not installed (pip install cloudevents; .ci/test installs it)"
    );
    let broker = Broker::start();
    let addr = broker.addr.as_str();

    // SDK-structured records with correlation/causation/sequence extensions.
    let out = Command::new("python3")
        .args(["-c", SDK_PRODUCER, addr, "bank.transfers"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "SDK producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Binary mode with kcat, chained onto the SDK's events.
    let t = "bank.payments";
    let paid = ce(
        "b-1",
        "PaymentRequested",
        "corr-t",
        &[
            ("ce_causationid", "t-2"),
            ("ce_sequence", "1"),
            ("ce_subject", "pay-1"),
        ],
    );
    kcat_ce(addr, t, "pay-1", &paid, r#"{"amount":5}"#);
    // ... delivered twice (a duplicate)
    kcat_ce(addr, t, "pay-1", &paid, r#"{"amount":5}"#);
    // An out-of-order pair: sequence 2 of acct-9 written before sequence 1.
    for (id, seq) in [("o-2", "2"), ("o-1", "1")] {
        let h = ce(id, "LimitChanged", "corr-o", &[("ce_sequence", seq)]);
        kcat_ce(addr, t, "acct-9", &h, r#"{"limit":100}"#);
    }
    // A dangling causation.
    let h = ce(
        "d-1",
        "RefundIssued",
        "corr-d",
        &[("ce_causationid", "ghost-0")],
    );
    kcat_ce(addr, t, "acct-3", &h, r#"{"amount":1}"#);
    // ce_ headers but no ce_id: poison.
    kcat_produce(
        addr,
        t,
        "acct-4",
        &[
            ("ce_specversion", "1.0"),
            ("ce_type", "Broken"),
            ("ce_source", "/kcat"),
            ("ce_correlationid", "corr-x"),
        ],
        r#"{"x":1}"#,
    );
    // A valid binary CloudEvent whose data is text/plain: not poison.
    let h = ce(
        "n-1",
        "NoteAdded",
        "corr-t",
        &[("content-type", "text/plain"), ("ce_causationid", "t-1")],
    );
    kcat_ce(addr, t, "acct-1", &h, "transfer approved by a human");
    // Debezium outbox records of a system that never had correlation ids.
    for (i, ty) in [
        "CustomerRegistered",
        "CustomerVerified",
        "CustomerRegistered",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("dbz-{i}");
        kcat_produce(
            addr,
            "outbox.event.customer",
            "cust-7",
            &[("id", &id), ("eventType", ty)],
            r#"{"customerId":"cust-7"}"#,
        );
    }

    let dir = tempfile::tempdir().expect("dir");
    let report_path = dir.path().join("report.json");
    let out = Command::new(BIN)
        .args([
            "inspect",
            "--brokers",
            addr,
            "--topics",
            "bank.transfers,bank.payments,outbox.event.customer",
            "--timeout",
            "60",
            "--report",
        ])
        .arg(&report_path)
        .output()
        .expect("inspect runs");
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    let sdk_records = report["events"]["observed"].as_u64().unwrap_or(0) - 10;
    assert!((2..=3).contains(&sdk_records), "{report}");
    assert_eq!(report["events"]["poison"], 1, "{report}");
    let counts = &report["anomaly_counts"];
    let expected = [
        ("duplicate-delivery", 1),
        ("out-of-order", 1),
        ("broken-chain", 1),
        ("poison-message", 1),
        ("missing-correlation", 2),
        ("duplicate-effect", 0),
        ("stuck-saga", 0),
        ("lost-event", 0),
    ];
    for (kind, n) in expected {
        assert_eq!(counts[kind], n, "{kind}: {report}");
    }
    let anomalies = report["anomalies"].as_array().expect("anomalies");
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        anomalies.iter().filter(|a| a["kind"] == kind).collect()
    };
    assert_eq!(of("duplicate-delivery")[0]["event_id"], "b-1");
    assert_eq!(of("out-of-order")[0]["event_id"], "o-1");
    let broken = of("broken-chain");
    assert_eq!(broken[0]["event_id"], "d-1", "{report}");
    assert!(
        broken[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("ghost-0"),
        "{report}"
    );
    let poison = of("poison-message");
    assert!(
        poison[0]["detail"].as_str().unwrap_or("").contains("ce_id"),
        "{report}"
    );
    // One missing-correlation finding per topic and type, with its count.
    let mut groups: Vec<(String, u64)> = of("missing-correlation")
        .iter()
        .map(|a| {
            assert_eq!(a["topic"], "outbox.event.customer", "{a}");
            (
                a["detail"].as_str().unwrap_or("").to_owned(),
                a["group"]["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    groups.sort_by_key(|g| g.1);
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!((groups[0].1, groups[1].1), (1, 2), "{groups:?}");
    assert!(groups[1].0.contains("CustomerRegistered"), "{groups:?}");
}

/// Issue 11's acceptance for profiles: with a profile naming `TransferCompleted` as the end of
/// the `TransferInitiated` flow, a foreign chain (no command topics) idle past the timeout
/// without it is a `stuck-saga` in a one-shot `inspect`; without the profile it is not judged.
/// `--print-profile` writes the effective profile and suggests the flow from what was read.
#[test]
fn a_profile_makes_a_foreign_idle_chain_a_stuck_saga() {
    assert!(
        kcat_available(),
        "kcat is not installed (Debian package kcat; .ci/test installs it)"
    );
    let broker = Broker::start();
    let addr = broker.addr.as_str();
    let t = "bank.transfers";
    let chain = |corr: &str, steps: &[(&str, &str, Option<&str>)], key: &str| {
        for (id, ty, cause) in steps {
            let mut h = ce(id, ty, corr, &[]);
            if let Some(c) = cause {
                h.push(("ce_causationid".to_owned(), (*c).to_owned()));
            }
            kcat_ce(addr, t, key, &h, r#"{"amount":5}"#);
        }
    };
    chain(
        "corr-a",
        &[
            ("a-1", "TransferInitiated", None),
            ("a-2", "FundsReserved", Some("a-1")),
            ("a-3", "TransferCompleted", Some("a-2")),
        ],
        "acct-a",
    );
    chain(
        "corr-b",
        &[
            ("b-1", "TransferInitiated", None),
            ("b-2", "FundsReserved", Some("b-1")),
        ],
        "acct-b",
    );
    // Not a transfer: never judged.
    chain(
        "corr-c",
        &[
            ("c-1", "LimitChanged", None),
            ("c-2", "LimitChanged", Some("c-1")),
        ],
        "acct-c",
    );
    let dir = tempfile::tempdir().expect("dir");
    let profile = dir.path().join("bank.toml");
    std::fs::write(
        &profile,
        r#"
topics = ["bank.transfers"]
stuck_saga_timeout_ms = 2000

[[flows]]
name = "transfer"
start_types = ["TransferInitiated"]
terminal_types = ["TransferCompleted"]
"#,
    )
    .expect("profile");
    // corr-b's last record is now more than the timeout old.
    std::thread::sleep(std::time::Duration::from_millis(3000));

    let inspect = |extra: &[&str]| -> (serde_json::Value, String) {
        let report = dir.path().join("report.json");
        let out = Command::new(BIN)
            .args(["inspect", "--brokers", addr, "--timeout", "60"])
            .args(extra)
            .arg("--report")
            .arg(&report)
            .output()
            .expect("inspect runs");
        assert!(
            out.status.success(),
            "inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
        (json, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let profile_arg = profile.to_str().expect("utf-8 path");

    let (without, _) = inspect(&["--topics", t]);
    assert_eq!(without["anomaly_counts"]["stuck-saga"], 0, "{without}");

    let (with, _) = inspect(&["--profile", profile_arg]);
    assert_eq!(with["run"]["topics"], serde_json::json!([t]), "{with}");
    assert_eq!(with["anomaly_counts"]["stuck-saga"], 1, "{with}");
    let stuck: Vec<_> = with["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .filter(|a| a["kind"] == "stuck-saga")
        .collect();
    assert_eq!(stuck[0]["correlation_id"], "corr-b", "{with}");
    assert_eq!(stuck[0]["event_id"], "b-2", "{with}");
    for kind in ["broken-chain", "missing-correlation", "poison-message"] {
        assert_eq!(with["anomaly_counts"][kind], 0, "{kind}: {with}");
    }

    let (_, printed) = inspect(&["--profile", profile_arg, "--print-profile"]);
    assert!(
        printed.contains("stuck_saga_timeout_ms = 2000"),
        "{printed}"
    );
    assert!(printed.contains("[[flows]]"), "{printed}");
    assert!(
        printed.contains("# start_types = [\"TransferInitiated\"]")
            && printed.contains("# terminal_types = [\"TransferCompleted\""),
        "{printed}"
    );
}

/// The third pitfall on a foreign stream: kcat writes plain JSON and binary
/// CloudEvents where one event type retypes a field midway (an amount that
/// was a number becomes a string). One-shot `inspect` reports exactly one
/// `schema-drift`, at that record, naming the field; a field added later is
/// a new version, not drift.
#[test]
fn inspect_finds_the_record_where_a_foreign_type_changed_shape() {
    assert!(
        kcat_available(),
        "kcat is not installed (Debian package kcat; .ci/test installs it)"
    );
    let broker = Broker::start();
    let addr = broker.addr.as_str();
    // CloudEvents binary: PaymentReceived with a numeric amount, then a string.
    for i in 0..5 {
        let h = ce(
            &format!("p-{i}"),
            "PaymentReceived",
            &format!("corr-{i}"),
            &[],
        );
        kcat_ce(
            addr,
            "pay.events",
            "acct",
            &h,
            &format!(r#"{{"account":"a{i}","amount":{i}}}"#),
        );
    }
    let h = ce("p-5", "PaymentReceived", "corr-5", &[]);
    kcat_ce(
        addr,
        "pay.events",
        "acct",
        &h,
        r#"{"account":"a5","amount":"5.00"}"#,
    );
    let h = ce("p-6", "PaymentReceived", "corr-6", &[]);
    kcat_ce(
        addr,
        "pay.events",
        "acct",
        &h,
        r#"{"account":"a6","amount":6,"memo":"new field"}"#,
    );
    // Plain JSON: a shape that only grows.
    for i in 0..5 {
        kcat_produce(
            addr,
            "audit",
            "k",
            &[],
            &format!(r#"{{"id":"x-{i}","type":"Audit","who":"u{i}"}}"#),
        );
    }
    kcat_produce(
        addr,
        "audit",
        "k",
        &[],
        r#"{"id":"x-5","type":"Audit","who":"u5","extra":1}"#,
    );

    let dir = tempfile::tempdir().expect("dir");
    let report = dir.path().join("r.json");
    let out = Command::new(BIN)
        .args([
            "inspect",
            "--brokers",
            addr,
            "--topics",
            "pay.events,audit",
            "--timeout",
            "60",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .expect("inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(r["anomaly_counts"]["schema-drift"], 1, "{}", r["anomalies"]);
    let drift: Vec<&serde_json::Value> = r["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .filter(|a| a["kind"] == "schema-drift")
        .collect();
    assert_eq!(drift[0]["event_id"], "p-5");
    assert_eq!(drift[0]["topic"], "pay.events");
    let detail = drift[0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("'amount' was number, is string"),
        "{detail}"
    );
}
