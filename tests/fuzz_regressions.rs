//! Fuzz findings kept as regression tests, and a short fuzz smoke run of every target (the
//! long campaign is `benches/fuzz.rs`; README "Fuzzing").
//!
//! Inputs that once broke a target live in `tests/fuzz/regressions/<target>-<name>.bin`;
//! each must now run through its target without a panic or a broken property.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fuzz;

/// Inputs per target in the smoke run (divided by the target's cost).
const SMOKE: u64 = 20_000;

#[test]
fn every_kept_finding_now_passes() {
    fuzz::quiet_panics();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    let targets = fuzz::targets();
    let mut ran = 0;
    let mut failed = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/fuzz/regressions") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let Some(t) = targets
            .iter()
            .find(|t| name.starts_with(&format!("{}-", t.name)))
        else {
            continue;
        };
        let input = std::fs::read(&path).expect("read");
        ran += 1;
        if let Err((_, what)) = fuzz::run_one(t, &input) {
            failed.push(format!("{name}: {what}"));
        }
    }
    assert!(ran > 0, "no kept findings found in {}", dir.display());
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn a_short_fuzz_run_finds_nothing() {
    fuzz::quiet_panics();
    let mut found = Vec::new();
    for t in fuzz::targets() {
        let stats = fuzz::run_target(&t, SMOKE / t.cost as u64, 2026);
        assert!(stats.inputs > 0);
        for (input, what) in stats.findings {
            found.push(format!(
                "{}: {what}\n  input: {:?}",
                t.name,
                String::from_utf8_lossy(&input)
            ));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
