//! The GUI's backend: a tokio runtime on its own thread that owns the broker,
//! the demo and the tap. The GUI talks to it only through channels:
//! commands in, updates out (bounded, `try_send`, drops counted), and the
//! latest connection status in a `watch`.
//!
//! A session either runs the demo (the embedded broker, or a user's Kafka when
//! asked) or only observes: the tap reads the cluster's topics and nothing is
//! created or written there (no topic, no group, no commit).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventscope_demo::faults::{Fault, FaultState, Faults};
use eventscope_demo::kafka::KafkaSettings;
use eventscope_demo::store::StoreError;
use eventscope_demo::system::{DemoConfig, DemoSystem};
use eventscope_demo::topics;
use tokio::sync::{mpsc, watch};

use crate::cli::Connection;
use crate::headless::{data_dir, database_url, kafka_settings};
use crate::kafka::broker::EmbeddedBroker;
use crate::kafka::proxy;
use crate::kafka::tap::{self, Steering, TapStatus, TopicInfo, TopicSelection};
use crate::model::record::Record;
use crate::registry::RegistryNews;

/// What a session does on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the demo order system there (creates its topics and groups, writes orders).
    Demo,
    /// Read the topics only: nothing is created or written.
    Observe,
}

impl Mode {
    /// The window's default: the demo on the embedded broker, observe-only on a
    /// user's Kafka (`--brokers`).
    pub fn default_for(conn: &Connection) -> Mode {
        if conn.brokers.is_some() {
            Mode::Observe
        } else {
            Mode::Demo
        }
    }
}

/// What the GUI asks for.
#[derive(Debug, Clone)]
pub enum BackendCommand {
    PlaceOrders(u32),
    SetTraffic {
        running: bool,
        per_second: f64,
    },
    SetFault {
        fault: Fault,
        enabled: bool,
        value: f64,
    },
    Connect(Box<Connection>, Mode),
    /// Run the sagas of orders placed from now on in this mode.
    SetSagaMode(eventscope_demo::saga::SagaMode),
    /// Start the demo on the broker of an observe-only session.
    StartDemo,
    /// Follow every non-internal topic except these.
    ExcludeTopics(Vec<String>),
}

/// A sample for the charts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub at_ms: i64,
    pub outbox_pending: i64,
    pub consumer_lag: i64,
    pub orders_placed: u64,
}

/// What the backend tells the GUI.
#[derive(Debug, Clone)]
pub enum Update {
    Records(Vec<Record>),
    Metrics(Metrics),
    Faults(Vec<FaultState>),
    /// The cluster's non-internal topics (sorted by name).
    Topics(Vec<TopicInfo>),
    /// Something went wrong in the background: shown as a notice, never swallowed.
    Notice(String),
    /// Every record that existed when the tap connected has been forwarded (in the batches
    /// before this one): the backlog was cut at `as_of_ms` (wall clock at connect).
    BacklogEnd {
        as_of_ms: i64,
    },
    /// Records may be in the Confluent wire format: decode them with this registry's schemas
    /// (sent before any record).
    Registry(crate::registry::RegistryHandle),
    /// The schema registry answers again: re-read what it could not decode.
    RegistryRecovered,
    /// Where the records after this marker (this connection's) are read back from once
    /// evicted under the memory limit (sent before any record of the connection).
    RecordStore(crate::model::store::RecordStoreHandle),
    /// The consumer groups' committed offsets, just sampled.
    Groups(Vec<crate::model::groups::GroupSample>),
}

/// Latest connection state.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionStatus {
    Connecting {
        target: String,
    },
    Connected {
        broker: String,
        embedded: bool,
        /// The demo runs (else: observe-only, no database).
        demo: bool,
        database: String,
        following: usize,
    },
    Failed {
        reason: String,
    },
    /// A recording opened from a file; no broker behind it.
    Offline {
        file: String,
    },
}

/// The GUI's ends of the channels.
pub struct BackendHandle {
    pub commands_tx: mpsc::UnboundedSender<BackendCommand>,
    pub updates_rx: mpsc::Receiver<Update>,
    pub status_rx: watch::Receiver<ConnectionStatus>,
    /// Update batches dropped because the GUI was behind.
    pub dropped: Arc<AtomicU64>,
}

const UPDATE_CAPACITY: usize = 4096;
const BATCH: usize = 512;

/// Start the backend thread. `repaint` is called whenever there is news.
pub fn spawn(
    initial: Connection,
    mode: Mode,
    repaint: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<BackendHandle> {
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (updates_tx, updates_rx) = mpsc::channel(UPDATE_CAPACITY);
    let (status_tx, status_rx) = watch::channel(ConnectionStatus::Connecting {
        target: describe(&initial, mode),
    });
    let dropped = Arc::new(AtomicU64::new(0));
    let out = Outbox {
        tx: updates_tx,
        dropped: dropped.clone(),
        repaint: Arc::new(repaint),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("eventscope-backend".into())
        .spawn(move || {
            runtime.block_on(run(initial, mode, commands_rx, out, status_tx));
        })?;
    Ok(BackendHandle {
        commands_tx,
        updates_rx,
        status_rx,
        dropped,
    })
}

fn describe(c: &Connection, mode: Mode) -> String {
    let broker = c
        .brokers
        .clone()
        .unwrap_or_else(|| "embedded broker".into());
    if mode == Mode::Observe {
        return format!("{broker} (observe only)");
    }
    let db = c
        .database
        .as_deref()
        .map(eventscope_demo::store::redact_url)
        .unwrap_or_else(|| "SQLite".into());
    format!("{broker}, {db}")
}

#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Update>,
    dropped: Arc<AtomicU64>,
    repaint: Arc<dyn Fn() + Send + Sync>,
}

impl Outbox {
    fn send(&self, u: Update) {
        if self.tx.try_send(u).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        (self.repaint)();
    }

    /// A rare update that must not be dropped (it marks a point in the record stream):
    /// waits for room instead.
    async fn send_marker(&self, u: Update) {
        let _ = self.tx.send(u).await;
        (self.repaint)();
    }
}

/// Which partitions still have backlog records to deliver (end offsets at connect time).
#[derive(Debug, Clone, Default)]
pub struct BacklogTracker {
    left: HashMap<(String, i32), i64>,
}

impl BacklogTracker {
    /// Partitions with their end offsets; empty partitions have no backlog.
    pub fn new(mut highs: HashMap<(String, i32), i64>) -> Self {
        highs.retain(|_, high| *high > 0);
        BacklogTracker { left: highs }
    }

    /// Whether every backlog record has been seen.
    pub fn is_done(&self) -> bool {
        self.left.is_empty()
    }

    /// Note records seen; true once the whole backlog has been.
    pub fn seen(&mut self, records: &[Record]) -> bool {
        for r in records {
            let key = (r.topic.clone(), r.partition);
            if self
                .left
                .get(&key)
                .is_some_and(|high| r.offset + 1 >= *high)
            {
                self.left.remove(&key);
            }
        }
        self.is_done()
    }
}

/// End offsets of the selected topics' partitions: the backlog that exists now.
fn backlog_highs(
    s: &KafkaSettings,
    sel: &TopicSelection,
) -> Result<HashMap<(String, i32), i64>, String> {
    let counts = s
        .partition_counts(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let topics: Vec<&str> = counts
        .keys()
        .map(String::as_str)
        .filter(|t| sel.wants(t))
        .collect();
    s.high_watermarks(&topics, Duration::from_secs(5))
        .map_err(|e| e.to_string())
}

/// One connected session: the tap, and the demo when it runs.
struct Live {
    conn: Connection,
    system: Option<DemoSystem>,
    settings: KafkaSettings,
    _broker: Option<Arc<EmbeddedBroker>>,
    proxy: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    stop_tx: watch::Sender<bool>,
    tap_status: watch::Receiver<TapStatus>,
    selection: watch::Sender<TopicSelection>,
    topics: watch::Receiver<Vec<TopicInfo>>,
    forward: tokio::task::JoinHandle<()>,
    groups: tokio::task::JoinHandle<()>,
}

impl Live {
    async fn stop(self) {
        let _ = self.stop_tx.send(true);
        self.forward.abort();
        self.groups.abort();
        if let Some(system) = self.system {
            system.shutdown().await;
        }
        if let Some(p) = self.proxy {
            p.abort();
        }
    }
}

/// Start the demo on `settings` (creates its topics and groups).
async fn start_demo(
    conn: &Connection,
    settings: &KafkaSettings,
    faults: Arc<Faults>,
) -> anyhow::Result<DemoSystem> {
    std::fs::create_dir_all(data_dir(conn)).ok();
    let url = database_url(conn, "session");
    let mut cfg = DemoConfig::new(settings.clone(), url);
    cfg.values = crate::headless::register_contracts(conn).await?;
    cfg.seed = faults.seed();
    cfg.relay = conn.relay.into();
    cfg.otlp = conn.otlp();
    // The GUI switches new orders between orchestration and choreography.
    cfg.saga_switchable = true;
    let system = tokio::time::timeout(Duration::from_secs(15), DemoSystem::start(cfg, faults))
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to {} (15 s)", settings.brokers))??;
    Ok(system)
}

async fn connect(
    conn: &Connection,
    mode: Mode,
    faults: Arc<Faults>,
    out: &Outbox,
) -> anyhow::Result<Live> {
    let conn = conn.clone();
    let (mut settings, broker) =
        tokio::time::timeout(Duration::from_secs(10), async { kafka_settings(&conn) })
            .await
            .map_err(|_| anyhow::anyhow!("timed out starting the broker client"))??;
    // The embedded broker behind the proxy, like `eventscope broker`: clients
    // other than librdkafka (kafka-python, aiokafka) can use it too.
    let proxy = match &broker {
        Some(b) => {
            let fronted = proxy::front(b.clone(), 0, 3).await?;
            settings.brokers = fronted.addr.to_string();
            Some(fronted.task)
        }
        None => None,
    };
    let system = match mode {
        Mode::Demo => Some(start_demo(&conn, &settings, faults).await?),
        Mode::Observe => {
            // Reach the cluster first, so a wrong address fails here with librdkafka's reason.
            let probe = settings.clone();
            tokio::task::spawn_blocking(move || probe.probe(Duration::from_secs(10))).await??;
            None
        }
    };
    // The backlog: what every partition holds now. Its end is where "never seen" verdicts are
    // given; if it cannot be read, the backlog is taken as empty (live-tail rules at once).
    let as_of_ms = chrono::Utc::now().timestamp_millis();
    // The profile's topics, if it names any; else every non-internal topic.
    let selected = match crate::profile::Profile::load_or_default(conn.profile.as_deref()) {
        Ok(p) if !p.topics.is_empty() => TopicSelection::Named(p.topics),
        Ok(_) => TopicSelection::AllNonInternal,
        Err(e) => {
            out.send(Update::Notice(format!("{e}; following every topic")));
            TopicSelection::AllNonInternal
        }
    };
    let backlog = {
        let s = settings.clone();
        let sel = selected.clone();
        tokio::task::spawn_blocking(move || backlog_highs(&s, &sel))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    };
    let backlog = backlog.unwrap_or_else(|e| {
        out.send(Update::Notice(format!(
            "cannot read the topics' end offsets ({e}); judging every record as live"
        )));
        HashMap::new()
    });
    // Records of an earlier connection the window has not read yet are read back from theirs.
    out.send_marker(Update::RecordStore(conn.record_store()))
        .await;
    let (records_tx, mut records_rx) = mpsc::channel::<tap::Batch>(64);
    let (status_tx, tap_status) = watch::channel(TapStatus::Connecting);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (selection, selection_rx) = watch::channel(selected);
    let (topics_tx, topics) = watch::channel(Vec::new());
    tokio::spawn(tap::run_steered(
        settings.clone(),
        Steering {
            selection: selection_rx,
            topics: topics_tx,
        },
        records_tx,
        status_tx,
        stop_rx,
    ));
    // Confluent-framed records: their schemas fetched (once per id) before the GUI gets them.
    if let Some(client) = conn.registry_client()?.map(Arc::new) {
        out.send_marker(Update::Registry(client.handle())).await;
        let news_out = out.clone();
        let url = client.cache().url().to_owned();
        records_rx = crate::registry::stage(client, records_rx, 65_536, move |news| {
            let update = match news {
                RegistryNews::Unavailable(why) => Update::Notice(format!(
                    "schema registry {url} does not answer ({why}); its records are shown \
                     undecoded and decoded again when it answers"
                )),
                RegistryNews::Recovered => Update::RegistryRecovered,
            };
            let o = news_out.clone();
            tokio::spawn(async move { o.send_marker(update).await });
        });
    }
    // Consumer groups: the demo's when it runs (the embedded broker cannot list them), else
    // the cluster's; their committed offsets on the followed topics every 2 s.
    let known: Vec<String> = if system.is_some() {
        DemoSystem::groups()
            .iter()
            .map(|(g, _)| (*g).to_owned())
            .collect()
    } else {
        Vec::new()
    };
    let groups = tokio::spawn(sample_groups(
        settings.clone(),
        known,
        topics.clone(),
        out.clone(),
    ));
    let fwd_out = out.clone();
    // Batch records for the GUI; a full GUI queue drops batches (counted), never blocks the tap.
    let forward = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        let mut backlog_left = Some(BacklogTracker::new(backlog));
        if backlog_left.as_ref().is_some_and(BacklogTracker::is_done) {
            backlog_left = None;
            fwd_out.send_marker(Update::BacklogEnd { as_of_ms }).await;
        }
        loop {
            let first = records_rx.recv().await;
            let Some(first) = first else { break };
            if batch.is_empty() {
                batch = first;
            } else {
                batch.extend(first);
            }
            while batch.len() < BATCH {
                match records_rx.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            let ended = backlog_left.as_mut().is_some_and(|left| left.seen(&batch));
            fwd_out.send(Update::Records(std::mem::take(&mut batch)));
            if ended {
                backlog_left = None;
                fwd_out.send_marker(Update::BacklogEnd { as_of_ms }).await;
            }
        }
    });
    Ok(Live {
        conn,
        system,
        settings,
        _broker: broker,
        proxy,
        stop_tx,
        tap_status,
        selection,
        topics,
        forward,
        groups,
    })
}

/// Every 2 s: the groups' committed offsets on the followed topics, sent to the GUI. Without
/// `known` groups they are listed from the cluster (every 30 s); a cluster that cannot list
/// them is said once.
async fn sample_groups(
    settings: KafkaSettings,
    known: Vec<String>,
    topics: watch::Receiver<Vec<TopicInfo>>,
    out: Outbox,
) {
    let mut names = known.clone();
    let mut listed: Option<Instant> = None;
    let mut complained = false;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if known.is_empty() && listed.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            listed = Some(Instant::now());
            let s = settings.clone();
            match tokio::task::spawn_blocking(move || {
                crate::kafka::groups::discover(&s, Duration::from_secs(3))
            })
            .await
            {
                Ok(Ok(found)) => names = found,
                Ok(Err(e)) if !complained => {
                    complained = true;
                    out.send(Update::Notice(format!(
                        "{e}: consumer groups are not shown for this broker"
                    )));
                }
                _ => {}
            }
        }
        let followed: Vec<String> = topics.borrow().iter().map(|t| t.name.clone()).collect();
        if names.is_empty() || followed.is_empty() {
            continue;
        }
        let (s, g) = (settings.clone(), names.clone());
        if let Ok(Ok(samples)) = tokio::task::spawn_blocking(move || {
            crate::kafka::groups::sample(&s, &g, &followed, Duration::from_secs(3))
        })
        .await
        {
            out.send(Update::Groups(samples));
        }
    }
}

fn connected_status(l: &Live) -> ConnectionStatus {
    let embedded = l.conn.brokers.is_none();
    ConnectionStatus::Connected {
        broker: if embedded {
            format!("embedded {}", l.settings.brokers)
        } else {
            l.settings.brokers.clone()
        },
        embedded,
        demo: l.system.is_some(),
        database: match &l.system {
            Some(s) => s.ctx.db.display_url.clone(),
            None => "no database".into(),
        },
        following: match *l.tap_status.borrow() {
            TapStatus::Following { partitions } => partitions,
            _ => 0,
        },
    }
}

fn fault_states(f: &Faults) -> Vec<FaultState> {
    Fault::ALL.iter().map(|x| f.state(*x)).collect()
}

async fn run(
    initial: Connection,
    initial_mode: Mode,
    mut commands_rx: mpsc::UnboundedReceiver<BackendCommand>,
    out: Outbox,
    status_tx: watch::Sender<ConnectionStatus>,
) {
    let faults = Arc::new(Faults::new(1));
    let mut live: Option<Live> = None;
    let mut pending_connect = Some((initial, initial_mode));
    let mut traffic: Option<f64> = None;
    let mut next_order = Instant::now();
    let mut placed: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_metrics = Instant::now() - Duration::from_secs(10);
    let mut last_faults = Vec::new();
    loop {
        if let Some((conn, mode)) = pending_connect.take() {
            if let Some(l) = live.take() {
                l.stop().await;
            }
            let _ = status_tx.send(ConnectionStatus::Connecting {
                target: describe(&conn, mode),
            });
            (out.repaint)();
            match connect(&conn, mode, faults.clone(), &out).await {
                Ok(l) => {
                    let _ = status_tx.send(connected_status(&l));
                    live = Some(l);
                }
                Err(e) => {
                    let _ = status_tx.send(ConnectionStatus::Failed {
                        reason: format!("{e:#}"),
                    });
                    out.send(Update::Notice(format!("connection failed: {e:#}")));
                }
            }
            (out.repaint)();
        }
        tokio::select! {
            cmd = commands_rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    BackendCommand::Connect(c, mode) => pending_connect = Some((*c, mode)),
                    BackendCommand::StartDemo => match &mut live {
                        Some(l) if l.system.is_none() => {
                            match start_demo(&l.conn, &l.settings, faults.clone()).await {
                                Ok(system) => {
                                    l.system = Some(system);
                                    let _ = status_tx.send(connected_status(l));
                                    out.send(Update::Notice(format!(
                                        "the demo runs on {}", l.settings.brokers
                                    )));
                                }
                                Err(e) => out.send(Update::Notice(format!(
                                    "cannot start the demo: {e:#}"
                                ))),
                            }
                        }
                        Some(_) => {}
                        None => out.send(Update::Notice("not connected: cannot start the demo".into())),
                    },
                    BackendCommand::ExcludeTopics(names) => {
                        if let Some(l) = &live {
                            let _ = l.selection.send(if names.is_empty() {
                                TopicSelection::AllNonInternal
                            } else {
                                TopicSelection::AllExcept(names)
                            });
                        }
                    }
                    BackendCommand::SetFault { fault, enabled, value } => {
                        faults.set(fault, enabled, value);
                        out.send(Update::Faults(fault_states(&faults)));
                    }
                    BackendCommand::SetSagaMode(mode) => {
                        match live.as_ref().and_then(|l| l.system.as_ref()) {
                            Some(system) => match system.set_saga_mode(mode) {
                                Ok(()) => out.send(Update::Notice(format!("new orders run as {mode}"))),
                                Err(e) => out.send(Update::Notice(e.to_string())),
                            },
                            None => out.send(Update::Notice("no demo running: no saga mode to set".into())),
                        }
                    }
                    BackendCommand::SetTraffic { running, per_second } => {
                        traffic = running.then_some(per_second.clamp(0.1, 500.0));
                    }
                    BackendCommand::PlaceOrders(n) => {
                        if let Some(system) = live.as_ref().and_then(|l| l.system.as_ref()) {
                            for _ in 0..n {
                                match system.place_order().await {
                                    Ok(Ok(_)) => placed += 1,
                                    Ok(Err(e)) => out.send(Update::Notice(format!("order rejected: {e}"))),
                                    // Refused by the schema check: the demo says so itself.
                                    Err(StoreError::Contract(_)) => {}
                                    Err(e) => { out.send(Update::Notice(format!("placing an order: {e}"))); break; }
                                }
                            }
                        } else {
                            out.send(Update::Notice("no demo running: cannot place orders".into()));
                        }
                    }
                }
            }
            _ = tick.tick() => {}
        }
        let Some(l) = &mut live else { continue };
        if l.topics.has_changed().unwrap_or(false) {
            let topics = l.topics.borrow_and_update().clone();
            out.send(Update::Topics(topics));
        }
        if let TapStatus::Following { partitions } = *l.tap_status.borrow() {
            status_tx.send_if_modified(|s| match s {
                ConnectionStatus::Connected { following, .. } if *following != partitions => {
                    *following = partitions;
                    true
                }
                _ => false,
            });
        }
        let Some(system) = &l.system else { continue };
        if let Some(rate) = traffic {
            let now = Instant::now();
            let gap = Duration::from_secs_f64(1.0 / rate);
            let mut n = 0;
            while next_order <= now && n < 50 {
                next_order += gap;
                n += 1;
                match system.place_order().await {
                    Ok(Ok(_)) => placed += 1,
                    Ok(Err(e)) => out.send(Update::Notice(format!("order rejected: {e}"))),
                    Err(StoreError::Contract(_)) => {}
                    Err(e) => out.send(Update::Notice(format!("placing an order: {e}"))),
                }
            }
            if next_order < now {
                next_order = now;
            }
        } else {
            next_order = Instant::now();
        }
        for e in system.take_errors() {
            out.send(Update::Notice(e));
        }
        let states = fault_states(&faults);
        if states != last_faults {
            last_faults = states.clone();
            out.send(Update::Faults(states));
        }
        if last_metrics.elapsed() >= Duration::from_secs(1) {
            last_metrics = Instant::now();
            let pending = system
                .ctx
                .db
                .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .await
                .unwrap_or(-1);
            let s = l.settings.clone();
            let lag = tokio::task::spawn_blocking(move || {
                let groups = DemoSystem::groups();
                let asked: Vec<(&str, &[&str])> =
                    groups.iter().map(|(g, t)| (*g, t.as_slice())).collect();
                let all: Vec<&str> = asked.iter().flat_map(|(_, t)| t.iter().copied()).collect();
                s.high_watermarks(&all, Duration::from_secs(2))
                    .and_then(|highs| s.group_lags(&asked, &highs, Duration::from_secs(2)))
                    .map_or(0, |lags| lags.iter().sum::<i64>())
            })
            .await
            .unwrap_or(0);
            out.send(Update::Metrics(Metrics {
                at_ms: chrono::Utc::now().timestamp_millis(),
                outbox_pending: pending,
                consumer_lag: lag,
                orders_placed: placed,
            }));
        }
    }
    if let Some(l) = live.take() {
        l.stop().await;
    }
    let _ = topics::ALL;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_ends_when_every_partition_reached_its_end_offset() {
        let highs: HashMap<(String, i32), i64> = [
            (("a".to_owned(), 0), 2),
            (("a".to_owned(), 1), 0),
            (("b".to_owned(), 0), 1),
        ]
        .into_iter()
        .collect();
        let mut t = BacklogTracker::new(highs);
        assert!(!t.is_done());
        assert!(!t.seen(&[Record::new("a", 0, 0), Record::new("c", 0, 9)]));
        assert!(!t.seen(&[Record::new("b", 0, 0)]));
        assert!(t.seen(&[Record::new("a", 0, 1)]));
        assert!(BacklogTracker::new(HashMap::new()).is_done());
    }
}
