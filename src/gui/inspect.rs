//! Record inspector and aggregate inspector (time travel).

use super::widgets;
use super::{EventscopeApp, Intent};
use crate::folds::fold_for;

/// The inspector shows at most this much of a key, header value or value; a larger one is
/// cut and its size shown (a 50 MB value is never copied into a widget).
pub const SHOW_BYTES: usize = 64 * 1024;

/// A size for people: `812 B`, `64.0 KiB`, `50.0 MiB`.
pub fn fmt_size(n: usize) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.1} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / (K * K))
    } else {
        format!("{:.1} GiB", f / (K * K * K))
    }
}

/// Bytes for display: UTF-8 text as it is; anything else escaped (`\xff`, `\n`) and marked
/// `(binary, N bytes)`, so no byte is lost. `full` is the size before any clipping.
pub fn show_bytes(b: &[u8], full: usize) -> String {
    let text = as_text(b, full);
    let cut = if full > b.len() {
        format!(
            " ... ({} in all, first {} shown)",
            fmt_size(full),
            fmt_size(b.len())
        )
    } else {
        String::new()
    };
    match text {
        Some(s) => format!("{s}{cut}"),
        None => format!("(binary, {full} bytes) {}{cut}", b.escape_ascii()),
    }
}

/// The first 4 KiB as a hex dump; `full` is the size before any clipping.
/// The bytes as text when they are UTF-8 (`full` > their length: cut from a longer value,
/// so a character cut in two at the end is dropped).
fn as_text(b: &[u8], full: usize) -> Option<&str> {
    match std::str::from_utf8(b) {
        Ok(s) => Some(s),
        Err(e) if e.error_len().is_none() && full > b.len() => b
            .get(..e.valid_up_to())
            .and_then(|p| std::str::from_utf8(p).ok()),
        Err(_) => None,
    }
}

fn hex_dump(bytes: &[u8], full: usize) -> String {
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
    if full > 4096 {
        out.push_str(&format!("... {full} bytes in all\n"));
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
    if reading_back(app, idx, ui) {
        return;
    }
    let schema = schema_line(app, idx);
    let log = app.model.log();
    let (Some(row), Some((rec, sizes))) = (log.row(idx), log.record_clipped(idx, SHOW_BYTES))
    else {
        if log.is_dropped(idx) {
            ui.colored_label(
                widgets::DUPLICATE,
                format!("record {idx} dropped: memory limit (--memory-limit); its lint verdicts are kept"),
            );
        } else if let Some(why) = log.unreadable(idx) {
            ui.colored_label(
                widgets::DUPLICATE,
                format!("record {idx}: its bytes were evicted to Kafka (memory limit) and cannot be read back: {why}"),
            );
        } else {
            ui.weak("the selected record is gone");
        }
        return;
    };
    let value_cut = sizes.value > SHOW_BYTES;
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
                    .map(|k| show_bytes(k, sizes.key))
                    .unwrap_or_else(|| "(none)".into()),
            );
            ui.end_row();
            ui.label("value size");
            ui.monospace(match &rec.value {
                None => "(no value)".to_owned(),
                Some(_) => format!("{} ({} bytes)", fmt_size(sizes.value), sizes.value),
            });
            ui.end_row();
            if log.is_in_store(idx) {
                ui.label("bytes");
                ui.weak("read back from Kafka by topic / partition / offset (memory limit)");
                ui.end_row();
            }
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
                    for (i, (k, v)) in rec.headers.iter().enumerate() {
                        ui.monospace(k);
                        ui.monospace(match v {
                            None => "(null)".to_owned(),
                            Some(v) => show_bytes(v, sizes.headers.get(i).copied().unwrap_or(0)),
                        });
                        ui.end_row();
                    }
                });
        });
    // The rest of what the envelope says, extensions included (the selected record only,
    // decoded again); folded away by default. A value too large to show is not decoded again.
    if value_cut && row.meta().is_some() {
        ui.weak(format!(
            "Envelope attributes: not decoded again for display (the value is {})",
            fmt_size(sizes.value)
        ));
    } else if let Some(ev) = log.event(idx) {
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
    if let Some((text, problem)) = schema {
        if problem {
            ui.colored_label(widgets::ANOMALY, text);
        } else {
            ui.label(text);
        }
    }
    ui.checkbox(
        &mut app.prefs.reveal_pii,
        "Reveal personal data (email, address, ...)",
    );
    if let Some(err) = log.poison_error(idx) {
        ui.colored_label(widgets::ANOMALY, format!("undecodable: {err}"));
        ui.label("Raw value");
        // Text as text (personal data masked unless revealed), anything else as a hex dump.
        let raw = match rec.value.as_deref() {
            None => "(no value)".into(),
            Some(v) if as_text(v, sizes.value).is_some() => {
                let shown = show_bytes(v, sizes.value);
                if app.prefs.reveal_pii {
                    shown
                } else {
                    crate::model::redact::mask_json_text(&shown, &app.pii_fields).into_owned()
                }
            }
            Some(v) => hex_dump(v, sizes.value),
        };
        ui.add(
            egui::Label::new(egui::RichText::new(raw).monospace().small())
                .wrap_mode(egui::TextWrapMode::Extend),
        );
    } else {
        ui.label("Payload");
        // Text not parsed (cut from a large value, or not JSON): masked as text.
        let as_shown = |v: Option<&[u8]>| match v {
            None => "(no value)".to_owned(),
            Some(v) => {
                let shown = show_bytes(v, sizes.value);
                if app.prefs.reveal_pii {
                    shown
                } else {
                    crate::model::redact::mask_json_text(&shown, &app.pii_fields).into_owned()
                }
            }
        };
        // A value too large to show whole is never parsed for display.
        let parsed = if value_cut { None } else { log.payload(idx) };
        let text = match parsed {
            Some(v) => widgets::pretty_with(&v, app.prefs.reveal_pii, &app.pii_fields),
            None => as_shown(rec.value.as_deref()),
        };
        ui.add(
            egui::Label::new(egui::RichText::new(text).monospace())
                .wrap_mode(egui::TextWrapMode::Extend),
        );
    }
    let _ = intents;
}

/// A record whose bytes were evicted to Kafka (memory limit) is read back on a thread of its
/// own, so a slow or unreachable broker never holds up a frame: until its bytes are here the
/// inspector says so. True while the selected record is being read.
fn reading_back(
    app: &mut EventscopeApp,
    idx: crate::model::log::LogIndex,
    ui: &mut egui::Ui,
) -> bool {
    if !read_back_started(app, idx, &ui.ctx().clone()) {
        return false;
    }
    ui.horizontal(|ui| {
        ui.spinner();
        ui.weak(format!(
            "reading record {idx} back from Kafka by topic / partition / offset (memory limit)…"
        ));
    });
    true
}

/// Hand over what the read back under way fetched, if it is done; then, if the record at
/// `idx` still needs reading back, start that on a thread of its own (one at a time) and ask
/// for a repaint. True while `idx` waits for its bytes.
pub(crate) fn read_back_started(
    app: &mut EventscopeApp,
    idx: crate::model::log::LogIndex,
    ctx: &egui::Context,
) -> bool {
    use std::sync::mpsc::TryRecvError;
    if let Some((_, rx)) = &app.read_back {
        match rx.try_recv() {
            Ok(done) => {
                // A failure is remembered by the log: `unreadable` says why.
                let _ = app.model.log().finish_read_back(done);
                app.read_back = None;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => app.read_back = None,
        }
    }
    let Some(request) = app.model.log().read_back_request(idx) else {
        return false;
    };
    let chunk = request.chunk();
    // One at a time: another chunk waits for the one under way (a selection moved on, or
    // the state panel and the inspector wanting different chunks, must not start a thread
    // per frame).
    if app.read_back.is_none() {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("eventscope-read-back".into())
            .spawn(move || {
                let _ = tx.send(request.fetch());
            });
        if spawned.is_err() {
            return false; // read on this thread instead
        }
        app.read_back = Some((chunk, rx));
    }
    ctx.request_repaint_after(std::time::Duration::from_millis(30));
    true
}

/// The record's schema version: the contract its `dataschema` names (and
/// whether the payload keeps it), else the shape the Schemas view learned.
/// The flag marks a problem (an unknown contract, a violated one).
fn schema_line(
    app: &mut EventscopeApp,
    idx: crate::model::log::LogIndex,
) -> Option<(String, bool)> {
    use eventscope_demo::contracts::parse_uri;
    let user = app.schemas.user_registry(app.profile.schemas.as_ref());
    let log = app.model.log();
    let event = log.event(idx)?;
    let ty = event.event_type.as_deref().unwrap_or("?");
    // Decoded through the schema registry: that says most.
    if let Some(s) = &event.value_schema {
        return Some((format!("value decoded with {s}"), false));
    }
    let Some(uri) = event.dataschema.as_deref() else {
        return app.schemas.catalog.version_of(log, idx).map(|(t, v)| {
            (
                format!(
                    "schema: {t} {} (learned from the payloads; no dataschema)",
                    v.label
                ),
                false,
            )
        });
    };
    let Some((t, v)) = parse_uri(uri) else {
        return Some((
            format!("schema: {uri} (not a <Type>/v<N>.json URI; not checked)"),
            false,
        ));
    };
    let Some(reg) = crate::model::schemas::registry_for(user.as_deref(), uri) else {
        return Some((
            format!("schema: {t} v{v} (no contracts to check it against; give --schemas DIR)"),
            false,
        ));
    };
    let Some(contract) = reg.get(t, v) else {
        let known = reg.versions(t);
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known
                .iter()
                .map(|v| format!("v{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Some((
            format!("schema: {t} v{v}, not registered (registered: {known})"),
            true,
        ));
    };
    let payload = event.payload.unwrap_or(serde_json::Value::Null);
    Some(match contract.validate(&payload) {
        Ok(()) => (
            format!("schema: {ty} v{v} (payload matches its contract)"),
            false,
        ),
        Err(e) => (format!("schema: {ty} v{v}: {e}"), true),
    })
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
        if app.model.log().is_dropped(idx) {
            ui.weak("the record was dropped (memory limit)");
        } else {
            ui.weak("this record names no aggregate");
        }
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
            // The fold reads the aggregate's events: those whose bytes are in Kafka (memory
            // limit) are read back first, off this thread.
            let log = app.model.log();
            let missing = log
                .aggregate(&agg)
                .iter()
                .copied()
                .take_while(|&i| i <= cursor)
                .find(|&i| log.needs_read_back(i));
            if let Some(i) = missing {
                if read_back_started(app, i, &ui.ctx().clone()) {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.weak(format!(
                            "reading {agg}'s events back from Kafka (memory limit)…"
                        ));
                    });
                    return;
                }
            }
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
    if state.dropped > 0 {
        ui.colored_label(
            widgets::DUPLICATE,
            format!(
                "partial history: {} earlier events of this aggregate were dropped (memory limit); \
                 the state below folds only the events still held",
                state.dropped
            ),
        );
    }
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
        let read_as = log
            .event(last)
            .and_then(|ev| fold.read_as(&ev))
            .map(|r| format!(", {r}"))
            .unwrap_or_default();
        ui.label(format!(
            "last applied: {} at {}{read_as}",
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
