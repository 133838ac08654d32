//! Top bar, status bar, failure injection (or, observing, the topics), lints,
//! connection dialog.

use eventscope_demo::faults::{Fault, FaultKind};

use super::widgets;
use super::{EventscopeApp, Intent};
use crate::backend::{BackendCommand, ConnectionStatus, Mode};
use crate::cli::Connection;
use crate::model::detect::AnomalyKind;
use crate::model::timetravel::CursorCommand;

fn status_text(s: &ConnectionStatus) -> (egui::Color32, String) {
    match s {
        ConnectionStatus::Connecting { target } => (
            egui::Color32::from_rgb(220, 180, 90),
            format!("connecting to {target}..."),
        ),
        ConnectionStatus::Connected {
            broker,
            demo,
            database,
            following,
            ..
        } => (
            egui::Color32::from_rgb(110, 200, 120),
            if *demo {
                format!("{broker} | demo | {database} | {following} partitions")
            } else {
                format!("{broker} | observing | {following} partitions")
            },
        ),
        ConnectionStatus::Failed { reason } => (widgets::ANOMALY, reason.clone()),
        ConnectionStatus::Offline { file } => (
            egui::Color32::from_rgb(150, 170, 200),
            format!("offline recording {file}"),
        ),
    }
}

pub fn top_bar_ui(app: &mut EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    ui.horizontal_wrapped(|ui| {
        ui.heading("eventscope");
        let (color, text) = status_text(&app.status);
        ui.colored_label(color, "●");
        ui.label(text)
            .on_hover_text("connection: broker, database, partitions followed");
        if ui.button("Connect...").clicked() {
            intents.push(Intent::OpenConnectionDialog);
        }
        if ui
            .button("Profile...")
            .on_hover_text("the observed system's conventions: command topics, terminal types, flows, JSON paths, PII fields")
            .clicked()
        {
            intents.push(Intent::OpenProfileDialog);
        }
        ui.menu_button("File", |ui| {
            if ui.button("Export session as JSONL...").clicked() {
                intents.push(Intent::Export);
                ui.close();
            }
            if ui.button("Open JSONL recording...").clicked() {
                intents.push(Intent::Open);
                ui.close();
            }
        });
    });
    ui.horizontal_wrapped(|ui| {
        // The demo's controls only where the demo runs.
        if !app.is_observing() {
            let live = app.is_live();
            ui.add_enabled_ui(live, |ui| {
                if ui.button("Place order").clicked() {
                    intents.push(Intent::Backend(BackendCommand::PlaceOrders(1)));
                }
                let label = if app.traffic_running {
                    "Stop traffic"
                } else {
                    "Start traffic"
                };
                if ui.button(label).clicked() {
                    intents.push(Intent::Backend(BackendCommand::SetTraffic {
                        running: !app.traffic_running,
                        per_second: app.prefs.traffic_rate,
                    }));
                }
                let r = ui.add(
                    egui::Slider::new(
                        &mut app.prefs.traffic_rate,
                        super::TRAFFIC_RATES.0..=super::TRAFFIC_RATES.1,
                    )
                    .logarithmic(true)
                    .suffix(" orders/s"),
                );
                if r.changed() && app.traffic_running {
                    intents.push(Intent::Backend(BackendCommand::SetTraffic {
                        running: true,
                        per_second: app.prefs.traffic_rate,
                    }));
                }
            });
            ui.separator();
        }
        if ui
            .button("< Step")
            .on_hover_text("step back (Left)")
            .clicked()
        {
            intents.push(Intent::Cursor(CursorCommand::Step(-1)));
        }
        let play = if app.playing { "Pause" } else { "Play" };
        if ui
            .button(play)
            .on_hover_text("play / pause (Space)")
            .clicked()
        {
            intents.push(Intent::SetPlaying(!app.playing));
        }
        if ui
            .button("Step >")
            .on_hover_text("step forward (Right)")
            .clicked()
        {
            intents.push(Intent::Cursor(CursorCommand::Step(1)));
        }
        let mut follow = app.follow_live;
        if ui.toggle_value(&mut follow, "Follow live").changed() {
            intents.push(Intent::SetFollow(follow));
        }
        if ui
            .button("< Anomaly")
            .on_hover_text("previous anomaly (P)")
            .clicked()
        {
            intents.push(Intent::Cursor(CursorCommand::PrevAnomaly));
        }
        if ui
            .button("Anomaly >")
            .on_hover_text("next anomaly (N)")
            .clicked()
        {
            intents.push(Intent::Cursor(CursorCommand::NextAnomaly));
        }
        ui.add(
            egui::Slider::new(&mut app.prefs.play_speed, 1.0..=2000.0)
                .logarithmic(true)
                .suffix(" rec/s"),
        );
        ui.separator();
        let log = app.model.log();
        match app.cursor.pos().and_then(|c| log.row(c).map(|r| (c, r))) {
            Some((c, r)) => {
                ui.monospace(format!(
                    "cursor {} / {}  {}[{}]@{}  {}",
                    c + 1,
                    log.len(),
                    log.resolve(r.topic),
                    r.partition,
                    r.offset,
                    widgets::fmt_time(r.time_ms)
                ));
            }
            None => match app.cursor.pos().filter(|&c| log.is_dropped(c)) {
                Some(c) => {
                    ui.monospace(format!(
                        "cursor {} / {}  dropped: memory limit",
                        c + 1,
                        log.len()
                    ));
                }
                None => {
                    ui.monospace("cursor -: no records yet");
                }
            },
        }
    });
}

/// The status bar's memory note: what the log holds against the limit, and what it dropped.
pub fn memory_note(log: &crate::model::log::ObservedLog) -> Option<String> {
    let d = log.drop_stats();
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let held = match log.memory_limit() {
        Some(limit) => format!(
            "log {:.1} of {:.1} MiB ({:.1} MiB ids)",
            mib(log.approx_bytes()),
            mib(limit),
            mib(log.undroppable_bytes())
        ),
        None if d.payloads_in_store > 0 => format!("log {:.1} MiB", mib(log.approx_bytes())),
        None => return None,
    };
    let held = if d.payloads_in_store > 0 {
        format!(
            "{held}, payloads of {} records read from Kafka on demand",
            d.payloads_in_store
        )
    } else {
        held
    };
    let held = if d.dropped_records > 0 {
        format!(
            "{held}, {} oldest records dropped (memory limit; their lint verdicts kept)",
            d.dropped_records
        )
    } else {
        held
    };
    Some(if d.forgotten_ids > 0 {
        format!(
            "{held}, {} ids of dropped records forgotten (a redelivery of one is not flagged)",
            d.forgotten_ids
        )
    } else {
        held
    })
}

pub fn status_bar_ui(app: &mut EventscopeApp, ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        let s = app.model.log().stats();
        ui.label(format!(
            "observed {}  unique {}  duplicate deliveries {}  poison {}",
            s.observed, s.unique, s.duplicate_deliveries, s.poison
        ));
        if let Some(p) = super::files::progress(app) {
            ui.label(format!("| {p}"));
        }
        if !app.pending.is_empty() {
            ui.label(format!("| ingesting {} more", app.pending.len()));
        }
        if app.dropped_batches > 0 {
            ui.colored_label(
                widgets::DUPLICATE,
                format!(
                    "| {} update batches dropped (GUI behind)",
                    app.dropped_batches
                ),
            );
        }
        if let Some(note) = broker_note(&app.status) {
            ui.weak(format!("| {note}"));
        }
        if let Some(note) = memory_note(app.model.log()) {
            if app.model.log().first_held() > 0 {
                ui.colored_label(widgets::DUPLICATE, format!("| {note}"));
            } else {
                ui.weak(format!("| {note}"));
            }
        }
    });
    let recent: Vec<String> = app
        .notices
        .iter()
        .filter(|(_, t)| t.elapsed().as_secs() < 20)
        .map(|(n, _)| n.clone())
        .collect();
    for n in recent.iter().rev().take(2) {
        ui.colored_label(widgets::DUPLICATE, n);
    }
}

/// What the status bar says about the broker actually connected.
fn broker_note(status: &ConnectionStatus) -> Option<String> {
    match status {
        ConnectionStatus::Connected { embedded: true, .. } => Some(
            "embedded broker keeps about 5 MiB per partition: eventscope keeps what it saw".into(),
        ),
        ConnectionStatus::Connected {
            broker,
            demo: false,
            ..
        } => Some(format!(
            "observe only: nothing is created or written on {broker}"
        )),
        ConnectionStatus::Connected {
            broker, demo: true, ..
        } => Some(format!(
            "the demo's topics and groups are on {broker}; retention is the broker's"
        )),
        _ => None,
    }
}

/// What running the demo on a broker creates there (said before it is done).
pub fn demo_footprint(partitions: i32) -> String {
    let groups: Vec<&str> = eventscope_demo::system::DemoSystem::groups()
        .iter()
        .map(|(g, _)| *g)
        .collect();
    format!(
        "creates topics {} ({partitions} partitions each) and consumer groups {}, and writes the demo's orders there",
        eventscope_demo::topics::ALL.join(", "),
        groups.join(", ")
    )
}

/// Observing: the cluster's topics, each followed or not, and the demo on request.
pub fn topics_ui(app: &mut EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    ui.heading("Observed topics");
    if app.topics.is_empty() {
        ui.weak("no topics yet (internal topics, starting with __, are not listed)");
    }
    let mut changed = false;
    for t in &app.topics {
        ui.horizontal(|ui| {
            let mut on = !app.excluded_topics.contains(&t.name);
            if ui.checkbox(&mut on, t.name.as_str()).changed() {
                if on {
                    app.excluded_topics.remove(&t.name);
                } else {
                    app.excluded_topics.insert(t.name.clone());
                }
                changed = true;
            }
            let seen = app
                .rates
                .per_topic
                .get(&t.name)
                .map(|per_sec| per_sec.values().map(|n| u64::from(*n)).sum::<u64>())
                .unwrap_or(0);
            ui.weak(format!("{} partitions, {seen} records seen", t.partitions));
        });
    }
    if changed {
        intents.push(Intent::Backend(BackendCommand::ExcludeTopics(
            app.excluded_topics.iter().cloned().collect(),
        )));
    }
    ui.label(
        egui::RichText::new(
            "Unticked topics are not followed; ticked again, they resume after the last record seen.",
        )
        .small()
        .weak(),
    );
    ui.separator();
    ui.label("Failure injection needs the demo, which this session does not run.");
    let footprint = demo_footprint(3);
    if ui
        .button("Run the demo on this broker")
        .on_hover_text(footprint.as_str())
        .clicked()
    {
        intents.push(Intent::Backend(BackendCommand::StartDemo));
    }
    ui.label(
        egui::RichText::new(format!("It {footprint}."))
            .small()
            .weak(),
    );
}

fn value_ui(ui: &mut egui::Ui, fault: Fault, value: &mut f64) -> bool {
    match fault.kind() {
        FaultKind::Switch => false,
        FaultKind::Chance => {
            let changed = ui
                .add(
                    egui::DragValue::new(value)
                        .range(0.01..=50.0)
                        .speed(0.01)
                        .max_decimals(2),
                )
                .on_hover_text(
                    "below 1: a probability, decided afresh for every attempt; \
                     1 or more: a count of hits",
                )
                .changed();
            // Above 1 the value is a count: keep it whole, as --faults requires.
            if *value > 1.0 {
                *value = value.round();
            }
            changed
        }
        FaultKind::Count => ui
            .add(
                egui::DragValue::new(value)
                    .range(1.0..=100.0)
                    .speed(0.1)
                    .max_decimals(0),
            )
            .changed(),
        FaultKind::Seconds => ui
            .add(
                egui::DragValue::new(value)
                    .range(1.0..=120.0)
                    .speed(0.1)
                    .max_decimals(0)
                    .suffix(" s"),
            )
            .changed(),
    }
}

pub fn faults_ui(app: &mut EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    saga_mode_ui(app, ui, intents);
    ui.separator();
    ui.heading("Failure injection");
    if !app.is_live() {
        ui.weak("offline recording: no demo to inject into");
    }
    for state in app.faults.clone() {
        let fault = state.fault;
        ui.horizontal(|ui| {
            let mut on = state.enabled;
            let value = app
                .fault_values
                .entry(fault)
                .or_insert(fault.default_value());
            let toggled = ui
                .add_enabled(
                    app.source.backend.is_some(),
                    egui::Checkbox::new(&mut on, fault.name()),
                )
                .changed();
            let changed = value_ui(ui, fault, value);
            if toggled || (changed && state.enabled) {
                intents.push(Intent::Backend(BackendCommand::SetFault {
                    fault,
                    enabled: on,
                    value: *value,
                }));
            }
            let status = if state.enabled {
                match fault.kind() {
                    FaultKind::Count if state.remaining > 0 => {
                        format!("on, {} left", state.remaining)
                    }
                    _ => "on".to_owned(),
                }
            } else {
                "off".to_owned()
            };
            ui.weak(format!("{status}, fired {}", state.fired));
        });
        ui.label(egui::RichText::new(fault.description()).small().weak());
    }
}

/// The saga mode of new orders: orchestrated by commands or choreographed by events.
fn saga_mode_ui(app: &mut EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    use eventscope_demo::saga::SagaMode;
    ui.horizontal(|ui| {
        ui.label("Saga of new orders:");
        for mode in SagaMode::ALL {
            let clicked = ui
                .add_enabled(
                    app.source.backend.is_some(),
                    egui::RadioButton::new(app.saga_mode == mode, mode.as_str()),
                )
                .on_hover_text(match mode {
                    SagaMode::Orchestration => {
                        "the orchestrator sends commands (*.commands topics)"
                    }
                    SagaMode::Choreography => {
                        "no orchestrator: each service reacts to the previous service's event"
                    }
                })
                .clicked();
            if clicked && app.saga_mode != mode {
                app.saga_mode = mode;
                intents.push(Intent::Backend(BackendCommand::SetSagaMode(mode)));
            }
        }
    });
}

pub fn lints_ui(app: &mut EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    ui.heading("Lints");
    let counts = app.model.anomaly_counts().clone();
    for info in app.model.detectors().lints() {
        ui.horizontal(|ui| {
            let mut on = info.enabled;
            if ui
                .checkbox(&mut on, info.kind.as_str())
                .on_hover_text(info.summary)
                .changed()
            {
                intents.push(Intent::SetLint(info.kind, on));
            }
            let n = counts.get(&info.kind).copied().unwrap_or(0);
            if n > 0 {
                ui.colored_label(widgets::ANOMALY, n.to_string());
                let only = app.anomaly_kind == Some(info.kind);
                if ui
                    .selectable_label(only, "list")
                    .on_hover_text("list only this kind below")
                    .clicked()
                {
                    app.anomaly_kind = if only { None } else { Some(info.kind) };
                }
            } else {
                ui.weak("0");
            }
        });
    }
    ui.separator();
    let kind = app.anomaly_kind;
    let anomalies: Vec<_> = app
        .model
        .anomalies()
        .iter()
        .filter(|a| kind.is_none_or(|k| a.kind == k))
        .collect();
    match kind {
        Some(k) => ui.label(format!("{} {k} anomalies (newest first)", anomalies.len())),
        None => ui.label(format!("{} anomalies (newest first)", anomalies.len())),
    };
    egui::ScrollArea::vertical()
        .id_salt("anomaly_list")
        .max_height(320.0)
        .show(ui, |ui| {
            for a in anomalies.iter().rev().take(300) {
                let Some(&idx) = a.log_indices.first() else {
                    continue;
                };
                let text = format!(
                    "{}  {}[{}]@{}  {}",
                    a.kind.as_str(),
                    a.topic,
                    a.partition,
                    a.offset,
                    a.detail
                );
                if ui
                    .add(egui::Button::new(egui::RichText::new(text).small()).wrap())
                    .on_hover_text("move the cursor here and select the record")
                    .clicked()
                {
                    intents.push(Intent::Select {
                        index: idx,
                        move_cursor: true,
                    });
                }
            }
        });
    let _ = AnomalyKind::ALL;
}

/// Connect to another broker / database.
#[derive(Default)]
pub struct ConnectionDialog {
    pub brokers: String,
    pub database: String,
    pub security_protocol: String,
    pub sasl_mechanism: String,
    pub username: String,
    pub password: String,
    pub extra: String,
    /// Where to export the demo's spans (empty: no export).
    pub otlp_endpoint: String,
    pub otlp_grpc: bool,
    /// A Schema Registry for Confluent-framed records (empty: none), and its USER:PASSWORD.
    pub schema_registry: String,
    pub schema_registry_auth: String,
    /// Run the demo there (else observe only).
    pub run_demo: bool,
    pub submitted: bool,
}

impl ConnectionDialog {
    /// The connection it describes, or why it is invalid.
    pub fn connection(&self) -> Result<Connection, String> {
        let mut c = Connection::default();
        let b = self.brokers.trim();
        if !b.is_empty() {
            if b.split(',').any(|hp| {
                hp.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
            }) {
                return Err(format!("'{b}' is not host:port[,host:port]"));
            }
            c.brokers = Some(b.to_owned());
        }
        if !self.database.trim().is_empty() {
            c.database = Some(self.database.trim().to_owned());
        }
        let mut kv = Vec::new();
        if !self.security_protocol.trim().is_empty() {
            kv.push((
                "security.protocol".to_owned(),
                self.security_protocol.trim().to_owned(),
            ));
        }
        if !self.sasl_mechanism.trim().is_empty() {
            kv.push((
                "sasl.mechanism".to_owned(),
                self.sasl_mechanism.trim().to_owned(),
            ));
        }
        if !self.username.is_empty() {
            kv.push(("sasl.username".to_owned(), self.username.clone()));
            kv.push(("sasl.password".to_owned(), self.password.clone()));
        }
        for line in self.extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once('=') {
                Some((k, v)) => kv.push((k.trim().to_owned(), v.trim().to_owned())),
                None => return Err(format!("'{line}' is not key=value")),
            }
        }
        c.kafka_config = kv;
        let otlp = self.otlp_endpoint.trim();
        if !otlp.is_empty() {
            if !(otlp.starts_with("http://") || otlp.starts_with("https://")) {
                return Err(format!("OTLP endpoint '{otlp}' is not an http(s):// URL"));
            }
            c.otlp_endpoint = Some(otlp.to_owned());
            c.otlp_protocol = if self.otlp_grpc {
                eventscope_demo::telemetry::OtlpProtocol::Grpc
            } else {
                eventscope_demo::telemetry::OtlpProtocol::HttpProtobuf
            };
        }
        let registry = self.schema_registry.trim();
        if !registry.is_empty() {
            let auth = self.schema_registry_auth.trim();
            let auth = (!auth.is_empty())
                .then(|| crate::registry::parse_auth(auth))
                .transpose()
                .map_err(|e| format!("registry user:password: {e}"))?;
            crate::registry::RegistryClient::new(registry, auth).map_err(|e| e.to_string())?;
            c.schema_registry = Some(registry.to_owned());
            if !self.schema_registry_auth.trim().is_empty() {
                c.schema_registry_auth = Some(self.schema_registry_auth.trim().to_owned());
            }
        }
        Ok(c)
    }

    /// Draw; false when closed.
    pub fn ui(
        &mut self,
        ctx: &egui::Context,
        status: &ConnectionStatus,
        intents: &mut Vec<Intent>,
    ) -> bool {
        let mut open = true;
        let mut close = false;
        egui::Window::new("Connect")
            .open(&mut open)
            .collapsible(false)
            .show(ctx, |ui| {
                egui::Grid::new("conn_grid").num_columns(2).show(ui, |ui| {
                    // Each field is labelled by its row label (screen readers, kittest).
                    let field = |ui: &mut egui::Ui, label: &str, edit: egui::TextEdit<'_>| {
                        let l = ui.label(label);
                        ui.add(edit).labelled_by(l.id);
                        ui.end_row();
                    };
                    field(
                        ui,
                        "Brokers",
                        egui::TextEdit::singleline(&mut self.brokers)
                            .hint_text("empty: embedded broker"),
                    );
                    field(
                        ui,
                        "Database URL",
                        egui::TextEdit::singleline(&mut self.database)
                            .hint_text("sqlite://... or postgres://..."),
                    );
                    field(
                        ui,
                        "security.protocol",
                        egui::TextEdit::singleline(&mut self.security_protocol)
                            .hint_text("PLAINTEXT, SASL_SSL, ..."),
                    );
                    field(
                        ui,
                        "sasl.mechanism",
                        egui::TextEdit::singleline(&mut self.sasl_mechanism)
                            .hint_text("SCRAM-SHA-512, PLAIN, ..."),
                    );
                    field(
                        ui,
                        "Username",
                        egui::TextEdit::singleline(&mut self.username),
                    );
                    field(
                        ui,
                        "Password",
                        egui::TextEdit::singleline(&mut self.password).password(true),
                    );
                    field(
                        ui,
                        "More (key=value per line)",
                        egui::TextEdit::multiline(&mut self.extra).desired_rows(2),
                    );
                    field(
                        ui,
                        "OTLP endpoint",
                        egui::TextEdit::singleline(&mut self.otlp_endpoint)
                            .hint_text("empty: no export; http://127.0.0.1:4318"),
                    );
                    ui.label("");
                    ui.checkbox(&mut self.otlp_grpc, "OTLP over gRPC (else HTTP/protobuf)");
                    ui.end_row();
                    field(
                        ui,
                        "Schema Registry",
                        egui::TextEdit::singleline(&mut self.schema_registry).hint_text(
                            "empty: none; http://127.0.0.1:8081 (Avro, Protobuf, JSON Schema)",
                        ),
                    );
                    field(
                        ui,
                        "Registry user:password",
                        egui::TextEdit::singleline(&mut self.schema_registry_auth).password(true),
                    );
                    ui.label("On this broker");
                    ui.vertical(|ui| {
                        ui.radio_value(
                            &mut self.run_demo,
                            false,
                            "Observe only: read its topics, create and write nothing",
                        );
                        ui.radio_value(&mut self.run_demo, true, "Run the demo here");
                        if self.run_demo {
                            ui.label(
                                egui::RichText::new(format!("The demo {}.", demo_footprint(3)))
                                    .small()
                                    .weak(),
                            );
                        }
                    });
                    ui.end_row();
                });
                let valid = self.connection();
                if let Err(e) = &valid {
                    ui.colored_label(widgets::ANOMALY, e);
                }
                if self.submitted {
                    let (color, text) = status_text(status);
                    ui.colored_label(color, text);
                }
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(valid.is_ok(), egui::Button::new("Connect"))
                        .clicked()
                    {
                        if let Ok(c) = valid {
                            let mode = if self.run_demo {
                                Mode::Demo
                            } else {
                                Mode::Observe
                            };
                            intents
                                .push(Intent::Backend(BackendCommand::Connect(Box::new(c), mode)));
                            self.submitted = true;
                        }
                    }
                    if ui.button("Close").clicked() {
                        close = true;
                    }
                });
            });
        open && !close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_dialog_checks_the_schema_registry_fields() {
        let mut d = ConnectionDialog {
            brokers: "127.0.0.1:9092".into(),
            schema_registry: "http://127.0.0.1:8081".into(),
            schema_registry_auth: "svc:s3cret".into(),
            ..ConnectionDialog::default()
        };
        let c = d.connection().unwrap();
        assert_eq!(c.schema_registry.as_deref(), Some("http://127.0.0.1:8081"));
        assert_eq!(c.schema_registry_auth.as_deref(), Some("svc:s3cret"));
        d.schema_registry_auth = "no-colon".into();
        assert!(d.connection().unwrap_err().contains("user:password"));
        d.schema_registry_auth.clear();
        d.schema_registry = "127.0.0.1:8081".into();
        assert!(d.connection().is_err(), "a URL without scheme is refused");
        d.schema_registry.clear();
        assert_eq!(d.connection().unwrap().schema_registry, None);
    }
}
