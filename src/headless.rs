//! `eventscope demo --headless`: run the demo and the observer to quiescence and
//! write the report. Every number comes from the database or from the topics.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventscope_demo::faults::{Fault, Faults};
use eventscope_demo::kafka::KafkaSettings;
use eventscope_demo::report::{self as dbreport, DbFacts};
use eventscope_demo::store::StoreError;
use eventscope_demo::system::{DemoConfig, DemoSystem};
use eventscope_demo::telemetry::ExportReport;
use eventscope_demo::topics;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::cli::{Connection, DemoArgs};
use crate::kafka::broker::EmbeddedBroker;
use crate::kafka::tap::{self, TopicSelection};
use crate::model::groups::{GroupLag, GroupTracker};
use crate::model::Model;

/// Resolve the broker: the user's Kafka, or a fresh embedded one.
pub fn kafka_settings(
    conn: &Connection,
) -> anyhow::Result<(KafkaSettings, Option<Arc<EmbeddedBroker>>)> {
    match conn.user_kafka()? {
        Some(s) => Ok((s, None)),
        None => {
            let broker = Arc::new(EmbeddedBroker::start(1)?);
            let mut s = broker.settings();
            s.extra = conn.client_properties()?;
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

/// What is still in motion; empty when quiescent.
pub async fn unsettled(
    system: &DemoSystem,
    settings: &KafkaSettings,
    positions: &HashMap<(String, i32), i64>,
    expected_orders: i64,
) -> anyhow::Result<Vec<String>> {
    let db = &system.ctx.db;
    let mut open = Vec::new();
    let created = db
        .count("SELECT COUNT(*) FROM order_events WHERE event_type = 'OrderCreated'")
        .await?;
    let terminal = dbreport::terminal_orders(db).await?;
    if terminal < expected_orders || created < expected_orders {
        open.push(format!("{} of {expected_orders} sagas terminal", terminal));
    }
    let pending = db
        .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .await?;
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
    // The log's end before the groups' offsets are read and again after, and
    // the outbox again after them: a consumer that commits between the
    // outbox's count and its offset's read can write an outbox row (the order
    // service's `OrderCompleted` after `CompleteOrder`) that neither saw.
    // Then the outbox is not empty after, or the row was published meanwhile
    // and the log's end moved.
    let s = settings.clone();
    let groups = system.consumer_groups();
    let (before, lags, highs) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let before = s.high_watermarks(&topics::ALL, Duration::from_secs(5))?;
        let asked: Vec<(&str, &[&str])> = groups.iter().map(|(g, t)| (*g, t.as_slice())).collect();
        let lags: Vec<(&str, i64)> = groups
            .iter()
            .map(|(g, _)| *g)
            .zip(s.group_lags(&asked, &before, Duration::from_secs(5))?)
            .collect();
        let highs = s.high_watermarks(&topics::ALL, Duration::from_secs(5))?;
        Ok((before, lags, highs))
    })
    .await??;
    for (g, lag) in lags {
        if lag > 0 {
            open.push(format!("consumer group {g} lags by {lag}"));
        }
    }
    let pending = db
        .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .await?;
    if pending > 0 {
        open.push(format!("{pending} outbox rows unpublished"));
    }
    let moved = beyond(&highs, &before);
    if moved > 0 {
        open.push(format!("{moved} records published while checking"));
    }
    let behind = beyond(&highs, positions);
    if behind > 0 {
        open.push(format!("observer {behind} records behind"));
    }
    Ok(open)
}

/// Records of the log's end `highs` past the positions `at`, summed over the partitions.
fn beyond(highs: &HashMap<(String, i32), i64>, at: &HashMap<(String, i32), i64>) -> i64 {
    highs
        .iter()
        .map(|(tp, high)| (high - at.get(tp).copied().unwrap_or(0)).max(0))
        .sum()
}

/// A running demo with its observer: the pieces `demo --headless` and the tests drive.
pub struct Session {
    pub system: DemoSystem,
    pub settings: KafkaSettings,
    pub broker: Option<Arc<EmbeddedBroker>>,
    pub model: Model,
    pub faults: Arc<Faults>,
    /// Next offset to read per partition, from what the tap delivered.
    pub positions: HashMap<(String, i32), i64>,
    records_rx: mpsc::Receiver<tap::Batch>,
    stop_tx: watch::Sender<bool>,
    tap_task: tokio::task::JoinHandle<anyhow::Result<()>>,
    started: Instant,
    /// The demo's consumer groups, sampled while settling (read without joining them).
    groups: GroupTracker,
    /// The demo's last errors (at most [`KEPT_ERRORS`]), printed or not: what a run
    /// that does not settle reports.
    pub recent_errors: std::collections::VecDeque<String>,
}

/// Errors a session keeps for [`Session::recent_errors`].
const KEPT_ERRORS: usize = 20;

/// Everything a finished session knows.
pub struct Finished {
    pub facts: DbFacts,
    pub published: Vec<String>,
    pub model: Model,
    pub restarts: u64,
    pub duplicates_skipped: u64,
    /// Writes the producer-side schema check refused.
    pub schema_refused: u64,
    /// Records consumers sent to the dlq: unreadable for their contract, or
    /// refused for good by the database when applied.
    pub dead_lettered: u64,
    /// What the OTLP export did (after the final flush); None when off.
    pub tracing: Option<ExportReport>,
    /// The demo's consumer groups at the end, judged over the samples taken while settling.
    pub groups: Vec<GroupLag>,
    /// The relay's publish latency (outbox write → broker ack): p50, p99, max, samples.
    pub relay_latency: Option<(u32, u32, u32, usize)>,
}

/// With `--value-format json-schema` or `avro`: register the demo's contracts (as JSON
/// Schema, or their Avro rendering; subject = the event type, versions in order) with
/// `--schema-registry`; the codec that frames values with the ids it gave.
pub async fn register_contracts(
    conn: &Connection,
) -> anyhow::Result<Option<Arc<eventscope_demo::values::ValueCodec>>> {
    use crate::cli::ValueFormat;
    use eventscope_demo::values::{avro_schema, ValueCodec};
    let (format, name) = match conn.value_format {
        ValueFormat::CloudeventsJson => return Ok(None),
        ValueFormat::JsonSchema => ("JSON", "json-schema"),
        ValueFormat::Avro => ("AVRO", "avro"),
    };
    let Some(client) = conn.registry_client()? else {
        anyhow::bail!("--value-format {name} needs --schema-registry URL");
    };
    let reg = eventscope_demo::contracts::Registry::demo()?;
    let mut schemas = HashMap::new();
    for t in reg.types() {
        for v in reg.versions(t) {
            let Some(c) = reg.get(t, v) else { continue };
            let schema = match conn.value_format {
                ValueFormat::Avro => avro_schema(t, &c.schema).map_err(anyhow::Error::msg)?,
                _ => c.schema.clone(),
            };
            let id = client
                .register(t, format, &schema.to_string())
                .await
                .map_err(|e| anyhow::anyhow!("schema registry {}: {e}", client.cache().url()))?;
            schemas.insert((t.to_owned(), v), (id, schema));
        }
    }
    let codec = match conn.value_format {
        ValueFormat::Avro => ValueCodec::avro(schemas).map_err(anyhow::Error::msg)?,
        _ => ValueCodec::json_schema(schemas.into_iter().map(|(k, (id, _))| (k, id)).collect()),
    };
    Ok(Some(Arc::new(codec)))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Session {
    /// Start broker (unless `--brokers`), database, demo and tap.
    pub async fn start(
        conn: &Connection,
        config: impl FnOnce(&mut DemoConfig),
        faults: Arc<Faults>,
    ) -> anyhow::Result<Session> {
        Self::start_observing(conn, config, faults, false).await
    }

    /// Like [`Session::start`]; with `from_beginning` the observer reads the
    /// topics from their start even on a shared Kafka (a resumed run reports
    /// on every order in the database, so it must see their earlier events).
    pub async fn start_observing(
        conn: &Connection,
        config: impl FnOnce(&mut DemoConfig),
        faults: Arc<Faults>,
        from_beginning: bool,
    ) -> anyhow::Result<Session> {
        let started = Instant::now();
        let mut model_cfg = crate::profile::Profile::for_connection(conn)?.model_config();
        // Records in the Confluent wire format: their schemas fetched before the model reads
        // them (the demo's own with `--value-format json-schema`, or anybody's).
        let registry = conn.registry_client()?.map(Arc::new);
        if let Some(c) = &registry {
            model_cfg.decode.registry = c.handle();
        }
        let (settings, broker) = kafka_settings(conn)?;
        let url = database_url(conn, "demo");
        let mut cfg = DemoConfig::new(settings.clone(), url);
        cfg.values = register_contracts(conn).await?;
        cfg.seed = faults.seed();
        cfg.relay = conn.relay.into();
        cfg.otlp = conn.otlp();
        config(&mut cfg);
        let system = DemoSystem::start(cfg, faults.clone())
            .await
            .context("starting the demo")?;
        let (records_tx, records_rx) = mpsc::channel::<tap::Batch>(64);
        let records_rx = match registry {
            Some(client) => crate::registry::stage(client, records_rx, 65_536, |news| {
                if let crate::registry::RegistryNews::Unavailable(why) = news {
                    eprintln!(
                        "schema registry does not answer ({why}); its records stay undecoded"
                    );
                }
            }),
            None => records_rx,
        };
        let (status_tx, _status_rx) = watch::channel(tap::TapStatus::Connecting);
        let (stop_tx, stop_rx) = watch::channel(false);
        let sel = TopicSelection::Named(topics::ALL.iter().map(|t| (*t).to_owned()).collect());
        // On a broker of its own the observer reads everything; on a shared
        // Kafka it starts at the current end, so the report is about this run.
        let from = if broker.is_none() && !from_beginning {
            let (s, names) = (settings.clone(), topics::ALL);
            tokio::task::spawn_blocking(move || s.high_watermarks(&names, Duration::from_secs(10)))
                .await?
                .context("reading the topics' end offsets")?
        } else {
            HashMap::new()
        };
        let positions = from.clone();
        let tap_task = tokio::spawn(tap::run_from(
            settings.clone(),
            sel,
            from,
            records_tx,
            status_tx,
            stop_rx,
        ));
        Ok(Session {
            system,
            settings,
            broker,
            model: Model::new(model_cfg),
            faults,
            positions,
            records_rx,
            stop_tx,
            tap_task,
            started,
            groups: GroupTracker::new(5, 60_000),
            recent_errors: Default::default(),
        })
    }

    /// The demo's consumer groups' names.
    fn group_names(&self) -> Vec<String> {
        self.system
            .consumer_groups()
            .iter()
            .map(|(g, _)| (*g).to_owned())
            .collect()
    }

    /// One sample of the demo's groups, recorded.
    async fn sample_groups(&mut self) {
        let names = self.group_names();
        let topics: Vec<String> = topics::ALL.iter().map(|t| (*t).to_owned()).collect();
        let s = self.settings.clone();
        let got = tokio::task::spawn_blocking(move || {
            crate::kafka::groups::sample(&s, &names, &topics, Duration::from_secs(3))
        })
        .await;
        if let Ok(Ok(samples)) = got {
            for g in &samples {
                self.groups.record(g);
            }
        }
    }

    fn say(&self, msg: impl AsRef<str>) {
        say_at(self.started, msg);
    }

    fn ingest(&mut self, batch: tap::Batch) {
        ingest_into(&mut self.model, &mut self.positions, self.started, batch);
    }

    /// Feed what the tap has observed into the model.
    pub fn drain(&mut self) {
        while let Ok(r) = self.records_rx.try_recv() {
            self.ingest(r);
        }
    }

    /// Place `n` orders, [`PLACING`] requests in flight (as concurrent clients of
    /// the order service send them), feeding the observer meanwhile. Orders the
    /// schema check refuses are counted (see [`DemoSystem::schema_refused`]), not
    /// placed; returns how many were placed.
    pub async fn place_orders(&mut self, n: u64, progress: bool) -> anyhow::Result<u64> {
        self.place_orders_at(n, None, progress).await
    }

    /// [`Session::place_orders`], with the requests paced at `rate` orders per
    /// second (None: as fast as the order service answers).
    pub async fn place_orders_at(
        &mut self,
        n: u64,
        rate: Option<f64>,
        progress: bool,
    ) -> anyhow::Result<u64> {
        let started = self.started;
        let pacing = Instant::now();
        // When request `i` is due.
        let due = |i: u64| rate.map(|r| pacing + Duration::from_secs_f64(i as f64 / r));
        let system = &self.system;
        let (model, positions, records_rx) =
            (&mut self.model, &mut self.positions, &mut self.records_rx);
        let mut in_flight = FuturesUnordered::new();
        let (mut sent, mut answered, mut placed) = (0u64, 0u64, 0u64);
        while answered < n {
            while sent < n
                && in_flight.len() < PLACING
                && due(sent).is_none_or(|t| t <= Instant::now())
            {
                let i = sent;
                sent += 1;
                in_flight.push(async move { (i, system.place_order().await) });
            }
            let next_due = due(sent).filter(|_| sent < n && in_flight.len() < PLACING);
            let (i, result) = tokio::select! {
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now).into()), if next_due.is_some() => continue,
                Some(done) = in_flight.next() => done,
                Some(batch) = records_rx.recv() => {
                    ingest_into(model, positions, started, batch);
                    continue;
                }
            };
            answered += 1;
            match result {
                Ok(Ok(_)) => placed += 1,
                Ok(Err(e)) => anyhow::bail!("order {i} rejected: {e}"),
                Err(StoreError::Contract(e)) => {
                    if progress {
                        say_at(
                            started,
                            format!("order {i} refused by the schema check: {e}"),
                        );
                    }
                }
                Err(e) => return Err(e.into()),
            }
            if progress && answered % 100 == 0 {
                say_at(started, format!("placed {answered}"));
            }
        }
        Ok(placed)
    }

    /// Wait until `expected` sagas are terminal, outboxes drained, groups and
    /// observer caught up. Returns what is still open at the deadline (empty: quiescent).
    pub async fn settle(
        &mut self,
        expected: i64,
        timeout: Duration,
        progress: bool,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut last_note = Instant::now();
        let mut open = vec!["not checked".to_owned()];
        // The groups are sampled beside the loop, not in it: a sample is a
        // round trip to the broker per group, and waiting for it delayed the
        // next look at the database.
        let (samples_tx, mut samples_rx) = mpsc::channel(4);
        let sampler = tokio::spawn(crate::kafka::groups::sample_every_second(
            self.settings.clone(),
            self.group_names(),
            topics::ALL.iter().map(|t| (*t).to_owned()).collect(),
            samples_tx,
        ));
        while Instant::now() < deadline {
            let tick = tokio::time::sleep(Duration::from_millis(250));
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    _ = &mut tick => break,
                    r = self.records_rx.recv() => match r {
                        Some(r) => self.ingest(r),
                        None => break,
                    },
                    Some(samples) = samples_rx.recv() => {
                        for g in &samples {
                            self.groups.record(g);
                        }
                    }
                }
            }
            self.model.tick(now_ms());
            for e in self.system.take_errors() {
                if progress {
                    self.say(format!("note: {e}"));
                }
                if self.recent_errors.len() == KEPT_ERRORS {
                    self.recent_errors.pop_front();
                }
                self.recent_errors.push_back(e);
            }
            open = unsettled(&self.system, &self.settings, &self.positions, expected).await?;
            if open.is_empty() {
                break;
            }
            if progress && last_note.elapsed() > Duration::from_secs(3) {
                last_note = Instant::now();
                self.say(format!("waiting: {}", open.join("; ")));
            }
        }
        sampler.abort();
        while let Ok(samples) = samples_rx.try_recv() {
            for g in &samples {
                self.groups.record(g);
            }
        }
        self.drain();
        self.model.tick(now_ms());
        Ok(open)
    }

    /// Collect the database facts, stop everything.
    pub async fn finish(mut self) -> anyhow::Result<Finished> {
        self.drain();
        // One last look at the groups, then their verdicts (and consumer-stall findings).
        self.sample_groups().await;
        let groups = self.groups.verdicts(self.model.log(), now_ms());
        self.model.observe_groups(&groups);
        let facts = dbreport::collect(&self.system.ctx.db).await?;
        let published = dbreport::published_event_ids(&self.system.ctx.db).await?;
        let restarts = self.system.restarts();
        let duplicates_skipped = self.system.duplicates_skipped();
        let schema_refused = self.system.schema_refused();
        let dead_lettered = self.system.dead_lettered();
        let relay_latency = self.system.relay_latency();
        let _ = self.stop_tx.send(true);
        let Session {
            system,
            mut model,
            mut records_rx,
            mut tap_task,
            ..
        } = self;
        let export = system.ctx.clone();
        system.shutdown().await;
        let tracing = export.telemetry.export_report();
        let _ = (&mut tap_task).await;
        while let Ok(batch) = records_rx.try_recv() {
            for r in &batch {
                if let Err(e) = model.ingest(r, now_ms()) {
                    eprintln!("eventscope: observer: {e}");
                }
            }
        }
        model.tick(now_ms());
        Ok(Finished {
            facts,
            published,
            model,
            restarts,
            duplicates_skipped,
            schema_refused,
            dead_lettered,
            tracing,
            groups,
            relay_latency,
        })
    }
}

/// Order requests `place_orders` keeps in flight: 64 clients. The order
/// service decides what arrives while a transaction runs in the next one (a
/// group commit), so more clients mean fewer, fuller transactions; with 8,
/// placing was the run's bound (each transaction waited for its turn on
/// SQLite's one writer with at most 8 orders in it).
pub const PLACING: usize = 64;

fn say_at(started: Instant, msg: impl AsRef<str>) {
    eprintln!(
        "[{:>6.1}s] {}",
        started.elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

/// Ingest a batch from the tap and move the read positions on.
fn ingest_into(
    model: &mut Model,
    positions: &mut HashMap<(String, i32), i64>,
    started: Instant,
    batch: tap::Batch,
) {
    let now = now_ms();
    for r in &batch {
        if let Err(e) = model.ingest(r, now) {
            say_at(started, format!("observer: {e}"));
        }
    }
    for ((topic, partition), next) in tap::positions(batch.iter()) {
        let e = positions.entry((topic, partition)).or_insert(0);
        *e = (*e).max(next);
    }
}

/// Run the demo to quiescence and build the report. `quiescent` is false on timeout.
pub async fn execute(
    conn: &Connection,
    args: &DemoArgs,
) -> anyhow::Result<(serde_json::Value, bool)> {
    let faults = Arc::new(Faults::from_spec(args.seed, &args.faults));
    let (partitions, snapshot_every) = (args.partitions, args.snapshot_every);
    let step_timeout = Duration::from_secs(args.step_timeout);
    let saga = args.saga.into();
    // `--orders 0` resumes what an earlier run left in this database and broker.
    let resume = args.orders == 0;
    let mut s = Session::start_observing(
        conn,
        |c| {
            c.partitions = partitions;
            c.snapshot_every = snapshot_every;
            c.step_timeout = step_timeout;
            c.saga = saga;
        },
        faults.clone(),
        resume,
    )
    .await?;
    let broker_desc = match &s.broker {
        Some(b) => format!("embedded broker {}", b.bootstrap()),
        None => format!("Kafka at {}", s.settings.brokers),
    };
    let display_url = s.system.ctx.db.display_url.clone();
    s.say(format!(
        "demo running on {broker_desc}, database {display_url}"
    ));
    let baseline = s
        .system
        .ctx
        .db
        .count("SELECT COUNT(*) FROM order_events WHERE event_type = 'OrderCreated'")
        .await?;
    if resume {
        let db = &s.system.ctx.db;
        let open = baseline - dbreport::terminal_orders(db).await?;
        let pending = db
            .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .await?;
        s.say(format!(
            "resuming: {baseline} orders in the database, {open} sagas open, {pending} outbox rows unpublished; placing none"
        ));
    } else {
        s.say(format!(
            "placing {} orders (seed {}, {} sagas)",
            args.orders,
            args.seed,
            s.system.saga_mode()
        ));
    }
    let placed = s.place_orders_at(args.orders, args.rate, true).await?;
    let open = s
        .settle(
            baseline + placed as i64,
            Duration::from_secs(args.timeout),
            true,
        )
        .await?;
    let quiescent = open.is_empty();
    if quiescent {
        s.say("quiescent");
    } else {
        s.say(format!(
            "timed out after {}s; still open: {}",
            args.timeout,
            open.join("; ")
        ));
    }
    let started = s.started;
    let f = s.finish().await?;
    if let Some(t) = &f.tracing {
        eprintln!(
            "[{:>6.1}s] {}",
            started.elapsed().as_secs_f64(),
            t.summary()
        );
    }
    let report = build_report(
        args,
        &f,
        quiescent,
        &open,
        started.elapsed(),
        &faults,
        &broker_desc,
        &display_url,
    );
    Ok((report, quiescent))
}

pub async fn run(conn: Connection, args: DemoArgs) -> anyhow::Result<i32> {
    let (report, quiescent) = execute(&conn, &args).await?;
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.report {
        std::fs::write(path, &text)
            .with_context(|| format!("writing the report to {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    } else {
        println!("{text}");
    }
    eprintln!("{}", summary(&report));
    Ok(if quiescent { 0 } else { 3 })
}

fn summary(r: &serde_json::Value) -> String {
    format!(
        "orders {}, events {}, invariants {}, anomalies {}",
        r["orders"], r["events"], r["invariants"], r["anomaly_counts"]
    )
}

/// The report's view of the OTLP export.
fn tracing_json(t: Option<&ExportReport>) -> serde_json::Value {
    match t {
        None => json!({"export": "off"}),
        Some(t) => json!({
            "export": if t.failed() { "failed" } else { "ok" },
            "endpoint": t.endpoint,
            "protocol": t.protocol.to_string(),
            "exported_spans": t.exported_spans,
            "failed_spans": t.failed_spans,
            "failed_batches": t.failed_batches,
            "last_error": t.last_error,
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &DemoArgs,
    fin: &Finished,
    quiescent: bool,
    open: &[String],
    took: Duration,
    faults: &Faults,
    broker: &str,
    database: &str,
) -> serde_json::Value {
    let (f, model) = (&fin.facts, &fin.model);
    let missing: Vec<&String> = fin
        .published
        .iter()
        .filter(|id| !model.has_event(id))
        .collect();
    let fragment = model.report();
    let mut fault_states = serde_json::Map::new();
    for (fault, _) in &args.faults.0 {
        let s = faults.state(*fault);
        fault_states.insert(
            fault.name().into(),
            json!({"value": s.value, "fired": s.fired}),
        );
    }
    json!({
        "orders": {
            "created": f.orders_created,
            "completed": f.orders_completed,
            "compensated": f.orders_compensated,
            "stuck": f.orders_stuck,
        },
        "events": fragment.events,
        "relay": {
            "latency_ms": fin.relay_latency.map(|(p50, p99, max, n)| json!({
                "p50": p50, "p99": p99, "max": max, "samples": n,
            })),
        },
        "outbox": {
            "written": f.outbox_written,
            "published": f.outbox_published,
            "pending": f.outbox_pending,
            "republished": f.outbox_republished,
        },
        "anomalies": fragment.anomalies,
        "anomaly_counts": fragment.anomaly_counts,
        "flow": fragment.flow,
        "memory": fragment.memory,
        "consumer_groups": fin.groups,
        "schemas": {
            "types": f.schema_versions.iter().fold(serde_json::Map::new(), |mut m, (t, v, n)| {
                if let Some(o) = m
                    .entry(t.clone())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                {
                    o.insert(format!("v{v}"), json!(n));
                }
                m
            }),
            "refused": fin.schema_refused,
            "dlq": fin.dead_lettered,
            "timed_out": f.sagas_timed_out,
        },
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
            "task_restarts": fin.restarts,
            "redeliveries_skipped_by_idempotency": fin.duplicates_skipped,
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
            "tracing": tracing_json(fin.tracing.as_ref()),
        },
    })
}
