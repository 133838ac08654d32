//! `inspect --filter` and `import --filter`: a jq filter over a mixed stream written by
//! kcat to `eventscope broker` lists only the matching records; a bad expression exits 2
//! with the parser's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::broker::{kcat_produce, Broker, BIN};

/// (key, topic) of the report's matching records (as in a JSONL export).
fn keys_and_topics(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report["filter"]["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| (r["key"]["utf8"].to_string(), r["topic"].to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn filter_lists_only_matching_records_and_bad_expressions_exit_2() {
    let broker = Broker::start();
    let addr = broker.addr.as_str();
    let ce = [("content-type", "application/cloudevents+json")];
    for (i, amount) in [50, 150, 250].iter().enumerate() {
        kcat_produce(
            addr,
            "payments",
            &format!("pay-{i}"),
            &ce,
            &format!(
                r#"{{"specversion":"1.0","id":"p-{i}","type":"PaymentTaken","source":"/pay","data":{{"amount":{amount},"customer":"c-{i}"}}}}"#
            ),
        );
    }
    // Other shapes on another topic: binary mode without `data`, plain text.
    kcat_produce(
        addr,
        "audit",
        "a-1",
        &[
            ("ce_specversion", "1.0"),
            ("ce_id", "a-1"),
            ("ce_type", "Audited"),
            ("ce_source", "/audit"),
        ],
        r#"{"amount":999}"#,
    );
    kcat_produce(addr, "audit", "a-2", &[], "not json at all");

    let dir = tempfile::tempdir().expect("dir");
    let report_path = dir.path().join("report.json");
    let export_path = dir.path().join("session.jsonl");
    let out = Command::new(BIN)
        .args(["inspect", "--brokers", addr, "--topics", "payments,audit"])
        .args(["--filter", ".data.amount > 100", "--report"])
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
    assert_eq!(report["filter"]["observed"], 5, "{report}");
    assert_eq!(report["filter"]["matched"], 2, "{report}");
    assert_eq!(
        keys_and_topics(&report),
        vec![
            ("\"pay-1\"".to_owned(), "\"payments\"".to_owned()),
            ("\"pay-2\"".to_owned(), "\"payments\"".to_owned())
        ]
    );
    assert_eq!(
        report["events"]["observed"], 5,
        "the model still sees everything"
    );

    // Key and headers are variables; the same filter works on the recording.
    let out = Command::new(BIN)
        .arg("import")
        .arg(&export_path)
        .args([
            "--filter",
            r#"$key == "a-2" or $headers.ce_type == "Audited""#,
        ])
        .output()
        .expect("import runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(again["filter"]["matched"], 2, "{again}");

    // A bad expression: exit 2, the parser's message, nothing read.
    let out = Command::new(BIN)
        .args(["inspect", "--brokers", addr, "--filter", ".data.amount >"])
        .output()
        .expect("inspect runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--filter: expected"), "{err}");
    let out = Command::new(BIN)
        .arg("import")
        .arg(&export_path)
        .args(["--filter", ".data | nosuchfn"])
        .output()
        .expect("import runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("undefined filter nosuchfn"), "{err}");
}
