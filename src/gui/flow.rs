//! The flow map tab: services on the left publish to topics in the middle,
//! which services on the right consume (see `crate::model::flow`), up to the
//! cursor, or only the selected record's chain (that saga's path through the
//! services). Edge width grows with the rate; an edge with duplicates,
//! dead letters or findings is red. Clicking a node or an edge filters the
//! table to its records.

use egui::epaint::CubicBezierShape;
use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2};

use super::widgets;
use super::{EventscopeApp, Filter, Intent};
use crate::model::flow::{EdgeKind, EdgeStats, FlowMap};
use crate::model::log::{LogIndex, ObservedLog, Sym};

/// Records added to the map per frame (a long log is read over a few frames).
const ROWS_PER_FRAME: usize = 50_000;
const ROW_H: f32 = 20.0;
const NODE_W: f32 = 190.0;

/// What the tab keeps between frames.
#[derive(Default)]
pub struct FlowView {
    map: FlowMap,
    /// The chain the map is restricted to (None: every record), as built.
    built_for: Option<Option<Sym>>,
    /// The log's round of forgetting when it was built (a chain's symbol may name another
    /// chain after ids were forgotten).
    built_epoch: u64,
    pub only_chain: bool,
    /// Also draw the consumer groups (what they committed on which topic).
    pub show_groups: bool,
}

impl FlowView {
    /// Bring the map up to the cursor: extended when the cursor moved forward in the same
    /// scope, rebuilt otherwise. Returns how many records are still to read.
    fn update(&mut self, log: &ObservedLog, cursor: LogIndex, chain: Option<Sym>) -> usize {
        let upto = cursor as usize + 1;
        // A chain's symbol may name another chain once ids were forgotten; the map of every
        // record holds only names (never forgotten).
        if self.built_for != Some(chain)
            || self.map.next > upto
            || (chain.is_some() && self.built_epoch != log.forget_epoch())
        {
            self.map = FlowMap::default();
            self.built_for = Some(chain);
            self.built_epoch = log.forget_epoch();
        }
        match chain {
            Some(c) => {
                let list: Vec<LogIndex> = log
                    .chain_of(c)
                    .iter()
                    .copied()
                    .filter(|&i| i as usize >= self.map.next && i <= cursor)
                    .collect();
                for i in list {
                    self.map.add(log, i);
                }
                self.map.next = upto;
                0
            }
            None => {
                let end = upto.min(self.map.next + ROWS_PER_FRAME);
                for i in self.map.next..end {
                    if let Ok(i) = LogIndex::try_from(i) {
                        self.map.add(log, i);
                    }
                }
                self.map.next = self.map.next.max(end);
                upto - end
            }
        }
    }
}

/// A service's short name: the last path segment of its source.
fn short(service: &str) -> &str {
    service
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(service)
}

fn edge_text(kind: EdgeKind, from: &str, to: &str, e: &EdgeStats) -> String {
    let verb = match kind {
        EdgeKind::Publishes => "publishes to",
        EdgeKind::Consumes => "is consumed by",
    };
    let mut s = format!(
        "{from} {verb} {to}: {} records, {:.1}/s",
        e.records,
        e.rate()
    );
    let types: Vec<String> = e.types.iter().map(|(t, n)| format!("{t} {n}")).collect();
    if !types.is_empty() {
        s.push_str(&format!("\n{}", types.join(", ")));
    }
    if e.duplicates > 0 {
        s.push_str(&format!("\n{} duplicate deliveries", e.duplicates));
    }
    if e.dead_letters > 0 {
        s.push_str(&format!("\n{} dead-lettered", e.dead_letters));
    }
    for (k, n) in &e.anomalies {
        s.push_str(&format!("\n{k}: {n}"));
    }
    s
}

/// A clickable, labelled (screen readers, kittest) area.
fn hotspot(ui: &mut egui::Ui, rect: Rect, id: &str, label: &str) -> egui::Response {
    let r = ui.interact(rect, ui.id().with(id), Sense::click());
    let enabled = ui.is_enabled();
    r.widget_info(|| egui::WidgetInfo::labeled(egui::WidgetType::Button, enabled, label));
    r
}

pub fn flow_ui(app: &mut EventscopeApp, ui: &mut egui::Ui, _intents: &mut [Intent]) {
    let Some(cursor) = app.cursor.pos() else {
        ui.weak("No records yet.");
        return;
    };
    let mut view = std::mem::take(&mut app.flow);
    let chain = app
        .selected
        .and_then(|i| app.model.log().meta(i))
        .and_then(|m| m.correlation_id);
    let scope = if view.only_chain { chain } else { None };
    let left = view.update(app.model.log(), cursor, scope);
    view.map
        .add_anomalies(app.model.log(), app.model.anomalies(), cursor);
    if left > 0 {
        ui.ctx().request_repaint();
    }
    let mut flow = view.map.view(app.model.log());
    if view.show_groups && !view.only_chain {
        flow.add_groups(&app.group_lags);
    }
    let map = &flow;
    let mut filter: Option<Filter> = None;
    ui.horizontal(|ui| {
        ui.label(format!(
            "{} services, {} topics, {} edges up to the cursor{}",
            map.services.len(),
            map.topics.len(),
            map.edges.len(),
            if left > 0 {
                format!(" (reading {left} more records)")
            } else {
                String::new()
            }
        ));
        ui.add_enabled_ui(chain.is_some() || view.only_chain, |ui| {
            ui.checkbox(&mut view.only_chain, "only the selected record's chain");
        });
        ui.checkbox(&mut view.show_groups, "consumer groups")
            .on_hover_text(
                "also the groups that commit offsets on the topics (Consumer groups tab)",
            );
        ui.weak("publishers | topics | consumers; red: duplicates, dead letters or findings");
    });
    let publishers: Vec<&String> = map
        .services
        .iter()
        .filter(|s| {
            map.edges
                .keys()
                .any(|(k, from, _)| *k == EdgeKind::Publishes && from == *s)
        })
        .collect();
    let consumers: Vec<&String> = map
        .services
        .iter()
        .filter(|s| {
            map.edges
                .keys()
                .any(|(k, _, to)| *k == EdgeKind::Consumes && to == *s)
        })
        .collect();
    let topics: Vec<&String> = map.topics.iter().collect();
    let rows = publishers
        .len()
        .max(consumers.len())
        .max(topics.len())
        .max(1);
    egui::ScrollArea::both().id_salt("flow_map").show(ui, |ui| {
        let width = ui.available_width().max(3.0 * NODE_W + 240.0);
        let (rect, _) =
            ui.allocate_exact_size(Vec2::new(width, rows as f32 * ROW_H + 4.0), Sense::hover());
        let painter = ui.painter_at(rect);
        let col_x = [
            rect.left() + 4.0,
            rect.center().x - NODE_W / 2.0,
            rect.right() - NODE_W - 4.0,
        ];
        let node_rect = |col: usize, row: usize, n: usize| {
            // Spread a shorter column over the height.
            let step = rows as f32 * ROW_H / n.max(1) as f32;
            let y = rect.top() + 2.0 + step * row as f32 + (step - ROW_H) / 2.0;
            Rect::from_min_size(Pos2::new(col_x[col], y), Vec2::new(NODE_W, ROW_H - 4.0))
        };
        let pos_of = |col: usize, list: &[&String], name: &str| {
            list.iter()
                .position(|s| s.as_str() == name)
                .map(|i| node_rect(col, i, list.len()))
        };
        // Edges first, under the nodes.
        let max_rate = map.edges.values().map(EdgeStats::rate).fold(0.0, f64::max);
        for ((kind, from, to), e) in &map.edges {
            let (a, b) = match kind {
                EdgeKind::Publishes => (pos_of(0, &publishers, from), pos_of(1, &topics, to)),
                EdgeKind::Consumes => (pos_of(1, &topics, from), pos_of(2, &consumers, to)),
            };
            let (Some(a), Some(b)) = (a, b) else { continue };
            let (p0, p3) = (a.right_center(), b.left_center());
            let dx = (p3.x - p0.x) / 2.0;
            let points = [p0, p0 + Vec2::new(dx, 0.0), p3 - Vec2::new(dx, 0.0), p3];
            let w = 1.0 + 5.0 * (e.rate() / max_rate.max(1e-9)) as f32;
            let color = if e.troubled() {
                widgets::ANOMALY
            } else {
                Color32::from_gray(130)
            };
            painter.add(CubicBezierShape::from_points_stroke(
                points,
                false,
                Color32::TRANSPARENT,
                Stroke::new(w, color),
            ));
            // A handle in the middle: hover for what flows, click to filter.
            let mid = CubicBezierShape::from_points_stroke(
                points,
                false,
                Color32::TRANSPARENT,
                Stroke::NONE,
            )
            .sample(0.5);
            let handle = Rect::from_center_size(mid, Vec2::splat(12.0));
            painter.circle_filled(mid, 4.0, color);
            let label = match kind {
                EdgeKind::Publishes => format!("edge {from} -> {to}"),
                EdgeKind::Consumes => format!("edge {from} -> {to} (consumed)"),
            };
            let r =
                hotspot(ui, handle, &label, &label).on_hover_text(edge_text(*kind, from, to, e));
            if r.clicked() {
                filter = Some(match kind {
                    EdgeKind::Publishes => Filter {
                        topic: format!("\"{to}\""),
                        source: format!("\"{from}\""),
                        ..Filter::default()
                    },
                    // A group's edge: the topic's records.
                    EdgeKind::Consumes if to.starts_with("group ") => Filter {
                        topic: format!("\"{from}\""),
                        ..Filter::default()
                    },
                    EdgeKind::Consumes => Filter {
                        source: format!("\"{to}\""),
                        cause_topic: format!("\"{from}\""),
                        ..Filter::default()
                    },
                });
            }
        }
        // Nodes.
        let mut node = |col: usize, list: &[&String], i: usize, name: &str, topic: bool| {
            let r = node_rect(col, i, list.len());
            let fill = if topic {
                Color32::from_gray(60)
            } else {
                widgets::color_for(short(name)).gamma_multiply(0.55)
            };
            painter.rect_filled(r, 4.0, fill);
            painter.text(
                r.center(),
                egui::Align2::CENTER_CENTER,
                if topic { name } else { short(name) },
                egui::FontId::proportional(12.0),
                Color32::WHITE,
            );
            let what = if topic { "topic" } else { "service" };
            let label = format!("{what} {name}");
            let resp = hotspot(ui, r, &format!("{label}#{col}"), &label).on_hover_text(&label);
            if resp.clicked() {
                filter = (!name.starts_with("group ")).then(|| {
                    if topic {
                        Filter {
                            topic: format!("\"{name}\""),
                            ..Filter::default()
                        }
                    } else {
                        Filter {
                            source: format!("\"{name}\""),
                            ..Filter::default()
                        }
                    }
                });
            }
        };
        for (i, s) in publishers.iter().enumerate() {
            node(0, &publishers, i, s, false);
        }
        for (i, t) in topics.iter().enumerate() {
            node(1, &topics, i, t, true);
        }
        for (i, s) in consumers.iter().enumerate() {
            node(2, &consumers, i, s, false);
        }
    });
    if let Some(f) = filter {
        app.filter = f;
    }
    app.flow = view;
}
