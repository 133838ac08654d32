//! The event table: virtualised (only visible rows are built), filterable.

use egui_extras::{Column, TableBuilder};

use super::widgets::{self, short};
use super::{EventscopeApp, Filter, Intent};
use crate::model::log::{LogIndex, ObservedLog};

/// Case-insensitive substring match; a needle in double quotes (`"payments"`) must match
/// the whole text (what a click on the flow map sets).
fn contains(hay: &str, needle: &str) -> bool {
    if let Some(exact) = needle.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        return hay.eq_ignore_ascii_case(exact);
    }
    needle.is_empty()
        || hay
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase())
}

/// Does the row at `idx` pass the filter?
pub fn matches(log: &ObservedLog, idx: LogIndex, f: &Filter) -> bool {
    let Some(row) = log.row(idx) else {
        return false;
    };
    if !contains(log.resolve(row.topic), &f.topic) {
        return false;
    }
    let meta = log.meta(idx);
    if !f.event_type.is_empty() {
        let t = meta
            .and_then(|m| log.resolve_opt(m.event_type))
            .unwrap_or("poison");
        if !contains(t, &f.event_type) {
            return false;
        }
    }
    if !f.correlation.is_empty() {
        let c = meta
            .and_then(|m| log.resolve_opt(m.correlation_id))
            .unwrap_or("");
        if !contains(c, &f.correlation) {
            return false;
        }
    }
    if !f.trace.is_empty() {
        let t = meta.and_then(|m| log.resolve_opt(m.trace_id)).unwrap_or("");
        if !contains(t, &f.trace) {
            return false;
        }
    }
    if !f.source.is_empty() {
        let s = meta.and_then(|m| log.resolve_opt(m.source)).unwrap_or("");
        if !contains(s, &f.source) {
            return false;
        }
    }
    if !f.cause_topic.is_empty() {
        let t = meta
            .and_then(|m| m.causation_id)
            .and_then(|c| log.deliveries_of(c).first().copied())
            .and_then(|i| log.row(i))
            .map(|r| log.resolve(r.topic))
            .unwrap_or("");
        if t.is_empty() || !contains(t, &f.cause_topic) {
            return false;
        }
    }
    if !f.header_text.is_empty() {
        let Some(rec) = log.record(idx) else {
            return false;
        };
        let hit = rec.headers.iter().any(|(k, v)| {
            contains(k, &f.header_text)
                || v.is_some_and(|v| contains(&String::from_utf8_lossy(v), &f.header_text))
        });
        if !hit {
            return false;
        }
    }
    true
}

pub fn table_ui(
    app: &mut EventscopeApp,
    ui: &mut egui::Ui,
    intents: &mut Vec<Intent>,
    scroll_to_selected: bool,
) {
    ui.horizontal_wrapped(|ui| {
        ui.label("Filter");
        for (label, field) in [
            ("topic", &mut app.filter.topic),
            ("type", &mut app.filter.event_type),
            ("correlation", &mut app.filter.correlation),
            ("trace id", &mut app.filter.trace),
            ("header text", &mut app.filter.header_text),
            ("source", &mut app.filter.source),
            ("cause on topic", &mut app.filter.cause_topic),
        ] {
            ui.add(
                egui::TextEdit::singleline(field)
                    .hint_text(label)
                    .desired_width(110.0),
            );
        }
        let l = ui.label("jq");
        let q = ui
            .add(
                egui::TextEdit::singleline(&mut app.filter.query)
                    .hint_text(".data.amount > 100")
                    .desired_width(220.0),
            )
            .labelled_by(l.id);
        q.on_hover_text(
            "jq filter: input is the payload (JSON, else a string); $key, $headers, $topic, \
             $partition, $offset; a record matches when the result is not false or null",
        );
        if ui.button("Clear").clicked() {
            app.filter = Filter::default();
        }
        ui.separator();
        ui.add(
            egui::TextEdit::singleline(&mut app.new_column)
                .hint_text("header name")
                .desired_width(110.0),
        );
        if ui.button("Add column").clicked() && !app.new_column.trim().is_empty() {
            let c = app.new_column.trim().to_owned();
            if !app.prefs.extra_columns.contains(&c) {
                app.prefs.extra_columns.push(c);
            }
            app.new_column.clear();
        }
        let mut remove = None;
        for (i, c) in app.prefs.extra_columns.iter().enumerate() {
            if ui
                .small_button(format!("{c} x"))
                .on_hover_text("remove this column")
                .clicked()
            {
                remove = Some(i);
            }
        }
        if let Some(i) = remove {
            app.prefs.extra_columns.remove(i);
        }
    });
    if let Some(e) = &app.query_error {
        ui.colored_label(widgets::ANOMALY, format!("query: {e}"));
    }
    if let Some((done, total)) = app.query_progress() {
        ui.weak(format!("querying: {done} of {total} records tested"));
    }
    if let Some(n) = app
        .query_job
        .as_ref()
        .map(|j| j.unreadable)
        .filter(|&n| n > 0)
    {
        ui.colored_label(
            widgets::DUPLICATE,
            format!(
                "query: {n} records whose bytes were evicted to Kafka (memory limit) could not \
                 be read back and were not tested"
            ),
        );
    }
    let rows = app.visible_rows();
    let n = rows.len();
    let cursor = app.cursor.pos();
    let selected = app.selected;
    let log = app.model.log();
    let anomalies = app.model.anomaly_indices();
    let extra = app.prefs.extra_columns.clone();
    match log.first_held() {
        0 => ui.label(format!("{n} of {} records", log.len())),
        gone => ui.label(format!(
            "{n} of {} records ({gone} oldest dropped: memory limit)",
            log.len()
        )),
    };
    let row_h = 18.0;
    // One line per row: long values are cut with an ellipsis (full text in the inspector).
    ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
    // Selectable cell labels would take the click, and a click on a row's text would not select
    // the row; the inspector has the full text to copy.
    ui.style_mut().interaction.selectable_labels = false;
    let mut builder = TableBuilder::new(ui)
        .striped(true)
        .sense(egui::Sense::click())
        .column(Column::exact(18.0))
        .column(Column::initial(100.0).clip(true))
        .column(Column::initial(140.0).clip(true))
        .column(Column::exact(28.0))
        .column(Column::initial(56.0))
        .column(Column::initial(130.0))
        .column(Column::initial(80.0))
        .column(Column::initial(80.0))
        .column(Column::initial(80.0));
    for _ in &extra {
        builder = builder.column(Column::initial(100.0));
    }
    builder = builder.column(Column::remainder());
    if scroll_to_selected {
        if let Some(pos) = selected.and_then(|s| rows.position(s)) {
            builder = builder.scroll_to_row(pos, Some(egui::Align::Center));
        }
    }
    builder
        .header(20.0, |mut h| {
            for title in [
                "",
                "time",
                "topic",
                "p",
                "offset",
                "type",
                "key",
                "correlation",
                "causation",
            ] {
                h.col(|ui| {
                    ui.strong(title);
                });
            }
            for c in &extra {
                h.col(|ui| {
                    ui.strong(c);
                });
            }
            h.col(|ui| {
                ui.strong("");
            });
        })
        .body(|body| {
            body.rows(row_h, n, |mut row| {
                let Some(idx) = rows.get(row.index()) else {
                    return;
                };
                let Some(r) = log.row(idx) else { return };
                let meta = log.meta(idx);
                let after_cursor = cursor.is_some_and(|c| idx > c);
                let is_anomaly = anomalies.contains(&idx);
                let redelivery = meta.is_some_and(|m| !m.first_delivery && !m.dead_letter);
                row.set_selected(selected == Some(idx));
                let weak = |ui: &egui::Ui, s: String| -> egui::RichText {
                    let t = egui::RichText::new(s).monospace();
                    if after_cursor {
                        t.color(ui.visuals().weak_text_color())
                    } else {
                        t
                    }
                };
                row.col(|ui| {
                    if is_anomaly {
                        ui.colored_label(widgets::ANOMALY, "!")
                            .on_hover_text("an anomaly is reported at this record");
                    } else if redelivery {
                        ui.colored_label(widgets::DUPLICATE, "D")
                            .on_hover_text("duplicate delivery of an event seen before");
                    } else if r.is_poison() {
                        ui.colored_label(widgets::ANOMALY, "P")
                            .on_hover_text("undecodable record");
                    }
                });
                row.col(|ui| {
                    ui.label(weak(ui, widgets::fmt_time(r.time_ms)));
                });
                row.col(|ui| {
                    ui.label(weak(ui, log.resolve(r.topic).to_owned()));
                });
                row.col(|ui| {
                    ui.label(weak(ui, r.partition.to_string()));
                });
                row.col(|ui| {
                    ui.label(weak(ui, r.offset.to_string()));
                });
                row.col(|ui| {
                    ui.label(weak(ui, widgets::type_of(log, idx)));
                });
                // Extra columns show what is at hand: a record whose bytes are in Kafka (memory
                // limit) is not read back for a table row.
                let rec = if extra.is_empty() {
                    None
                } else {
                    log.record_at_hand(idx)
                };
                row.col(|ui| {
                    let key = match &rec {
                        Some(rec) => rec
                            .key
                            .as_deref()
                            .map(|k| String::from_utf8_lossy(k).into_owned()),
                        None => meta
                            .and_then(|m| log.resolve_opt(m.aggregate_id))
                            .map(str::to_owned),
                    };
                    ui.label(weak(ui, key.as_deref().map(short).unwrap_or_default()));
                });
                row.col(|ui| {
                    let c = meta
                        .and_then(|m| log.resolve_opt(m.correlation_id))
                        .map(short)
                        .unwrap_or_default();
                    ui.label(weak(ui, c));
                });
                row.col(|ui| {
                    let c = meta
                        .and_then(|m| log.resolve_opt(m.causation_id))
                        .map(short)
                        .unwrap_or_default();
                    ui.label(weak(ui, c));
                });
                for name in &extra {
                    row.col(|ui| {
                        let v = rec
                            .as_ref()
                            .and_then(|r| {
                                r.headers
                                    .iter()
                                    .find(|(k, _)| k == name)
                                    .and_then(|(_, v)| v)
                                    .map(|v| String::from_utf8_lossy(v).into_owned())
                            })
                            .unwrap_or_default();
                        ui.label(weak(ui, v));
                    });
                }
                row.col(|_| {});
                let resp = row.response();
                if resp.clicked() {
                    intents.push(Intent::Select {
                        index: idx,
                        move_cursor: false,
                    });
                }
                if resp.double_clicked() {
                    intents.push(Intent::Select {
                        index: idx,
                        move_cursor: true,
                    });
                }
            });
        });
}
