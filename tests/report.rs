//! The headless report's observer sections on a healthy run, in both saga styles: the flow map
//! (who publishes and consumes what), the consumer groups (every one OK at quiescence) and the
//! relay's publish latency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use eventscope::cli::{DemoArgs, SagaArg};
use eventscope::headless::execute;
use serde_json::Value;

fn args(orders: u64, saga: SagaArg) -> DemoArgs {
    DemoArgs {
        headless: true,
        orders,
        faults: "duplicate-publish=0.1".parse().expect("fault spec"),
        seed: 4,
        report: None,
        timeout: 120,
        partitions: 3,
        snapshot_every: 100,
        step_timeout: 30,
        saga,
        rate: None,
    }
}

fn edges(report: &Value) -> Vec<(String, String, String)> {
    report["flow"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("from"), s("to"))
        })
        .collect()
}

async fn run(saga: SagaArg) -> Value {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let conn = common::conn(dir);
    let (report, quiescent) = execute(&conn, &args(30, saga))
        .await
        .expect("the demo runs");
    assert!(quiescent, "{report}");
    for (k, v) in report["invariants"].as_object().unwrap() {
        assert_eq!(v, &Value::Bool(true), "{k}: {report}");
    }
    // Every group caught up and judged OK.
    let groups = report["consumer_groups"].as_array().unwrap();
    assert!(groups.len() >= 4, "{groups:#?}");
    for g in groups {
        assert_eq!(g["verdict"], "OK", "{g:#}");
        assert_eq!(g["lag"], 0, "{g:#}");
    }
    assert_eq!(report["anomaly_counts"]["consumer-stall"], 0);
    // The relay's latency, one sample per published row.
    let l = &report["relay"]["latency_ms"];
    let (p50, p99, max) = (
        l["p50"].as_u64().unwrap(),
        l["p99"].as_u64().unwrap(),
        l["max"].as_u64().unwrap(),
    );
    assert!(p50 <= p99 && p99 <= max, "{l}");
    assert!(l["samples"].as_u64().unwrap() >= report["outbox"]["published"].as_u64().unwrap());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrated_flow_has_commands_and_the_orchestrator() {
    let r = run(SagaArg::Orchestration).await;
    let e = edges(&r);
    let orchestrator = "/eventscope-demo/saga-orchestrator";
    assert!(e
        .iter()
        .any(|(k, f, t)| k == "publishes" && f == orchestrator && t.ends_with(".commands")));
    assert!(e
        .iter()
        .any(|(k, f, t)| k == "consumes" && f == "orders" && t == orchestrator));
    // The consumer groups too, where known: the orchestrator's group reads `orders`.
    assert!(e
        .iter()
        .any(|(k, f, t)| k == "consumes" && f == "orders" && t == "group saga-orchestrator"));
    // Duplicates published by the relay show on their publish edges.
    let dups: u64 = r["flow"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["duplicates"].as_u64().unwrap())
        .sum();
    assert_eq!(
        dups,
        r["events"]["duplicate_deliveries"].as_u64().unwrap(),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreographed_flow_has_no_commands_and_no_orchestrator() {
    let r = run(SagaArg::Choreography).await;
    let e = edges(&r);
    assert!(!e.is_empty());
    for (k, f, t) in &e {
        assert!(
            !f.ends_with(".commands") && !t.ends_with(".commands"),
            "{k} {f} {t}"
        );
        assert!(
            !f.contains("orchestrator") && !t.contains("orchestrator"),
            "{k} {f} {t}"
        );
    }
    // Each service consumes the event before it: inventory reads orders.
    assert!(e.iter().any(|(k, f, t)| k == "consumes"
        && f == "orders"
        && t == "/eventscope-demo/inventory-service"));
}
