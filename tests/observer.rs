//! End to end on the embedded broker: each fault leaves the matching anomaly
//! kind in the report (filled by the observer from what is on the topics),
//! and a clean run leaves none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use eventscope::cli::{DemoArgs, SagaArg};
use eventscope::headless::execute;

fn args(saga: SagaArg, faults: &str, orders: u64) -> DemoArgs {
    DemoArgs {
        headless: true,
        orders,
        faults: faults.parse().expect("fault spec"),
        seed: 7,
        report: None,
        timeout: 120,
        partitions: 3,
        snapshot_every: 100,
        step_timeout: 3,
        saga,
        rate: None,
    }
}

/// Run the demo headless and return the anomaly kinds with a non-zero count.
async fn kinds(faults: &str, orders: u64) -> (BTreeSet<String>, serde_json::Value) {
    kinds_in(SagaArg::Orchestration, faults, orders).await
}

/// Like [`kinds`], with the sagas run as `saga` says.
async fn kinds_in(
    saga: SagaArg,
    faults: &str,
    orders: u64,
) -> (BTreeSet<String>, serde_json::Value) {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let (report, quiescent) = execute(&common::conn(dir), &args(saga, faults, orders))
        .await
        .expect("demo runs");
    assert!(quiescent, "{faults}: not quiescent: {report}");
    let counts = report["anomaly_counts"].as_object().expect("counts");
    let found: BTreeSet<String> = counts
        .iter()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, _)| k.clone())
        .collect();
    // Every anomaly names the record it is about.
    for a in report["anomalies"].as_array().expect("anomalies") {
        assert!(a["kind"].is_string(), "{a}");
        assert!(
            a["topic"].is_string() && a["partition"].is_i64() && a["offset"].is_i64(),
            "anomaly without its record: {a}"
        );
    }
    (found, report)
}

fn set(kinds: &[&str]) -> BTreeSet<String> {
    kinds.iter().map(|k| (*k).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_has_no_anomalies() {
    let (found, report) = kinds("", 40).await;
    assert!(found.is_empty(), "clean run reported {found:?}: {report}");
    assert_eq!(report["events"]["duplicate_deliveries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_yields_its_anomaly_kind() {
    // (fault spec, kinds that must appear, and nothing else)
    let cases: &[(&str, &[&str])] = &[
        ("duplicate-publish=0.3", &["duplicate-delivery"]),
        (
            "no-idempotency,duplicate-publish=0.3",
            &["duplicate-delivery", "duplicate-effect"],
        ),
        ("consumer-crash=3", &["duplicate-delivery"]),
        ("relay-crash=1", &["duplicate-delivery"]),
        ("wrong-partition-key", &["out-of-order"]),
        ("poison-message=2", &["poison-message"]),
        ("missing-correlation=0.2", &["missing-correlation"]),
        // A breaking OrderCreated reaches the topics only without the check.
        ("no-schema-check,schema-drift=0.5", &["schema-drift"]),
        ("schema-drift=0.5", &[]),
        ("schema-evolve=0.5", &[]),
        // Compensations are normal saga outcomes, and an outage or a crashed
        // orchestrator that resumes leaves nothing wrong on the topics.
        (
            "payment-decline=0.3,out-of-stock=0.2,shipping-failure=0.2",
            &[],
        ),
        ("broker-outage=2", &[]),
        ("orchestrator-crash=1", &[]),
    ];
    let mut failures = Vec::new();
    for (faults, expected) in cases {
        let (found, report) = kinds(faults, 30).await;
        if found != set(expected) {
            failures.push(format!(
                "{faults}: expected {expected:?}, found {found:?} ({})",
                report["anomalies"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .take(3)
                        .map(|x| x["detail"].to_string())
                        .collect::<Vec<_>>()
                        .join("; "))
                    .unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same faults with choreographed sagas (no orchestrator, no command
/// topics): each still yields its anomaly kind and nothing else, and a clean
/// choreography has no anomaly (its chains end, so no `stuck-saga`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_yields_its_anomaly_kind_in_a_choreography() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        ("duplicate-publish=0.3", &["duplicate-delivery"]),
        (
            "no-idempotency,duplicate-publish=0.3",
            &["duplicate-delivery", "duplicate-effect"],
        ),
        ("consumer-crash=3", &["duplicate-delivery"]),
        ("relay-crash=1", &["duplicate-delivery"]),
        ("wrong-partition-key", &["out-of-order"]),
        ("poison-message=2", &["poison-message"]),
        ("missing-correlation=0.2", &["missing-correlation"]),
        ("no-schema-check,schema-drift=0.5", &["schema-drift"]),
        ("schema-evolve=0.5", &[]),
        (
            "payment-decline=0.3,out-of-stock=0.2,shipping-failure=0.2",
            &[],
        ),
    ];
    let mut failures = Vec::new();
    for (faults, expected) in cases {
        let (found, report) = kinds_in(SagaArg::Choreography, faults, 30).await;
        if found != set(expected) {
            failures.push(format!(
                "{faults}: expected {expected:?}, found {found:?} ({})",
                report["anomalies"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .take(3)
                        .map(|x| x["detail"].to_string())
                        .collect::<Vec<_>>()
                        .join("; "))
                    .unwrap_or_default()
            ));
        }
        assert_eq!(
            report["orders"]["stuck"], 0,
            "{faults}: {}",
            report["orders"]
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
