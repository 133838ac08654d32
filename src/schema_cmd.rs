//! `eventscope schema check OLD.json NEW.json`: the code-level compatibility
//! check of a contract's new version against the previous one.

use anyhow::Context;
use eventscope_demo::contracts::{self, SchemaChange};

use crate::cli::{SchemaCheckArgs, SchemaCommand};

pub fn run(cmd: &SchemaCommand) -> anyhow::Result<i32> {
    match cmd {
        SchemaCommand::Check(args) => check(args),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(contracts::parse_schema(&path.display().to_string(), &text)?)
}

/// Print every change; 0 when compatible, 1 when a change breaks `mode`.
fn check(args: &SchemaCheckArgs) -> anyhow::Result<i32> {
    let (old, new) = (load(&args.old)?, load(&args.new)?);
    let changes = contracts::diff(&old, &new, args.mode)?;
    print!("{}", render(&changes, args));
    Ok(if changes.iter().any(|c| c.breaking) {
        1
    } else {
        0
    })
}

fn render(changes: &[SchemaChange], args: &SchemaCheckArgs) -> String {
    let mut out = String::new();
    for c in changes {
        out.push_str(&format!("{c}\n"));
    }
    let breaking = changes.iter().filter(|c| c.breaking).count();
    out.push_str(&match (changes.len(), breaking) {
        (0, _) => format!(
            "{} -> {}: no changes; {} compatible\n",
            args.old.display(),
            args.new.display(),
            args.mode
        ),
        (n, 0) => format!("{n} change(s), none breaking: {} compatible\n", args.mode),
        (n, b) => format!(
            "{n} change(s), {b} breaking: NOT {} compatible\n",
            args.mode
        ),
    });
    out
}
