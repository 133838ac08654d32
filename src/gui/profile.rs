//! The profile dialog: the observed system's profile as TOML, edited and applied (the model is
//! rebuilt from the records already read) and remembered per connection in the preferences.

use super::Intent;
use crate::profile::Profile;

/// The open dialog's own state.
pub struct ProfileDialog {
    /// The profile being edited, as TOML.
    pub text: String,
    /// Why the last Apply was refused.
    pub error: Option<String>,
}

impl ProfileDialog {
    pub fn new(profile: &Profile) -> Self {
        ProfileDialog {
            text: profile.to_toml(),
            error: None,
        }
    }

    /// Draw; false when closed. Apply asks for [`Intent::ApplyProfile`].
    pub fn ui(&mut self, ctx: &egui::Context, intents: &mut Vec<Intent>) -> bool {
        let mut open = true;
        let mut close = false;
        egui::Window::new("Profile of the observed system")
            .open(&mut open)
            .collapsible(false)
            .default_width(520.0)
            .show(ctx, |ui| {
                ui.label(
                    "Command topics (globs), terminal event types and flows, the stuck timeout, \
                     JSON paths, PII fields, trace link, topics. Applying re-reads the records \
                     already observed; the profile is remembered for this connection.",
                );
                let l = ui.label("Profile (TOML)");
                egui::ScrollArea::vertical()
                    .max_height(420.0)
                    .show(ui, |ui| {
                        ui.add(
                            egui::TextEdit::multiline(&mut self.text)
                                .code_editor()
                                .desired_rows(18)
                                .desired_width(f32::INFINITY),
                        )
                        .labelled_by(l.id);
                    });
                if let Some(e) = &self.error {
                    ui.colored_label(super::widgets::ANOMALY, e);
                }
                ui.horizontal(|ui| {
                    if ui.button("Apply profile").clicked() {
                        intents.push(Intent::ApplyProfile(self.text.clone()));
                    }
                    if ui.button("Defaults").clicked() {
                        self.text = Profile::default().to_toml();
                    }
                    if ui.button("Close").clicked() {
                        close = true;
                    }
                });
            });
        open && !close
    }
}
