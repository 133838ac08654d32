//! Software-rendered frame times: the real eframe window (glow) on Mesa's
//! llvmpipe under X (Xvfb), with 1M generated records loaded. Each frame's wall
//! time covers input, the UI build, tessellation, GL painting on the CPU and
//! the buffer swap (continuous repaint; Xvfb has no vblank).
//!
//! `xvfb-run -s "-screen 0 1680x1050x24" cargo bench --bench frames_gl`
//! (`EVENTSCOPE_BENCH_N=20000` for a quick run). Without a display it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{percentiles_ms, secs, Gen};
use egui::{Event, Key, Modifiers, MouseWheelUnit, Pos2, TouchPhase};
use eventscope::gui::{EventscopeApp, Prefs};

const OVER_TABLE: Pos2 = Pos2::new(760.0, 380.0);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    Warmup,
    Idle,
    Scroll,
    Step,
    Done,
}

const PLAN: [(Phase, usize); 4] = [
    (Phase::Warmup, 60),
    (Phase::Idle, 200),
    (Phase::Scroll, 400),
    (Phase::Step, 400),
];

type Samples = Arc<Mutex<Vec<(Phase, Duration)>>>;

struct Driver {
    app: EventscopeApp,
    plan: usize,
    frame_in_phase: usize,
    last: Option<Instant>,
    samples: Samples,
}

impl Driver {
    fn phase(&self) -> Phase {
        PLAN.get(self.plan).map(|p| p.0).unwrap_or(Phase::Done)
    }
}

impl eframe::App for Driver {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let now = Instant::now();
        if let Some(last) = self.last {
            self.samples
                .lock()
                .unwrap()
                .push((self.phase(), now - last));
        }
        self.last = Some(now);
        let ctx = ui.ctx().clone();
        let phase = self.phase();
        let step_right = self.frame_in_phase % 400 < 200;
        ctx.input_mut(|i| match phase {
            Phase::Scroll => {
                i.events.push(Event::PointerMoved(OVER_TABLE));
                i.events.push(Event::MouseWheel {
                    unit: MouseWheelUnit::Point,
                    delta: egui::vec2(0.0, -1000.0),
                    phase: TouchPhase::Move,
                    modifiers: Modifiers::NONE,
                });
            }
            Phase::Step => {
                let key = if step_right {
                    Key::ArrowRight
                } else {
                    Key::ArrowLeft
                };
                for pressed in [true, false] {
                    i.events.push(Event::Key {
                        key,
                        physical_key: None,
                        pressed,
                        repeat: false,
                        modifiers: Modifiers::NONE,
                    });
                }
            }
            _ => {}
        });
        self.app.frame_ui(ui);
        self.frame_in_phase += 1;
        if let Some((_, n)) = PLAN.get(self.plan) {
            if self.frame_in_phase >= *n {
                self.plan += 1;
                self.frame_in_phase = 0;
            }
        }
        if self.phase() == Phase::Done {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        ctx.request_repaint();
    }
}

fn main() {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        println!("frames_gl needs a display: xvfb-run -s \"-screen 0 1680x1050x24\" cargo bench --bench frames_gl");
        return;
    }
    let n = common::scale();
    println!(
        "eventscope software-rendered frame times, {n} records (EVENTSCOPE_BENCH_N scales this)"
    );
    println!("the real window: eframe + glow on the X server's GL (Mesa llvmpipe under Xvfb: CPU rasterisation), 1600x1000, continuous repaint (Xvfb has no vblank to wait for)");
    println!("machine: {} (at the start)", common::load());
    let t = Instant::now();
    let model = common::build_model(Gen::new(), n);
    println!(
        "generated and ingested {} records in {:.1} s",
        model.log().len(),
        secs(t.elapsed())
    );
    let samples: Samples = Arc::new(Mutex::new(Vec::new()));
    let driver_samples = samples.clone();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("eventscope frame bench")
            .with_inner_size([1600.0, 1000.0]),
        persist_window: false,
        ..Default::default()
    };
    let result = eframe::run_native(
        "eventscope-frames-gl",
        options,
        Box::new(move |cc| {
            let renderer = cc
                .gl
                .as_ref()
                .map(|gl| {
                    use eframe::glow::HasContext;
                    unsafe { gl.get_parameter_string(eframe::glow::RENDERER) }
                })
                .unwrap_or_else(|| "unknown".into());
            println!("GL renderer: {renderer}");
            let app = EventscopeApp::offline(model, format!("synthetic {n}"), Prefs::default());
            Ok(Box::new(Driver {
                app,
                plan: 0,
                frame_in_phase: 0,
                last: None,
                samples: driver_samples,
            }))
        }),
    );
    if let Err(e) = result {
        println!("cannot open the window: {e}");
        return;
    }
    let samples = samples.lock().unwrap();
    println!(
        "frame wall time in ms (input + UI build + tessellation + CPU GL rasterisation + swap):"
    );
    println!(
        "  {:<42} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "scenario", "frames", "p50", "p95", "p99", "max"
    );
    for (phase, label) in [
        (Phase::Idle, "idle (continuous repaint)"),
        (Phase::Scroll, "scroll the table (wheel, 1000 pt/frame)"),
        (Phase::Step, "step the cursor (right x200, left x200)"),
    ] {
        let v: Vec<Duration> = samples
            .iter()
            .filter(|(p, _)| *p == phase)
            .map(|(_, d)| *d)
            .collect();
        let [p50, p95, p99, max] = percentiles_ms(&v);
        println!(
            "  {label:<42} {:>7} {p50:>7.2} {p95:>7.2} {p99:>7.2} {max:>7.2}",
            v.len()
        );
    }
    println!("command: {}", common::command("frames_gl"));
}
