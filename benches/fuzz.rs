//! The fuzz campaign: every target of `tests/fuzz/mod.rs` (envelope decoders, the model's
//! ingest, the JSONL importer, the profile TOML, the Kafka properties file, --json-paths,
//! --faults, the CDC relay's change reader, PII masking and URL redaction, the jq query
//! filter) with N mutated inputs each, on the stable toolchain.
//!
//! `cargo test --bench fuzz -- N [--seed S] [--targets a,b]` (dev profile, the tree most
//! often built here) or `cargo bench --bench fuzz -- N` (release). Prints per target the
//! inputs run, inputs/s, how many the target accepted, panics and broken properties, and the
//! slowest input; findings are written to target/fuzz-findings/. Exit 1 when anything was
//! found.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/fuzz/mod.rs"]
mod fuzz;

use std::io::Write;

fn main() {
    let mut count: u64 = 100_000;
    let mut seed: u64 = 1;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(seed),
            "--targets" => {
                only = args
                    .next()
                    .map(|s| s.split(',').map(str::to_owned).collect())
            }
            // cargo bench / cargo test pass their own flags.
            a if a.starts_with("--") => {}
            a => count = a.replace('_', "").parse().unwrap_or(count),
        }
    }
    fuzz::quiet_panics();
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
    let mut total_findings = 0;
    println!("fuzz: {count} inputs per target, seed {seed}");
    for t in fuzz::targets() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == t.name))
        {
            continue;
        }
        let s = fuzz::run_target(&t, count, seed);
        let secs = s.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<11} {:>10} inputs in {:>7.1} s = {:>8.0}/s, accepted {:>5.1}%, panics {}, broken properties {}, slowest {:.1} ms ({} bytes)",
            t.name,
            s.inputs,
            secs,
            s.inputs as f64 / secs,
            100.0 * s.accepted as f64 / s.inputs.max(1) as f64,
            s.panics,
            s.broken,
            s.slowest.as_secs_f64() * 1000.0,
            s.slowest_len,
        );
        for (i, (input, what)) in s.findings.iter().enumerate() {
            total_findings += 1;
            let _ = std::fs::create_dir_all(&out_dir);
            let path = out_dir.join(format!("{}-seed{seed}-{i}.bin", t.name));
            let _ = std::fs::write(&path, input);
            println!(
                "  FOUND {what}\n    input ({} bytes) in {}",
                input.len(),
                path.display()
            );
        }
        let _ = std::io::stdout().flush();
    }
    if total_findings > 0 {
        std::process::exit(1);
    }
}
