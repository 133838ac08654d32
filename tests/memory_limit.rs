//! `--memory-limit`: beyond it the observed log drops its oldest records; the report counts
//! them, keeps the lints' verdicts, and every record still held reads back byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::broker::{Broker, BIN};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

#[test]
fn a_bad_memory_limit_is_one_clear_error() {
    for bad in ["lots", "12XB", "-1GiB"] {
        let out = Command::new(BIN)
            .args(["inspect", "--brokers", "127.0.0.1:1"])
            .arg(format!("--memory-limit={bad}"))
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--memory-limit") && err.contains("is not a size") && err.contains("2GiB"),
            "{bad}: {err}"
        );
    }
}

const RECORDS: usize = 20_000;

/// The CloudEvents binary-mode headers of an event: spec version, id, type, source, subject.
fn ce_headers(id: &str, ty: &str, source: &str, subject: &str) -> OwnedHeaders {
    [
        ("ce_specversion", "1.0"),
        ("ce_id", id),
        ("ce_type", ty),
        ("ce_source", source),
        ("ce_subject", subject),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// CloudEvents binary-mode record `i` (its event id is `e-<i>`, except that record 1 is a
/// redelivery of record 0).
fn produce(addr: &str) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in 0..RECORDS {
        let id = if i == 1 {
            "e-0".to_owned()
        } else {
            format!("e-{i}")
        };
        let key = format!("order-{}", i % 50);
        let value = format!(
            r#"{{"order_id":"{key}","n":{i},"note":"{}"}}"#,
            "x".repeat(i % 40)
        );
        let headers = ce_headers(&id, "OrderNoted", "/notes", &key).insert(Header {
            key: "ce_correlationid",
            value: Some(key.as_str()),
        });
        let partition = if i < 2 { 0 } else { (i % 2) as i32 };
        let mut rec = BaseRecord::to("notes")
            .key(&key)
            .payload(&value)
            .partition(partition)
            .headers(headers);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
}

#[test]
fn inspect_under_a_small_limit_counts_the_drop_and_keeps_the_rest() {
    let broker = Broker::start();
    produce(&broker.addr);
    let dir = tempfile::tempdir().expect("dir");
    let report_path = dir.path().join("report.json");
    let export_path = dir.path().join("all.jsonl");
    let out = Command::new(BIN)
        .args(["inspect", "--brokers", &broker.addr, "--topics", "notes"])
        .args(["--memory-limit", "1MiB", "--filter", "true", "--report"])
        .arg(&report_path)
        .arg("--export")
        .arg(&export_path)
        .output()
        .expect("inspect runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inspect failed: {err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    let mem = &report["memory"];
    let dropped = mem["dropped_records"].as_u64().unwrap();
    let held = mem["held_records"].as_u64().unwrap();
    assert_eq!(mem["limit_bytes"], 1 << 20, "{mem}");
    assert!(dropped > 1_000, "{mem}");
    assert!(held > 0, "{mem}");
    assert_eq!(dropped + held, RECORDS as u64, "{mem}");
    assert!(
        mem["dropped_bytes"].as_u64().unwrap() > dropped * 100,
        "{mem}"
    );
    assert_eq!(
        report["events"]["observed"], RECORDS,
        "counted though dropped"
    );
    assert!(err.contains(&format!("{dropped} oldest dropped")), "{err}");
    // The verdict on record 1 (long dropped) is kept as it was found.
    assert_eq!(report["anomaly_counts"]["duplicate-delivery"], 1);
    let dup = report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "duplicate-delivery")
        .expect("finding");
    assert_eq!(
        (
            &dup["event_id"],
            &dup["topic"],
            &dup["partition"],
            &dup["offset"]
        ),
        (
            &serde_json::json!("e-0"),
            &serde_json::json!("notes"),
            &serde_json::json!(0),
            &serde_json::json!(1)
        ),
        "{dup}"
    );
    // Every record held, byte for byte as the broker gave it (the export streams every
    // record as it arrives, dropped or not).
    assert_eq!(report["filter"]["observed"], RECORDS);
    assert_eq!(report["filter"]["matched"], held);
    let all: std::collections::HashMap<(i64, i64), serde_json::Value> =
        std::fs::read_to_string(&export_path)
            .expect("export")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("line");
                let at = (
                    v["partition"].as_i64().unwrap(),
                    v["offset"].as_i64().unwrap(),
                );
                (at, v)
            })
            .collect();
    assert_eq!(all.len(), RECORDS);
    let kept = report["filter"]["records"].as_array().unwrap();
    assert_eq!(kept.len() as u64, held);
    for r in kept {
        let at = (
            r["partition"].as_i64().unwrap(),
            r["offset"].as_i64().unwrap(),
        );
        assert_eq!(Some(r), all.get(&at), "{at:?}");
    }
}

/// On a broker that keeps its log, Kafka is the store: under the limit the log evicts payload
/// bytes, keeps every row and index, and reads a record back by topic/partition/offset when it
/// is looked at. Here `--filter true` reads every record back at the end: each must be byte
/// for byte what the export streamed as it arrived. The embedded broker in the first pass,
/// tansu in the real-broker pass of .ci/test.
#[test]
fn inspect_with_kafka_as_the_store_evicts_payloads_and_reads_every_record_back() {
    const N: usize = 3_000;
    // Kept until the end: the broker stops when it is dropped, tansu when it is killed.
    let (_broker, mut tansu, addr) = if common::wants_tansu() {
        let (child, addr) = common::start_tansu();
        (None, Some(child), addr)
    } else {
        let b = Broker::start();
        let addr = b.addr.clone();
        (Some(b), None, addr)
    };
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .expect("producer");
    // ~1 KB values that compress about twofold, as real payloads do.
    let mut x: u64 = 7;
    for i in 0..N {
        let noise: String = (0..60)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!("{:016x}", x >> 1)
            })
            .collect();
        let id = format!("k-{i}");
        let key = format!("order-{}", i % 30);
        let value = format!(r#"{{"order_id":"{key}","n":{i},"blob":"{noise}"}}"#);
        let headers = ce_headers(&id, "BlobNoted", "/blobs", &key);
        producer
            .send(
                BaseRecord::to("blobs")
                    .key(&key)
                    .payload(&value)
                    .partition(0)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .expect("queued");
        // Batches of 500 (tansu takes ~100 ms a flush: one record per batch took 5 minutes).
        // The last record goes in a batch of its own: tansu (0.6) reports the end of a
        // partition as the last batch's first offset + 1, and inspect reads to the end it
        // is told (a last batch of 20 left 19 records unread in CI).
        if i % 500 == 499 || i == N - 2 {
            producer.flush(Duration::from_secs(10)).expect("flushed");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
    // The log's end must be past every record before inspect reads to it.
    let probe: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .expect("probe");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let high = rdkafka::consumer::Consumer::fetch_watermarks(
            &probe,
            "blobs",
            0,
            Duration::from_secs(5),
        )
        .map_or(0, |(_, h)| h);
        if high >= N as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broker's end of the log is {high} after the producer flushed {N} records"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = tempfile::tempdir().expect("dir");
    let report_path = dir.path().join("report.json");
    let export_path = dir.path().join("all.jsonl");
    let out = Command::new(BIN)
        .args(["inspect", "--brokers", &addr, "--topics", "blobs"])
        .args(["--memory-limit", "1MiB", "--filter", "true", "--report"])
        .arg(&report_path)
        .arg("--export")
        .arg(&export_path)
        .output()
        .expect("inspect runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inspect failed: {err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    let mem = &report["memory"];
    assert_eq!(mem["dropped_records"], 0, "{mem}");
    assert_eq!(mem["held_records"], N, "{mem}");
    let in_store = mem["payloads_in_store"].as_u64().unwrap();
    assert!(in_store > N as u64 / 2, "{mem}");
    assert!(
        err.contains(&format!("payloads of {in_store} records evicted to Kafka")),
        "{err}"
    );
    let all: Vec<serde_json::Value> = std::fs::read_to_string(&export_path)
        .expect("export")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(all.len(), N);
    assert_eq!(report["filter"]["matched"], N, "{err}");
    let back = report["filter"]["records"].as_array().unwrap();
    assert_eq!(back.len(), N);
    for (a, b) in all.iter().zip(back) {
        assert_eq!(a, b);
    }
    if let Some(child) = &mut tansu {
        let _ = child.kill();
        let _ = child.wait();
    }
}
