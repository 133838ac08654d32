//! The binary: flags, the standalone broker, clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const BIN: &str = env!("CARGO_BIN_EXE_eventscope");

#[test]
fn unknown_fault_is_one_clear_line_and_exit_2() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--headless",
            "--orders",
            "1",
            "--faults",
            "nonsense=1",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown fault 'nonsense'"), "{err}");
    let out = Command::new(BIN)
        .args(["demo", "--headless", "--orders", "lots"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unreachable_broker_fails_fast_with_a_message() {
    let dir = tempfile::tempdir().expect("dir");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args([
            "demo",
            "--headless",
            "--orders",
            "1",
            "--brokers",
            "127.0.0.1:1",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_database_url_fails_with_a_message() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--headless",
            "--orders",
            "1",
            "--database",
            "mysql://u:pw@h/db",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
    assert!(!err.contains(":pw@"), "password shown: {err}");
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_command_serves_kafka_and_creates_topics_with_n_partitions() {
    let mut child = Child(
        Command::new(BIN)
            .args(["broker", "--port", "0", "--partitions", "5"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("address line");
    let bootstrap = line.trim().to_owned();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to("fresh-topic").key("k").payload("{}"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some("fresh-topic"), Duration::from_secs(5))
        .expect("metadata");
    assert_eq!(md.topics()[0].partitions().len(), 5);
    let brokers = md.brokers();
    assert_eq!(
        format!("{}:{}", brokers[0].host(), brokers[0].port()),
        bootstrap,
        "advertised through the proxy"
    );
}

#[test]
fn a_bad_kafka_config_file_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("nope.properties");
    let out = Command::new(BIN)
        .args(["inspect", "--brokers", "127.0.0.1:1", "--kafka-config-file"])
        .arg(&missing)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the Kafka config file"), "{err}");

    let bad = dir.path().join("bad.properties");
    std::fs::write(&bad, "security.protocol=SASL_SSL\nsasl.password\n").expect("write");
    let out = Command::new(BIN)
        .args(["inspect", "--brokers", "127.0.0.1:1", "--kafka-config-file"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

/// A broker that requires SASL (tansu with `--authentication`) and a wrong
/// password: one clear line naming the authentication failure, within seconds,
/// and the password nowhere in the output. Runs in the tansu pass of .ci/test.
#[test]
fn a_bad_password_is_one_clear_error_within_seconds() {
    if !common::wants_tansu() {
        eprintln!("needs tansu: run with EVENTSCOPE_TEST_BROKER=tansu (.ci/test does)");
        return;
    }
    let (mut broker, addr) = common::start_tansu_with(&["--authentication"]);
    let dir = tempfile::tempdir().expect("dir");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["demo", "--headless", "--orders", "1", "--brokers", &addr])
        .args(["--kafka-config", "security.protocol=SASL_PLAINTEXT"])
        .args(["--kafka-config", "sasl.mechanism=SCRAM-SHA-256"])
        .args(["--kafka-config", "sasl.username=alice"])
        .args(["--kafka-config", "sasl.password=hunter2-wrong"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    let _ = broker.kill();
    let _ = broker.wait();
    let elapsed = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert!(err.contains("SASL authentication"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}

/// `--schemas DIR`: records whose `dataschema` names a contract in the directory are checked
/// against it (a violation is a `schema-drift` naming the field); a directory with a file that
/// is not a usable JSON Schema stops the command with the file and the reason.
#[test]
fn a_schemas_directory_checks_the_contracts_records_name() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("contracts");
    std::fs::create_dir_all(schemas.join("Paid")).unwrap();
    std::fs::write(
        schemas.join("Paid/v1.json"),
        r#"{"type": "object", "required": ["id", "amount"],
            "properties": {"amount": {"type": "integer"}}}"#,
    )
    .unwrap();
    let recording = dir.path().join("paid.jsonl");
    let line = |offset: u32, amount: &str| {
        format!(
            concat!(
                r#"{{"topic":"payments","partition":0,"offset":{},"timestamp_ms":1767225600000,"#,
                r#""key":{{"utf8":"p-{}"}},"headers":["#,
                r#"{{"key":"ce_specversion","value":{{"utf8":"1.0"}}}},"#,
                r#"{{"key":"ce_id","value":{{"utf8":"e-{}"}}}},"#,
                r#"{{"key":"ce_type","value":{{"utf8":"Paid"}}}},"#,
                r#"{{"key":"ce_source","value":{{"utf8":"/billing"}}}},"#,
                r#"{{"key":"ce_dataschema","value":{{"utf8":"https://acme.example/schemas/Paid/v1.json"}}}},"#,
                r#"{{"key":"content-type","value":{{"utf8":"application/json"}}}}],"#,
                r#""value":{{"json":{{"id":"p-{}","amount":{}}}}}}}"#
            ),
            offset, offset, offset, offset, amount
        )
    };
    let text = [line(0, "5"), line(1, "7"), line(2, r#""12""#)].join("\n") + "\n";
    std::fs::write(&recording, text).unwrap();
    let import = |extra: &[&std::ffi::OsStr]| {
        Command::new(BIN)
            .arg("import")
            .arg(&recording)
            .args(extra)
            .output()
            .expect("import runs")
    };
    let drift = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let details: Vec<String> = report["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "schema-drift")
            .map(|a| a["detail"].as_str().unwrap_or_default().to_owned())
            .collect();
        details
    };
    // Without the contracts, two records are too few to call a retyped field drift.
    assert!(drift(&import(&[])).is_empty());
    let found = drift(&import(&["--schemas".as_ref(), schemas.as_os_str()]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("payments/0@2") && found[0].contains("/amount"),
        "{found:?}"
    );

    // A broken contract file: exit 1, the file and the reason.
    std::fs::write(schemas.join("Paid/v2.json"), "{ not json").unwrap();
    let out = import(&["--schemas".as_ref(), schemas.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Paid/v2.json") && err.contains("not a usable JSON Schema"),
        "{err}"
    );
    // A directory that is not there.
    let out = import(&["--schemas".as_ref(), dir.path().join("nope").as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

/// A malformed `--kafka-config` value (a password typed with `:` instead of `=`) is refused
/// without being repeated.
#[test]
fn a_malformed_kafka_config_value_is_refused_without_repeating_it() {
    let out = Command::new(BIN)
        .args(["inspect", "--brokers", "127.0.0.1:1"])
        .args(["--kafka-config", "security.protocol=SASL_SSL"])
        .args(["--kafka-config", "sasl.password:hunter2-s3cret"])
        .output()
        .expect("eventscope runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--kafka-config value 2 is not KEY=VALUE"),
        "{err}"
    );
    let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn a_bad_rate_is_one_clear_error() {
    for bad in ["0", "fast", "-3", "20000", "NaN"] {
        let out = Command::new(BIN)
            .args(["demo", "--headless", "--orders", "1"])
            .arg(format!("--rate={bad}"))
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--rate") && err.contains("is not a rate") && err.contains("0.1 to 10000"),
            "{bad}: {err}"
        );
    }
}

/// `--rate 0.5` (a fraction, as a user may type it): two orders, one every two
/// seconds, to quiescence and a report.
#[test]
fn a_fractional_rate_paces_the_orders_and_ends_well() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("r.json");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["demo", "--headless", "--orders", "2", "--rate", "0.5"])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(r["orders"]["created"], 2);
    assert_eq!(r["orders"]["completed"], 2);
}
