//! The desktop debugger (eframe/egui).
//!
//! The app owns the observer model and reads backend updates from channels
//! with a time budget per frame; it never awaits and never touches sqlx or
//! rdkafka. Views draw from the model plus their own small state and return
//! intents; the app applies them at the end of the frame.

mod charts;
mod files;
mod flow;
mod graph;
mod groups;
mod inspect;
mod lanes;
mod panels;
mod profile;
mod query;
mod saga;
mod schemas;
mod table;
mod widgets;

pub use graph::{ChainModel, ChainNode};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use eventscope_demo::faults::{Fault, FaultState};
use serde::{Deserialize, Serialize};

use crate::backend::{BackendCommand, BackendHandle, ConnectionStatus, Metrics, Mode, Update};
use crate::cli::Connection;
use crate::kafka::tap::TopicInfo;
use crate::model::detect::AnomalyKind;
use crate::model::log::{LogIndex, Sym};
use crate::model::record::Record;
use crate::model::timetravel::{Cursor, CursorCommand};
use crate::model::Model;

/// Preferences that persist between runs (never live data).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Prefs {
    pub reveal_pii: bool,
    pub extra_columns: Vec<String>,
    pub traffic_rate: f64,
    pub play_speed: f64,
    pub bottom_tab: BottomTab,
    pub trace_link_template: String,
    pub show_faults: bool,
    pub show_lints: bool,
    /// Profiles (TOML) applied in the dialog, per connection (broker list, or recording).
    pub profiles: std::collections::BTreeMap<String, String>,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs {
            reveal_pii: false,
            extra_columns: vec![],
            traffic_rate: 5.0,
            play_speed: 20.0,
            bottom_tab: BottomTab::Chain,
            trace_link_template: inspect::DEFAULT_TRACE_LINK.into(),
            show_faults: true,
            show_lints: true,
            profiles: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum BottomTab {
    #[default]
    Chain,
    Lanes,
    Sagas,
    Charts,
    Schemas,
    Flow,
    Groups,
}

/// What a view asks the app to do; applied at the end of the frame.
#[derive(Debug, Clone)]
pub enum Intent {
    Cursor(CursorCommand),
    /// Select a record; `move_cursor` also moves the time cursor onto it.
    Select {
        index: LogIndex,
        move_cursor: bool,
    },
    Backend(BackendCommand),
    SetLint(AnomalyKind, bool),
    SetPlaying(bool),
    SetFollow(bool),
    Export,
    Open,
    OpenConnectionDialog,
    OpenProfileDialog,
    /// Apply this profile (TOML) and remember it for the connection.
    ApplyProfile(String),
    Notice(String),
}

/// Table filter (all parts must match; empty parts match everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub topic: String,
    pub event_type: String,
    pub correlation: String,
    /// W3C trace id (from `traceparent` / `ce_traceparent`).
    pub trace: String,
    pub header_text: String,
    /// The producing service (CloudEvents `source`).
    pub source: String,
    /// The topic of the record's cause (what its producer consumed to write it).
    pub cause_topic: String,
    /// A jq filter over payload, key and headers (see `crate::query`).
    pub query: String,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.query.trim().is_empty()
            && self.topic.is_empty()
            && self.event_type.is_empty()
            && self.correlation.is_empty()
            && self.trace.is_empty()
            && self.header_text.is_empty()
            && self.source.is_empty()
            && self.cause_topic.is_empty()
    }
}

/// Per-topic counts per second, for the events/s chart.
#[derive(Default)]
pub struct Rates {
    pub per_topic: BTreeMap<String, BTreeMap<i64, u32>>,
}

pub struct Source {
    backend: Option<BackendHandle>,
}

pub struct EventscopeApp {
    source: Source,
    pub model: Model,
    pending: VecDeque<Record>,
    /// The read back from Kafka under way for the inspector (memory limit): the chunk asked
    /// for, and where its thread hands the records over.
    pub read_back: Option<(
        u32,
        std::sync::mpsc::Receiver<crate::model::log::ReadBackDone>,
    )>,
    pub cursor: Cursor,
    pub follow_live: bool,
    pub playing: bool,
    play_accum: f64,
    last_frame: Option<Instant>,
    pub selected: Option<LogIndex>,
    /// The aggregate inspector's last fold: ((aggregate, cursor, log length), state).
    pub aggregate_cache: Option<(
        (String, LogIndex, usize),
        Option<crate::model::timetravel::AggregateState>,
    )>,
    pub status: ConnectionStatus,
    /// What the session does on the broker (the demo, or observe only).
    pub mode: Mode,
    /// The cluster's non-internal topics (observe-only sessions show them).
    pub topics: Vec<TopicInfo>,
    /// Topics the user unticked: not followed.
    pub excluded_topics: std::collections::BTreeSet<String>,
    pub faults: Vec<FaultState>,
    pub fault_values: HashMap<Fault, f64>,
    pub traffic_running: bool,
    /// How the demo runs the sagas of new orders (the switch in the faults panel).
    pub saga_mode: eventscope_demo::saga::SagaMode,
    pub prefs: Prefs,
    pub filter: Filter,
    filtered: Vec<LogIndex>,
    filtered_upto: usize,
    filtered_for: Filter,
    /// The query filter's worker, while a valid query is set.
    query_job: Option<query::QueryJob>,
    /// Why the query does not parse (shown under the filter bar).
    pub query_error: Option<String>,
    /// The query text `query_error` and `query_job` are for.
    query_checked: String,
    pub notices: VecDeque<(String, Instant)>,
    pub metrics: VecDeque<Metrics>,
    pub rates: Rates,
    pub dropped_batches: u64,
    intents: Vec<Intent>,
    conn_dialog: Option<panels::ConnectionDialog>,
    path_prompt: Option<files::PathPrompt>,
    graph: graph::ChainGraphView,
    new_column: String,
    /// The anomaly list shows only this kind (None: all).
    pub anomaly_kind: Option<AnomalyKind>,
    scroll_to_selected: bool,
    files: files::FileJobs,
    /// Correlation ids in the order first seen (the saga list).
    pub correlations: Vec<Sym>,
    seen_correlations: HashSet<Sym>,
    /// The log's round of forgetting `correlations` has caught up with.
    correlations_epoch: u64,
    /// The backend said the backlog ends after this many records in the log (and when it was cut).
    backlog_end_at: Option<(usize, i64)>,
    /// A new connection's record store, for the records from this log length on (those
    /// queued before it came from the previous connection).
    store_switch_at: Option<(usize, crate::model::store::RecordStoreHandle)>,
    /// Field names masked as personal data (the profile's).
    pub pii_fields: Vec<String>,
    /// The observed system's profile in effect.
    pub profile: crate::profile::Profile,
    /// What profiles are remembered under: the broker list, "embedded", or the recording.
    pub connection_key: String,
    profile_dialog: Option<profile::ProfileDialog>,
    /// The Schemas tab: its catalog of versions, filled as records arrive.
    schemas: schemas::SchemasView,
    /// The Flow tab: who publishes and consumes what, up to the cursor.
    flow: flow::FlowView,
    /// Consumer groups: samples of their committed offsets, and the verdicts.
    pub groups: crate::model::groups::GroupTracker,
    pub group_lags: Vec<crate::model::groups::GroupLag>,
}

/// Budget for ingesting records per frame.
const INGEST_BUDGET: Duration = Duration::from_millis(8);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl EventscopeApp {
    /// A live app: backend connected per `conn`; the demo on the embedded
    /// broker, observe-only on a user's Kafka ([`Mode::default_for`]).
    pub fn live(
        conn: Connection,
        ctx: &egui::Context,
        prefs: Prefs,
    ) -> std::io::Result<EventscopeApp> {
        let mode = Mode::default_for(&conn);
        Self::live_with_mode(conn, mode, ctx, prefs)
    }

    /// A live app in the given mode.
    pub fn live_with_mode(
        conn: Connection,
        mode: Mode,
        ctx: &egui::Context,
        prefs: Prefs,
    ) -> std::io::Result<EventscopeApp> {
        let repaint_ctx = ctx.clone();
        let backend = crate::backend::spawn(conn, mode, move || repaint_ctx.request_repaint())?;
        let status = backend.status_rx.borrow().clone();
        let mut app = Self::with_source(
            Source {
                backend: Some(backend),
            },
            status,
            prefs,
        );
        app.mode = mode;
        Ok(app)
    }

    /// A live app on a backend driven by someone else through the handle's channels (tests feed
    /// updates the way the backend would).
    pub fn with_backend(backend: BackendHandle, prefs: Prefs) -> EventscopeApp {
        let status = backend.status_rx.borrow().clone();
        Self::with_source(
            Source {
                backend: Some(backend),
            },
            status,
            prefs,
        )
    }

    /// An offline app showing a recording.
    pub fn offline(model: Model, label: String, prefs: Prefs) -> EventscopeApp {
        let mut app = Self::with_source(
            Source { backend: None },
            ConnectionStatus::Offline {
                file: label.clone(),
            },
            prefs,
        );
        app.load_recording(model, label);
        app
    }

    fn with_source(source: Source, status: ConnectionStatus, prefs: Prefs) -> EventscopeApp {
        EventscopeApp {
            source,
            model: Model::default(),
            pending: VecDeque::new(),
            read_back: None,
            cursor: Cursor::default(),
            follow_live: true,
            playing: false,
            play_accum: 0.0,
            last_frame: None,
            selected: None,
            aggregate_cache: None,
            status,
            mode: Mode::Demo,
            topics: Vec::new(),
            excluded_topics: Default::default(),
            faults: Fault::ALL
                .iter()
                .map(|f| FaultState {
                    fault: *f,
                    enabled: false,
                    value: f.default_value(),
                    remaining: 0,
                    fired: 0,
                })
                .collect(),
            fault_values: Fault::ALL.iter().map(|f| (*f, f.default_value())).collect(),
            traffic_running: false,
            saga_mode: eventscope_demo::saga::SagaMode::default(),
            prefs,
            filter: Filter::default(),
            filtered: Vec::new(),
            filtered_upto: 0,
            filtered_for: Filter::default(),
            query_job: None,
            query_error: None,
            query_checked: String::new(),
            notices: VecDeque::new(),
            metrics: VecDeque::new(),
            rates: Rates::default(),
            dropped_batches: 0,
            intents: Vec::new(),
            conn_dialog: None,
            path_prompt: None,
            graph: graph::ChainGraphView::default(),
            new_column: String::new(),
            anomaly_kind: None,
            scroll_to_selected: false,
            files: files::FileJobs::default(),
            correlations: Vec::new(),
            seen_correlations: HashSet::new(),
            correlations_epoch: 0,
            backlog_end_at: None,
            store_switch_at: None,
            pii_fields: crate::profile::DEFAULT_PII_FIELDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            profile: crate::profile::Profile::default(),
            connection_key: String::new(),
            profile_dialog: None,
            schemas: schemas::SchemasView::default(),
            flow: flow::FlowView::default(),
            groups: crate::model::groups::GroupTracker::default(),
            group_lags: Vec::new(),
        }
    }

    /// Use the observed system's profile: PII fields, trace link, and (for a live app that has
    /// read nothing yet) the model settings. A recording was rebuilt with it already.
    pub fn apply_profile(&mut self, profile: &crate::profile::Profile) {
        // `--memory-limit` is the command line's, whatever the profile.
        let memory_limit = self.profile.memory_limit;
        let record_store = self.profile.record_store.clone();
        self.pii_fields = profile.pii_fields.clone();
        if profile.trace_link != crate::profile::DEFAULT_TRACE_LINK {
            self.prefs.trace_link_template = profile.trace_link.clone();
        }
        if self.is_live() && self.model.log().is_empty() {
            let mut cfg = profile.model_config();
            cfg.decode.registry = self.model.config().decode.registry.clone();
            cfg.memory_limit = memory_limit;
            cfg.record_store = record_store.clone();
            // A read back under way belongs to the log replaced.
            self.read_back = None;
            self.model = Model::new(cfg);
            self.schemas = schemas::SchemasView::default();
            self.flow = flow::FlowView::default();
        }
        self.profile = profile.clone();
        self.profile.memory_limit = memory_limit;
        self.profile.record_store = record_store;
    }

    /// Apply a profile edited in the dialog: the model is rebuilt from the records already read
    /// (same order, same log indices; switched-off lints stay off), and the profile is
    /// remembered for this connection. A profile that does not parse is refused, nothing changes.
    pub fn apply_profile_text(&mut self, text: &str) -> Result<(), String> {
        let mut profile =
            crate::profile::Profile::parse(text, "the profile").map_err(|e| e.to_string())?;
        profile.memory_limit = self.profile.memory_limit;
        profile.record_store = self.profile.record_store.clone();
        let mut cfg = profile.model_config();
        // The schema registry (a connection setting, not the profile's) stays.
        cfg.decode.registry = self.model.config().decode.registry.clone();
        let model = self
            .model
            .reread(cfg)
            .map_err(|e| format!("re-reading the records: {e}"))?;
        let n = self.replace_model(model);
        self.pii_fields = profile.pii_fields.clone();
        if profile.trace_link != crate::profile::DEFAULT_TRACE_LINK {
            self.prefs.trace_link_template = profile.trace_link.clone();
        }
        self.profile = profile;
        self.prefs
            .profiles
            .insert(self.connection_key.clone(), text.to_owned());
        self.notice(format!("profile applied: {n} records re-read"));
        Ok(())
    }

    /// Read the records again with `cfg` (saying why, if given). False when they could not
    /// be read again (said in a notice; the model stays as it was).
    fn reread(&mut self, cfg: crate::model::ModelConfig, why: Option<&str>) -> bool {
        match self.model.reread(cfg) {
            Ok(model) => {
                let n = self.replace_model(model);
                if let Some(why) = why {
                    self.notice(format!("{why}: {n} records re-read"));
                }
                true
            }
            Err(e) => {
                self.notice(format!("re-reading the records: {e}"));
                false
            }
        }
    }

    /// Put a model that re-read the same records in place (same log indices: the cursor and
    /// the selection stay); views rebuild what they derived. Returns the record count.
    fn replace_model(&mut self, model: Model) -> usize {
        let n = model.log().len();
        // A read back under way belongs to the log replaced.
        self.read_back = None;
        self.model = model;
        self.schemas = schemas::SchemasView::default();
        self.flow = flow::FlowView::default();
        self.aggregate_cache = None;
        self.correlations.clear();
        self.seen_correlations.clear();
        self.correlations_epoch = self.model.log().forget_epoch();
        for i in 0..n {
            if let Ok(i) = LogIndex::try_from(i) {
                self.index_correlation(i);
            }
        }
        self.filtered.clear();
        self.filtered_upto = 0;
        n
    }

    /// The chain the "Chain graph" tab drew last (nodes and edges of the selected record's chain).
    pub fn chain_graph(&self) -> &ChainModel {
        &self.graph.model
    }

    pub fn is_live(&self) -> bool {
        self.source.backend.is_some()
    }

    /// A live session that only observes (no demo on the broker).
    pub fn is_observing(&self) -> bool {
        self.is_live() && self.mode == Mode::Observe
    }

    /// Queue an intent (views call this through `&mut Vec<Intent>`; tests may call it directly).
    pub fn push(&mut self, intent: Intent) {
        self.intents.push(intent);
    }

    fn notice(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::info!(notice = %msg);
        self.notices.push_back((msg, Instant::now()));
        while self.notices.len() > 6 {
            self.notices.pop_front();
        }
    }

    /// Drain backend updates, then ingest with a time budget.
    fn pump(&mut self) {
        if let Some(b) = &mut self.source.backend {
            let mut news = Vec::new();
            while let Ok(u) = b.updates_rx.try_recv() {
                news.push(u);
            }
            self.status = b.status_rx.borrow().clone();
            self.dropped_batches = b.dropped.load(std::sync::atomic::Ordering::Relaxed);
            for u in news {
                match u {
                    Update::Records(rs) => self.pending.extend(rs),
                    Update::Metrics(m) => {
                        self.metrics.push_back(m);
                        while self.metrics.len() > 3600 {
                            self.metrics.pop_front();
                        }
                    }
                    Update::Faults(f) => self.faults = f,
                    Update::Topics(t) => self.topics = t,
                    Update::Notice(n) => self.notice(n),
                    Update::BacklogEnd { as_of_ms } => {
                        // Ends once the records queued before this marker are in the log.
                        let upto = self.model.log().len() + self.pending.len();
                        self.backlog_end_at = Some((upto, as_of_ms));
                    }
                    Update::Registry(handle) => {
                        let mut cfg = self.model.config().clone();
                        cfg.decode.registry = handle.clone();
                        if !self.reread(cfg, None) {
                            // The records held keep their decoding; new ones use the registry.
                            self.model.set_registry(handle);
                        }
                    }
                    Update::RecordStore(store) => {
                        let upto = self.model.log().len() + self.pending.len();
                        self.store_switch_at = Some((upto, store));
                        self.switch_store_if_read();
                    }
                    Update::Groups(samples) => {
                        for g in &samples {
                            self.groups.record(g);
                        }
                        self.group_lags = self.groups.verdicts(self.model.log(), now_ms());
                        self.model.observe_groups(&self.group_lags);
                    }
                    Update::RegistryRecovered => {
                        let cfg = self.model.config().clone();
                        self.reread(cfg, Some("the schema registry answers again"));
                    }
                }
            }
        }
        let start = Instant::now();
        let now = now_ms();
        let mut n = 0usize;
        while let Some(r) = self.pending.pop_front() {
            // Records queued after the backlog's end marker are the live tail; those after a
            // new connection's marker are read back from its broker.
            self.end_backlog_if_read();
            self.switch_store_if_read();
            let sec = r.timestamp_ms.unwrap_or(now).div_euclid(1000);
            *self
                .rates
                .per_topic
                .entry(r.topic.clone())
                .or_default()
                .entry(sec)
                .or_default() += 1;
            match self.model.ingest(&r, now) {
                Ok((idx, _)) => self.index_correlation(idx),
                Err(e) => self.notice(format!("observer: {e}")),
            }
            n += 1;
            if n % 256 == 0 && start.elapsed() > INGEST_BUDGET {
                break;
            }
        }
        // "Never seen" verdicts wait until the backlog that existed at connect time is read
        // (a cause on a partition not read yet is late, not missing); then they are given at
        // once, and the live tail is judged by the wall clock. A recording is judged as of its
        // own end (when it was loaded), never by today's clock.
        self.end_backlog_if_read();
        if self.pending.is_empty() && self.is_live() && self.model.backlog_end().is_some() {
            self.model.tick(now);
        }
        if self.follow_live && !self.playing {
            self.cursor.apply(
                CursorCommand::ToEnd,
                self.model.log(),
                self.model.anomaly_indices(),
            );
        }
    }

    /// Once the records before the backend's end-of-backlog marker are in the model, give the
    /// "never seen" verdicts.
    fn switch_store_if_read(&mut self) {
        let len = self.model.log().len();
        if let Some((_, store)) = self.store_switch_at.take_if(|(upto, _)| len >= *upto) {
            self.model.set_record_store(store.clone());
            self.profile.record_store = store;
        }
    }

    fn end_backlog_if_read(&mut self) {
        if let Some((upto, as_of)) = self.backlog_end_at {
            if self.model.log().len() >= upto {
                self.backlog_end_at = None;
                self.model.end_of_backlog(as_of);
            }
        }
    }

    fn index_correlation(&mut self, idx: LogIndex) {
        let log = self.model.log();
        if log.forget_epoch() != self.correlations_epoch {
            // Ids forgotten under the memory limit: their symbols go before their slots name
            // other strings (this runs after every append, so no round is missed).
            self.correlations_epoch = log.forget_epoch();
            self.correlations.retain(|&c| log.is_live(c));
            self.seen_correlations.retain(|&c| log.is_live(c));
        }
        if let Some(c) = self.model.log().meta(idx).and_then(|m| m.correlation_id) {
            if self.seen_correlations.insert(c) {
                self.correlations.push(c);
            }
        }
    }

    /// Replace the live session with a recording (the backend stops).
    pub fn load_recording(&mut self, model: Model, label: String) {
        self.source = Source { backend: None };
        self.status = ConnectionStatus::Offline {
            file: label.clone(),
        };
        // A read back under way belongs to the log replaced.
        self.read_back = None;
        self.store_switch_at = None;
        self.model = model;
        self.schemas = schemas::SchemasView::default();
        self.flow = flow::FlowView::default();
        self.aggregate_cache = None;
        self.pending.clear();
        self.correlations.clear();
        self.seen_correlations.clear();
        self.correlations_epoch = self.model.log().forget_epoch();
        for i in 0..self.model.log().len() {
            if let Ok(i) = LogIndex::try_from(i) {
                self.index_correlation(i);
            }
        }
        self.filtered.clear();
        self.filtered_upto = 0;
        self.query_job = None;
        self.query_checked.clear();
        self.selected = None;
        self.follow_live = false;
        self.cursor = Cursor::default();
        self.cursor.apply(
            CursorCommand::ToEnd,
            self.model.log(),
            self.model.anomaly_indices(),
        );
        self.notice(format!(
            "opened {label}: {} records",
            self.model.log().len()
        ));
    }

    /// Keep the filtered row list up to date incrementally. A query filter
    /// runs on its worker; its matches are merged here as they come.
    fn refresh_filter(&mut self, ctx: &egui::Context) {
        if self.filter != self.filtered_for {
            self.filtered.clear();
            self.filtered_upto = 0;
            self.filtered_for = self.filter.clone();
            // The query starts over with the other parts of the filter.
            self.query_checked.clear();
            self.query_job = None;
        }
        let expr = self.filter.query.trim();
        if expr != self.query_checked {
            self.query_checked = expr.to_owned();
            self.query_job = None;
            self.query_error = None;
            if !expr.is_empty() {
                match crate::query::Query::parse(expr) {
                    Err(e) => self.query_error = Some(e.0),
                    Ok(_) => {
                        let repaint = ctx.clone();
                        match query::QueryJob::start(
                            expr,
                            self.model.config().decode.registry.clone(),
                            move || repaint.request_repaint(),
                        ) {
                            Ok(job) => self.query_job = Some(job),
                            Err(e) => self.query_error = Some(format!("cannot start: {e}")),
                        }
                    }
                }
            }
        }
        let log = self.model.log();
        let len = log.len();
        if self.filter.is_empty() {
            self.filtered_upto = len;
            return;
        }
        // Records the memory limit dropped leave the list.
        let gone = self.filtered.partition_point(|&i| log.is_dropped(i));
        if gone > 0 {
            self.filtered.drain(..gone);
        }
        if let Some(job) = &mut self.query_job {
            for idx in job.pump(log) {
                if table::matches(log, idx, &self.filter) {
                    self.filtered.push(idx);
                }
            }
            self.filtered_upto = job.done_upto;
            if let Some(idx) = job.waiting_for {
                inspect::read_back_started(self, idx, ctx);
            }
            return;
        }
        for i in self.filtered_upto..len {
            let Ok(idx) = LogIndex::try_from(i) else {
                break;
            };
            if table::matches(log, idx, &self.filter) {
                self.filtered.push(idx);
            }
        }
        self.filtered_upto = len;
    }

    /// While the query filter is still testing records already observed: (tested, total).
    pub fn query_progress(&self) -> Option<(usize, usize)> {
        let len = self.model.log().len();
        self.query_job
            .as_ref()
            .filter(|j| j.busy(len))
            .map(|j| (j.done_upto, len))
    }

    /// The rows the table shows: all, or the filtered ones.
    pub fn visible_rows(&self) -> RowsView<'_> {
        if self.filter.is_empty() {
            RowsView::All(self.model.log().held())
        } else {
            RowsView::Some(&self.filtered)
        }
    }

    fn apply_intents(&mut self, ctx: &egui::Context) {
        let intents = std::mem::take(&mut self.intents);
        for i in intents {
            match i {
                Intent::Cursor(c) => {
                    self.follow_live = false;
                    self.cursor
                        .apply(c, self.model.log(), self.model.anomaly_indices());
                    if matches!(c, CursorCommand::NextAnomaly | CursorCommand::PrevAnomaly) {
                        self.selected = self.cursor.pos();
                        self.scroll_to_selected = true;
                    }
                }
                Intent::Select { index, move_cursor } => {
                    self.selected = Some(index);
                    self.scroll_to_selected = true;
                    if move_cursor {
                        self.follow_live = false;
                        self.cursor.apply(
                            CursorCommand::JumpTo(index),
                            self.model.log(),
                            self.model.anomaly_indices(),
                        );
                    }
                }
                Intent::Backend(cmd) => {
                    if let BackendCommand::SetTraffic {
                        running,
                        per_second,
                    } = &cmd
                    {
                        self.traffic_running = *running;
                        self.prefs.traffic_rate = *per_second;
                    }
                    match &cmd {
                        BackendCommand::Connect(_, mode) => {
                            self.mode = *mode;
                            self.topics.clear();
                            self.excluded_topics.clear();
                        }
                        BackendCommand::StartDemo => self.mode = Mode::Demo,
                        // Also from `--saga` at start: the switch shows what runs.
                        BackendCommand::SetSagaMode(m) => self.saga_mode = *m,
                        _ => {}
                    }
                    if let BackendCommand::SetFault {
                        fault,
                        enabled,
                        value,
                    } = &cmd
                    {
                        if let Some(s) = self.faults.iter_mut().find(|s| s.fault == *fault) {
                            s.enabled = *enabled;
                            s.value = *value;
                        }
                        self.fault_values.insert(*fault, *value);
                    }
                    match &self.source.backend {
                        Some(b) => {
                            if b.commands_tx.send(cmd).is_err() {
                                self.notice("the backend has stopped");
                            }
                        }
                        None => {
                            self.notice("offline recording: connect to a broker to drive the demo")
                        }
                    }
                }
                Intent::SetLint(kind, on) => self.model.detectors_mut().set_enabled(kind, on),
                Intent::SetPlaying(p) => {
                    self.playing = p;
                    if p {
                        self.follow_live = false;
                    }
                }
                Intent::SetFollow(f) => {
                    self.follow_live = f;
                    if f {
                        self.playing = false;
                    }
                }
                Intent::Export => files::export(self),
                Intent::Open => files::open(self),
                Intent::OpenConnectionDialog => {
                    self.conn_dialog = Some(panels::ConnectionDialog::default())
                }
                Intent::OpenProfileDialog => {
                    self.profile_dialog = Some(profile::ProfileDialog::new(&self.profile))
                }
                Intent::ApplyProfile(text) => match self.apply_profile_text(&text) {
                    Ok(()) => self.profile_dialog = None,
                    Err(e) => {
                        if let Some(d) = &mut self.profile_dialog {
                            d.error = Some(e.clone());
                        }
                        self.notice(e);
                    }
                },
                Intent::Notice(n) => self.notice(n),
            }
        }
        if self.playing {
            ctx.request_repaint();
        }
    }

    fn advance_play(&mut self) {
        let now = Instant::now();
        let dt = self
            .last_frame
            .map(|t| now - t)
            .unwrap_or_default()
            .as_secs_f64();
        self.last_frame = Some(now);
        if !self.playing {
            self.play_accum = 0.0;
            return;
        }
        self.play_accum += dt * self.prefs.play_speed;
        let steps = self.play_accum.floor();
        if steps >= 1.0 {
            self.play_accum -= steps;
            let before = self.cursor.pos();
            self.cursor.apply(
                CursorCommand::Step(steps as i64),
                self.model.log(),
                self.model.anomaly_indices(),
            );
            if self.cursor.pos() == before {
                self.playing = false;
            }
        }
    }

    fn keyboard(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        let (left, right, space, n, p) = ctx.input(|i| {
            (
                i.key_pressed(egui::Key::ArrowLeft),
                i.key_pressed(egui::Key::ArrowRight),
                i.key_pressed(egui::Key::Space),
                i.key_pressed(egui::Key::N),
                i.key_pressed(egui::Key::P),
            )
        });
        if left {
            self.push(Intent::Cursor(CursorCommand::Step(-1)));
        }
        if right {
            self.push(Intent::Cursor(CursorCommand::Step(1)));
        }
        if space {
            let playing = self.playing;
            self.push(Intent::SetPlaying(!playing));
        }
        if n {
            self.push(Intent::Cursor(CursorCommand::NextAnomaly));
        }
        if p {
            self.push(Intent::Cursor(CursorCommand::PrevAnomaly));
        }
    }

    /// One frame of the whole UI (also what the kittest harness drives).
    pub fn frame_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.pump();
        self.advance_play();
        self.refresh_filter(&ctx);
        self.keyboard(&ctx);
        let mut intents = Vec::new();
        egui::Panel::top("top_bar").show(ui, |ui| panels::top_bar_ui(self, ui, &mut intents));
        egui::Panel::bottom("status_bar").show(ui, |ui| panels::status_bar_ui(self, ui));
        egui::Panel::bottom("bottom")
            .resizable(true)
            .default_size(320.0)
            .min_size(200.0)
            .show(ui, |ui| self.bottom_ui(ui, &mut intents));
        egui::Panel::left("left")
            .resizable(true)
            .default_size(330.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("left_scroll")
                    .show(ui, |ui| {
                        if self.is_observing() {
                            panels::topics_ui(self, ui, &mut intents);
                        } else {
                            panels::faults_ui(self, ui, &mut intents);
                        }
                        ui.separator();
                        panels::lints_ui(self, ui, &mut intents);
                    });
            });
        egui::Panel::right("right")
            .resizable(true)
            .default_size(400.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("right_scroll")
                    .show(ui, |ui| {
                        inspect::record_ui(self, ui, &mut intents);
                        ui.separator();
                        inspect::aggregate_ui(self, ui);
                    });
            });
        egui::CentralPanel::default().show(ui, |ui| {
            let scroll = std::mem::take(&mut self.scroll_to_selected);
            table::table_ui(self, ui, &mut intents, scroll);
        });
        if let Some(mut dialog) = self.conn_dialog.take() {
            if dialog.ui(&ctx, &self.status, &mut intents) {
                self.conn_dialog = Some(dialog);
            }
        }
        if let Some(mut dialog) = self.profile_dialog.take() {
            if dialog.ui(&ctx, &mut intents) {
                self.profile_dialog = Some(dialog);
            }
        }
        if let Some(mut prompt) = self.path_prompt.take() {
            if files::prompt_ui(self, &mut prompt, &ctx) {
                self.path_prompt = Some(prompt);
            }
        }
        files::poll(self, &ctx);
        self.intents.extend(intents);
        self.apply_intents(&ctx);
        if !self.pending.is_empty() {
            ctx.request_repaint();
        }
    }

    fn bottom_ui(&mut self, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
        ui.horizontal(|ui| {
            for (tab, label) in [
                (BottomTab::Chain, "Chain graph"),
                (BottomTab::Lanes, "Partition lanes"),
                (BottomTab::Sagas, "Sagas"),
                (BottomTab::Charts, "Charts"),
                (BottomTab::Schemas, "Schemas"),
                (BottomTab::Flow, "Flow"),
                (BottomTab::Groups, "Consumer groups"),
            ] {
                ui.selectable_value(&mut self.prefs.bottom_tab, tab, label);
            }
        });
        ui.separator();
        match self.prefs.bottom_tab {
            BottomTab::Chain => {
                let mut g = std::mem::take(&mut self.graph);
                g.ui(self, ui, intents);
                self.graph = g;
            }
            BottomTab::Lanes => lanes::lanes_ui(self, ui, intents),
            BottomTab::Sagas => saga::sagas_ui(self, ui, intents),
            BottomTab::Charts => charts::charts_ui(self, ui),
            BottomTab::Schemas => schemas::schemas_ui(self, ui, intents),
            BottomTab::Flow => flow::flow_ui(self, ui, intents),
            BottomTab::Groups => groups::groups_ui(self, ui, intents),
        }
    }
}

/// Rows of the event table.
pub enum RowsView<'a> {
    /// Every held record (those the memory limit dropped are not shown).
    All(std::ops::Range<LogIndex>),
    Some(&'a [LogIndex]),
}

impl RowsView<'_> {
    pub fn len(&self) -> usize {
        match self {
            RowsView::All(r) => r.len(),
            RowsView::Some(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, i: usize) -> Option<LogIndex> {
        match self {
            RowsView::All(r) => LogIndex::try_from(i)
                .ok()
                .and_then(|i| r.start.checked_add(i))
                .filter(|i| r.contains(i)),
            RowsView::Some(v) => v.get(i).copied(),
        }
    }
    pub fn position(&self, idx: LogIndex) -> Option<usize> {
        match self {
            RowsView::All(r) => r.contains(&idx).then(|| (idx - r.start) as usize),
            RowsView::Some(v) => v.binary_search(&idx).ok(),
        }
    }
}

const PREFS_KEY: &str = "eventscope-prefs";

/// The eframe wrapper: persistence of preferences only.
pub struct EframeApp(pub EventscopeApp);

impl eframe::App for EframeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.0.frame_ui(ui);
    }
    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, PREFS_KEY, &self.0.prefs);
    }
}

/// Open the window. `recording` opens a JSONL file instead of connecting;
/// else the session runs in `mode`. `startup` is sent to the backend once it
/// is connected (faults to turn on, orders to place), as if the user had
/// pressed the buttons.
pub fn run(
    conn: Connection,
    mode: Mode,
    recording: Option<(Model, String)>,
    startup: Vec<BackendCommand>,
) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("eventscope")
            .with_inner_size([1600.0, 1000.0]),
        ..Default::default()
    };
    // An explicit --profile wins; else the one remembered for this connection; else defaults.
    // (`--schemas DIR` counts as explicit: it goes over the profile file or the defaults.)
    let explicit = (conn.profile.is_some() || conn.schemas.is_some())
        .then(|| crate::profile::Profile::for_connection(&conn))
        .transpose()?;
    let memory_limit = conn.memory_limit_bytes();
    let record_store = conn.record_store();
    let connection_key = match &recording {
        Some((_, label)) => label.clone(),
        None => conn.brokers.clone().unwrap_or_else(|| "embedded".into()),
    };
    eframe::run_native(
        "eventscope",
        options,
        Box::new(move |cc| {
            let prefs: Prefs = cc
                .storage
                .and_then(|s| eframe::get_value(s, PREFS_KEY))
                .unwrap_or_default();
            let app = match recording {
                Some((model, label)) => EventscopeApp::offline(model, label, prefs),
                None => EventscopeApp::live_with_mode(conn, mode, &cc.egui_ctx, prefs)?,
            };
            let mut app = app;
            app.connection_key = connection_key;
            app.profile.memory_limit = memory_limit;
            if app.is_live() {
                app.profile.record_store = record_store;
            }
            let remembered = app.prefs.profiles.get(&app.connection_key).cloned();
            match (explicit, remembered) {
                (Some(p), _) => app.apply_profile(&p),
                // Rebuilds a recording's model too (a live one has read nothing yet).
                (None, Some(text)) => {
                    if let Err(e) = app.apply_profile_text(&text) {
                        app.notice(format!("the remembered profile is not used: {e}"));
                    }
                }
                (None, None) => app.apply_profile(&crate::profile::Profile::default()),
            }
            for cmd in startup {
                app.push(Intent::Backend(cmd));
            }
            Ok(Box::new(EframeApp(app)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

/// The top bar's traffic rates, orders per second (its slider's range).
pub const TRAFFIC_RATES: (f64, f64) = (0.5, 200.0);

/// What `eventscope demo` without `--headless` asks of the window at start:
/// the faults of `--faults` turned on, then `--orders` orders placed, then
/// traffic at `--rate` (within [`TRAFFIC_RATES`]).
pub fn startup_commands(args: &crate::cli::DemoArgs) -> Vec<BackendCommand> {
    let mut cmds: Vec<BackendCommand> = args
        .faults
        .0
        .iter()
        .map(|(fault, value)| BackendCommand::SetFault {
            fault: *fault,
            enabled: true,
            value: *value,
        })
        .collect();
    // `--saga choreography`: the switch is set before the first order is placed.
    let mode: eventscope_demo::saga::SagaMode = args.saga.into();
    if mode != eventscope_demo::saga::SagaMode::default() {
        cmds.push(BackendCommand::SetSagaMode(mode));
    }
    if args.orders > 0 {
        cmds.push(BackendCommand::PlaceOrders(
            u32::try_from(args.orders).unwrap_or(u32::MAX),
        ));
    }
    if let Some(rate) = args.rate {
        cmds.push(BackendCommand::SetTraffic {
            running: true,
            per_second: rate.clamp(TRAFFIC_RATES.0, TRAFFIC_RATES.1),
        });
    }
    cmds
}
