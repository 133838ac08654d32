//! Consumer groups: per group and partition the committed offset, the lag in
//! records and in time, and the verdict (see `crate::model::groups`).
//! Clicking a row selects the record the group has not processed yet.

use egui_extras::{Column, TableBuilder};

use super::widgets;
use super::{EventscopeApp, Intent};
use crate::model::groups::Verdict;

fn color(v: Verdict, ui: &egui::Ui) -> egui::Color32 {
    match v {
        Verdict::Ok => egui::Color32::from_rgb(110, 200, 120),
        Verdict::Warn => widgets::DUPLICATE,
        Verdict::Stall | Verdict::Stop | Verdict::Rewind => widgets::ANOMALY,
    }
    .gamma_multiply(if ui.visuals().dark_mode { 1.0 } else { 0.8 })
}

pub fn groups_ui(app: &EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    if app.group_lags.is_empty() {
        ui.weak(
            "No consumer group seen yet: they are sampled every 2 s (the demo's groups, or the \
             ones the cluster lists) on the followed topics.",
        );
        return;
    }
    ui.horizontal_wrapped(|ui| {
        for g in &app.group_lags {
            ui.colored_label(
                color(g.verdict, ui),
                format!("{} {} (lag {})", g.group, g.verdict.as_str(), g.lag),
            );
            ui.separator();
        }
    });
    let rows: Vec<_> = app.group_lags.iter().flat_map(|g| &g.partitions).collect();
    TableBuilder::new(ui)
        .striped(true)
        .column(Column::initial(150.0))
        .column(Column::initial(170.0))
        .column(Column::initial(80.0))
        .column(Column::initial(80.0))
        .column(Column::initial(60.0))
        .column(Column::initial(70.0))
        .column(Column::initial(70.0))
        .column(Column::remainder())
        .header(18.0, |mut h| {
            for t in [
                "group",
                "partition",
                "committed",
                "end",
                "lag",
                "lag time",
                "verdict",
                "why",
            ] {
                h.col(|ui| {
                    ui.strong(t);
                });
            }
        })
        .body(|body| {
            body.rows(20.0, rows.len(), |mut row| {
                let Some(p) = rows.get(row.index()) else {
                    return;
                };
                row.col(|ui| {
                    ui.monospace(&p.group);
                });
                row.col(|ui| {
                    let text = format!("{}[{}]", p.topic, p.partition);
                    match p.at {
                        Some(idx) => {
                            if ui
                                .link(egui::RichText::new(text).monospace())
                                .on_hover_text("select the record the group has not processed")
                                .clicked()
                            {
                                intents.push(Intent::Select {
                                    index: idx,
                                    move_cursor: true,
                                });
                            }
                        }
                        None => {
                            ui.monospace(text);
                        }
                    }
                });
                row.col(|ui| {
                    ui.monospace(p.committed.map_or("-".into(), |c| c.to_string()));
                });
                row.col(|ui| {
                    ui.monospace(p.high.to_string());
                });
                row.col(|ui| {
                    ui.monospace(p.lag.to_string());
                });
                row.col(|ui| {
                    ui.monospace(
                        p.lag_ms
                            .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
                    );
                });
                row.col(|ui| {
                    ui.colored_label(color(p.verdict, ui), p.verdict.as_str());
                });
                row.col(|ui| {
                    ui.label(&p.detail);
                });
            });
        });
}
