//! Shared set-up: a demo session on a fresh embedded broker and SQLite file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod broker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventscope::cli::Connection;
use eventscope::headless::{Finished, Session};
use eventscope_demo::faults::{FaultSpec, Faults};
use eventscope_demo::system::DemoConfig;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Demo runs are CPU-heavy; at most two at once on a small machine.
static SLOTS: Semaphore = Semaphore::const_new(2);

pub async fn slot() -> SemaphorePermit<'static> {
    match SLOTS.acquire().await {
        Ok(p) => p,
        Err(e) => panic!("semaphore closed: {e}"),
    }
}

/// Where a test runs: a temp dir for SQLite files, and, as the environment
/// asks, a fresh PostgreSQL database (`EVENTSCOPE_TEST_DB=postgres`, server at
/// `EVENTSCOPE_TEST_PG`, default `postgres://postgres@127.0.0.1:5432`) and a
/// fresh tansu broker (`EVENTSCOPE_TEST_BROKER=tansu`, binary `tansu` on PATH
/// or at `EVENTSCOPE_TANSU`). Dropped: the database and broker go too.
pub struct TestEnv {
    _dir: tempfile::TempDir,
    path: PathBuf,
    pg_database: Option<String>,
    tansu: Option<std::process::Child>,
}

static CONNECTIONS: Mutex<Vec<(PathBuf, Connection)>> = Mutex::new(Vec::new());

pub fn pg_server() -> String {
    std::env::var("EVENTSCOPE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn wants_postgres() -> bool {
    std::env::var("EVENTSCOPE_TEST_DB").is_ok_and(|v| v == "postgres")
}

pub fn wants_tansu() -> bool {
    std::env::var("EVENTSCOPE_TEST_BROKER").is_ok_and(|v| v == "tansu")
}

/// Run one SQL statement on the server's maintenance database with psql.
fn psql(sql: &str) {
    let out = std::process::Command::new("psql")
        .args([
            &format!("{}/postgres", pg_server()),
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ])
        .output()
        .expect("psql runs (PostgreSQL client)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A fresh tansu broker (memory storage) on a loopback port.
pub fn start_tansu() -> (std::process::Child, String) {
    start_tansu_with(&[])
}

/// A fresh tansu with extra broker flags (e.g. `--authentication`).
pub fn start_tansu_with(extra: &[&str]) -> (std::process::Child, String) {
    let bin = std::env::var("EVENTSCOPE_TANSU").unwrap_or_else(|_| "tansu".into());
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = std::process::Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start tansu ({bin}): {e}; .ci/test installs it"));
    let addr = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "tansu did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Ok(mut c) = CONNECTIONS.lock() {
            c.retain(|(p, _)| p != &self.path);
        }
        if let Some(mut t) = self.tansu.take() {
            let _ = t.kill();
            let _ = t.wait();
        }
        if let Some(db) = self.pg_database.take() {
            // The CDC relay's replication slot pins the database: drop it first.
            psql(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{db}'"
            ));
            psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }
}

pub fn temp_dir() -> (TestEnv, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let mut conn = Connection {
        data_dir: Some(path.clone()),
        ..Connection::default()
    };
    let mut env = TestEnv {
        _dir: dir,
        path: path.clone(),
        pg_database: None,
        tansu: None,
    };
    if wants_postgres() {
        let db = format!("es_test_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE DATABASE {db}"));
        conn.database = Some(format!("{}/{db}", pg_server()));
        env.pg_database = Some(db);
    }
    if wants_tansu() {
        let (child, addr) = start_tansu();
        conn.brokers = Some(addr);
        env.tansu = Some(child);
    }
    CONNECTIONS
        .lock()
        .expect("connections")
        .push((path.clone(), conn));
    (env, path)
}

/// The connection for a test's data dir (database and broker as the environment asks).
pub fn conn(data_dir: PathBuf) -> Connection {
    CONNECTIONS
        .lock()
        .expect("connections")
        .iter()
        .find(|(p, _)| p == &data_dir)
        .map(|(_, c)| c.clone())
        .unwrap_or(Connection {
            data_dir: Some(data_dir),
            ..Connection::default()
        })
}

/// Start a session with `faults` (a `--faults` spec) and the given seed.
pub async fn session(data_dir: PathBuf, faults: &str, seed: u64) -> Session {
    session_with(data_dir, faults, seed, |_| {}).await
}

/// Like [`session`], with the demo's configuration adjusted.
pub async fn session_with(
    data_dir: PathBuf,
    faults: &str,
    seed: u64,
    config: impl FnOnce(&mut DemoConfig),
) -> Session {
    let spec: FaultSpec = faults.parse().expect("fault spec");
    let faults = Arc::new(Faults::from_spec(seed, &spec));
    Session::start(&conn(data_dir), config, faults)
        .await
        .expect("session starts")
}

/// Place `orders`, settle, finish. Panics with what is open if it does not settle.
pub async fn run(data_dir: PathBuf, faults: &str, orders: u64) -> Finished {
    let s = session(data_dir, faults, 7).await;
    place_and_settle(s, orders).await
}

/// Place `orders` (those the schema check refuses are not placed), settle, finish.
pub async fn place_and_settle(mut s: Session, orders: u64) -> Finished {
    let placed = s.place_orders(orders, false).await.expect("orders placed");
    settle(&mut s, placed as i64, 90).await;
    s.finish().await.expect("finish")
}

/// Wait up to `secs` for `expected` sagas to end and everything to be read.
/// Panics if it does not settle, with what the database and the log say about
/// the open orders, to tell a lost reaction from a slow one.
pub async fn settle(s: &mut Session, expected: i64, secs: u64) {
    let open = s
        .settle(expected, Duration::from_secs(secs), false)
        .await
        .expect("settle");
    if open.is_empty() {
        return;
    }
    let explained = explain_open_orders(s).await;
    panic!("not quiescent: {open:?}\n{explained}");
}

/// The orders created (database), the saga phases, and up to five orders the
/// log shows no end of, each with its saga phase and the `topic:type` of every
/// record keyed by it, in arrival order.
async fn explain_open_orders(s: &Session) -> String {
    let pool = &s.system.ctx.db.pool;
    let created: Vec<(String,)> = sqlx::query_as(
        "SELECT aggregate_id FROM order_events WHERE event_type = 'OrderCreated' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let sagas: Vec<(String, String)> =
        sqlx::query_as("SELECT order_id, phase FROM sagas ORDER BY order_id")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let mut phases: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, p) in &sagas {
        *phases.entry(p.as_str()).or_default() += 1;
    }
    let mut trails: std::collections::BTreeMap<String, Vec<String>> =
        created.iter().map(|(o,)| (o.clone(), Vec::new())).collect();
    for r in s.model.records() {
        let Some(key) = r
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
        else {
            continue;
        };
        let ty = r
            .headers
            .iter()
            .find(|(n, _)| *n == "ce_type")
            .and_then(|(_, v)| v)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| "?".into());
        if let Some(t) = trails.get_mut(&key) {
            t.push(format!("{}:{ty}", r.topic));
        }
    }
    let mut open: Vec<String> = Vec::new();
    for (k, t) in trails
        .iter()
        .filter(|(_, t)| {
            !t.iter()
                .any(|x| x.ends_with(":OrderCompleted") || x.ends_with(":OrderCancelled"))
        })
        .take(5)
    {
        let phase = sagas
            .iter()
            .find(|(o, _)| o == k)
            .map_or("no saga row", |(_, p)| p.as_str());
        // What the outbox says of the order's rows: a row marked published that no
        // consumer and no observer saw was acknowledged by the broker and is not in its log.
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT event_type, topic, CAST(CASE WHEN published_at IS NULL THEN 0 ELSE 1 END AS BIGINT), \
             CAST(publish_count AS BIGINT) FROM outbox WHERE msg_key = $1 ORDER BY id",
        )
        .bind(k)
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        let outbox: Vec<String> = rows
            .iter()
            .map(|(ty, topic, published, sent)| {
                let state = if *published == 1 {
                    "published"
                } else {
                    "unpublished"
                };
                format!("{topic}:{ty} {state}, sent {sent}x")
            })
            .collect();
        open.push(format!(
            "{k} (saga: {phase}): {}; outbox: [{}]",
            t.join(" "),
            outbox.join(", ")
        ));
    }
    let errors: Vec<&str> = s.recent_errors.iter().map(String::as_str).collect();
    format!(
        "{} orders created (database); saga phases {phases:?}; {} records observed\n{}\n\
         the demo's last errors: {errors:?}",
        created.len(),
        s.model.log().len(),
        open.join("\n")
    )
}
