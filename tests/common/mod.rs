//! Shared set-up: a demo session on a fresh embedded broker and SQLite file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eventscope::cli::Connection;
use eventscope::headless::{Finished, Session};
use eventscope_demo::faults::{FaultSpec, Faults};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Demo runs are CPU-heavy; at most two at once on a small machine.
static SLOTS: Semaphore = Semaphore::const_new(2);

pub async fn slot() -> SemaphorePermit<'static> {
    match SLOTS.acquire().await {
        Ok(p) => p,
        Err(e) => panic!("semaphore closed: {e}"),
    }
}

pub fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    (dir, path)
}

pub fn conn(data_dir: PathBuf) -> Connection {
    Connection {
        data_dir: Some(data_dir),
        ..Connection::default()
    }
}

/// Start a session with `faults` (a `--faults` spec) and the given seed.
pub async fn session(data_dir: PathBuf, faults: &str, seed: u64) -> Session {
    let spec: FaultSpec = faults.parse().expect("fault spec");
    let faults = Arc::new(Faults::from_spec(seed, &spec));
    Session::start(&conn(data_dir), |_| {}, faults)
        .await
        .expect("session starts")
}

/// Place `orders`, settle, finish. Panics with what is open if it does not settle.
pub async fn run(data_dir: PathBuf, faults: &str, orders: u64) -> Finished {
    let mut s = session(data_dir, faults, 7).await;
    s.place_orders(orders, false).await.expect("orders placed");
    let open = s
        .settle(orders as i64, Duration::from_secs(90), false)
        .await
        .expect("settle");
    assert!(open.is_empty(), "not quiescent: {open:?}");
    s.finish().await.expect("finish")
}
