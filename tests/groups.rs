//! Consumer groups through `eventscope inspect`: committed offsets read without joining the
//! group, lag, and the Burrow-style verdicts (a group that stopped while records wait is a
//! `consumer-stall`; a group at the end is OK).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::broker::{Broker, BIN};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

/// Commit `offset` on work/0 for `group` (as a consumer that processed up to there would).
fn commit(addr: &str, group: &str, offset: i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("work", 0, Offset::Offset(offset))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

#[test]
fn a_stopped_group_is_a_consumer_stall_and_a_caught_up_one_is_ok() {
    let broker = Broker::start();
    // The embedded broker cannot list groups: they are named.
    scenario(&broker.addr, &["--group", "slow", "--group", "done"]);
}

/// On a real broker (tansu, `EVENTSCOPE_TEST_BROKER=tansu` as in .ci/test) the groups are
/// listed by the cluster (ListGroups), none named.
#[test]
fn on_a_real_broker_the_groups_are_discovered() {
    if !common::wants_tansu() {
        eprintln!("skipped: set EVENTSCOPE_TEST_BROKER=tansu (and EVENTSCOPE_TANSU) to run it");
        return;
    }
    let (mut tansu, addr) = common::start_tansu();
    scenario(&addr, &[]);
    let _ = tansu.kill();
    let _ = tansu.wait();
}

fn scenario(addr: &str, group_flags: &[&str]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    for i in 0..10 {
        let v = format!(r#"{{"id":"w-{i}","type":"Work"}}"#);
        p.send(
            BaseRecord::<str, str>::to("work")
                .partition(0)
                .key("k")
                .payload(&v),
        )
        .map_err(|(e, _)| e)
        .unwrap();
        // One record per batch: tansu 0.6 reports a wrong high watermark after a multi-record batch.
        p.flush(Duration::from_secs(10)).unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    commit(addr, "slow", 3);
    commit(addr, "done", 10);
    // The headless demo's quiescence check: each group's lag on its topics, the groups asked
    // side by side, in the order given; a group that never committed lags by every record.
    let settings = eventscope_demo::kafka::KafkaSettings::new(addr);
    let highs = settings
        .high_watermarks(&["work"], Duration::from_secs(10))
        .unwrap();
    let lags = settings
        .group_lags(
            &[
                ("slow", &["work"]),
                ("never", &["work"]),
                ("done", &["work"]),
            ],
            &highs,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(lags, vec![7, 10, 0]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let out = Command::new(BIN)
        .args(["inspect", "--brokers", addr, "--topics", "work"])
        .args(group_flags)
        .args(["--settle", "5", "--report"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let groups = r["consumer_groups"].as_array().unwrap();
    let by = |g: &str| groups.iter().find(|x| x["group"] == g).unwrap().clone();
    let slow = by("slow");
    assert_eq!(slow["verdict"], "STALL", "{slow:#}");
    assert_eq!(slow["lag"], 7);
    assert_eq!(slow["partitions"][0]["committed"], 3);
    assert!(slow["partitions"][0]["lag_ms"].as_i64().unwrap() >= 0);
    assert_eq!(by("done")["verdict"], "OK");
    assert_eq!(
        r["anomaly_counts"]["consumer-stall"], 1,
        "{:#}",
        r["anomalies"]
    );
    let a = r["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "consumer-stall")
        .unwrap();
    assert_eq!(
        a["offset"], 3,
        "at the record the group has not processed: {a:#}"
    );
    assert!(
        a["detail"].as_str().unwrap().contains("group slow"),
        "{a:#}"
    );
    // On the flow map: the group's edge from the topic, marked.
    let edge = r["flow"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "group slow")
        .unwrap_or_else(|| panic!("{:#}", r["flow"]))
        .clone();
    assert_eq!(
        (edge["from"].as_str(), edge["kind"].as_str()),
        (Some("work"), Some("consumes"))
    );
    assert_eq!(edge["anomalies"]["consumer-stall"], 1, "{edge:#}");
}
