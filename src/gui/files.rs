//! Export the observed records as JSON Lines and open recordings. Dialogs run
//! on their own thread (rfd, xdg-portal); where no dialog can be shown, a path
//! field appears instead. Export writes a slice per frame; import parses on a
//! thread and hands the finished model over.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{EventscopeApp, Intent};
use crate::model::{jsonl, Model};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAction {
    Export,
    Open,
}

/// A path entry shown when no file dialog is available.
pub struct PathPrompt {
    pub action: PathAction,
    pub path: String,
    pub why: String,
}

/// Background file work the app polls each frame.
#[derive(Default)]
pub struct FileJobs {
    dialog: Option<(PathAction, Instant, mpsc::Receiver<Option<PathBuf>>)>,
    export: Option<ExportJob>,
    import: Option<(PathBuf, mpsc::Receiver<Result<Model, String>>)>,
}

struct ExportJob {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
    next: usize,
    end: usize,
}

fn portal_available() -> bool {
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
}

fn start_dialog(app: &mut EventscopeApp, action: PathAction) {
    if !portal_available() {
        app.path_prompt = Some(PathPrompt {
            action,
            path: default_path(action),
            why: "No file dialog can be shown here (no desktop portal on the session bus): type a path.".into(),
        });
        return;
    }
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("file-dialog".into())
        .spawn(move || {
            let dialog = rfd::FileDialog::new().add_filter("JSON Lines", &["jsonl"]);
            let picked = match action {
                PathAction::Export => dialog.set_file_name("eventscope-session.jsonl").save_file(),
                PathAction::Open => dialog.pick_file(),
            };
            let _ = tx.send(picked);
        });
    match spawned {
        Ok(_) => app.files.dialog = Some((action, Instant::now(), rx)),
        Err(e) => {
            app.path_prompt = Some(PathPrompt {
                action,
                path: default_path(action),
                why: format!("No file dialog: {e}"),
            })
        }
    }
}

fn default_path(action: PathAction) -> String {
    match action {
        PathAction::Export => std::env::current_dir()
            .map(|d| d.join("eventscope-session.jsonl").display().to_string())
            .unwrap_or_else(|_| "eventscope-session.jsonl".into()),
        PathAction::Open => String::new(),
    }
}

pub fn export(app: &mut EventscopeApp) {
    start_dialog(app, PathAction::Export);
}

pub fn open(app: &mut EventscopeApp) {
    start_dialog(app, PathAction::Open);
}

/// Start writing every record observed so far to `path`.
pub fn begin_export(app: &mut EventscopeApp, path: PathBuf) {
    match std::fs::File::create(&path) {
        Ok(f) => {
            app.files.export = Some(ExportJob {
                path,
                out: BufWriter::new(f),
                next: 0,
                end: app.model.log().len(),
            })
        }
        Err(e) => app.push(Intent::Notice(format!(
            "cannot write {}: {e}",
            path.display()
        ))),
    }
}

/// Start reading a recording on a thread.
pub fn begin_import(app: &mut EventscopeApp, path: PathBuf) {
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    let cfg = app.profile.model_config();
    let spawned = std::thread::Builder::new()
        .name("import".into())
        .spawn(move || {
            let r = std::fs::File::open(&p)
                .map_err(|e| format!("cannot open {}: {e}", p.display()))
                .and_then(|f| {
                    Model::from_jsonl(cfg, std::io::BufReader::new(f), 0)
                        .map_err(|e| format!("{}: {e}", p.display()))
                });
            let _ = tx.send(r);
        });
    match spawned {
        Ok(_) => app.files.import = Some((path, rx)),
        Err(e) => app.push(Intent::Notice(format!("cannot start the import: {e}"))),
    }
}

/// Advance background file work; called once per frame.
pub fn poll(app: &mut EventscopeApp, ctx: &egui::Context) {
    if let Some((action, started, rx)) = app.files.dialog.take() {
        match rx.try_recv() {
            Ok(Some(path)) => match action {
                PathAction::Export => begin_export(app, path),
                PathAction::Open => begin_import(app, path),
            },
            Ok(None) if started.elapsed() < Duration::from_millis(300) => {
                app.path_prompt = Some(PathPrompt {
                    action,
                    path: default_path(action),
                    why: "The file dialog could not be shown: type a path.".into(),
                });
            }
            Ok(None) => {}
            Err(mpsc::TryRecvError::Empty) => {
                app.files.dialog = Some((action, started, rx));
                ctx.request_repaint_after(Duration::from_millis(100));
            }
            Err(mpsc::TryRecvError::Disconnected) => {}
        }
    }
    if let Some(mut job) = app.files.export.take() {
        let t = Instant::now();
        let log = app.model.log();
        let mut failed = None;
        while job.next < job.end && t.elapsed() < Duration::from_millis(8) {
            let Some(rec) = u32::try_from(job.next).ok().and_then(|i| log.record(i)) else {
                job.next += 1;
                continue;
            };
            let line = jsonl::to_line(&rec).map_err(|e| e.to_string());
            if let Err(e) = line.and_then(|l| writeln!(job.out, "{l}").map_err(|e| e.to_string())) {
                failed = Some(e);
                break;
            }
            job.next += 1;
        }
        if let Some(e) = failed {
            app.push(Intent::Notice(format!(
                "export to {} failed: {e}",
                job.path.display()
            )));
        } else if job.next >= job.end {
            match job.out.flush() {
                Ok(()) => app.push(Intent::Notice(format!(
                    "exported {} records to {}",
                    job.end,
                    job.path.display()
                ))),
                Err(e) => app.push(Intent::Notice(format!(
                    "export to {} failed: {e}",
                    job.path.display()
                ))),
            }
        } else {
            app.files.export = Some(job);
            ctx.request_repaint();
        }
    }
    if let Some((path, rx)) = app.files.import.take() {
        match rx.try_recv() {
            Ok(Ok(model)) => app.load_recording(model, path.display().to_string()),
            Ok(Err(e)) => app.push(Intent::Notice(e)),
            Err(mpsc::TryRecvError::Empty) => {
                app.files.import = Some((path, rx));
                ctx.request_repaint_after(Duration::from_millis(100));
            }
            Err(mpsc::TryRecvError::Disconnected) => {
                app.push(Intent::Notice("the import stopped".into()))
            }
        }
    }
}

/// Export progress for the status bar.
pub fn progress(app: &EventscopeApp) -> Option<String> {
    if let Some(j) = &app.files.export {
        return Some(format!(
            "exporting {}/{} to {}",
            j.next,
            j.end,
            j.path.display()
        ));
    }
    if let Some((p, _)) = &app.files.import {
        return Some(format!("reading {}", p.display()));
    }
    None
}

/// The path field; false when closed.
pub fn prompt_ui(app: &mut EventscopeApp, prompt: &mut PathPrompt, ctx: &egui::Context) -> bool {
    let mut keep = true;
    let title = match prompt.action {
        PathAction::Export => "Export session as JSONL",
        PathAction::Open => "Open a JSONL recording",
    };
    egui::Window::new(title).collapsible(false).show(ctx, |ui| {
        ui.label(&prompt.why);
        ui.add(
            egui::TextEdit::singleline(&mut prompt.path)
                .hint_text("/path/to/file.jsonl")
                .desired_width(420.0),
        );
        ui.horizontal(|ui| {
            let go = match prompt.action {
                PathAction::Export => "Export",
                PathAction::Open => "Open",
            };
            if ui
                .add_enabled(!prompt.path.trim().is_empty(), egui::Button::new(go))
                .clicked()
            {
                let path = PathBuf::from(prompt.path.trim());
                match prompt.action {
                    PathAction::Export => begin_export(app, path),
                    PathAction::Open => begin_import(app, path),
                }
                keep = false;
            }
            if ui.button("Cancel").clicked() {
                keep = false;
            }
        });
    });
    keep
}
