//! Interop: records written by the `kcat` command-line client (librdkafka, not
//! our code) to an `eventscope broker` — CloudEvents structured mode and the
//! Debezium outbox-router shape — are decoded by `eventscope inspect`, linked
//! into chains, exported as JSON Lines and rebuilt by `eventscope import`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_eventscope");

/// The standalone broker, killed on drop.
struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start() -> Broker {
        let mut child = Command::new(BIN)
            .args(["broker", "--port", "0", "--partitions", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start eventscope broker");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("bootstrap address");
        let addr = line.trim().to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "printed {addr:?}");
        Broker { child, addr }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kcat_available() -> bool {
    Command::new("kcat").arg("-V").output().is_ok()
}

/// Produce one record with kcat: key, headers, value.
fn kcat_produce(addr: &str, topic: &str, key: &str, headers: &[(&str, &str)], value: &str) {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", addr, "-t", topic, "-P", "-k", key]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}={v}")]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs (Debian package kcat)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{value}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("kcat");
    assert!(
        out.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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
