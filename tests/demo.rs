//! The demo order system end to end on the embedded broker (real Kafka protocol)
//! and SQLite: outbox, relay, saga, idempotency, faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eventscope::model::record::Record;
use eventscope_demo::topics;
use sqlx::Row;

fn header<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    r.header_str(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_keeps_every_invariant_and_per_key_order() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(dir, "", 60).await;
    let f = &fin.facts;
    assert_eq!(
        (
            f.orders_created,
            f.orders_completed,
            f.orders_compensated,
            f.orders_stuck
        ),
        (60, 60, 0, 0)
    );
    assert_eq!(f.outbox_pending, 0);
    assert!(f.duplicate_effects.is_empty() && f.read_model_mismatches.is_empty());
    assert!(f.stock_conserved());
    let events = fin.model.event_counts();
    assert_eq!(events.observed, 60 * 9);
    assert_eq!(events.duplicate_deliveries, 0);
    // Every published event is on the topics.
    for id in &fin.published {
        assert!(fin.model.has_event(id), "published {id} never observed");
    }
    // Per key: one partition, versions rising with the offset.
    let mut by_key: HashMap<Vec<u8>, Vec<(i32, i64, i64)>> = HashMap::new();
    for r in fin
        .model
        .records()
        .filter(|r| r.topic == topics::ORDERS)
        .collect::<Vec<_>>()
    {
        let v: i64 = header(&r, "ce_aggregateversion")
            .and_then(|v| v.parse().ok())
            .expect("version header");
        by_key
            .entry(r.key.clone().expect("key"))
            .or_default()
            .push((r.partition, r.offset, v));
    }
    assert_eq!(by_key.len(), 60);
    for (key, mut recs) in by_key {
        recs.sort_by_key(|(p, o, _)| (*p, *o));
        assert!(
            recs.windows(2).all(|w| w[0].0 == w[1].0),
            "{key:?} spread over partitions"
        );
        assert!(
            recs.windows(2).all(|w| w[0].2 < w[1].2),
            "{key:?} out of order: {recs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_publish_and_consumer_crash_are_absorbed_by_idempotency() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(dir, "duplicate-publish=0.3,consumer-crash=2", 60).await;
    let f = &fin.facts;
    assert!(fin.model.event_counts().duplicate_deliveries > 0);
    assert!(f.outbox_republished > 0);
    assert!(f.duplicate_effects.is_empty(), "{:?}", f.duplicate_effects);
    assert!(f.stock_conserved());
    assert!(fin.duplicates_skipped > 0, "redeliveries were recognised");
    assert!(fin.restarts >= 2, "crashed consumers restarted");
    assert_eq!(f.orders_stuck, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotency_stock_is_deducted_twice() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(dir, "no-idempotency,duplicate-publish=0.3", 60).await;
    let f = &fin.facts;
    assert!(!f.duplicate_effects.is_empty());
    assert!(
        f.duplicate_effects
            .iter()
            .any(|d| d.starts_with("stock 'reserve")),
        "{:?}",
        f.duplicate_effects
    );
    assert!(
        !f.stock_conserved(),
        "expected {} out, {} actually out",
        f.stock_expected_out,
        f.stock_actual_out
    );
    assert!(f.stock_actual_out > f.stock_expected_out);
}

/// The orchestrator's commands for `order`, in the order it wrote them.
async fn commands_of(db: &eventscope_demo::store::Db) -> HashMap<String, Vec<String>> {
    let rows = sqlx::query(
        "SELECT subject, event_type FROM outbox WHERE service = 'saga-orchestrator' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("outbox");
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows {
        m.entry(r.get::<String, _>(0))
            .or_default()
            .push(r.get::<String, _>(1));
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensations_run_in_reverse_order() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut s = common::session(
        dir,
        "payment-decline=0.25,out-of-stock=0.25,shipping-failure=0.3",
        11,
    )
    .await;
    s.place_orders(80, false).await.expect("orders");
    common::settle(&mut s, 80, 90).await;
    let commands = commands_of(&s.system.ctx.db).await;
    let phases: Vec<(String, String)> = sqlx::query("SELECT order_id, phase FROM sagas")
        .fetch_all(&s.system.ctx.db.pool)
        .await
        .expect("sagas")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let fin = s.finish().await.expect("finish");
    let happy = [
        "ProcessPayment",
        "ReserveStock",
        "ScheduleShipment",
        "ApproveOrder",
    ];
    let declined = ["ProcessPayment", "CancelOrder"];
    let no_stock = [
        "ProcessPayment",
        "ReserveStock",
        "RefundPayment",
        "CancelOrder",
    ];
    let no_ship = [
        "ProcessPayment",
        "ReserveStock",
        "ScheduleShipment",
        "RestoreStock",
        "RefundPayment",
        "CancelOrder",
    ];
    let mut seen = HashMap::new();
    for (order, phase) in &phases {
        let cmds = &commands[order];
        let path = if cmds == &happy {
            "happy"
        } else if cmds == &declined {
            "declined"
        } else if cmds == &no_stock {
            "no_stock"
        } else if cmds == &no_ship {
            "no_ship"
        } else {
            panic!("order {order}: unexpected commands {cmds:?}")
        };
        let want = if path == "happy" {
            "completed"
        } else {
            "compensated"
        };
        assert_eq!(phase, want, "order {order} took {path}");
        *seen.entry(path).or_insert(0) += 1;
    }
    for path in ["happy", "declined", "no_stock", "no_ship"] {
        assert!(
            seen.get(path).copied().unwrap_or(0) > 0,
            "no {path} saga among {seen:?}"
        );
    }
    assert!(fin.facts.stock_conserved());
    assert!(fin.facts.read_model_mismatches.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_orchestrator_and_relay_resume_and_lose_nothing() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(dir, "orchestrator-crash=2,relay-crash=2", 60).await;
    assert!(fin.restarts >= 4, "restarts {}", fin.restarts);
    assert_eq!(fin.facts.orders_stuck, 0);
    assert_eq!(fin.facts.orders_completed, 60);
    assert!(fin.published.iter().all(|id| fin.model.has_event(id)));
    assert!(fin.facts.duplicate_effects.is_empty());
}

/// A crash probability is decided per delivery attempt: a redelivered record
/// is decided afresh, so crashing consumers never livelock on one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probabilistic_consumer_crash_ends_with_every_invariant() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(dir, "consumer-crash=0.3", 100).await;
    let f = &fin.facts;
    assert_eq!(f.orders_created, 100);
    assert_eq!(f.orders_completed + f.orders_compensated, 100);
    assert_eq!(f.orders_stuck, 0);
    assert_eq!(f.outbox_pending, 0);
    assert!(f.all_sagas_terminal());
    assert!(f.duplicate_effects.is_empty(), "{:?}", f.duplicate_effects);
    assert!(
        f.read_model_mismatches.is_empty(),
        "{:?}",
        f.read_model_mismatches
    );
    assert!(f.stock_conserved());
    assert!(fin.published.iter().all(|id| fin.model.has_event(id)));
    assert!(
        fin.restarts >= 20,
        "a 0.3 chance crashed only {}",
        fin.restarts
    );
    assert!(fin.duplicates_skipped > 0, "redeliveries were recognised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probabilistic_relay_and_orchestrator_crashes_end_with_every_invariant() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(dir, "relay-crash=0.2,orchestrator-crash=0.2", 60).await;
    let f = &fin.facts;
    assert_eq!(f.orders_completed, 60);
    assert_eq!(f.outbox_pending, 0);
    assert!(f.duplicate_effects.is_empty() && f.read_model_mismatches.is_empty());
    assert!(fin.published.iter().all(|id| fin.model.has_event(id)));
    assert!(fin.restarts >= 5, "restarts {}", fin.restarts);
}

fn assert_every_invariant(fin: &eventscope::headless::Finished) {
    let f = &fin.facts;
    assert_eq!(f.orders_stuck, 0, "{:?}", f.stuck_phases);
    assert_eq!(f.outbox_pending, 0);
    assert!(f.duplicate_effects.is_empty(), "{:?}", f.duplicate_effects);
    assert!(
        f.read_model_mismatches.is_empty(),
        "{:?}",
        f.read_model_mismatches
    );
    assert!(
        f.stock_conserved(),
        "{} != {}",
        f.stock_expected_out,
        f.stock_actual_out
    );
    assert!(fin.published.iter().all(|id| fin.model.has_event(id)));
}

/// The third pitfall, prevented: a breaking OrderCreated is refused at the
/// outbox, nothing of it reaches Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_is_refused_by_the_schema_check() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(dir, "schema-drift=0.3", 40).await;
    assert!(fin.schema_refused > 0, "no write refused");
    assert_eq!(fin.facts.orders_created + fin.schema_refused as i64, 40);
    assert_eq!(fin.dead_lettered, 0);
    assert_eq!(fin.facts.sagas_timed_out, 0);
    assert!(
        fin.facts.schema_versions.iter().all(|(_, v, _)| *v == 1),
        "{:?}",
        fin.facts.schema_versions
    );
    assert_eq!(
        fin.model
            .records()
            .filter(|r| r.topic == topics::DLQ)
            .count(),
        0
    );
    assert_every_invariant(&fin);
}

/// The third pitfall, reproduced: with the check off the breaking version
/// reaches the orchestrator, which sends it to the dlq; the step deadline
/// then cancels those orders, and every invariant still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_schema_check_drift_goes_to_the_dlq_and_deadlines_end_the_sagas() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let s = common::session_with(dir, "no-schema-check,schema-drift=0.3", 7, |c| {
        c.step_timeout = Duration::from_secs(2);
    })
    .await;
    let fin = common::place_and_settle(s, 40).await;
    let f = &fin.facts;
    assert_eq!(fin.schema_refused, 0);
    assert_eq!(f.orders_created, 40);
    assert!(fin.dead_lettered > 0, "nothing went to the dlq");
    assert_eq!(f.sagas_timed_out, fin.dead_lettered as i64);
    assert!(f.orders_compensated >= f.sagas_timed_out);
    assert!(f
        .schema_versions
        .iter()
        .any(|(t, v, _)| t == "OrderCreated" && *v == 3));
    let dlq: Vec<Record> = fin
        .model
        .records()
        .filter(|r| r.topic == topics::DLQ)
        .collect();
    assert_eq!(dlq.len() as u64, fin.dead_lettered);
    let why = header(&dlq[0], "dlq_error").expect("dlq_error header");
    assert!(why.contains("OrderCreated v3"), "{why}");
    assert_every_invariant(&fin);
}

/// A compatible evolution: both versions flow, consumers read both, the
/// aggregate reads v1 through its upcaster and the read model equals replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_evolve_is_read_by_every_consumer() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(dir, "schema-evolve=0.5", 40).await;
    let created: Vec<u32> = fin
        .facts
        .schema_versions
        .iter()
        .filter(|(t, _, _)| t == "OrderCreated")
        .map(|(_, v, _)| *v)
        .collect();
    assert_eq!(created, vec![1, 2]);
    assert_eq!(fin.facts.orders_completed, 40);
    assert_eq!((fin.schema_refused, fin.dead_lettered), (0, 0));
    assert_every_invariant(&fin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_grows_the_backlog_which_then_drains() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut s = common::session(dir, "broker-outage=5", 7).await;
    if common::wants_tansu() {
        // A broker we do not own cannot be taken down: the fault says so.
        let t0 = Instant::now();
        let mut errors = Vec::new();
        while errors.is_empty() && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            errors = s.system.take_errors();
        }
        assert!(
            errors
                .iter()
                .any(|e| e.contains("needs the embedded broker")),
            "{errors:?}"
        );
        return;
    }
    // Let the injector take the broker down, then write orders into the outbox.
    let t0 = Instant::now();
    while s.faults.is_on(eventscope_demo::Fault::BrokerOutage)
        && t0.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.place_orders(40, false).await.expect("orders");
    let mut max_pending = 0;
    for _ in 0..10 {
        let pending = s
            .system
            .ctx
            .db
            .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .await
            .expect("count");
        max_pending = max_pending.max(pending);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        max_pending >= 40,
        "backlog during the outage: {max_pending}"
    );
    common::settle(&mut s, 40, 90).await;
    let fin = s.finish().await.expect("finish");
    assert_eq!(fin.facts.outbox_pending, 0);
    assert_eq!(fin.facts.orders_completed, 40);
    assert!(
        fin.published.iter().all(|id| fin.model.has_event(id)),
        "nothing lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dlq_and_consumers_go_on() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(dir, "poison-message=3", 30).await;
    let dlq: Vec<Record> = fin
        .model
        .records()
        .filter(|r| r.topic == topics::DLQ)
        .collect();
    assert_eq!(dlq.len(), 3, "one dlq record per poison record");
    for r in &dlq {
        assert!(header(r, "dlq_error").is_some());
        let original = header(r, "dlq_original_topic").expect("origin");
        assert!(original.ends_with(".commands"));
    }
    assert_eq!(fin.facts.orders_completed, 30, "consumers went on");
}

/// Two relays side by side (Postgres: `FOR UPDATE SKIP LOCKED`) publish every
/// row exactly once and keep each order's events in order. SQLite has no row
/// locks: one relay per database there (this test runs in the Postgres pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_every_row_once_in_order() {
    if !common::wants_postgres() {
        eprintln!(
            "two relays need PostgreSQL: run with EVENTSCOPE_TEST_DB=postgres (.ci/test does)"
        );
        return;
    }
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut s = common::session(dir, "", 7).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let second = tokio::spawn(eventscope_demo::relay::run(s.system.ctx.clone(), stop_rx));
    s.place_orders(60, false).await.expect("orders");
    common::settle(&mut s, 60, 90).await;
    let _ = stop_tx.send(true);
    let _ = second.await;
    let db = &s.system.ctx.db;
    let twice = db
        .count("SELECT COUNT(*) FROM outbox WHERE publish_count <> 1")
        .await
        .expect("count");
    assert_eq!(twice, 0, "rows published other than once");
    let fin = s.finish().await.expect("finish");
    assert_eq!(fin.model.event_counts().duplicate_deliveries, 0);
    let counts = fin.model.anomaly_counts();
    assert!(
        counts.values().all(|n| *n == 0),
        "anomalies with two relays: {counts:?}"
    );
    assert_eq!(fin.facts.orders_completed, 60);
}

/// The CDC relay (PostgreSQL logical decoding) killed and restarted mid-stream,
/// and made to resend: nothing lost, nothing left unmarked, order per aggregate
/// kept. On SQLite it refuses to start with one clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_relay_restarted_mid_stream_loses_nothing() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut conn = common::conn(dir);
    conn.relay = eventscope::cli::RelayArg::Cdc;
    let spec: eventscope_demo::faults::FaultSpec =
        "relay-crash=3,duplicate-publish=0.1".parse().expect("spec");
    let faults = std::sync::Arc::new(eventscope_demo::faults::Faults::from_spec(7, &spec));
    let started = eventscope::headless::Session::start(&conn, |_| {}, faults).await;
    if !common::wants_postgres() {
        let err = format!("{:#}", started.err().expect("CDC on SQLite must fail"));
        assert!(err.contains("cannot run on SQLite"), "{err}");
        return;
    }
    let mut s = started.expect("session with the CDC relay");
    s.place_orders(60, false).await.expect("orders");
    common::settle(&mut s, 60, 90).await;
    let fin = s.finish().await.expect("finish");
    let f = &fin.facts;
    assert_eq!(f.outbox_pending, 0, "every row marked published");
    assert!(fin.restarts >= 3, "the relay was killed and restarted");
    assert!(
        fin.model.event_counts().duplicate_deliveries > 0,
        "changes were sent again after the crashes"
    );
    assert_eq!(f.orders_completed, 60);
    assert!(f.duplicate_effects.is_empty());
    assert!(f.stock_conserved());
    for id in &fin.published {
        assert!(fin.model.has_event(id), "published {id} never observed");
    }
    let counts = fin.model.anomaly_counts();
    let unexpected: Vec<_> = counts
        .iter()
        .filter(|(k, n)| **n > 0 && k.as_str() != "duplicate-delivery")
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    // A clean end with nothing pending leaves no replication slot behind.
    let url = conn.database.clone().expect("a PostgreSQL URL");
    let db = eventscope_demo::store::Db::connect(&url)
        .await
        .expect("connect");
    let left = db
        .count("SELECT COUNT(*) FROM pg_replication_slots WHERE database = current_database()")
        .await
        .expect("count slots");
    assert_eq!(left, 0, "the CDC run left its replication slot behind");
}

/// Run the demo's sagas as a choreography.
fn choreography(c: &mut eventscope_demo::DemoConfig) {
    c.saga = eventscope_demo::saga::SagaMode::Choreography;
}

/// Each order's records, by type, in the order they were written to the outbox.
async fn types_by_order(db: &eventscope_demo::store::Db) -> HashMap<String, Vec<String>> {
    let rows = sqlx::query("SELECT subject, event_type FROM outbox ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("outbox");
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows {
        m.entry(r.get::<String, _>(0))
            .or_default()
            .push(r.get::<String, _>(1));
    }
    m
}

/// No orchestrator, no command topic: five events per completed order, every
/// record marked as choreographed, every invariant kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreography_runs_without_orchestrator_or_commands() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let s = common::session_with(dir, "", 7, choreography).await;
    let sagas = s.system.ctx.db.clone();
    let fin = common::place_and_settle(s, 60).await;
    let f = &fin.facts;
    assert_eq!(
        (f.orders_created, f.orders_completed, f.orders_compensated),
        (60, 60, 0)
    );
    assert_every_invariant(&fin);
    let rows = sagas
        .count("SELECT COUNT(*) FROM sagas")
        .await
        .expect("count");
    assert_eq!(rows, 0, "a choreography keeps no saga state");
    let records: Vec<Record> = fin.model.records().collect();
    assert_eq!(records.len(), 60 * 5);
    for r in &records {
        assert!(!r.topic.ends_with(".commands"), "{} written", r.topic);
        let source = header(r, "ce_source").expect("source");
        assert!(!source.contains("orchestrator"), "{source}");
        assert_eq!(header(r, "ce_sagamode"), Some("choreography"));
    }
    assert_eq!(fin.model.event_counts().duplicate_deliveries, 0);
    let counts = fin.model.anomaly_counts();
    assert!(counts.values().all(|n| *n == 0), "{counts:?}");
}

/// Each owner undoes its own step by reacting to the failure after it, newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreography_compensates_in_reverse_order() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut s = common::session_with(
        dir,
        "payment-decline=0.25,out-of-stock=0.25,shipping-failure=0.3",
        11,
        choreography,
    )
    .await;
    s.place_orders(80, false).await.expect("orders");
    common::settle(&mut s, 80, 90).await;
    let types = types_by_order(&s.system.ctx.db).await;
    let fin = s.finish().await.expect("finish");
    let paths: [(&str, &[&str]); 4] = [
        (
            "happy",
            &[
                "OrderCreated",
                "StockReserved",
                "PaymentCompleted",
                "ShipmentScheduled",
                "OrderCompleted",
            ],
        ),
        (
            "no_stock",
            &["OrderCreated", "StockRejected", "OrderCancelled"],
        ),
        (
            "declined",
            &[
                "OrderCreated",
                "StockReserved",
                "PaymentDeclined",
                "StockRestored",
                "OrderCancelled",
            ],
        ),
        (
            "no_ship",
            &[
                "OrderCreated",
                "StockReserved",
                "PaymentCompleted",
                "ShipmentFailed",
                "PaymentRefunded",
                "StockRestored",
                "OrderCancelled",
            ],
        ),
    ];
    let mut seen: HashMap<&str, i64> = HashMap::new();
    for (order, t) in &types {
        let Some((name, _)) = paths.iter().find(|(_, p)| t == p) else {
            panic!("order {order}: unexpected events {t:?}")
        };
        *seen.entry(name).or_insert(0) += 1;
    }
    for (name, _) in &paths {
        assert!(
            seen.get(name).copied().unwrap_or(0) > 0,
            "no {name} among {seen:?}"
        );
    }
    assert_eq!(fin.facts.orders_completed, seen["happy"]);
    assert_eq!(fin.facts.orders_compensated, 80 - seen["happy"]);
    assert_every_invariant(&fin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreography_absorbs_duplicates_and_crashes_by_idempotency() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let s = common::session_with(
        dir,
        "duplicate-publish=0.3,consumer-crash=0.2,relay-crash=2",
        7,
        choreography,
    )
    .await;
    let fin = common::place_and_settle(s, 60).await;
    assert!(fin.model.event_counts().duplicate_deliveries > 0);
    assert!(fin.duplicates_skipped > 0, "redeliveries were recognised");
    assert!(fin.restarts >= 2, "restarts {}", fin.restarts);
    assert_eq!(fin.facts.orders_completed, 60);
    assert_every_invariant(&fin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreography_without_idempotency_deducts_stock_twice() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let s =
        common::session_with(dir, "no-idempotency,duplicate-publish=0.3", 7, choreography).await;
    let fin = common::place_and_settle(s, 60).await;
    let f = &fin.facts;
    assert!(
        f.duplicate_effects
            .iter()
            .any(|d| d.starts_with("stock 'reserve")),
        "{:?}",
        f.duplicate_effects
    );
    assert!(f.stock_actual_out > f.stock_expected_out);
}

/// A breaking OrderCreated (check off) cannot be read by inventory: it goes
/// to the dlq and inventory rejects the order (its step failed), which cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreography_drift_goes_to_the_dlq_and_the_order_is_cancelled() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let s = common::session_with(dir, "no-schema-check,schema-drift=0.3", 7, choreography).await;
    let fin = common::place_and_settle(s, 40).await;
    let f = &fin.facts;
    assert_eq!(f.orders_created, 40);
    assert!(fin.dead_lettered > 0, "nothing went to the dlq");
    assert_eq!(f.sagas_timed_out, 0, "no deadline in a choreography");
    assert!(f.orders_compensated >= fin.dead_lettered as i64);
    let dlq: Vec<Record> = fin
        .model
        .records()
        .filter(|r| r.topic == topics::DLQ)
        .collect();
    assert_eq!(dlq.len() as u64, fin.dead_lettered);
    let why = header(&dlq[0], "dlq_error").expect("dlq_error header");
    assert!(why.contains("OrderCreated v3"), "{why}");
    assert_every_invariant(&fin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreography_poison_records_go_to_the_dlq_from_event_topics() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let s = common::session_with(dir, "poison-message=3", 7, choreography).await;
    let fin = common::place_and_settle(s, 30).await;
    let originals: std::collections::BTreeSet<(String, String, String)> = fin
        .model
        .records()
        .filter(|r| r.topic == topics::DLQ)
        .map(|r| {
            let h = |n: &str| header(&r, n).expect("dlq header").to_owned();
            (
                h("dlq_original_topic"),
                h("dlq_original_partition"),
                h("dlq_original_offset"),
            )
        })
        .collect();
    assert_eq!(originals.len(), 3, "{originals:?}");
    assert!(originals.iter().all(|(t, _, _)| !t.ends_with(".commands")));
    assert_eq!(fin.facts.orders_completed, 30, "consumers went on");
}

/// A demo that can switch: orders placed before the switch are orchestrated,
/// those after it choreographed; both end, and their records tell them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_of_both_modes_run_side_by_side() {
    use eventscope_demo::saga::SagaMode;
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut s = common::session_with(dir, "shipping-failure=0.2", 7, |c| {
        c.saga_switchable = true;
    })
    .await;
    s.place_orders(20, false).await.expect("orders");
    s.system
        .set_saga_mode(SagaMode::Choreography)
        .expect("switchable");
    s.place_orders(20, false).await.expect("orders");
    common::settle(&mut s, 40, 90).await;
    let db = s.system.ctx.db.clone();
    let fin = s.finish().await.expect("finish");
    assert_eq!(
        fin.facts.orders_completed + fin.facts.orders_compensated,
        40
    );
    assert_every_invariant(&fin);
    let sagas = db.count("SELECT COUNT(*) FROM sagas").await.expect("count");
    assert_eq!(sagas, 20, "only the orchestrated orders have saga state");
    let chor = eventscope_demo::report::choreographed_orders(&db)
        .await
        .expect("modes");
    assert_eq!(chor.len(), 20);
    let mut created = HashMap::new();
    for r in fin.model.records() {
        let mode = header(&r, "ce_sagamode").unwrap_or("none").to_owned();
        if header(&r, "ce_type") == Some("OrderCreated") {
            *created.entry(mode.clone()).or_insert(0) += 1;
        }
        // Nothing of a choreographed order passes through a command topic.
        let order = header(&r, "ce_subject").unwrap_or_default();
        if chor.contains(order) {
            assert!(!r.topic.ends_with(".commands"), "{order} on {}", r.topic);
            assert_eq!(mode, "choreography");
        }
    }
    assert_eq!(
        created,
        HashMap::from([
            ("orchestration".to_owned(), 20),
            ("choreography".to_owned(), 20)
        ])
    );
    // A demo started for one mode refuses the other.
    let (_d2, dir2) = common::temp_dir();
    let one = common::session_with(dir2, "", 7, choreography).await;
    assert!(one.system.set_saga_mode(SagaMode::Orchestration).is_err());
    let _ = one.finish().await;
}

/// The relay is woken by commits, not by its poll: with a poll of 60 s, sagas of
/// nine relayed hops each still end in seconds. On PostgreSQL a row committed by
/// another process (here: another connection pool, which rings no in-process
/// signal) is published through the outbox trigger's NOTIFY, also in seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_wake_the_relay_before_its_poll() {
    use eventscope_demo::order_service::{self, Meta};
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let poll = Duration::from_secs(60);
    let mut s = common::session_with(dir, "", 7, |c| c.relay_interval = poll).await;
    let started = Instant::now();
    let placed = s.place_orders(10, false).await.expect("orders placed");
    common::settle(&mut s, placed as i64, 30).await;
    assert!(started.elapsed() < poll / 2, "{:?}", started.elapsed());
    let db = s.system.ctx.db.clone();
    if db.backend == eventscope_demo::store::Backend::Postgres {
        let other = eventscope_demo::store::Db::connect(&s.system.ctx.config.database_url)
            .await
            .expect("second pool");
        let (order_id, cmd) = eventscope_demo::system::DemoSystem::order_command(99, 1);
        let written = Instant::now();
        order_service::execute(&other, &order_id, cmd, &Meta::default(), 100)
            .await
            .expect("store")
            .expect("placed");
        let published = loop {
            let n = db
                .count(&format!(
                    "SELECT COUNT(*) FROM outbox WHERE subject = '{order_id}' AND published_at IS NOT NULL"
                ))
                .await
                .expect("count");
            if n > 0 || written.elapsed() > Duration::from_secs(20) {
                break n > 0;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(published, "the NOTIFY did not wake a relay");
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "{:?}",
            written.elapsed()
        );
    }
    s.finish().await.expect("finish");
}

/// `place_orders_at` paces the requests: n orders at r per second take at
/// least (n - 1) / r, and all are placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_placed_at_the_rate_asked() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut s = common::session(dir, "", 7).await;
    for (n, rate) in [(5, 4.0), (3, 1.5)] {
        let started = Instant::now();
        let placed = s
            .place_orders_at(n, Some(rate), false)
            .await
            .expect("orders placed");
        assert_eq!(placed, n);
        let least = Duration::from_secs_f64((n - 1) as f64 / rate);
        assert!(
            started.elapsed() >= least,
            "{n} at {rate}/s: {:?}",
            started.elapsed()
        );
    }
    common::settle(&mut s, 8, 60).await;
    s.finish().await.expect("finish");
}

/// Without idempotency a redelivered command runs again. When it changes
/// nothing (a rejection: no stock moves, no effect to tell apart), its reply is
/// the very event already in the outbox (same id, derived from the command),
/// which is not written twice: the consumer goes on instead of failing on the
/// outbox's unique event id for ever, and every saga ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotency_a_repeated_rejection_does_not_wedge_the_consumer() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let fin = common::run(
        dir,
        "no-idempotency,duplicate-publish=0.5,out-of-stock=0.9",
        30,
    )
    .await;
    let f = &fin.facts;
    assert_eq!(f.orders_stuck, 0, "{:?}", f.stuck_phases);
    assert_eq!(f.orders_compensated + f.orders_completed, 30, "{f:?}");
    assert_eq!(f.outbox_pending, 0);
    assert!(f.orders_compensated > 20, "{f:?}");
}

/// A record whose effect the database refuses for good (here a trigger on
/// `payments` for two orders, a stand-in for a constraint a real service
/// would hit) does not wedge its consumer: tried three times, it goes to the
/// dlq with the database's error, the rest of its batch is applied, and the
/// orders' step deadline compensates the two sagas. Every other order completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_database_refuses_goes_to_the_dlq_and_the_consumer_goes_on() {
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let s = common::session_with(dir, "", 7, |c| {
        c.step_timeout = Duration::from_secs(2);
    })
    .await;
    let refused: Vec<String> = [2, 5]
        .iter()
        .map(|n| eventscope_demo::DemoSystem::order_command(7, *n).0)
        .collect();
    let orders = format!("'{}'", refused.join("', '"));
    let db = &s.system.ctx.db;
    let statements = match db.backend {
        eventscope_demo::store::Backend::Sqlite => vec![format!(
            "CREATE TRIGGER refuse_payment BEFORE INSERT ON payments WHEN NEW.order_id IN ({orders}) \
             BEGIN SELECT RAISE(ABORT, 'payments refused for this order'); END"
        )],
        eventscope_demo::store::Backend::Postgres => vec![
            "CREATE FUNCTION refuse_payment() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'payments refused for this order'; END $$ LANGUAGE plpgsql"
                .to_owned(),
            format!(
                "CREATE TRIGGER refuse_payment BEFORE INSERT ON payments FOR EACH ROW \
                 WHEN (NEW.order_id IN ({orders})) EXECUTE FUNCTION refuse_payment()"
            ),
        ],
    };
    for sql in statements {
        sqlx::query(&sql).execute(&db.pool).await.expect("trigger");
    }
    let fin = common::place_and_settle(s, 30).await;
    let f = &fin.facts;
    assert_eq!(f.orders_stuck, 0, "{:?}", f.stuck_phases);
    assert_eq!(f.orders_compensated, 2, "{f:?}");
    assert_eq!(f.orders_completed, 28, "{f:?}");
    assert_eq!(f.outbox_pending, 0);
    assert_eq!(fin.dead_lettered, 2);
    assert_eq!(f.sagas_timed_out, 2);
    let dlq: Vec<Record> = fin
        .model
        .records()
        .filter(|r| r.topic == topics::DLQ)
        .collect();
    assert_eq!(dlq.len(), 2, "one dlq record per refused command");
    for r in &dlq {
        let why = header(r, "dlq_error").expect("dlq_error header");
        assert!(
            why.contains("payment-service cannot apply ProcessPayment")
                && why.contains("payments refused for this order"),
            "{why}"
        );
    }
    assert_every_invariant(&fin);
}

/// On SQLite the relay's claim reads on a connection of its own: a row committed
/// while the one writer is taken is still published (only its mark waits for
/// the writer). Before, the claim took a turn on the writer like every
/// consumer's transaction, and waited behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_the_relay_claims_while_the_writer_is_taken() {
    use eventscope_demo::order_service::{self, Meta};
    use eventscope_demo::store::{Backend, Db};
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut s = common::session_with(dir, "", 7, |c| {
        c.relay_interval = Duration::from_millis(200)
    })
    .await;
    if s.system.ctx.db.backend != Backend::Sqlite {
        eprintln!("skipped on PostgreSQL: there the claim locks its rows in a transaction");
        s.finish().await.expect("finish");
        return;
    }
    let placed = s.place_orders(1, false).await.expect("orders placed");
    common::settle(&mut s, placed as i64, 30).await;
    let published = |s: &eventscope::headless::Session| {
        let settings = s.settings.clone();
        move || -> i64 {
            settings
                .high_watermarks(&topics::ALL, Duration::from_secs(5))
                .expect("high watermarks")
                .values()
                .sum()
        }
    };
    let before = tokio::task::spawn_blocking(published(&s))
        .await
        .expect("highs");
    // The session's one writer, taken: no consumer, no order and no mark gets a turn.
    let held = s.system.ctx.db.begin().await.expect("the writer");
    // A row committed through another pool (another process, as far as the relay
    // knows: no signal, the relay's poll finds it).
    let other = Db::connect(&s.system.ctx.config.database_url)
        .await
        .expect("second pool");
    let (order_id, cmd) = eventscope_demo::system::DemoSystem::order_command(99, 1);
    order_service::execute(&other, &order_id, cmd, &Meta::default(), 100)
        .await
        .expect("store")
        .expect("placed");
    let waited = Instant::now();
    let after = loop {
        let n = tokio::task::spawn_blocking(published(&s))
            .await
            .expect("highs");
        if n > before || waited.elapsed() > Duration::from_secs(20) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        after,
        before + 1,
        "the OrderCreated row was not published while the writer was taken"
    );
    drop(held);
    common::settle(&mut s, placed as i64 + 1, 30).await;
    s.finish().await.expect("finish");
}

/// A consumer whose transactions keep failing with a transient error (here
/// PostgreSQL's serialization failure, SQLSTATE 40001, raised by a trigger on the
/// shipping service's processed-event marks) goes on retrying, loses nothing and
/// says so: after ten in a row (about 7 s of back-off) "still retrying a batch
/// after 10 transient errors" is among the demo's errors, where the window and the
/// headless run show it. Once the cause is gone the batch applies and every saga ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_held_back_by_transient_errors_says_it_is_still_retrying() {
    use eventscope_demo::store::Backend;
    let _slot = common::slot().await;
    let (_d, dir) = common::temp_dir();
    let mut s = common::session(dir, "", 7).await;
    let db = s.system.ctx.db.clone();
    if db.backend != Backend::Postgres {
        eprintln!("skipped on SQLite: its transient errors (a busy file) come only after the 10 s busy timeout");
        s.finish().await.expect("finish");
        return;
    }
    for sql in [
        "CREATE FUNCTION hold_back_shipping() RETURNS trigger AS $$ BEGIN \
         RAISE EXCEPTION 'held back by the test' USING ERRCODE = '40001'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER hold_back_shipping BEFORE INSERT ON processed_events FOR EACH ROW \
         WHEN (NEW.consumer = 'shipping-service') EXECUTE FUNCTION hold_back_shipping()",
    ] {
        sqlx::query(sql).execute(&db.pool).await.expect("trigger");
    }
    let placed = s.place_orders(5, false).await.expect("orders placed");
    let wanted = "shipping-service: still retrying a batch after 10 transient errors";
    let mut errors: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !errors.iter().any(|e| e.contains(wanted)) {
        assert!(
            Instant::now() < deadline,
            "no '{wanted}' within 60 s; the demo's errors: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        errors.extend(s.system.take_errors());
    }
    assert!(
        errors.iter().any(|e| e.contains("held back by the test")),
        "the report names the database's error: {errors:?}"
    );
    sqlx::query("DROP TRIGGER hold_back_shipping ON processed_events")
        .execute(&db.pool)
        .await
        .expect("drop trigger");
    common::settle(&mut s, placed as i64, 60).await;
    let fin = s.finish().await.expect("finish");
    assert_eq!(fin.facts.orders_completed, placed as i64, "{:?}", fin.facts);
    assert_eq!(fin.facts.outbox_pending, 0);
    assert_every_invariant(&fin);
}
