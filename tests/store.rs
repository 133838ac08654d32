//! The store on real SQLite: outbox atomicity, snapshots, bad URLs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use eventscope_demo::domain::{LineItem, OrderCommand, OrderStatus};
use eventscope_demo::order_service::{self, Meta};
use eventscope_demo::store::{Db, StoreError};

async fn db() -> (common::TestEnv, Db) {
    let (env, dir) = common::temp_dir();
    let url = common::conn(dir.clone())
        .database
        .unwrap_or_else(|| format!("sqlite://{}/t.sqlite", dir.display()));
    let db = Db::connect(&url).await.expect("connect");
    (env, db)
}

fn place(id: &str) -> OrderCommand {
    OrderCommand::PlaceOrder {
        order_id: id.into(),
        customer_email: "a@example.com".into(),
        shipping_address: "1 Main St".into(),
        items: vec![LineItem {
            product_id: "lamp".into(),
            quantity: 1,
            unit_price_cents: 2900,
        }],
    }
}

async fn counts(db: &Db) -> (i64, i64) {
    (
        db.count("SELECT COUNT(*) FROM order_events")
            .await
            .expect("count"),
        db.count("SELECT COUNT(*) FROM outbox")
            .await
            .expect("count"),
    )
}

#[tokio::test]
async fn a_failed_transaction_leaves_neither_events_nor_outbox_rows() {
    let (_d, db) = db().await;
    let mut tx = db.begin().await.expect("begin");
    let r = order_service::execute_in(&mut tx, "o1", place("o1"), &Meta::default(), 100)
        .await
        .expect("store");
    assert!(r.is_ok());
    // The transaction fails after the append: e.g. a statement that violates a constraint.
    let fail = sqlx::query("INSERT INTO order_events (aggregate_id, version, event_id, event_type, payload, metadata, created_at) VALUES ('o1', 1, 'x', 't', '{}', '{}', 0)")
        .execute(&mut *tx)
        .await;
    assert!(fail.is_err());
    tx.rollback().await.expect("rollback");
    assert_eq!(counts(&db).await, (0, 0));

    let r = order_service::execute(&db, "o1", place("o1"), &Meta::default(), 100)
        .await
        .expect("store");
    assert!(r.is_ok());
    assert_eq!(counts(&db).await, (1, 1));
}

#[tokio::test]
async fn optimistic_concurrency_rejects_a_stale_version() {
    let (_d, db) = db().await;
    order_service::execute(&db, "o1", place("o1"), &Meta::default(), 100)
        .await
        .expect("store")
        .expect("placed");
    // A writer that loaded version 1 and appends version 2 after another did.
    let mut tx = db.begin().await.expect("begin");
    sqlx::query("INSERT INTO order_events (aggregate_id, version, event_id, event_type, payload, metadata, created_at) VALUES ('o1', 2, 'other', 'OrderNoteAdded', '{\"order_id\":\"o1\",\"text\":\"x\"}', '{}', 0)")
        .execute(&mut *tx)
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    let mut tx = db.begin().await.expect("begin");
    // load() sees version 2 now, so the next append is version 3: no conflict...
    let ok = order_service::execute_in(
        &mut tx,
        "o1",
        OrderCommand::AddNote { text: "y".into() },
        &Meta::default(),
        100,
    )
    .await;
    assert!(matches!(ok, Ok(Ok(_))));
    tx.rollback().await.expect("rollback");
    // ...but a duplicate (aggregate, version) is a conflict, not a silent overwrite.
    let dup = sqlx::query("INSERT INTO order_events (aggregate_id, version, event_id, event_type, payload, metadata, created_at) VALUES ('o1', 2, 'again', 't', '{}', '{}', 0)")
        .execute(&db.pool)
        .await;
    assert!(dup.is_err());
}

#[tokio::test]
async fn snapshot_plus_tail_equals_full_replay_in_the_store() {
    let (_d, db) = db().await;
    order_service::execute(&db, "o1", place("o1"), &Meta::default(), 5)
        .await
        .expect("store")
        .expect("placed");
    for i in 0..12 {
        order_service::execute(
            &db,
            "o1",
            OrderCommand::AddNote {
                text: format!("n{i}"),
            },
            &Meta::default(),
            5,
        )
        .await
        .expect("store")
        .expect("noted");
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_snapshots")
            .await
            .expect("count"),
        2
    );
    let mut tx = db.begin().await.expect("begin");
    let (state, loaded) = order_service::load(&mut tx, "o1").await.expect("load");
    tx.rollback().await.expect("rollback");
    assert_eq!(loaded.snapshot_version, 10);
    assert_eq!(loaded.tail, 3);
    let full = order_service::replay_all(&db, "o1").await.expect("replay");
    assert_eq!(state, full);
    assert_eq!(full.version, 13);
    assert_eq!(full.status, OrderStatus::Pending);
}

#[tokio::test]
async fn bad_database_urls_are_clear_errors() {
    assert!(matches!(
        Db::connect("mysql://x").await,
        Err(StoreError::BadUrl(_))
    ));
    assert!(matches!(
        Db::connect("sqlite://").await,
        Err(StoreError::BadUrl(_))
    ));
    let e = Db::connect("postgres://nobody:secret@127.0.0.1:1/none")
        .await
        .expect_err("unreachable");
    let msg = e.to_string();
    assert!(msg.contains("cannot open database"), "{msg}");
    assert!(!msg.contains("secret"), "password leaked: {msg}");
}

/// The CDC relay's replication slot is kept while an outbox row is unpublished (a later run
/// publishes it from the slot), dropped once none is, and listed as idle while no relay reads
/// it (the start-up warning). PostgreSQL only.
#[tokio::test]
async fn the_cdc_slot_is_kept_while_work_is_pending_and_dropped_after() {
    use eventscope_demo::cdc::{self, SlotRelease};
    if !common::wants_postgres() {
        eprintln!("replication slots need PostgreSQL: run with EVENTSCOPE_TEST_DB=postgres (.ci/test does)");
        return;
    }
    let (_d, db) = db().await;
    let ours = "SELECT COUNT(*) FROM pg_replication_slots WHERE database = current_database()";
    assert_eq!(
        cdc::release_slot(&db).await.expect("release"),
        SlotRelease::Absent
    );
    let slot = cdc::ensure_slot(&db).await.expect("slot");
    let idle = cdc::idle_slots(&db).await.expect("idle slots");
    assert!(idle.iter().any(|s| s.slot == slot), "{idle:?}");
    order_service::execute(&db, "o1", place("o1"), &Meta::default(), 100)
        .await
        .expect("store")
        .expect("placed");
    match cdc::release_slot(&db).await.expect("release") {
        SlotRelease::Kept { slot: s, pending } => assert!(s == slot && pending > 0),
        other => panic!("dropped with work pending: {other:?}"),
    }
    assert_eq!(db.count(ours).await.expect("count"), 1, "kept");
    sqlx::query("UPDATE outbox SET published_at = 1")
        .execute(&db.pool)
        .await
        .expect("mark published");
    assert_eq!(
        cdc::release_slot(&db).await.expect("release"),
        SlotRelease::Dropped(slot)
    );
    assert_eq!(db.count(ours).await.expect("count"), 0, "dropped");
}
