//! Sagas: per correlation chain, its steps and compensations with timing,
//! reconstructed from the records alone.

use egui_extras::{Column, TableBuilder};

use super::widgets;
use super::{EventscopeApp, Intent};
use crate::model::log::{LogIndex, ObservedLog, Sym};

/// One saga as seen on the topics.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaSummary {
    pub correlation: String,
    pub subject: String,
    pub status: &'static str,
    /// How the saga is run: the records' `sagamode` extension (the demo writes it), else
    /// `orchestration` for a chain that carries commands, else `events only`.
    pub mode: String,
    /// (event type, ms since the first step, compensation?, log index)
    pub steps: Vec<(String, i64, bool, LogIndex)>,
    pub duration_ms: i64,
}

pub fn summarize(
    log: &ObservedLog,
    corr: Sym,
    cursor: LogIndex,
    terminal: &[String],
) -> SagaSummary {
    let chain = log.chain_of(corr);
    let mut steps = Vec::new();
    let mut subject = String::new();
    let mut status = "running";
    let mut compensating = false;
    let mut mode: Option<String> = None;
    let mut commanded = false;
    for &idx in chain.iter().filter(|&&i| i <= cursor) {
        if !log.is_first_delivery(idx) {
            continue;
        }
        let Some(row) = log.row(idx) else { continue };
        let t = widgets::type_of(log, idx);
        commanded |= row.meta().is_some_and(|m| m.is_command);
        // The first record says (the demo marks every record of a chain).
        if steps.is_empty() {
            mode = log.record_at_hand(idx).and_then(|r| {
                r.headers
                    .iter()
                    .find(|(k, _)| *k == "ce_sagamode")
                    .and_then(|(_, v)| v)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
        }
        if subject.is_empty() {
            subject = row
                .meta()
                .and_then(|m| log.resolve_opt(m.aggregate_id))
                .unwrap_or("")
                .to_owned();
        }
        let comp = widgets::is_compensation(&t);
        compensating |= comp;
        if terminal.iter().any(|x| x == &t) {
            status = if compensating {
                "compensated"
            } else {
                "completed"
            };
        }
        steps.push((t, row.time_ms, comp, idx));
    }
    // Records of one chain sit on several topics and partitions: the log order
    // is arrival order, so order the steps by their own timestamps.
    steps.sort_by_key(|s| (s.1, s.3));
    let start = steps.first().map(|s| s.1).unwrap_or(0);
    for s in &mut steps {
        s.1 -= start;
    }
    if status == "running" && compensating {
        status = "compensating";
    }
    SagaSummary {
        correlation: log.resolve(corr).to_owned(),
        subject,
        status,
        mode: mode.unwrap_or_else(|| {
            if commanded {
                "orchestration"
            } else {
                "events only"
            }
            .to_owned()
        }),
        duration_ms: steps.last().map(|s| s.1).unwrap_or(0),
        steps,
    }
}

pub fn sagas_ui(app: &EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    let log = app.model.log();
    let Some(cursor) = app.cursor.pos() else {
        ui.weak("No records yet.");
        return;
    };
    let terminal = &app.model.config().detect.terminal_types;
    let corrs = &app.correlations;
    ui.label(format!(
        "{} sagas (correlation chains), newest first; steps after the cursor hidden",
        corrs.len()
    ));
    TableBuilder::new(ui)
        .striped(true)
        .column(Column::initial(80.0))
        .column(Column::initial(80.0))
        .column(Column::initial(100.0))
        .column(Column::initial(95.0))
        .column(Column::initial(70.0))
        .column(Column::remainder())
        .header(18.0, |mut h| {
            for t in [
                "correlation",
                "subject",
                "status",
                "mode",
                "took",
                "steps (+ms since start)",
            ] {
                h.col(|ui| {
                    ui.strong(t);
                });
            }
        })
        .body(|body| {
            body.rows(20.0, corrs.len(), |mut row| {
                let i = corrs.len() - 1 - row.index();
                let Some(&corr) = corrs.get(i) else { return };
                let s = summarize(log, corr, cursor, terminal);
                row.col(|ui| {
                    ui.monospace(widgets::short(&s.correlation));
                });
                row.col(|ui| {
                    ui.monospace(widgets::short(&s.subject));
                });
                row.col(|ui| {
                    let color = match s.status {
                        "completed" => egui::Color32::from_rgb(110, 200, 120),
                        "running" => ui.visuals().text_color(),
                        _ => widgets::COMPENSATION,
                    };
                    ui.colored_label(color, s.status);
                });
                row.col(|ui| {
                    ui.label(&s.mode);
                });
                row.col(|ui| {
                    ui.monospace(format!("{} ms", s.duration_ms));
                });
                row.col(|ui| {
                    ui.horizontal(|ui| {
                        for (t, dt, comp, idx) in &s.steps {
                            let text = egui::RichText::new(format!("{t} +{dt}")).small();
                            let text = if *comp {
                                text.color(widgets::COMPENSATION)
                            } else {
                                text
                            };
                            if ui
                                .add(egui::Label::new(text).sense(egui::Sense::click()))
                                .clicked()
                            {
                                intents.push(Intent::Select {
                                    index: *idx,
                                    move_cursor: false,
                                });
                            }
                        }
                    });
                });
            });
        });
}
