//! Small shared helpers for the views.

use egui::Color32;
use serde_json::Value;

use crate::model::log::{LogIndex, ObservedLog};

/// First 8 characters of an id, for dense columns.
pub fn short(s: &str) -> String {
    s.chars().take(8).collect()
}

pub fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "-".into())
}

const PALETTE: [Color32; 8] = [
    Color32::from_rgb(86, 156, 214),
    Color32::from_rgb(78, 201, 176),
    Color32::from_rgb(220, 180, 90),
    Color32::from_rgb(197, 134, 192),
    Color32::from_rgb(156, 220, 110),
    Color32::from_rgb(240, 140, 90),
    Color32::from_rgb(120, 170, 250),
    Color32::from_rgb(200, 200, 120),
];

/// A stable colour per name (service, aggregate).
pub fn color_for(name: &str) -> Color32 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    PALETTE[(h % PALETTE.len() as u64) as usize]
}

pub const ANOMALY: Color32 = Color32::from_rgb(235, 87, 87);
pub const DUPLICATE: Color32 = Color32::from_rgb(242, 153, 74);
pub const COMPENSATION: Color32 = Color32::from_rgb(235, 87, 87);

/// Compensating steps and failures by their type names (foreign systems name them alike).
pub fn is_compensation(event_type: &str) -> bool {
    [
        "Cancel",
        "Refund",
        "Restor",
        "Compensat",
        "Declined",
        "Rejected",
        "Failed",
        "Revert",
        "Undo",
    ]
    .iter()
    .any(|w| event_type.contains(w))
}

/// Replace the fields named like one of `fields` with a mask, recursively.
pub use crate::model::redact::mask_value as mask_pii_with;

/// Pretty JSON, personal data masked unless `reveal`.
pub fn pretty_with<S: AsRef<str>>(v: &Value, reveal: bool, pii_fields: &[S]) -> String {
    let v = if reveal {
        v.clone()
    } else {
        mask_pii_with(v, pii_fields)
    };
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The event type (or "poison") of a row.
pub fn type_of(log: &ObservedLog, idx: LogIndex) -> String {
    match log.meta(idx) {
        Some(m) => log.resolve_opt(m.event_type).unwrap_or("?").to_owned(),
        None => "poison".into(),
    }
}

/// The emitting service: the last path segment of the CloudEvents source.
pub fn service_of(log: &ObservedLog, idx: LogIndex) -> String {
    log.meta(idx)
        .and_then(|m| log.resolve_opt(m.source))
        .map(|s| s.rsplit('/').next().unwrap_or(s).to_owned())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensation_names() {
        assert!(is_compensation("RefundPayment"));
        assert!(is_compensation("StockRestored"));
        assert!(!is_compensation("OrderCreated"));
    }
}
