//! Export the observed records as JSON Lines and open recordings. Export opens a small
//! window first: the path, "Mask personal data" (on by default: the PII fields the inspector
//! masks are written masked) and, where a desktop portal exists, "Browse...". File dialogs
//! run on their own thread (rfd, xdg-portal); where none can be shown, the path field is
//! the way. Export writes a slice per frame; import parses on a thread and hands the
//! finished model over.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{EventscopeApp, Intent};
use crate::model::{jsonl, redact, Model, Recording};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAction {
    Export,
    Open,
}

/// A path entry: the export window, or the open window when no file dialog is available.
pub struct PathPrompt {
    pub action: PathAction,
    pub path: String,
    pub why: String,
    /// Export only: mask personal data.
    pub redact: bool,
}

/// Background file work the app polls each frame.
#[derive(Default)]
pub struct FileJobs {
    dialog: Option<(PathAction, bool, Instant, mpsc::Receiver<Option<PathBuf>>)>,
    export: Option<ExportJob>,
    import: Option<(PathBuf, mpsc::Receiver<Result<Recording, String>>)>,
}

struct ExportJob {
    path: PathBuf,
    /// Mask these PII fields (None: write the records as observed).
    redact: Option<Vec<String>>,
    out: BufWriter<std::fs::File>,
    next: usize,
    end: usize,
    /// Records written so far.
    written: usize,
    /// Records held whose bytes could not be read back from Kafka (memory limit), and the
    /// first reason: left out of the file and said so.
    unreadable: (usize, Option<String>),
}

fn portal_available() -> bool {
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
}

fn start_dialog(app: &mut EventscopeApp, action: PathAction, redact: bool) {
    if !portal_available() {
        app.path_prompt = Some(PathPrompt {
            action,
            path: default_path(action),
            why: "No file dialog can be shown here (no desktop portal on the session bus): type a path.".into(),
            redact,
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
        Ok(_) => app.files.dialog = Some((action, redact, Instant::now(), rx)),
        Err(e) => {
            app.path_prompt = Some(PathPrompt {
                action,
                path: default_path(action),
                why: format!("No file dialog: {e}"),
                redact,
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

/// The export window: path, masking (on), Browse... where a file dialog can be shown.
pub fn export(app: &mut EventscopeApp) {
    app.path_prompt = Some(PathPrompt {
        action: PathAction::Export,
        path: default_path(PathAction::Export),
        why: if portal_available() {
            "Type a path or browse.".into()
        } else {
            "No file dialog can be shown here (no desktop portal on the session bus): type a path."
                .into()
        },
        redact: true,
    });
}

pub fn open(app: &mut EventscopeApp) {
    start_dialog(app, PathAction::Open, false);
}

/// Start writing every record observed so far to `path`; with `redact`, the values of the
/// profile's PII fields masked as in the inspector.
pub fn begin_export(app: &mut EventscopeApp, path: PathBuf, redact: bool) {
    match std::fs::File::create(&path) {
        Ok(f) => {
            app.files.export = Some(ExportJob {
                path,
                redact: redact.then(|| app.pii_fields.clone()),
                out: BufWriter::new(f),
                next: app.model.log().first_held() as usize,
                end: app.model.log().len(),
                written: 0,
                unreadable: (0, None),
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
    if let Some((action, redact, started, rx)) = app.files.dialog.take() {
        match rx.try_recv() {
            Ok(Some(path)) => match action {
                PathAction::Export => begin_export(app, path, redact),
                PathAction::Open => begin_import(app, path),
            },
            Ok(None) if started.elapsed() < Duration::from_millis(300) => {
                app.path_prompt = Some(PathPrompt {
                    action,
                    path: default_path(action),
                    why: "The file dialog could not be shown: type a path.".into(),
                    redact,
                });
            }
            Ok(None) => {}
            Err(mpsc::TryRecvError::Empty) => {
                app.files.dialog = Some((action, redact, started, rx));
                ctx.request_repaint_after(Duration::from_millis(100));
            }
            Err(mpsc::TryRecvError::Disconnected) => {}
        }
    }
    if let Some(mut job) = app.files.export.take() {
        let t = Instant::now();
        let mut failed = None;
        // A record whose bytes are in Kafka (memory limit) is read back off the frame first;
        // the export goes on from it once they are here.
        let mut waiting = None;
        let log = app.model.log();
        while job.next < job.end && t.elapsed() < Duration::from_millis(8) {
            let idx = u32::try_from(job.next).ok();
            if let Some(i) = idx.filter(|&i| log.needs_read_back(i)) {
                waiting = Some(i);
                break;
            }
            let Some(rec) = idx.and_then(|i| log.record(i)) else {
                if let Some(why) = idx.and_then(|i| log.unreadable(i)) {
                    job.unreadable.0 += 1;
                    job.unreadable.1.get_or_insert(why);
                }
                job.next += 1;
                continue;
            };
            let rec = match &job.redact {
                Some(fields) => redact::redact_record(&rec, fields),
                None => rec,
            };
            let line = jsonl::to_line(&rec).map_err(|e| e.to_string());
            if let Err(e) = line.and_then(|l| writeln!(job.out, "{l}").map_err(|e| e.to_string())) {
                failed = Some(e);
                break;
            }
            job.next += 1;
            job.written += 1;
        }
        if let Some(i) = waiting {
            super::inspect::read_back_started(app, i, ctx);
        }
        if let Some(e) = failed {
            app.push(Intent::Notice(format!(
                "export to {} failed: {e}",
                job.path.display()
            )));
        } else if job.next >= job.end {
            match job.out.flush() {
                Ok(()) => app.push(Intent::Notice(format!(
                    "exported {} records to {}{}{}",
                    job.written,
                    job.path.display(),
                    if job.redact.is_some() {
                        " (personal data masked)"
                    } else {
                        ""
                    },
                    match &job.unreadable {
                        (0, _) => String::new(),
                        (n, why) => format!(
                            "; {n} records whose bytes were evicted to Kafka (memory limit) \
                             could not be read back and are left out: {}",
                            why.as_deref().unwrap_or("unknown")
                        ),
                    }
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
            Ok(Ok(rec)) => {
                app.load_recording(rec.model, path.display().to_string());
                if rec.bad_line_count > 0 {
                    let named: Vec<&str> = rec
                        .bad_lines
                        .iter()
                        .take(3)
                        .map(|b| b.reason.as_str())
                        .collect();
                    let more = rec.bad_line_count.saturating_sub(named.len());
                    app.push(Intent::Notice(format!(
                        "{}: {} bad line(s) left out: {}{}",
                        path.display(),
                        rec.bad_line_count,
                        named.join("; "),
                        if more > 0 {
                            format!("; and {more} more")
                        } else {
                            String::new()
                        }
                    )));
                }
            }
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
        let l = ui.label("path");
        ui.add(
            egui::TextEdit::singleline(&mut prompt.path)
                .hint_text("/path/to/file.jsonl")
                .desired_width(420.0),
        )
        .labelled_by(l.id);
        if prompt.action == PathAction::Export {
            ui.checkbox(&mut prompt.redact, "Mask personal data")
                .on_hover_text(format!(
                    "write the values of the PII fields ({}) as {}, as the inspector shows them",
                    app.pii_fields.join(", "),
                    redact::MASK
                ));
        }
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
                    PathAction::Export => begin_export(app, path, prompt.redact),
                    PathAction::Open => begin_import(app, path),
                }
                keep = false;
            }
            if prompt.action == PathAction::Export
                && portal_available()
                && ui.button("Browse...").clicked()
            {
                start_dialog(app, PathAction::Export, prompt.redact);
                keep = false;
            }
            if ui.button("Cancel").clicked() {
                keep = false;
            }
        });
    });
    keep
}
