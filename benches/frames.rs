//! GUI frame-time benchmark that prints figures (not a timed test).
//!
//! Loads generated records into a Model, opens `EventscopeApp::offline` and drives frames
//! with a bare `egui::Context` at 1600x1000. Per-frame CPU time = `Context::run_ui` (the whole
//! UI build: panels, table, inspector, chain graph, model queries) + `Context::tessellate` of
//! the output shapes. GPU upload and rasterisation are not included.
//!
//! `cargo bench --bench frames`; `EVENTSCOPE_BENCH_N=20000 cargo bench --bench frames` for a
//! quick smoke run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use common::{percentiles_ms, secs, thread_cpu, Gen};
use egui::epaint::{ClippedShape, Primitive, Shape};
use egui::{Event, Key, Modifiers, MouseWheelUnit, Pos2, RawInput, Rect, TouchPhase};
use eventscope::gui::{EventscopeApp, Intent, Prefs};
use eventscope::model::log::LogIndex;

const WIDTH: f32 = 1600.0;
const HEIGHT: f32 = 1000.0;
/// Somewhere over the event table (central panel, below its filter row).
const OVER_TABLE: Pos2 = Pos2::new(760.0, 380.0);
/// Points per frame of mouse-wheel scrolling (about 55 rows of 18 pt).
const WHEEL_PER_FRAME: f32 = 1000.0;

struct Frame {
    /// Wall time of `run_ui`.
    build: Duration,
    /// Wall time of `tessellate`.
    tessellate: Duration,
    /// CPU time of this thread over both.
    cpu: Duration,
    vertices: usize,
    /// Hash of every text shown; tells whether the picture changed.
    text: u64,
}

impl Frame {
    fn wall(&self) -> Duration {
        self.build + self.tessellate
    }
}

struct Driver {
    ctx: egui::Context,
    app: EventscopeApp,
    time: f64,
}

fn hash_texts(shapes: &[ClippedShape]) -> u64 {
    fn walk(s: &Shape, h: &mut std::collections::hash_map::DefaultHasher) {
        match s {
            Shape::Text(t) => t.galley.text().hash(h),
            Shape::Vec(v) => v.iter().for_each(|s| walk(s, h)),
            _ => {}
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in shapes {
        walk(&c.shape, &mut h);
    }
    h.finish()
}

impl Driver {
    fn frame(&mut self, events: Vec<Event>) -> Frame {
        self.time += 1.0 / 60.0;
        let input = RawInput {
            screen_rect: Some(Rect::from_min_size(Pos2::ZERO, egui::vec2(WIDTH, HEIGHT))),
            time: Some(self.time),
            predicted_dt: 1.0 / 60.0,
            events,
            ..Default::default()
        };
        let (t, c) = (Instant::now(), thread_cpu());
        let mut out = self.ctx.run_ui(input, |ui| self.app.frame_ui(ui));
        let build = t.elapsed();
        let mut cpu = thread_cpu() - c;
        let text = hash_texts(&out.shapes); // not timed
        let shapes = std::mem::take(&mut out.shapes);
        let (t, c) = (Instant::now(), thread_cpu());
        let prims = self.ctx.tessellate(shapes, out.pixels_per_point);
        let tessellate = t.elapsed();
        cpu += thread_cpu() - c;
        let vertices = prims
            .iter()
            .map(|p| match &p.primitive {
                Primitive::Mesh(m) => m.vertices.len(),
                Primitive::Callback(_) => 0,
            })
            .sum();
        out.drop_without_applying_deltas();
        Frame {
            build,
            tessellate,
            cpu,
            vertices,
            text,
        }
    }

    /// Run `frames` frames, `events(i)` giving each frame's input; returns the costs.
    fn run(
        &mut self,
        frames: usize,
        mut events: impl FnMut(usize, &mut Self) -> Vec<Event>,
    ) -> Vec<Frame> {
        (0..frames)
            .map(|i| {
                let ev = events(i, self);
                self.frame(ev)
            })
            .collect()
    }
}

fn key(k: Key) -> Vec<Event> {
    [true, false]
        .into_iter()
        .map(|pressed| Event::Key {
            key: k,
            physical_key: None,
            pressed,
            repeat: false,
            modifiers: Modifiers::NONE,
        })
        .collect()
}

fn report(name: &str, frames: &[Frame]) -> String {
    let cpu: Vec<Duration> = frames.iter().map(|f| f.cpu).collect();
    let wall: Vec<Duration> = frames.iter().map(Frame::wall).collect();
    let builds: Vec<Duration> = frames.iter().map(|f| f.build).collect();
    let tess: Vec<Duration> = frames.iter().map(|f| f.tessellate).collect();
    let [p50, p95, p99, max] = percentiles_ms(&cpu);
    let [w50, _, w99, wmax] = percentiles_ms(&wall);
    let [b50, ..] = percentiles_ms(&builds);
    let [t50, ..] = percentiles_ms(&tess);
    let changed = frames.windows(2).filter(|w| w[0].text != w[1].text).count();
    let verts = frames.iter().map(|f| f.vertices).sum::<usize>() / frames.len().max(1);
    let line = format!(
        "{name:<44} frames {:>4}  CPU p50 {p50:>6.2}  p95 {p95:>6.2}  p99 {p99:>6.2}  max {max:>6.2} ms  (wall p50 {w50:.2} p99 {w99:.2} max {wmax:.2}; wall p50 build {b50:.2} + tessellate {t50:.2}; ~{verts} vertices; picture changed in {changed} of {} frames)",
        frames.len(),
        frames.len().saturating_sub(1)
    );
    println!("{line}");
    line
}

fn main() {
    let n = common::scale();
    println!("eventscope GUI frame times, {n} records (EVENTSCOPE_BENCH_N scales this)");
    println!(
        "per-frame CPU time = egui Context::run_ui (EventscopeApp::frame_ui: UI build incl. model queries)"
    );
    println!(
        "  + Context::tessellate of the output shapes, at {WIDTH}x{HEIGHT} points, 1 pixel per point."
    );
    println!("  GPU upload and rasterisation are NOT included (no renderer; bare egui::Context).");
    println!(
        "  CPU = this thread's CPU time (CLOCK_THREAD_CPUTIME_ID); wall time shown alongside."
    );

    println!("machine: {} (at the start)", common::load());
    let t = Instant::now();
    let model = common::build_model(Gen::new(), n);
    println!(
        "generated and ingested {} records in {:.1} s",
        model.log().len(),
        secs(t.elapsed())
    );
    let t = Instant::now();
    let app = EventscopeApp::offline(model, format!("synthetic {n} records"), Prefs::default());
    println!("EventscopeApp::offline: {:.2} s", secs(t.elapsed()));
    let mut d = Driver {
        ctx: egui::Context::default(),
        app,
        time: 0.0,
    };
    let len = d.app.model.log().len();
    let mut lines = Vec::new();

    // Fonts, first layout, galley caches.
    d.run(60, |_, _| vec![]);

    lines.push(report("idle, nothing selected", &d.run(300, |_, _| vec![])));

    let wheel = d.run(600, |_, _| {
        vec![
            Event::PointerMoved(OVER_TABLE),
            Event::MouseWheel {
                unit: MouseWheelUnit::Point,
                delta: egui::vec2(0.0, -WHEEL_PER_FRAME),
                phase: TouchPhase::Move,
                modifiers: Modifiers::NONE,
            },
        ]
    });
    lines.push(report(
        &format!("scroll table: mouse wheel {WHEEL_PER_FRAME} pt/frame"),
        &wheel,
    ));

    // Rows far apart: select a random record each frame; the table scrolls to it.
    let mut x = 0x9e37_79b9u64;
    let jumps = d.run(300, |_, d| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let index = LogIndex::try_from((x >> 33) as usize % len).unwrap_or(0);
        d.app.push(Intent::Select {
            index,
            move_cursor: false,
        });
        vec![Event::PointerMoved(Pos2::new(5.0, HEIGHT - 5.0))]
    });
    lines.push(report("scroll table: select a random row/frame", &jumps));

    // Stepping from the middle of the log with a record (and its aggregate, chain) shown.
    let mid = LogIndex::try_from(len / 2).unwrap_or(0);
    d.app.push(Intent::Select {
        index: mid,
        move_cursor: true,
    });
    d.run(30, |_, _| vec![]);
    let before = d.app.cursor.pos();
    let fwd = d.run(300, |_, _| key(Key::ArrowRight));
    let after_fwd = d.app.cursor.pos();
    let back = d.run(300, |_, _| key(Key::ArrowLeft));
    let after_back = d.app.cursor.pos();
    println!(
        "cursor: {before:?} -> {after_fwd:?} after 300 x ArrowRight -> {after_back:?} after 300 x ArrowLeft"
    );
    assert_eq!(
        after_fwd.zip(before).map(|(a, b)| a - b),
        Some(300.min(len as u32 - 1 - mid)),
        "ArrowRight steps the cursor"
    );
    assert_eq!(after_back, before, "ArrowLeft steps back");
    let mut step: Vec<Frame> = fwd;
    step.extend(back);
    lines.push(report(
        "step cursor: ArrowRight x300, ArrowLeft x300",
        &step,
    ));

    lines.push(report(
        "idle, a record selected",
        &d.run(300, |_, _| vec![]),
    ));

    // A jq query over every record, tested on its worker thread while frames go
    // on (a frame every 16 ms, as with vsync); the GUI thread only copies records.
    d.app.filter.query = ".amount_cents > 5000".into();
    let t = Instant::now();
    let mut query_frames = Vec::new();
    loop {
        let f = d.frame(vec![]);
        let spare = Duration::from_millis(16).saturating_sub(f.wall());
        query_frames.push(f);
        if d.app.query_progress().is_none() || t.elapsed() > Duration::from_secs(900) {
            break;
        }
        std::thread::sleep(spare);
    }
    println!(
        "jq query `.amount_cents > 5000` over {len} records: {:.1} s wall, {} frames, {} matched",
        secs(t.elapsed()),
        query_frames.len(),
        d.app.visible_rows().len()
    );
    lines.push(report(
        "jq query filter running (worker thread)",
        &query_frames,
    ));
    d.app.filter.query.clear();

    println!();
    println!("==== summary ====");
    println!("command: {}", common::command("frames"));
    println!("machine: {} (at the end)", common::load());
    println!(
        "{n} records, {WIDTH}x{HEIGHT}; thread CPU time of UI build + tessellation, ms per frame; GPU rasterisation NOT included"
    );
    for l in &lines {
        println!("{l}");
    }
}
