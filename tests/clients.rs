//! Kafka clients that are not librdkafka on `eventscope broker`: kafka-python (pure
//! Python) and, when installed, aiokafka produce, consume in a consumer group and commit
//! through the proxy in front of the mock cluster; librdkafka (kcat, `inspect`) reads the
//! same records afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::broker::{Broker, BIN};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/roundtrip.py")
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run the round trip with `client`; its JSON summary and what the client logged.
fn round_trip(addr: &str, topic: &str, client: &str) -> (serde_json::Value, String) {
    let out = Command::new("python3")
        .arg(script())
        .args([addr, topic, client])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{client} round trip failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{client} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (summary, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every record consumed once, committed, not redelivered; else the summary and
/// the client's log (its group's joins and errors).
fn assert_complete((summary, log): &(serde_json::Value, String), client: &str) {
    let want: Vec<String> = (0..20).map(|i| format!("py-{i}")).collect();
    let fine = summary["consumed"] == serde_json::json!(want)
        && summary["end"] == 20
        && summary["committed"] == 20
        && summary["redelivered"] == 0;
    assert!(
        fine,
        "{client}: want every record consumed once, the end of every partition \
         committed (end 20, committed 20) and nothing redelivered to a new member; \
         got {summary}\n{client}'s log:\n{log}"
    );
}

/// What librdkafka-based readers see on `topic`: kcat's record count, inspect's report.
fn librdkafka_sees(addr: &str, topic: &str) -> (usize, serde_json::Value) {
    let out = Command::new("kcat")
        .args(["-b", addr, "-C", "-t", topic, "-o", "beginning", "-e", "-q"])
        .args(["-f", "%k %h\n"])
        .output()
        .expect("kcat runs (Debian package kcat)");
    assert!(
        out.status.success(),
        "kcat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("ce_type=OrderPlaced"))
        .count();
    let out = Command::new(BIN)
        .args([
            "inspect",
            "--brokers",
            addr,
            "--topics",
            topic,
            "--timeout",
            "30",
        ])
        .output()
        .expect("inspect runs");
    assert!(
        out.status.success(),
        "inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (lines, serde_json::from_slice(&out.stdout).expect("report"))
}

#[test]
fn kafka_python_produces_consumes_in_a_group_and_commits() {
    assert!(
        python_has("kafka"),
        "kafka-python is not installed (python3 -m pip install kafka-python; .ci/test does)"
    );
    let broker = Broker::start();
    let summary = round_trip(&broker.addr, "py.orders", "kafka-python");
    assert_complete(&summary, "kafka-python");
    let (kcat, report) = librdkafka_sees(&broker.addr, "py.orders");
    assert_eq!(kcat, 20, "kcat reads kafka-python's records");
    assert_eq!(report["events"]["observed"], 20, "{report}");
    assert_eq!(report["events"]["poison"], 0, "{report}");
}

#[test]
fn aiokafka_produces_consumes_in_a_group_and_commits() {
    if !python_has("aiokafka") {
        eprintln!("aiokafka is not installed: skipped (python3 -m pip install aiokafka)");
        return;
    }
    let broker = Broker::start();
    let summary = round_trip(&broker.addr, "aio.orders", "aiokafka");
    assert_complete(&summary, "aiokafka");
    let (kcat, _) = librdkafka_sees(&broker.addr, "aio.orders");
    assert_eq!(kcat, 20, "kcat reads aiokafka's records");
}

/// The demo's AdminClient creates its topics through the proxy (the mock alone
/// has no CreateTopics): `demo --headless --brokers` runs on `eventscope broker`.
#[test]
fn the_demo_runs_on_eventscope_broker() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("dir");
    let report = dir.path().join("report.json");
    let out = Command::new(BIN)
        .args(["demo", "--headless", "--orders", "3", "--timeout", "90"])
        .args(["--brokers", &broker.addr])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--report")
        .arg(&report)
        .output()
        .expect("demo runs");
    assert!(
        out.status.success(),
        "demo on eventscope broker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(report["orders"]["created"], 3, "{report}");
    assert_eq!(report["orders"]["stuck"], 0, "{report}");
}
