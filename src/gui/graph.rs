//! The chain graph: the selected event's correlation chain as a causation DAG,
//! up to the cursor. Commands are larger nodes in brackets; compensations red;
//! duplicate deliveries as an "xN" badge on the label.

use std::collections::HashMap;

use egui_graphs::{
    reset, Graph, GraphChange, GraphView, LayoutHierarchical, LayoutHierarchicalOrientation,
    LayoutStateHierarchical, SettingsInteraction, SettingsNavigation, SettingsStyle,
};
use petgraph::stable_graph::NodeIndex;

use super::widgets;
use super::{EventscopeApp, Intent};
use crate::model::log::{LogIndex, ObservedLog};

const GRAPH_ID: &str = "chain_graph";

/// Nodes and edges of a chain, computed from the log (pure; tested without a window).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChainModel {
    /// One per event id: first delivery's log index, label, is_command, compensation, deliveries.
    pub nodes: Vec<ChainNode>,
    /// (parent position, child position) in `nodes`.
    pub edges: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChainNode {
    pub index: LogIndex,
    pub event_type: String,
    pub service: String,
    pub is_command: bool,
    pub compensation: bool,
    pub deliveries: usize,
}

impl ChainNode {
    pub fn label(&self) -> String {
        let mut l = if self.is_command {
            format!("[{}]", self.event_type)
        } else {
            self.event_type.clone()
        };
        if self.deliveries > 1 {
            l.push_str(&format!(" x{}", self.deliveries));
        }
        l
    }
}

/// The chain of `correlation_id` with every record up to `cursor`.
pub fn chain_model(log: &ObservedLog, correlation_id: &str, cursor: LogIndex) -> ChainModel {
    let mut m = ChainModel::default();
    let mut pos_of: HashMap<String, usize> = HashMap::new();
    for &idx in log.chain(correlation_id).iter().filter(|&&i| i <= cursor) {
        let Some(meta) = log.meta(idx) else { continue };
        let id = log.resolve(meta.event_id).to_owned();
        if let Some(&p) = pos_of.get(&id) {
            if let Some(n) = m.nodes.get_mut(p) {
                n.deliveries += 1;
            }
            continue;
        }
        let event_type = widgets::type_of(log, idx);
        pos_of.insert(id, m.nodes.len());
        m.nodes.push(ChainNode {
            index: idx,
            compensation: widgets::is_compensation(&event_type),
            event_type,
            service: widgets::service_of(log, idx),
            is_command: meta.is_command,
            deliveries: 1,
        });
    }
    for (child, n) in m.nodes.iter().enumerate() {
        let parent = log
            .meta(n.index)
            .and_then(|meta| log.resolve_opt(meta.causation_id))
            .and_then(|c| pos_of.get(c));
        if let Some(&p) = parent {
            m.edges.push((p, child));
        }
    }
    m
}

#[derive(Default)]
pub struct ChainGraphView {
    key: Option<(String, usize, usize)>,
    graph: Option<Graph<LogIndex, ()>>,
    nodes: HashMap<LogIndex, NodeIndex>,
    pub model: ChainModel,
    /// Frames left to fit the graph to the panel; afterwards the user zooms and pans.
    fit_frames: u8,
}

impl ChainGraphView {
    pub fn ui(&mut self, app: &EventscopeApp, ui: &mut egui::Ui, intents: &mut Vec<Intent>) {
        let log = app.model.log();
        let (Some(sel), Some(cursor)) = (app.selected, app.cursor.pos()) else {
            ui.weak("Select an event to see its correlation chain.");
            return;
        };
        let Some(corr) = log
            .meta(sel)
            .and_then(|m| log.resolve_opt(m.correlation_id))
            .map(str::to_owned)
        else {
            ui.colored_label(
                widgets::ANOMALY,
                "This event has no correlation id: its chain is broken.",
            );
            return;
        };
        let upto = log.chain(&corr).partition_point(|&i| i <= cursor);
        let total: usize = upto;
        let key = (corr.clone(), upto, total);
        let mut rebuilt = false;
        if self.key.as_ref() != Some(&key) {
            self.model = chain_model(log, &corr, cursor);
            self.rebuild();
            self.key = Some(key);
            self.fit_frames = 3;
            rebuilt = true;
        }
        ui.horizontal(|ui| {
            ui.label(format!(
                "chain {} : {} events up to the cursor",
                widgets::short(&corr),
                self.model.nodes.len()
            ));
            ui.weak("[Command]  Event  xN = delivered N times  red = failure / compensation  (scroll/drag to zoom and pan)");
            if ui.small_button("Fit").clicked() {
                self.fit_frames = 3;
            }
        });
        let Some(g) = &mut self.graph else { return };
        let sel_first = log
            .meta(sel)
            .and_then(|m| log.deliveries_of(m.event_id).first().copied())
            .unwrap_or(sel);
        if let Some(&n) = self.nodes.get(&sel_first) {
            g.set_selected_nodes(vec![n]);
            if let Some(node) = g.node_mut(n) {
                node.set_selected(true);
            }
        }
        if rebuilt {
            reset::<LayoutStateHierarchical>(ui, Some(GRAPH_ID.into()));
            let state = LayoutStateHierarchical {
                orientation: LayoutHierarchicalOrientation::LeftRight,
                row_dist: 150.0,
                col_dist: 50.0,
                ..Default::default()
            };
            egui_graphs::set_layout_state(ui, state, Some(GRAPH_ID.into()));
        }
        let fit = self.fit_frames > 0;
        self.fit_frames = self.fit_frames.saturating_sub(1);
        let resp = GraphView::<LayoutStateHierarchical, LayoutHierarchical>::new()
            .with_id(Some(GRAPH_ID.into()))
            .with_interactions(
                &SettingsInteraction::new()
                    .with_node_clicking_enabled(true)
                    .with_node_selection_enabled(true),
            )
            .with_navigations(
                &SettingsNavigation::new()
                    .with_fit_to_screen_enabled(fit)
                    .with_zoom_and_pan_enabled(!fit),
            )
            .with_styles(&SettingsStyle::new().with_labels_always(true))
            .show(ui, g);
        for ch in resp.changes {
            if let GraphChange::NodeClicked { node } | GraphChange::NodeSelected { node } = ch {
                if let Some(&idx) = g.node(node).map(|n| n.payload()) {
                    if Some(idx) != app.selected {
                        intents.push(Intent::Select {
                            index: idx,
                            move_cursor: false,
                        });
                    }
                }
            }
        }
    }

    fn rebuild(&mut self) {
        let mut g: Graph<LogIndex, ()> = Graph::new();
        self.nodes.clear();
        let mut ids = Vec::with_capacity(self.model.nodes.len());
        for n in &self.model.nodes {
            let id = g.add_node_with_label(n.index, n.label());
            if let Some(node) = g.node_mut(id) {
                node.set_color(if n.compensation {
                    widgets::COMPENSATION
                } else {
                    widgets::color_for(&n.service)
                });
                node.display_mut().radius = if n.is_command { 9.0 } else { 6.0 };
            }
            self.nodes.insert(n.index, id);
            ids.push(id);
        }
        for &(p, c) in &self.model.edges {
            if let (Some(&a), Some(&b)) = (ids.get(p), ids.get(c)) {
                g.add_edge_with_label(a, b, (), String::new());
            }
        }
        self.graph = Some(g);
    }
}
