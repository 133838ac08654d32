//! Charts: events/s per topic (from record timestamps), outbox backlog and
//! consumer lag over time (from the backend's samples).

use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::EventscopeApp;

pub fn charts_ui(app: &EventscopeApp, ui: &mut egui::Ui) {
    let h = (ui.available_height() / 2.0 - 10.0).max(80.0);
    let latest = app
        .rates
        .per_topic
        .values()
        .filter_map(|m| m.keys().next_back().copied())
        .max()
        .unwrap_or(0);
    ui.label("events/s per topic (last 2 minutes, by record timestamp)");
    Plot::new("rates")
        .height(h)
        .legend(Legend::default())
        .show(ui, |plot| {
            for (topic, per_sec) in &app.rates.per_topic {
                let points: PlotPoints = per_sec
                    .range(latest - 120..=latest)
                    .map(|(s, n)| [(*s - latest) as f64, f64::from(*n)])
                    .collect();
                plot.line(Line::new(topic.clone(), points));
            }
        });
    ui.label("outbox backlog and consumer lag (records)");
    let t_last = app.metrics.back().map(|m| m.at_ms).unwrap_or(0);
    Plot::new("backlog")
        .height(h)
        .legend(Legend::default())
        .show(ui, |plot| {
            let pts = |f: fn(&crate::backend::Metrics) -> i64| -> PlotPoints {
                app.metrics
                    .iter()
                    .map(|m| [((m.at_ms - t_last) as f64) / 1000.0, f(m) as f64])
                    .collect()
            };
            plot.line(Line::new("outbox backlog", pts(|m| m.outbox_pending)));
            plot.line(Line::new("consumer lag", pts(|m| m.consumer_lag)));
        });
    if app.metrics.is_empty() {
        ui.weak("no samples: backlog and lag come from a live demo");
    }
}
