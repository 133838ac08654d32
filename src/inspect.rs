//! `eventscope inspect` and `eventscope import`: the observer on foreign topics
//! or on a recording, without the demo.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::cli::{Connection, ImportArgs, InspectArgs};
use crate::kafka::tap::{self, TapStatus, TopicSelection};
use crate::model::envelope::PlainJsonPaths;
use crate::model::{jsonl, redact, Model, ModelConfig, Recording};
use crate::profile::{self, Profile};

fn write_report(report: &serde_json::Value, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    match path {
        Some(p) => std::fs::write(p, text)
            .with_context(|| format!("writing the report to {}", p.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

/// What the memory limit dropped, for the summary line (empty when nothing).
fn dropped_note(model: &Model) -> String {
    let d = model.log().drop_stats();
    let evicted = if d.payloads_in_store > 0 {
        format!(
            " (payloads of {} records evicted to Kafka, read back on demand)",
            d.payloads_in_store
        )
    } else {
        String::new()
    };
    evicted
        + &match d.limit_bytes {
            Some(limit) if d.dropped_records > 0 => format!(
                " ({} oldest dropped: --memory-limit {} MiB, of which interned ids take {} MiB; \
                 their verdicts kept{})",
                d.dropped_records,
                limit >> 20,
                d.undroppable_bytes >> 20,
                if d.forgotten_ids > 0 {
                    format!(
                        "; {} ids only dropped records carried forgotten",
                        d.forgotten_ids
                    )
                } else {
                    String::new()
                }
            ),
            _ => String::new(),
        }
}

fn model_report(model: &Model, source: serde_json::Value) -> serde_json::Value {
    let f = model.report();
    json!({
        "events": f.events,
        "anomalies": f.anomalies,
        "anomaly_counts": f.anomaly_counts,
        "flow": f.flow,
        "memory": f.memory,
        "run": source,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub async fn inspect(conn: Connection, args: InspectArgs) -> anyhow::Result<i32> {
    if let Some(code) = bad_filter(args.filter.as_deref()) {
        return Ok(code);
    }
    let Some(settings) = conn.user_kafka()? else {
        anyhow::bail!("inspect needs --brokers HOST:PORT (the Kafka to observe)");
    };
    let brokers = settings.brokers.clone();
    let profile = Profile::for_connection(&conn)?;
    let mut cfg = profile.model_config();
    if let Some(paths) = &args.json_paths {
        cfg.decode.plain = paths
            .parse::<PlainJsonPaths>()
            .map_err(|e| anyhow::anyhow!("--json-paths: {e}"))?;
    }
    let registry = conn.registry_client()?.map(std::sync::Arc::new);
    if let Some(c) = &registry {
        cfg.decode.registry = c.handle();
    }
    let probe = settings.clone();
    let probe_settings = settings.clone();
    tokio::task::spawn_blocking(move || probe.probe(Duration::from_secs(5))).await??;
    let counts = {
        let s = settings.clone();
        tokio::task::spawn_blocking(move || s.partition_counts(Duration::from_secs(5))).await??
    };
    let wanted = if args.topics.is_empty() {
        profile.topics.clone()
    } else {
        args.topics.clone()
    };
    let topics: Vec<String> = if wanted.is_empty() {
        counts
            .keys()
            .filter(|t| !t.starts_with("__"))
            .cloned()
            .collect()
    } else {
        for t in &wanted {
            if !counts.contains_key(t) {
                anyhow::bail!("topic '{t}' does not exist on {brokers}");
            }
        }
        wanted
    };
    let topic_refs: Vec<String> = topics.clone();
    let highs = {
        let s = settings.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = topic_refs.iter().map(String::as_str).collect();
            s.high_watermarks(&refs, Duration::from_secs(5))
        })
        .await??
    };
    // The backlog is what exists now; its records are judged as of this moment.
    let backlog_cut_ms = now_ms();
    eprintln!(
        "inspecting {} topic(s) on {brokers}: {} records to read",
        topics.len(),
        highs.values().sum::<i64>()
    );
    let (records_tx, mut records_rx) = mpsc::channel::<tap::Batch>(64);
    let (status_tx, status_rx) = watch::channel(TapStatus::Connecting);
    let (stop_tx, stop_rx) = watch::channel(false);
    let tap = tokio::spawn(tap::run(
        settings,
        TopicSelection::Named(topics.clone()),
        records_tx,
        status_tx,
        stop_rx,
    ));
    // Confluent-framed records: their schemas fetched (once per id) before the model reads them.
    let recovered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(client) = registry.clone() {
        let flag = recovered.clone();
        let url = client.cache().url().to_owned();
        records_rx = crate::registry::stage(client, records_rx, 65_536, move |news| match news {
            crate::registry::RegistryNews::Unavailable(why) => eprintln!(
                "schema registry {url} does not answer ({why}); its records stay undecoded \
                 unless it answers before the end"
            ),
            crate::registry::RegistryNews::Recovered => {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    // Envelopes decoded on a thread of their own, a batch ahead of the model: decoding is
    // about half of a record's cost and needs nothing of the model (which, on 2 cores, was
    // the limit while the other core waited).
    let (mut decoded_rx, drop_aside) = tap::decode_ahead(records_rx, cfg.decode.clone());
    let mut model = Model::new(cfg);
    let mut export = match &args.export {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    // Consumer groups: named, else listed by the cluster; sampled every second meanwhile.
    let group_names = if args.groups.is_empty() {
        let s = probe_settings.clone();
        tokio::task::spawn_blocking(move || {
            crate::kafka::groups::discover(&s, Duration::from_secs(5))
        })
        .await?
        .unwrap_or_else(|e| {
            eprintln!("{e}; name the groups to judge with --group");
            Vec::new()
        })
    } else {
        args.groups.clone()
    };
    let (samples_tx, mut samples_rx) = mpsc::channel(64);
    let sampler = (!group_names.is_empty()).then(|| {
        let (s, names, topics) = (probe_settings.clone(), group_names.clone(), topics.clone());
        tokio::spawn(crate::kafka::groups::sample_every_second(
            s, names, topics, samples_tx,
        ))
    });
    let mut groups = crate::model::groups::GroupTracker::new(3, 60_000);
    let mut seen: HashMap<(String, i32), i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut reached_end_at: Option<Instant> = None;
    loop {
        let caught_up = highs
            .iter()
            .all(|(tp, h)| seen.get(tp).copied().unwrap_or(0) >= *h);
        if caught_up && reached_end_at.is_none() {
            reached_end_at = Some(Instant::now());
            // Everything that existed at connect time has been read: "never seen" verdicts now.
            model.end_of_backlog(backlog_cut_ms);
        }
        if let Some(t) = reached_end_at {
            if t.elapsed() >= Duration::from_secs(args.settle) {
                break;
            }
        }
        if Instant::now() > deadline {
            eprintln!(
                "timed out before reaching the end of every partition; reporting what was read"
            );
            break;
        }
        if let TapStatus::Error { reason } = &*status_rx.borrow() {
            eprintln!("tap: {reason}");
        }
        while let Ok(batch) = samples_rx.try_recv() {
            for s in &batch {
                groups.record(s);
            }
        }
        match tokio::time::timeout(Duration::from_millis(200), decoded_rx.recv()).await {
            Ok(Some((batch, decoded))) => {
                let now = now_ms();
                for (r, d) in batch.iter().zip(&decoded) {
                    if let Some(w) = &mut export {
                        let line = if args.redact {
                            jsonl::to_line(&redact::redact_record(r, &profile.pii_fields))?
                        } else {
                            jsonl::to_line(r)?
                        };
                        writeln!(w, "{line}")?;
                    }
                    model.ingest_decoded(r, d, now)?;
                }
                for (tp, next) in tap::positions(batch.iter()) {
                    let e = seen.entry(tp).or_insert(0);
                    *e = (*e).max(next);
                }
                // Freed on the decoding thread's side, not on the model's.
                drop_aside.send((batch, decoded));
            }
            Ok(None) => break,
            // The live tail (after the backlog) is judged by the wall clock.
            Err(_) if reached_end_at.is_some() => {
                model.tick(now_ms());
            }
            Err(_) => {}
        }
    }
    if reached_end_at.is_some() {
        model.tick(now_ms());
    }
    let _ = stop_tx.send(true);
    let _ = tap.await;
    if let Some(task) = sampler {
        task.abort();
        while let Ok(batch) = samples_rx.try_recv() {
            for s in &batch {
                groups.record(s);
            }
        }
    }
    if recovered.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("the schema registry answers again: reading the records again");
        match model.reread(model.config().clone()) {
            Ok(again) => model = again,
            Err(e) => {
                eprintln!("reading the records again failed ({e}); reporting them as first decoded")
            }
        }
    }
    if let Some(mut w) = export {
        w.flush()?;
    }
    let verdicts = groups.verdicts(model.log(), now_ms());
    model.observe_groups(&verdicts);
    let mut report = model_report(&model, json!({"brokers": brokers, "topics": topics}));
    report["consumer_groups"] = json!(verdicts);
    add_filter(&mut report, &model, args.filter.as_deref());
    if args.redact {
        redact_filter_records(&mut report, &profile.pii_fields);
    }
    if args.print_profile {
        let mut effective = profile.clone();
        effective.topics = topics.clone();
        effective.json_paths = model.config().decode.plain.clone();
        print!("{}{}", effective.to_toml(), profile::suggestions(&model));
        if let Some(p) = args.report.as_deref() {
            write_report(&report, Some(p))?;
        }
    } else {
        write_report(&report, args.report.as_deref())?;
    }
    eprintln!(
        "{} records{}, anomalies {}",
        model.log().len(),
        dropped_note(&model),
        report["anomaly_counts"]
    );
    Ok(0)
}

pub fn load(path: &std::path::Path) -> anyhow::Result<Model> {
    load_with(path, ModelConfig::default())
}

/// Rebuild a recording with these settings (e.g. a profile's). A recording is all backlog:
/// its verdicts are given as of its last record's time, never by today's clock.
/// Lines that cannot be read are left out and named on stderr.
pub fn load_with(path: &std::path::Path, cfg: ModelConfig) -> anyhow::Result<Model> {
    let rec = read_recording(path, cfg)?;
    say_bad_lines(path, &rec);
    Ok(rec.model)
}

/// A recording for a command line: read with the profile's settings, its Confluent-framed
/// records decoded through `--schema-registry` when one is given.
pub fn load_for(conn: &Connection, path: &std::path::Path) -> anyhow::Result<Model> {
    let model = load_with(path, Profile::for_connection(conn)?.model_config())?;
    decode_through_registry(model, conn)
}

/// Fetch the schemas that a model's framed records name (once per id), then read the
/// records again, decoded. Without a registry the model is returned as it is.
pub fn decode_through_registry(model: Model, conn: &Connection) -> anyhow::Result<Model> {
    let Some(client) = conn.registry_client()? else {
        return Ok(model);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        for rec in model.records() {
            client.prepare(&rec).await;
        }
    });
    if let Some(why) = client.cache().unavailable() {
        eprintln!(
            "schema registry {} does not answer ({why}); its records stay undecoded",
            client.cache().url()
        );
    }
    let mut cfg = model.config().clone();
    cfg.decode.registry = client.handle();
    Ok(model.reread(cfg)?)
}

/// Every good line of a recording, and the bad ones named.
pub fn read_recording(path: &std::path::Path, cfg: ModelConfig) -> anyhow::Result<Recording> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Model::from_jsonl(cfg, std::io::BufReader::new(f), 0)
        .with_context(|| format!("reading {}", path.display()))
}

/// Bad lines named on stderr, one per line (the first 20; the report has more).
fn say_bad_lines(path: &std::path::Path, rec: &Recording) {
    if rec.bad_line_count == 0 {
        return;
    }
    eprintln!(
        "{}: {} line(s) could not be read and were left out:",
        path.display(),
        rec.bad_line_count
    );
    for b in rec.bad_lines.iter().take(20) {
        eprintln!("  {}", b.reason);
    }
    if rec.bad_line_count > 20 {
        eprintln!("  ... and {} more", rec.bad_line_count - 20);
    }
}

/// `--redact`: the PII values of the report's filter records masked (their values are
/// JSONL byte fields: `{"json": …}` or `{"utf8": "…"}`).
fn redact_filter_records(report: &mut serde_json::Value, pii_fields: &[String]) {
    let Some(records) = report
        .pointer_mut("/filter/records")
        .and_then(|r| r.as_array_mut())
    else {
        return;
    };
    for value in records.iter_mut().filter_map(|r| r.get_mut("value")) {
        if let Some(j) = value.get_mut("json") {
            *j = redact::mask_value(j, pii_fields);
        } else if let Some(serde_json::Value::String(t)) = value.get_mut("utf8") {
            *t = redact::mask_json_text(t, pii_fields).into_owned();
        }
    }
}

/// A `--filter` that is not a query: its message on stderr, exit code 2.
fn bad_filter(expr: Option<&str>) -> Option<i32> {
    let e = crate::query::Query::parse(expr?).err()?;
    eprintln!("eventscope: --filter: {e}");
    Some(2)
}

/// With `--filter`, the report lists the matching records.
fn add_filter(report: &mut serde_json::Value, model: &Model, expr: Option<&str>) {
    let Some((expr, query)) = expr.and_then(|e| Some((e, crate::query::Query::parse(e).ok()?)))
    else {
        return;
    };
    let section = crate::query::report_section(model.log(), &query, expr);
    eprintln!(
        "filter matched {} of {} records",
        section["matched"], section["observed"]
    );
    if let Some(why) = section["unreadable_reason"].as_str() {
        eprintln!(
            "filter: {} records evicted to Kafka could not be read back, not judged: {why}",
            section["unreadable"]
        );
    }
    report["filter"] = section;
}

pub fn import(conn: &Connection, args: &ImportArgs) -> anyhow::Result<i32> {
    if let Some(code) = bad_filter(args.filter.as_deref()) {
        return Ok(code);
    }
    let profile = Profile::for_connection(conn)?;
    let rec = read_recording(&args.file, profile.model_config())?;
    say_bad_lines(&args.file, &rec);
    let model = decode_through_registry(rec.model, conn)?;
    let mut report = model_report(&model, json!({"file": args.file.display().to_string()}));
    report["bad_lines"] = json!({"count": rec.bad_line_count, "lines": rec.bad_lines});
    add_filter(&mut report, &model, args.filter.as_deref());
    write_report(&report, args.report.as_deref())?;
    eprintln!(
        "{} records{}, anomalies {}",
        model.log().len(),
        dropped_note(&model),
        report["anomaly_counts"]
    );
    Ok(0)
}
