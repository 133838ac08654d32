//! Record inspector and aggregate inspector (time travel).

use super::widgets;
use super::{EventscopeApp, Intent};
use crate::folds::fold_for;

fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).take(256).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!("{:06x}  {:<48} {}\n", i * 16, hex.join(" "), text));
    }
    if bytes.len() > 4096 {
        out.push_str(&format!("... {} bytes in all\n", bytes.len()));
    }
    out
}

pub use crate::profile::DEFAULT_TRACE_LINK;

/// The link to a trace: the template with `{trace_id}` replaced (an empty
/// template falls back to Jaeger's).
pub fn trace_link(template: &str, trace_id: &str) -> String {
    let t = template.trim();
    let t = if t.is_empty() { DEFAULT_TRACE_LINK } else { t };
    t.replace("{trace_id}", trace_id)
}

pub fn record_ui(app: &mut EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    ui.heading("Record");
    let Some(idx) = app.selected else {
        ui.weak("Select a record in the table, the graph, the lanes or the lints.");
        return;
    };
    let log = app.model.log();
    let (Some(row), Some(rec)) = (log.row(idx), log.record(idx)) else {
        ui.weak("the selected record is gone");
        return;
    };
    egui::Grid::new("record_grid")
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            ui.label("topic / partition / offset");
            ui.monospace(format!(
                "{} / {} / {}",
                rec.topic, rec.partition, rec.offset
            ));
            ui.end_row();
            ui.label("timestamp");
            ui.monospace(
                rec.timestamp_ms
                    .map(widgets::fmt_time)
                    .unwrap_or_else(|| "-".into()),
            );
            ui.end_row();
            ui.label("key");
            ui.monospace(
                rec.key
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_else(|| "(none)".into()),
            );
            ui.end_row();
            if let Some(m) = row.meta() {
                for (label, v) in [
                    ("event id", log.resolve(m.event_id).to_owned()),
                    (
                        "type",
                        log.resolve_opt(m.event_type).unwrap_or("-").to_owned(),
                    ),
                    (
                        "source",
                        log.resolve_opt(m.source).unwrap_or("-").to_owned(),
                    ),
                    (
                        "aggregate",
                        log.resolve_opt(m.aggregate_id).unwrap_or("-").to_owned(),
                    ),
                    (
                        "correlation",
                        log.resolve_opt(m.correlation_id)
                            .unwrap_or("(missing)")
                            .to_owned(),
                    ),
                    (
                        "causation",
                        log.resolve_opt(m.causation_id).unwrap_or("-").to_owned(),
                    ),
                    (
                        "version",
                        m.order_key()
                            .map(|(_, v)| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                    ),
                    (
                        "deliveries",
                        log.deliveries_of(m.event_id).len().to_string(),
                    ),
                ] {
                    ui.label(label);
                    ui.monospace(v);
                    ui.end_row();
                }
                if let Some(trace) = log.resolve_opt(m.trace_id) {
                    ui.label("trace id");
                    ui.horizontal(|ui| {
                        ui.monospace(trace);
                        if ui
                            .small_button("copy id")
                            .on_hover_text("copy the trace id")
                            .clicked()
                        {
                            ui.ctx().copy_text(trace.to_owned());
                        }
                        let link = trace_link(&app.prefs.trace_link_template, trace);
                        if ui.small_button("copy link").on_hover_text(&link).clicked() {
                            ui.ctx().copy_text(link.clone());
                        }
                        ui.hyperlink_to("open", &link)
                            .on_hover_text("open the trace in your tracing UI");
                    });
                    ui.end_row();
                    ui.label("records in the trace");
                    ui.monospace(log.trace(trace).len().to_string());
                    ui.end_row();
                }
            }
        });
    if let Some(m) = row.meta() {
        ui.horizontal(|ui| {
            if let Some(c) = log.resolve_opt(m.correlation_id) {
                if ui.small_button("Filter the table to this chain").clicked() {
                    app.filter.correlation = c.to_owned();
                }
            }
            if let Some(t) = log.resolve_opt(m.trace_id) {
                if ui
                    .small_button("Filter the table to this trace")
                    .on_hover_text("show only the records of this trace id")
                    .clicked()
                {
                    app.filter.trace = t.to_owned();
                }
            }
        });
        if m.trace_id.is_some() {
            ui.horizontal(|ui| {
                let l = ui.label("trace link");
                ui.add(
                    egui::TextEdit::singleline(&mut app.prefs.trace_link_template)
                        .hint_text(DEFAULT_TRACE_LINK)
                        .desired_width(260.0),
                )
                .labelled_by(l.id)
                .on_hover_text("where \"open\" and \"copy link\" go; {trace_id} is replaced");
                if app.prefs.trace_link_template != DEFAULT_TRACE_LINK
                    && ui
                        .small_button("Jaeger")
                        .on_hover_text("reset to the default")
                        .clicked()
                {
                    app.prefs.trace_link_template = DEFAULT_TRACE_LINK.to_owned();
                }
            });
        }
    }
    for a in app
        .model
        .anomalies()
        .iter()
        .filter(|a| a.log_indices.contains(&idx))
    {
        ui.colored_label(
            widgets::ANOMALY,
            format!("{}: {}", a.kind.as_str(), a.detail),
        );
    }
    egui::CollapsingHeader::new(format!("Headers ({})", rec.headers.len()))
        .default_open(true)
        .show(ui, |ui| {
            egui::Grid::new("headers_grid")
                .num_columns(2)
                .show(ui, |ui| {
                    for (k, v) in &rec.headers {
                        ui.monospace(k);
                        ui.monospace(match v {
                            None => "(null)".to_owned(),
                            Some(v) => match std::str::from_utf8(v) {
                                Ok(s) => s.to_owned(),
                                Err(_) => {
                                    format!("(binary) {}", hex_dump(v).lines().next().unwrap_or(""))
                                }
                            },
                        });
                        ui.end_row();
                    }
                });
        });
    // The rest of what the envelope says, extensions included (the selected record only,
    // decoded again); folded away by default.
    if let Some(ev) = log.event(idx) {
        egui::CollapsingHeader::new("Envelope attributes")
            .default_open(false)
            .show(ui, |ui| {
                egui::Grid::new("envelope_grid")
                    .num_columns(2)
                    .striped(true)
                    .show(ui, |ui| {
                        let mut rows = vec![
                            ("envelope", format!("{:?}", ev.format)),
                            (
                                "data content type",
                                ev.content_type.clone().unwrap_or_else(|| "-".into()),
                            ),
                        ];
                        rows.extend(ev.dataschema.clone().map(|d| ("data schema", d)));
                        rows.extend(ev.time.clone().map(|t| ("event time", t)));
                        for (label, v) in rows {
                            ui.label(label);
                            ui.monospace(v);
                            ui.end_row();
                        }
                        for (k, v) in &ev.extensions {
                            ui.label(format!("extension {k}"));
                            ui.monospace(v);
                            ui.end_row();
                        }
                    });
            });
    }
    ui.checkbox(
        &mut app.prefs.reveal_pii,
        "Reveal personal data (email, address, ...)",
    );
    if let Some(err) = log.poison_error(idx) {
        ui.colored_label(widgets::ANOMALY, format!("undecodable: {err}"));
        ui.label("Raw value");
        let raw = rec
            .value
            .as_deref()
            .map(hex_dump)
            .unwrap_or_else(|| "(no value)".into());
        ui.add(
            egui::Label::new(egui::RichText::new(raw).monospace().small())
                .wrap_mode(egui::TextWrapMode::Extend),
        );
    } else {
        ui.label("Payload");
        let text = match log.payload(idx) {
            Some(v) => widgets::pretty_with(&v, app.prefs.reveal_pii, &app.pii_fields),
            None => rec
                .value
                .as_deref()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| "(no value)".into()),
        };
        ui.add(
            egui::Label::new(egui::RichText::new(text).monospace())
                .wrap_mode(egui::TextWrapMode::Extend),
        );
    }
    let _ = intents;
}

pub fn aggregate_ui(app: &mut EventscopeApp, ui: &mut egui::Ui) {
    ui.heading("Aggregate at the cursor");
    let Some(idx) = app.selected else {
        ui.weak("Select a record to see its aggregate's state at the cursor.");
        return;
    };
    let Some(agg) = app
        .model
        .log()
        .meta(idx)
        .and_then(|m| app.model.log().resolve_opt(m.aggregate_id))
        .map(str::to_owned)
    else {
        ui.weak("this record names no aggregate");
        return;
    };
    let Some(cursor) = app.cursor.pos() else {
        return;
    };
    let fold = fold_for(app.model.log(), &agg);
    let name = fold.name().to_owned();
    // One fold per (aggregate, cursor, log length), not one per frame.
    let key = (agg.clone(), cursor, app.model.log().len());
    let state = match &app.aggregate_cache {
        Some((k, st)) if *k == key => st.clone(),
        _ => {
            let st = app.model.state_at(fold, &agg, cursor);
            app.aggregate_cache = Some((key, st.clone()));
            st
        }
    };
    let Some(state) = state else {
        ui.weak("no event of this aggregate yet");
        return;
    };
    ui.label(format!("{agg} ({name} fold)"));
    if state.applied == 0 {
        ui.weak("no event of this aggregate at or before the cursor");
        return;
    }
    let from = state.applied - state.replayed;
    ui.label(format!(
        "{} events applied; started from {} (snapshot every {}), replayed {}",
        state.applied,
        if from == 0 {
            "the initial state".to_owned()
        } else {
            format!("the snapshot after event {from}")
        },
        app.model.config().snapshot_every,
        state.replayed
    ));
    if let Some(last) = state.last_index {
        let log = app.model.log();
        ui.label(format!(
            "last applied: {} at {}",
            widgets::type_of(log, last),
            log.row(last)
                .map(|r| widgets::fmt_time(r.time_ms))
                .unwrap_or_default()
        ));
    }
    ui.label("Changed by that event");
    if state.diff.is_empty() {
        ui.weak("(nothing)");
    }
    for ch in &state.diff {
        let show = |v: &Option<serde_json::Value>| match v {
            None => "(absent)".to_owned(),
            Some(v) => {
                let v = if app.prefs.reveal_pii {
                    v.clone()
                } else {
                    widgets::mask_pii_with(v, &app.pii_fields)
                };
                let s = v.to_string();
                if s.len() > 60 {
                    format!(
                        "{}...",
                        &s[..s.char_indices().nth(57).map(|(i, _)| i).unwrap_or(s.len())]
                    )
                } else {
                    s
                }
            }
        };
        ui.monospace(format!(
            "{}: {} -> {}",
            ch.path,
            show(&ch.old),
            show(&ch.new)
        ));
    }
    ui.label("State");
    ui.add(
        egui::Label::new(
            egui::RichText::new(widgets::pretty_with(
                &state.state,
                app.prefs.reveal_pii,
                &app.pii_fields,
            ))
            .monospace(),
        )
        .wrap_mode(egui::TextWrapMode::Extend),
    );
}
