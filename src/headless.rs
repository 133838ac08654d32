//! `eventscope demo --headless`: run the demo and the observer to quiescence and
//! write the report. Every number comes from the database or from the topics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventscope_demo::faults::{Fault, Faults};
use eventscope_demo::kafka::KafkaSettings;
use eventscope_demo::report::{self as dbreport, DbFacts};
use eventscope_demo::system::{DemoConfig, DemoSystem};
use eventscope_demo::topics;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::cli::{Connection, DemoArgs};
use crate::kafka::broker::EmbeddedBroker;
use crate::kafka::tap::{self, TopicSelection};
use crate::model::record::Record;
use crate::model::Model;

/// Resolve the broker: the user's Kafka, or a fresh embedded one.
pub fn kafka_settings(conn: &Connection) -> anyhow::Result<(KafkaSettings, Option<Arc<EmbeddedBroker>>)> {
    match &conn.brokers {
        Some(b) => {
            let mut s = KafkaSettings::new(b.clone());
            s.extra = conn.kafka_config.clone();
            Ok((s, None))
        }
        None => {
            let broker = Arc::new(EmbeddedBroker::start(1)?);
            let mut s = broker.settings();
            s.extra = conn.kafka_config.clone();
            Ok((s, Some(broker)))
        }
    }
}

pub fn data_dir(conn: &Connection) -> PathBuf {
    conn.data_dir
        .clone()
        .or_else(|| dirs::data_dir().map(|d| d.join("eventscope")))
        .unwrap_or_else(|| PathBuf::from(".eventscope"))
}

/// The database URL: the user's, or a new SQLite file for this run.
pub fn database_url(conn: &Connection, stem: &str) -> String {
    match &conn.database {
        Some(u) => u.clone(),
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
            let path = data_dir(conn).join(format!("{stem}-{stamp}.sqlite"));
            format!("sqlite://{}", path.display())
        }
    }
}

struct Progress {
    started: Instant,
}

impl Progress {
    fn say(&self, msg: impl AsRef<str>) {
        eprintln!("[{:>6.1}s] {}", self.started.elapsed().as_secs_f64(), msg.as_ref());
    }
}

/// What is still in motion; empty when quiescent.
async fn unsettled(system: &DemoSystem, settings: &KafkaSettings, model: &Model, expected_orders: i64) -> anyhow::Result<Vec<String>> {
    let db = &system.ctx.db;
    let mut open = Vec::new();
    let created = db.count("SELECT COUNT(*) FROM order_events WHERE event_type = 'OrderCreated'").await?;
    let terminal = db.count("SELECT COUNT(*) FROM sagas WHERE phase IN ('completed', 'compensated')").await?;
    if terminal < expected_orders || created < expected_orders {
        open.push(format!("{} of {expected_orders} sagas terminal", terminal));
    }
    let pending = db.count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").await?;
    if pending > 0 {
        open.push(format!("{pending} outbox rows unpublished"));
    }
    for f in [Fault::BrokerOutage, Fault::PoisonMessage] {
        if system.faults().is_on(f) {
            open.push(format!("{f} not injected yet"));
        }
    }
    if !open.is_empty() {
        return Ok(open);
    }
    let s = settings.clone();
    let groups = DemoSystem::groups();
    let (lags, highs) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut lags = Vec::new();
        for (g, t) in &groups {
            lags.push((*g, s.group_lag(g, t, Duration::from_secs(5))?));
        }
        let highs = s.high_watermarks(&topics::ALL, Duration::from_secs(5))?;
        Ok((lags, highs))
    })
    .await??;
    for (g, lag) in lags {
        if lag > 0 {
            open.push(format!("consumer group {g} lags by {lag}"));
        }
    }
    let seen = model.positions();
    let behind: i64 = highs
        .iter()
        .map(|(tp, high)| (high - seen.get(tp).copied().unwrap_or(0)).max(0))
        .sum();
    if behind > 0 {
        open.push(format!("observer {behind} records behind"));
    }
    Ok(open)
}

pub async fn run(conn: Connection, args: DemoArgs) -> anyhow::Result<i32> {
    let p = Progress { started: Instant::now() };
    let (settings, broker) = kafka_settings(&conn)?;
    let where_ = match &broker {
        Some(b) => format!("embedded broker {}", b.bootstrap()),
        None => format!("Kafka at {}", settings.brokers),
    };
    let url = database_url(&conn, "demo");
    let display_url = eventscope_demo::store::redact_url(&url);
    p.say(format!("starting the demo on {where_}, database {display_url}"));
    let faults = Arc::new(Faults::from_spec(args.seed, &args.faults));
    let mut config = DemoConfig::new(settings.clone(), url);
    config.partitions = args.partitions;
    config.seed = args.seed;
    config.snapshot_every = args.snapshot_every;
    let system = DemoSystem::start(config, faults.clone()).await.context("starting the demo")?;

    let (records_tx, mut records_rx) = mpsc::channel::<Record>(65_536);
    let (status_tx, _status_rx) = watch::channel(tap::TapStatus::Connecting);
    let (stop_tx, stop_rx) = watch::channel(false);
    let tap_sel = TopicSelection::Named(topics::ALL.iter().map(|t| (*t).to_owned()).collect());
    let tap_task = tokio::spawn(tap::run(settings.clone(), tap_sel, records_tx, status_tx, stop_rx));
    let mut model = Model::default();
    let now_ms = || chrono::Utc::now().timestamp_millis();

    let baseline = system.ctx.db.count("SELECT COUNT(*) FROM order_events WHERE event_type = 'OrderCreated'").await?;
    p.say(format!("placing {} orders (seed {})", args.orders, args.seed));
    for i in 0..args.orders {
        if let Err(e) = system.place_order().await? {
            anyhow::bail!("order {i} rejected: {e}");
        }
        if (i + 1) % 100 == 0 {
            p.say(format!("placed {}", i + 1));
        }
        while let Ok(r) = records_rx.try_recv() {
            model.ingest(r, now_ms());
        }
    }
    let expected = baseline + args.orders as i64;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut last_note = Instant::now();
    let mut open = vec!["not checked".to_owned()];
    while Instant::now() < deadline {
        let tick = tokio::time::sleep(Duration::from_millis(250));
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = &mut tick => break,
                r = records_rx.recv() => match r {
                    Some(r) => model.ingest(r, now_ms()),
                    None => break,
                },
            }
        }
        model.tick(now_ms());
        for e in system.take_errors() {
            p.say(format!("note: {e}"));
        }
        open = unsettled(&system, &settings, &model, expected).await?;
        if open.is_empty() {
            break;
        }
        if last_note.elapsed() > Duration::from_secs(3) {
            last_note = Instant::now();
            p.say(format!("waiting: {}", open.join("; ")));
        }
    }
    let quiescent = open.is_empty();
    if quiescent {
        p.say("quiescent");
    } else {
        p.say(format!("timed out after {}s; still open: {}", args.timeout, open.join("; ")));
    }
    while let Ok(r) = records_rx.try_recv() {
        model.ingest(r, now_ms());
    }
    model.tick(now_ms());
    let facts = dbreport::collect(&system.ctx.db).await?;
    let published = dbreport::published_event_ids(&system.ctx.db).await?;
    let restarts = system.restarts();
    let _ = stop_tx.send(true);
    system.shutdown().await;
    let _ = tap_task.await;

    let report = build_report(&args, &facts, &published, &model, quiescent, &open, p.started.elapsed(), restarts, &faults, &where_, &display_url);
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.report {
        std::fs::write(path, &text).with_context(|| format!("writing the report to {}", path.display()))?;
        p.say(format!("report written to {}", path.display()));
    } else {
        println!("{text}");
    }
    p.say(summary(&report));
    drop(broker);
    Ok(if quiescent { 0 } else { 3 })
}

fn summary(r: &serde_json::Value) -> String {
    format!(
        "orders {}, events {}, invariants {}, anomalies {}",
        r["orders"], r["events"], r["invariants"], r["anomaly_counts"]
    )
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &DemoArgs,
    f: &DbFacts,
    published: &[String],
    model: &Model,
    quiescent: bool,
    open: &[String],
    took: Duration,
    restarts: u64,
    faults: &Faults,
    broker: &str,
    database: &str,
) -> serde_json::Value {
    let missing: Vec<&String> = published.iter().filter(|id| !model.has_event(id)).collect();
    let observed = model.events_json();
    let mut fault_states = serde_json::Map::new();
    for (fault, _) in &args.faults.0 {
        let s = faults.state(*fault);
        fault_states.insert(fault.name().into(), json!({"value": s.value, "fired": s.fired}));
    }
    json!({
        "orders": {
            "created": f.orders_created,
            "completed": f.orders_completed,
            "compensated": f.orders_compensated,
            "stuck": f.orders_stuck,
        },
        "events": observed,
        "outbox": {
            "written": f.outbox_written,
            "published": f.outbox_published,
            "pending": f.outbox_pending,
            "republished": f.outbox_republished,
        },
        "anomalies": model.anomalies_json(),
        "anomaly_counts": model.anomaly_counts_json(),
        "invariants": {
            "no_lost_events": f.outbox_pending == 0 && missing.is_empty(),
            "no_duplicate_effects": f.duplicate_effects.is_empty(),
            "all_sagas_terminal": f.all_sagas_terminal(),
            "read_model_matches_replay": f.read_model_mismatches.is_empty(),
            "stock_conserved": f.stock_conserved(),
        },
        "details": {
            "duplicate_effects": f.duplicate_effects.iter().take(50).collect::<Vec<_>>(),
            "read_model_mismatches": f.read_model_mismatches.iter().take(50).collect::<Vec<_>>(),
            "published_but_not_observed": missing.iter().take(50).collect::<Vec<_>>(),
            "open_sagas_by_phase": f.stuck_phases.iter().map(|(p, n)| json!({"phase": p, "count": n})).collect::<Vec<_>>(),
            "stock": {"expected_out": f.stock_expected_out, "actual_out": f.stock_actual_out},
            "still_open": open,
            "task_restarts": restarts,
        },
        "run": {
            "seed": args.seed,
            "orders_requested": args.orders,
            "faults": fault_states,
            "broker": broker,
            "database": database,
            "partitions": args.partitions,
            "quiescent": quiescent,
            "duration_ms": took.as_millis() as u64,
        },
    })
}
