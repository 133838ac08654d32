//! Partition lanes: one lane per topic-partition, the latest records up to the
//! cursor as boxes coloured by aggregate. The selected record's aggregate is
//! outlined across every lane, so records of one aggregate spread over several
//! partitions (a wrong partition key) show at a glance.

use egui::{Color32, Sense, Stroke, StrokeKind};

use super::widgets;
use super::{EventscopeApp, Intent};

const WINDOW: usize = 80;

pub fn lanes_ui(app: &EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
    let log = app.model.log();
    let Some(cursor) = app.cursor.pos() else {
        ui.weak("No records yet.");
        return;
    };
    let selected_agg = app
        .selected
        .and_then(|s| log.meta(s))
        .and_then(|m| m.aggregate_id);
    let anomalies = app.model.anomaly_indices();
    match selected_agg.map(|a| log.resolve(a)) {
        Some(a) => {
            let parts: std::collections::BTreeSet<(String, i32)> = log
                .aggregate(a)
                .iter()
                .filter(|&&i| i <= cursor)
                .filter_map(|&i| {
                    log.row(i)
                        .map(|r| (log.resolve(r.topic).to_owned(), r.partition))
                })
                .collect();
            let mut per_topic: std::collections::BTreeMap<&str, Vec<i32>> =
                std::collections::BTreeMap::new();
            for (t, p) in &parts {
                per_topic.entry(t.as_str()).or_default().push(*p);
            }
            let spread: Vec<String> = per_topic
                .iter()
                .filter(|(_, ps)| ps.len() > 1)
                .map(|(t, ps)| format!("{t} {ps:?}"))
                .collect();
            if spread.is_empty() {
                ui.label(format!(
                    "aggregate {}: one partition per topic on {} topic(s), so its records stay in order",
                    widgets::short(a),
                    per_topic.len()
                ));
            } else {
                ui.colored_label(
                    widgets::ANOMALY,
                    format!(
                        "aggregate {} is spread over several partitions of {}: its records can be reordered (wrong partition key?)",
                        widgets::short(a),
                        spread.join(", ")
                    ),
                );
            }
        }
        None => {
            ui.weak("Select a record to outline its aggregate across the lanes.");
        }
    }
    let mut lanes = log.topic_partitions();
    lanes.sort();
    // Lanes holding the selected aggregate first.
    if let Some(a) = selected_agg.map(|a| log.resolve(a)) {
        let holds: std::collections::HashSet<(String, i32)> = log
            .aggregate(a)
            .iter()
            .filter_map(|&i| {
                log.row(i)
                    .map(|r| (log.resolve(r.topic).to_owned(), r.partition))
            })
            .collect();
        lanes.sort_by_key(|l| !holds.contains(l));
    }
    egui::ScrollArea::vertical()
        .id_salt("lanes")
        .show(ui, |ui| {
            for (topic, partition) in lanes {
                let idxs = log.partition(&topic, partition);
                let k = idxs.partition_point(|&i| i <= cursor);
                let window = &idxs[k.saturating_sub(WINDOW)..k];
                let (rect, _) =
                    ui.allocate_exact_size(egui::vec2(ui.available_width(), 22.0), Sense::hover());
                let painter = ui.painter_at(rect);
                painter.text(
                    rect.left_center() + egui::vec2(2.0, 0.0),
                    egui::Align2::LEFT_CENTER,
                    format!("{topic}[{partition}]"),
                    egui::FontId::monospace(11.0),
                    ui.visuals().text_color(),
                );
                let x0 = rect.left() + 150.0;
                let w = ((rect.width() - 155.0) / WINDOW as f32).clamp(3.0, 16.0);
                for (j, &idx) in window.iter().enumerate() {
                    let Some(row) = log.row(idx) else { continue };
                    let agg = row.meta().and_then(|m| m.aggregate_id);
                    let base = agg
                        .map(|a| widgets::color_for(log.resolve(a)))
                        .unwrap_or(Color32::GRAY);
                    let mine = selected_agg.is_some() && agg == selected_agg;
                    let fill = if selected_agg.is_some() && !mine {
                        base.gamma_multiply(0.25)
                    } else {
                        base
                    };
                    let r = egui::Rect::from_min_size(
                        egui::pos2(x0 + j as f32 * w, rect.top() + 3.0),
                        egui::vec2(w - 1.0, 16.0),
                    );
                    painter.rect_filled(
                        r,
                        2.0,
                        if row.is_poison() {
                            widgets::ANOMALY
                        } else {
                            fill
                        },
                    );
                    if mine {
                        painter.rect_stroke(
                            r,
                            2.0,
                            Stroke::new(2.0, Color32::WHITE),
                            StrokeKind::Outside,
                        );
                    }
                    if anomalies.contains(&idx) {
                        painter.circle_filled(r.center_top(), 2.5, widgets::ANOMALY);
                    }
                    if app.selected == Some(idx) {
                        painter.rect_stroke(
                            r.expand(2.0),
                            2.0,
                            Stroke::new(2.0, Color32::YELLOW),
                            StrokeKind::Outside,
                        );
                    }
                    let resp = ui.interact(r, ui.id().with(("lane", idx)), Sense::click());
                    let resp = resp.on_hover_text(format!(
                        "{}[{}]@{}  {}  {}",
                        topic,
                        partition,
                        row.offset,
                        widgets::type_of(log, idx),
                        agg.map(|a| log.resolve(a)).unwrap_or("-")
                    ));
                    if resp.clicked() {
                        intents.push(Intent::Select {
                            index: idx,
                            move_cursor: false,
                        });
                    }
                }
            }
        });
}
