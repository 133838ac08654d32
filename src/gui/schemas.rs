//! Schemas: per event type the versions its records show (declared by
//! `dataschema` or learned from the payload's shape), each with its field
//! table, producers, topics and first/last record; the diff between two
//! versions with the breaking changes marked; and the `schema-drift` findings,
//! each a click away from its record.

use std::path::PathBuf;
use std::sync::Arc;

use eventscope_demo::contracts::{self, parse_uri, Compatibility, Registry};

use super::widgets;
use super::{EventscopeApp, Intent};
use crate::model::detect::AnomalyKind;
use crate::model::log::{LogIndex, ObservedLog};
use crate::model::schemas::{self, FieldChangeKind, SchemaCatalog, SchemaVersion};

/// Rows read into the catalog per frame: the view stays responsive over a long log.
const ROWS_PER_FRAME: usize = 20_000;

/// What the Schemas tab remembers between frames.
#[derive(Default)]
pub struct SchemasView {
    pub catalog: SchemaCatalog,
    /// The event type shown.
    pub selected: Option<String>,
    /// Versions compared (indices into the type's versions), and the one whose fields show.
    from: usize,
    to: usize,
    fields_of: usize,
    /// The user's contracts (`--schemas DIR`), loaded once per directory.
    user: Option<(PathBuf, Option<Arc<Registry>>)>,
}

impl SchemasView {
    /// Read the rows that arrived since the last frame (a bounded number).
    pub fn catch_up(&mut self, log: &ObservedLog) {
        self.catalog.update(log, ROWS_PER_FRAME);
    }

    pub(super) fn user_registry(&mut self, dir: Option<&PathBuf>) -> Option<Arc<Registry>> {
        let dir = dir?;
        if self.user.as_ref().is_none_or(|(d, _)| d != dir) {
            self.user = Some((dir.clone(), Registry::load_dir(dir).ok().map(Arc::new)));
        }
        self.user.as_ref().and_then(|(_, r)| r.clone())
    }
}

/// `topic[p]@offset` of a record.
fn at(log: &ObservedLog, idx: LogIndex) -> String {
    log.row(idx).map_or_else(
        || "?".into(),
        |r| format!("{}[{}]@{}", log.resolve(r.topic), r.partition, r.offset),
    )
}

fn record_link(ui: &mut egui::Ui, log: &ObservedLog, idx: LogIndex, intents: &mut Vec<Intent>) {
    if ui
        .link(egui::RichText::new(at(log, idx)).monospace().small())
        .on_hover_text("move the cursor here and select the record")
        .clicked()
    {
        intents.push(Intent::Select {
            index: idx,
            move_cursor: true,
        });
    }
}

pub fn schemas_ui(app: &mut EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    let mut view = std::mem::take(&mut app.schemas);
    view.catch_up(app.model.log());
    let user = view.user_registry(app.profile.schemas.as_ref());
    let log = app.model.log();
    let types = view.catalog.types();
    let versions: usize = types.values().map(|t| t.versions.len()).sum();
    let pending = view.catalog.pending(log);
    ui.horizontal(|ui| {
        ui.label(format!(
            "{} event types, {versions} versions (declared by dataschema, else learned from the payload's shape)",
            types.len()
        ));
        if pending > 0 {
            ui.weak(format!("reading {pending} more records"));
            ui.ctx().request_repaint();
        }
    });
    if view
        .selected
        .as_ref()
        .is_none_or(|s| !types.contains_key(s))
    {
        // Start on a type with several versions, else the first.
        view.selected = types
            .iter()
            .find(|(_, t)| t.versions.len() > 1)
            .or_else(|| types.iter().next())
            .map(|(k, _)| k.clone());
    }
    let drifts: Vec<_> = app
        .model
        .anomalies()
        .iter()
        .filter(|a| a.kind == AnomalyKind::SchemaDrift)
        .collect();
    let mut picked = None;
    ui.horizontal_top(|ui| {
        // Left: the event types.
        ui.vertical(|ui| {
            ui.set_width(260.0);
            egui::ScrollArea::vertical()
                .id_salt("schema_types")
                .max_height(ui.available_height())
                .show(ui, |ui| {
                    for (name, t) in types {
                        let drifted = drifts.iter().any(|a| {
                            a.log_indices
                                .first()
                                .is_some_and(|&i| widgets::type_of(log, i) == *name)
                        });
                        let mut text = egui::RichText::new(format!(
                            "{name}  {} version{}, {} records",
                            t.versions.len(),
                            if t.versions.len() == 1 { "" } else { "s" },
                            t.records
                        ))
                        .small();
                        if drifted {
                            text = text.color(widgets::ANOMALY);
                        }
                        let on = view.selected.as_deref() == Some(name.as_str());
                        if ui.selectable_label(on, text).clicked() && !on {
                            picked = Some(name.clone());
                        }
                    }
                });
        });
        ui.separator();
        // Right: the selected type.
        egui::ScrollArea::vertical()
            .id_salt("schema_detail")
            .show(ui, |ui| {
                ui.vertical(|ui| {
                    let Some((name, t)) =
                        view.selected.as_ref().and_then(|s| types.get_key_value(s))
                    else {
                        ui.weak("No event with a JSON object payload yet.");
                        return;
                    };
                    versions_table(ui, log, name, &t.versions, intents);
                    let n = t.versions.len();
                    if n > 1 {
                        if view.to >= n || view.from >= n || view.from == view.to {
                            (view.from, view.to) = (n - 2, n - 1);
                        }
                        ui.add_space(6.0);
                        ui.horizontal(|ui| {
                            ui.strong("Diff");
                            pick_version(ui, "schema_diff_from", &t.versions, &mut view.from);
                            ui.label("to");
                            pick_version(ui, "schema_diff_to", &t.versions, &mut view.to);
                        });
                        if let (Some(old), Some(new)) =
                            (t.versions.get(view.from), t.versions.get(view.to))
                        {
                            diff_ui(ui, old, new, user.as_deref());
                        }
                    }
                    if view.fields_of >= n {
                        view.fields_of = n.saturating_sub(1);
                    }
                    ui.add_space(6.0);
                    ui.horizontal(|ui| {
                        ui.strong("Fields of");
                        pick_version(ui, "schema_fields_of", &t.versions, &mut view.fields_of);
                    });
                    if let Some(v) = t.versions.get(view.fields_of) {
                        fields_table(ui, v);
                    }
                    ui.add_space(6.0);
                    drift_list(ui, log, name, &drifts, intents);
                })
            });
    });
    if let Some(p) = picked {
        view.selected = Some(p);
        (view.from, view.to, view.fields_of) = (0, 0, usize::MAX);
    }
    app.schemas = view;
}

fn pick_version(ui: &mut egui::Ui, id: &str, versions: &[SchemaVersion], pos: &mut usize) {
    let shown = versions.get(*pos).map_or("", |v| v.label.as_str());
    egui::ComboBox::from_id_salt(id)
        .selected_text(shown)
        .show_ui(ui, |ui| {
            for (i, v) in versions.iter().enumerate() {
                ui.selectable_value(pos, i, &v.label);
            }
        });
}

fn versions_table(
    ui: &mut egui::Ui,
    log: &ObservedLog,
    name: &str,
    versions: &[SchemaVersion],
    intents: &mut Vec<Intent>,
) {
    ui.strong(format!("{name}: versions"));
    egui::Grid::new(("schema_versions", name))
        .striped(true)
        .num_columns(6)
        .show(ui, |ui| {
            for h in ["version", "records", "first", "last", "producers", "topics"] {
                ui.strong(h);
            }
            ui.end_row();
            for v in versions {
                ui.monospace(&v.label).on_hover_text(
                    v.dataschema
                        .as_deref()
                        .unwrap_or("no dataschema: learned shape"),
                );
                ui.monospace(v.records.to_string());
                record_link(ui, log, v.first, intents);
                record_link(ui, log, v.last, intents);
                ui.label(join(&v.producers));
                ui.label(join(&v.topics));
                ui.end_row();
            }
        });
}

fn join(set: &std::collections::BTreeSet<String>) -> String {
    set.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn diff_ui(ui: &mut egui::Ui, old: &SchemaVersion, new: &SchemaVersion, user: Option<&Registry>) {
    let changes = schemas::diff(old, new);
    if changes.is_empty() {
        ui.weak("same fields and kinds");
    }
    egui::Grid::new("schema_diff")
        .striped(true)
        .num_columns(3)
        .show(ui, |ui| {
            for c in &changes {
                let (what, detail) = match c.kind {
                    FieldChangeKind::Added => ("added", c.new.clone()),
                    FieldChangeKind::Removed => ("removed", c.old.clone()),
                    FieldChangeKind::Retyped => ("changed", format!("{} -> {}", c.old, c.new)),
                };
                ui.monospace(&c.path);
                ui.label(format!("{what} ({detail})"));
                if c.breaking {
                    ui.colored_label(widgets::ANOMALY, "breaking");
                } else {
                    ui.weak("compatible");
                }
                ui.end_row();
            }
        });
    // Both versions declared and their contracts at hand: the contracts' own diff.
    let contract = |v: &SchemaVersion| {
        let uri = v.dataschema.as_deref()?;
        let (t, n) = parse_uri(uri)?;
        schemas::registry_for(user, uri)?.get(t, n)
    };
    if let (Some(a), Some(b)) = (contract(old), contract(new)) {
        match contracts::diff(&a.schema, &b.schema, Compatibility::Backward) {
            Ok(list) => {
                ui.label(format!(
                    "Contracts v{} to v{} (BACKWARD check), {} change{}:",
                    a.version,
                    b.version,
                    list.len(),
                    if list.len() == 1 { "" } else { "s" }
                ));
                for ch in list {
                    let text = egui::RichText::new(ch.to_string()).monospace().small();
                    ui.label(if ch.breaking {
                        text.color(widgets::ANOMALY)
                    } else {
                        text
                    });
                }
            }
            Err(e) => {
                ui.colored_label(widgets::ANOMALY, format!("contracts not compared: {e}"));
            }
        }
    }
}

fn fields_table(ui: &mut egui::Ui, v: &SchemaVersion) {
    egui::Grid::new(("schema_fields", v.label.as_str()))
        .striped(true)
        .num_columns(3)
        .show(ui, |ui| {
            for h in ["field", "kinds", "present"] {
                ui.strong(h);
            }
            ui.end_row();
            for (path, f) in &v.fields {
                ui.monospace(path);
                ui.monospace(schemas::kind_names(f.kinds));
                if f.present == v.records {
                    ui.label(format!("always ({})", f.present));
                } else {
                    ui.label(format!("{} of {}", f.present, v.records));
                }
                ui.end_row();
            }
        });
}

fn drift_list(
    ui: &mut egui::Ui,
    log: &ObservedLog,
    name: &str,
    drifts: &[&crate::model::detect::Anomaly],
    intents: &mut Vec<Intent>,
) {
    let mine: Vec<_> = drifts
        .iter()
        .filter(|a| {
            a.log_indices
                .first()
                .is_some_and(|&i| widgets::type_of(log, i) == name)
        })
        .collect();
    if mine.is_empty() {
        ui.weak(format!("No schema drift in {name}."));
        return;
    }
    ui.strong(format!("Schema drift in {name} ({})", mine.len()));
    for a in mine {
        let Some(&idx) = a.log_indices.first() else {
            continue;
        };
        let text = format!(
            "drift at {}[{}]@{}: {}",
            a.topic, a.partition, a.offset, a.detail
        );
        if ui
            .add(
                egui::Button::new(egui::RichText::new(text).small().color(widgets::ANOMALY)).wrap(),
            )
            .on_hover_text("move the cursor here and select the record")
            .clicked()
        {
            intents.push(Intent::Select {
                index: idx,
                move_cursor: true,
            });
        }
    }
}
