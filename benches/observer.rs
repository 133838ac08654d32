//! Observer benchmarks that print figures (not timed tests).
//!
//! a. decode + index rate of CloudEvents binary-mode records;
//! b. against kcat: reading the same records back from the embedded broker;
//! c. process memory after the records are ingested;
//! d. time travel: state at a cursor (snapshots) against a full replay;
//! a''. the same records with Avro values in the Confluent wire format (schemas cached),
//!    decoded and indexed beside their JSON twins;
//! e. scaling: ingest CPU and RSS at 100k, 1M and 3M records, one process per size (long:
//!    only with `EVENTSCOPE_BENCH_ONLY=scaling`; sizes in `EVENTSCOPE_BENCH_SCALES`).
//!
//! `cargo bench --bench observer`; `EVENTSCOPE_BENCH_N=20000 cargo bench --bench observer`
//! for a quick smoke run; `EVENTSCOPE_BENCH_ONLY=order-fold` (or `ingest`, `decode`,
//! `time-travel`, `kcat`, `avro`; comma-separated) runs only those parts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    children_cpu, mib, percentiles_ms, process_cpu, rss_kib, secs, thread_cpu, Gen, HOT_ACCOUNT,
};
use eventscope::folds::{fold_for, OrderFold};
use eventscope::kafka::broker::EmbeddedBroker;
use eventscope::kafka::tap::{self, TapStatus, TopicSelection};
use eventscope::model::envelope::{decode_envelope, DecodeConfig};
use eventscope::model::log::{LogIndex, ObservedLog};
use eventscope::model::record::Record;
use eventscope::model::timetravel::{self, Fold};
use eventscope::model::Model;
use eventscope_demo::kafka::{BrokerControl, KafkaSettings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::{mpsc, watch};

const BATCH: usize = 10_000;
/// 1.5 GB, in MiB (10^9 bytes; 1.5 GiB would be 1536 MiB).
const RSS_BUDGET_MIB: f64 = 1.5e9 / (1024.0 * 1024.0);

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / secs(d)
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / secs(d)
}

fn main() {
    let n = common::scale();
    println!("eventscope observer benchmarks, {n} records (EVENTSCOPE_BENCH_N scales this)");
    println!(
        "records: CloudEvents 1.0 binary mode, demo-shaped sagas (9 records on 8 topics, 3 partitions each),"
    );
    println!(
        "  headers ce_specversion ce_id ce_type ce_source ce_time ce_subject content-type ce_correlationid"
    );
    println!(
        "  ce_causationid ce_aggregateversion (events) ce_traceparent; key = aggregate id; JSON value 470-530 B"
    );
    println!("machine: {} (at the start)", common::load());
    let mut summary: Vec<String> = Vec::new();

    let only = std::env::var("EVENTSCOPE_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    if run("ingest") {
        let (a_lines, model) = bench_ingest(n);
        summary.extend(a_lines);
        summary.extend(bench_memory(&model));
    }
    if run("decode") {
        summary.extend(bench_decode_index(n));
    }

    if run("avro") {
        summary.extend(bench_avro(n));
    }
    if run("time-travel") {
        summary.extend(bench_time_travel(n));
    }
    if run("order-fold") {
        summary.extend(bench_order_fold(n));
    }
    if run("kcat") {
        summary.extend(bench_kcat(n));
    }
    // Long: only when named. Each size runs in a process of its own (`scale-one`).
    if only.split(',').any(|p| p.trim() == "scaling") {
        summary.extend(bench_scaling());
    }
    if only.split(',').any(|p| p.trim() == "scale-one") {
        scale_one(n);
        return;
    }

    println!();
    println!("==== summary ====");
    println!("command: {}", common::command("observer"));
    println!("machine: {} (at the end)", common::load());
    for l in &summary {
        println!("{l}");
    }
}

// ---------------------------------------------------------------- a. ingest

/// Model::ingest (decode + index + the seven lints) of `n` records; generation not timed.
fn bench_ingest(n: usize) -> (Vec<String>, Model) {
    println!();
    println!("== a. decode + index + lints (Model::ingest) ==");
    let (rss0, _) = rss_kib();
    let mut gen = Gen::new();
    let mut model = Model::default();
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let mut spent = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    let mut bytes = 0u64;
    let mut left = n;
    let mut now = 0i64;
    while left > 0 {
        batch.clear();
        batch.extend(gen.by_ref().take(left.min(BATCH)));
        bytes += batch.iter().map(|r| r.approx_size() as u64).sum::<u64>();
        let (t, c) = (Instant::now(), thread_cpu());
        for r in &batch {
            now = r.timestamp_ms.unwrap_or(now);
            model.ingest(r, now).expect("ingest");
        }
        model.tick(now);
        spent += t.elapsed();
        cpu += thread_cpu() - c;
        left -= batch.len();
    }
    drop(batch);
    let stats = model.log().stats();
    let anomalies: u64 = model.anomaly_counts().values().sum();
    println!(
        "ingested {} records ({} unique, {} poison), {:.1} MB of key+headers+value, avg {:.0} B/record",
        stats.observed,
        stats.unique,
        stats.poison,
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );
    println!("anomalies raised: {anomalies} (the synthetic sagas are clean)");
    let line = format!(
        "a. Model::ingest (decode+index+lints): {n} records in {:.2} s = {:.0} records/s, {:.1} MB/s (thread CPU {:.2} s = {:.0} records per CPU-s)",
        secs(spent),
        rate(n, spent),
        mb_s(bytes, spent),
        secs(cpu),
        rate(n, cpu)
    );
    println!("{line}");
    let (rss1, _) = rss_kib();
    println!(
        "(RSS grew {:.0} MiB during this step)",
        mib(rss1.saturating_sub(rss0))
    );
    // What the schema-drift lint costs: the same records with and without it, three runs
    // each, interleaved (the first run of a process pays for fresh pages), best of each.
    let m = n.min(200_000);
    let (mut with, mut without) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        without = without.min(ingest_cpu(
            m,
            Some(eventscope::model::detect::AnomalyKind::SchemaDrift),
        ));
        with = with.min(ingest_cpu(m, None));
    }
    let drift = format!(
        "a-. schema-drift's share: {m} records, {:.0} records per CPU-s with every lint, {:.0} without schema-drift ({:+.1}% CPU with it; best of 3 interleaved runs)",
        rate(m, with),
        rate(m, without),
        (secs(with) / secs(without).max(1e-9) - 1.0) * 100.0
    );
    println!("{drift}");
    (vec![line, drift], model)
}

/// Thread CPU to ingest `n` generated records, with one lint switched off.
fn ingest_cpu(n: usize, off: Option<eventscope::model::detect::AnomalyKind>) -> Duration {
    let mut model = Model::default();
    if let Some(k) = off {
        model.detectors_mut().set_enabled(k, false);
    }
    let records: Vec<Record> = Gen::new().take(n).collect();
    let c = thread_cpu();
    for r in &records {
        model
            .ingest(r, r.timestamp_ms.unwrap_or(0))
            .expect("ingest");
    }
    thread_cpu() - c
}

/// Envelope decode alone, then ObservedLog::append (decode + index, no lints).
fn bench_decode_index(n: usize) -> Vec<String> {
    println!();
    println!("== a'. decode only (envelope::decode_envelope) and decode + index (ObservedLog::append, no lints) ==");
    let cfg = DecodeConfig::default();
    let mut gen = Gen::new();
    let mut log = ObservedLog::new(cfg.clone());
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let (mut t_decode, mut t_append) = (Duration::ZERO, Duration::ZERO);
    let (mut c_decode, mut c_append) = (Duration::ZERO, Duration::ZERO);
    let mut bytes = 0u64;
    let mut ok = 0usize;
    let mut left = n;
    while left > 0 {
        batch.clear();
        batch.extend(gen.by_ref().take(left.min(BATCH)));
        bytes += batch.iter().map(|r| r.approx_size() as u64).sum::<u64>();
        let (t, c) = (Instant::now(), thread_cpu());
        for r in &batch {
            ok += usize::from(std::hint::black_box(decode_envelope(r, &cfg)).is_ok());
        }
        t_decode += t.elapsed();
        c_decode += thread_cpu() - c;
        let (t, c) = (Instant::now(), thread_cpu());
        for r in &batch {
            let now = r.timestamp_ms.unwrap_or(0);
            log.append(r, now).expect("append");
        }
        t_append += t.elapsed();
        c_append += thread_cpu() - c;
        left -= batch.len();
    }
    assert_eq!(ok, n, "every record decodes");
    let l1 = format!(
        "a. decode_envelope only: {:.0} records/s, {:.1} MB/s ({:.0} records per CPU-s)",
        rate(n, t_decode),
        mb_s(bytes, t_decode),
        rate(n, c_decode)
    );
    let l2 = format!(
        "a. ObservedLog::append (decode+index, no lints): {:.0} records/s, {:.1} MB/s ({:.0} records per CPU-s)",
        rate(n, t_append),
        mb_s(bytes, t_append),
        rate(n, c_append)
    );
    println!("{l1}");
    println!("{l2}");
    vec![l1, l2]
}

// ---------------------------------------------------------------- a''. Avro

/// An Avro schema for one JSON value: objects as records (named by a counter), integers as
/// longs, other numbers as doubles, arrays by their first element. Values of one event type
/// whose shapes differ get different schemas, as producers with several versions do.
fn avro_schema_of(v: &serde_json::Value, names: &mut usize) -> serde_json::Value {
    use serde_json::{json, Value};
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("boolean"),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!("long"),
        Value::Number(_) => json!("double"),
        Value::String(_) => json!("string"),
        Value::Array(items) => json!({
            "type": "array",
            "items": items.first().map_or(json!("string"), |f| avro_schema_of(f, names)),
        }),
        Value::Object(map) => {
            *names += 1;
            let name = format!("R{names}");
            let fields: Vec<Value> = map
                .iter()
                .map(|(k, c)| json!({"name": k, "type": avro_schema_of(c, names)}))
                .collect();
            json!({"type": "record", "name": name, "namespace": "bench", "fields": fields})
        }
    }
}

/// The records of [`Gen`] with Avro values: `0`, the schema id, the datum. The schemas go
/// into `cache` as a registry would have served them (one per distinct shape).
fn avro_twins(records: &[Record], cache: &eventscope::registry::SchemaCache) -> Vec<Record> {
    let mut ids: std::collections::HashMap<String, (u32, apache_avro::Schema)> =
        std::collections::HashMap::new();
    records
        .iter()
        .map(|r| {
            let json: serde_json::Value =
                serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            let text = avro_schema_of(&json, &mut 0).to_string();
            let next = ids.len() as u32 + 1;
            let (id, schema) = ids.entry(text.clone()).or_insert_with(|| {
                cache.insert(next, None, &text).expect("an Avro schema");
                (next, apache_avro::Schema::parse_str(&text).unwrap())
            });
            let datum = apache_avro::to_value(&json)
                .and_then(|v| v.resolve(schema))
                .and_then(|v| apache_avro::to_avro_datum(schema, v))
                .expect("the value in Avro");
            let mut value = vec![0];
            value.extend(id.to_be_bytes());
            value.extend(datum);
            let mut twin = r.clone();
            twin.value = Some(value);
            twin.headers.set("content-type", Some(b"application/avro"));
            twin
        })
        .collect()
}

/// Decode and index rate of Avro-framed values (schemas cached, as after the first record
/// of each id) beside the same records in JSON; the target is Avro >= JSON.
fn bench_avro(n: usize) -> Vec<String> {
    println!();
    println!(
        "== a''. Avro in the Confluent wire format (cached schemas) vs the same records in JSON =="
    );
    let cache = Arc::new(eventscope::registry::SchemaCache::new(
        "http://bench.invalid",
    ));
    let avro_cfg = DecodeConfig {
        registry: eventscope::registry::RegistryHandle(Some(cache.clone())),
        ..DecodeConfig::default()
    };
    let json_cfg = DecodeConfig::default();
    let mut gen = Gen::new();
    let mut left = n;
    let (mut json_bytes, mut avro_bytes) = (0u64, 0u64);
    let mut cpu = [Duration::ZERO; 4];
    let (mut json_log, mut avro_log) = (
        ObservedLog::new(json_cfg.clone()),
        ObservedLog::new(avro_cfg.clone()),
    );
    while left > 0 {
        let json: Vec<Record> = gen.by_ref().take(left.min(BATCH)).collect();
        let avro = avro_twins(&json, &cache);
        let value_bytes = |b: &[Record]| {
            b.iter()
                .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                .sum::<u64>()
        };
        json_bytes += value_bytes(&json);
        avro_bytes += value_bytes(&avro);
        for (i, (batch, cfg)) in [(&json, &json_cfg), (&avro, &avro_cfg)]
            .into_iter()
            .enumerate()
        {
            let c = thread_cpu();
            for r in batch {
                let ev = decode_envelope(r, cfg).expect("decodes");
                std::hint::black_box(ev);
            }
            cpu[i] += thread_cpu() - c;
        }
        for (i, (batch, log)) in [(&json, &mut json_log), (&avro, &mut avro_log)]
            .into_iter()
            .enumerate()
        {
            let c = thread_cpu();
            for r in batch {
                log.append(r, r.timestamp_ms.unwrap_or(0)).expect("append");
            }
            cpu[2 + i] += thread_cpu() - c;
        }
        left -= json.len();
    }
    assert_eq!(avro_log.stats().poison, 0, "every Avro record decodes");
    let (schemas, _) = cache.counts();
    println!(
        "{n} records, {schemas} Avro schemas; values on average: JSON {:.0} B, Avro {:.0} B",
        json_bytes as f64 / n as f64,
        avro_bytes as f64 / n as f64,
    );
    let line = |what: &str, j: Duration, a: Duration| {
        format!(
            "a''. {what}: Avro {:.0} records per CPU-s vs JSON {:.0}: Avro/JSON = {:.2}x (target >= 1.0)",
            rate(n, a),
            rate(n, j),
            secs(j) / secs(a)
        )
    };
    let l1 = line("decode_envelope", cpu[0], cpu[1]);
    let l2 = line("ObservedLog::append (decode+index)", cpu[2], cpu[3]);
    println!("{l1}");
    println!("{l2}");
    vec![l1, l2]
}

// ---------------------------------------------------------------- e. scaling

/// One size of the scaling run: ingest `n` records into a fresh model (generated in batches
/// of 10 000, so the generator holds little) and print the CPU, wall time and RSS growth.
fn scale_one(n: usize) {
    let (rss0, _) = rss_kib();
    let mut gen = Gen::new();
    // `EVENTSCOPE_BENCH_MEMORY_LIMIT=256MiB`: the model under `--memory-limit`.
    let limit = std::env::var("EVENTSCOPE_BENCH_MEMORY_LIMIT")
        .ok()
        .and_then(|s| match eventscope::cli::parse_memory_limit(&s) {
            Ok(eventscope::cli::MemoryLimit::Bytes(b)) => Some(b),
            _ => None,
        });
    // `EVENTSCOPE_BENCH_PAYLOADS=kafka`: the log as on a broker that keeps its log, where the
    // limit evicts payloads first and keeps rows and indexes (the index-only footprint). The
    // generator cannot serve reads back: none happen during ingest, and the store says so.
    let in_kafka = std::env::var("EVENTSCOPE_BENCH_PAYLOADS").is_ok_and(|v| v == "kafka");
    let record_store = if in_kafka {
        eventscope::model::store::RecordStoreHandle::new(NoReadBack)
    } else {
        Default::default()
    };
    // The index-only mode: no payload kept beyond the chunk being filled.
    let payload_budget = in_kafka.then_some(0);
    let mut model = Model::new(eventscope::model::ModelConfig {
        memory_limit: limit,
        record_store,
        payload_budget,
        ..Default::default()
    });
    let mut left = n;
    let (mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO);
    while left > 0 {
        let batch: Vec<Record> = gen.by_ref().take(left.min(BATCH)).collect();
        let (t, c) = (Instant::now(), thread_cpu());
        let mut now = 0;
        for r in &batch {
            now = r.timestamp_ms.unwrap_or(now);
            model.ingest(r, now).expect("ingest");
        }
        model.tick(now);
        cpu += thread_cpu() - c;
        wall += t.elapsed();
        left -= batch.len();
    }
    let (rss1, hwm) = rss_kib();
    if in_kafka {
        let d = model.log().drop_stats();
        let parts: Vec<String> = model
            .log()
            .memory_parts()
            .iter()
            .map(|(what, b)| format!("{what} {:.1}", mib(*b as u64 / 1024)))
            .collect();
        eprintln!(
            "e. {n:>9} records, payloads in Kafka (index-only): {} held, {} with their payload evicted; log estimate by part (MiB): {}",
            d.held_records,
            d.payloads_in_store,
            parts.join(", ")
        );
    }
    if let Some(limit) = limit {
        let d = model.log().drop_stats();
        eprintln!(
            "e. {n:>9} records under --memory-limit {:.0} MiB: {} dropped, {} held ({} with their payload in Kafka), {} ids forgotten, log estimate {:.0} MiB",
            mib(limit / 1024),
            d.dropped_records,
            d.held_records,
            d.payloads_in_store,
            d.forgotten_ids,
            mib(model.log().approx_bytes() as u64 / 1024)
        );
        let parts: Vec<String> = model
            .log()
            .memory_parts()
            .iter()
            .map(|(what, b)| format!("{what} {:.1}", mib(*b as u64 / 1024)))
            .collect();
        eprintln!("   log estimate by part (MiB): {}", parts.join(", "));
    }
    println!(
        "SCALE {n} {:.3} {:.3} {:.1} {:.1} {}",
        secs(cpu),
        secs(wall),
        mib(rss1.saturating_sub(rss0)),
        mib(hwm),
        model.log().len()
    );
}

/// The scaling run's record store: Kafka's place, without Kafka (nothing is read back while
/// records are ingested; a read says it cannot).
struct NoReadBack;

impl eventscope::model::store::RecordStore for NoReadBack {
    fn fetch(&self, _: &[eventscope::model::store::OffsetRange]) -> Result<Vec<Record>, String> {
        Err("the scaling bench keeps no payloads to read back".into())
    }
    fn describe(&self) -> String {
        "no store (bench)".into()
    }
}

/// How ingest time and memory grow: 100k, 1M and 3M records (`EVENTSCOPE_BENCH_SCALES`),
/// each in a fresh process, so that one size's memory does not flatter the next.
fn bench_scaling() -> Vec<String> {
    println!();
    println!("== e. scaling: Model::ingest and RSS at each size, one process per size ==");
    let sizes: Vec<usize> = std::env::var("EVENTSCOPE_BENCH_SCALES")
        .unwrap_or_else(|_| "100000,1000000,3000000".into())
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect();
    let exe = std::env::current_exe().expect("the bench binary");
    let mut rows = Vec::new();
    for &n in &sizes {
        let out = Command::new(&exe)
            .env("EVENTSCOPE_BENCH_ONLY", "scale-one")
            .env("EVENTSCOPE_BENCH_N", n.to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run one size");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find(|l| l.starts_with("SCALE ")) else {
            println!("{n}: no figure ({})", out.status);
            continue;
        };
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [_, cpu, wall, rss, hwm, _] = f[..] {
            let l = format!(
                "e. {n:>9} records: ingest CPU {cpu:.2} s ({:.2} µs/record), wall {wall:.2} s, RSS grew {rss:.0} MiB ({:.0} MiB per 1M), peak {hwm:.0} MiB",
                cpu * 1e6 / n as f64,
                rss * 1e6 / n as f64
            );
            println!("{l}");
            rows.push((n, cpu, rss, l));
        }
    }
    let mut lines: Vec<String> = rows.iter().map(|r| r.3.clone()).collect();
    if let (Some(a), Some(b)) = (rows.first(), rows.last()) {
        if b.0 > a.0 {
            let per = |r: &(usize, f64, f64, String)| (r.1 / r.0 as f64, r.2 / r.0 as f64);
            let ((ca, ma), (cb, mb)) = (per(a), per(b));
            let l = format!(
                "e. from {} to {} records: CPU per record x{:.2}, RSS per record x{:.2} (1.00 = linear)",
                a.0,
                b.0,
                cb / ca,
                mb / ma
            );
            println!("{l}");
            lines.push(l);
        }
    }
    lines
}

// ---------------------------------------------------------------- c. memory

fn bench_memory(model: &Model) -> Vec<String> {
    println!();
    println!("== c. memory after ingest ==");
    let (rss, hwm) = rss_kib();
    let approx = model.log().approx_bytes() as f64 / (1024.0 * 1024.0);
    println!(
        "model holds {} records; ObservedLog::approx_bytes (arena + rows, no indexes) = {approx:.0} MiB",
        model.log().len()
    );
    let verdict = |v: f64| {
        if v <= RSS_BUDGET_MIB {
            "within"
        } else {
            "OVER"
        }
    };
    let line = format!(
        "c. after {} records: VmRSS {:.0} MiB, VmHWM {:.0} MiB; budget 1.5 GB = {:.0} MiB: RSS {}, peak {}",
        model.log().len(),
        mib(rss),
        mib(hwm),
        RSS_BUDGET_MIB,
        verdict(mib(rss)),
        verdict(mib(hwm))
    );
    println!("{line}");
    vec![line]
}

// ---------------------------------------------------------------- d. time travel

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn bench_time_travel(n: usize) -> Vec<String> {
    println!();
    println!("== d. time travel: state at a cursor vs full replay ==");
    let gen = Gen::new().with_hot_account(10);
    let t = Instant::now();
    let mut model = common::build_model(gen, n);
    println!(
        "built a {}-record model with one hot aggregate ({HOT_ACCOUNT}, every 10th record) in {:.1} s",
        model.log().len(),
        secs(t.elapsed())
    );
    let fold = fold_for(model.log(), HOT_ACCOUNT);
    let list: Vec<LogIndex> = model.log().aggregate(HOT_ACCOUNT).to_vec();
    let events = list.len();
    let cursor = *list.last().expect("hot aggregate has events");
    println!(
        "aggregate {HOT_ACCOUNT}: {events} events, fold `{}`, snapshot every {} events, cursor at log index {cursor} (its last event)",
        fold.name(),
        model.config().snapshot_every
    );

    let mut replays = Vec::new();
    let mut reference = None;
    for _ in 0..3 {
        let t = Instant::now();
        let s = timetravel::replay(model.log(), fold, HOT_ACCOUNT, cursor).expect("replay");
        replays.push(t.elapsed());
        reference = Some(s);
    }
    let reference = reference.expect("replayed");
    let replay = median(replays.clone());
    println!(
        "full replay from the start: {:.1} ms (median of 3: {:?} ms), {} events folded",
        replay.as_secs_f64() * 1e3,
        replays
            .iter()
            .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
            .collect::<Vec<_>>(),
        reference.replayed
    );

    let t = Instant::now();
    let cold_state = model.state_at(fold, HOT_ACCOUNT, cursor).expect("state_at");
    let cold = t.elapsed();
    assert_eq!(cold_state.state, reference.state, "snapshot path = replay");
    println!(
        "state_at, cold cache (first query: folds everything and takes the snapshots): {:.1} ms",
        cold.as_secs_f64() * 1e3
    );

    let mut warm_same = Vec::new();
    let mut last = None;
    for _ in 0..21 {
        let t = Instant::now();
        let s = model.state_at(fold, HOT_ACCOUNT, cursor).expect("state_at");
        warm_same.push(t.elapsed());
        last = Some(s);
    }
    let last = last.expect("queried");
    assert_eq!(last.state, reference.state);
    assert_eq!(last.diff, reference.diff);
    let warm = median(warm_same);
    println!(
        "state_at, warm (snapshot + tail of {} events): {:.3} ms (median of 21)",
        last.replayed,
        warm.as_secs_f64() * 1e3
    );

    // Random cursors over the aggregate's whole history (the user scrubbing the time line).
    let mut x = 0x1234_5678u64;
    let mut scrub = Vec::new();
    for _ in 0..200 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pos = (x >> 33) as usize % events;
        let c = list[pos];
        let t = Instant::now();
        let s = model.state_at(fold, HOT_ACCOUNT, c);
        scrub.push(t.elapsed());
        assert!(s.is_some());
    }
    let [p50, p95, p99, max] = percentiles_ms(&scrub);
    println!(
        "state_at, warm, 200 random cursors: p50 {p50:.3} ms, p95 {p95:.3} ms, p99 {p99:.3} ms, max {max:.3} ms"
    );
    let line = format!(
        "d. {events}-event aggregate ({} fold), cursor at its last event: state_at {:.3} ms (warm; cold first query {:.0} ms) vs full replay {:.1} ms: replay/state_at = {:.0}x",
        fold.name(),
        warm.as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e3,
        replay.as_secs_f64() * 1e3,
        secs(replay) / secs(warm)
    );
    println!("{line}");
    vec![line]
}

/// The demo's Order fold on one long order (OrderCreated + notes). Its state grows with every
/// note; the fold keeps it as an `OrderState` between events and turns it into JSON once per
/// query, so a replay is linear in the number of events (it used to round-trip the whole state
/// through serde per event: quadratic). Also times decoding the order's events from the log
/// alone, the floor of a cold query.
fn bench_order_fold(n: usize) -> Vec<String> {
    println!();
    println!(
        "== d'. the demo's Order fold on one long order (OrderCreated + OrderNoteAdded x k) =="
    );
    let mut out = Vec::new();
    for k in [1_000usize, 10_000].map(|k| k.min(n.max(100))) {
        let mut model = Model::default();
        let order = "order-long";
        for i in 0..k {
            let (ty, data) = if i == 0 {
                (
                    "OrderCreated",
                    serde_json::json!({
                        "order_id": order, "customer_email": "a@example.com",
                        "shipping_address": "1 Main St", "total_cents": 500,
                        "items": [{"product_id": "p1", "quantity": 1, "unit_price_cents": 500}],
                    }),
                )
            } else {
                (
                    "OrderNoteAdded",
                    serde_json::json!({"order_id": order, "text": format!("note {i}: customer called about the delivery window")}),
                )
            };
            let id = format!("ev-{i}");
            let rec = Record::new("orders", 0, i as i64)
                .with_timestamp(common::T0_MS + i as i64)
                .with_key(order)
                .with_header("ce_specversion", "1.0")
                .with_header("ce_id", &id)
                .with_header("ce_type", ty)
                .with_header("ce_source", "urn:eventscope-demo:order-service")
                .with_header("ce_subject", order)
                .with_header("content-type", "application/json")
                .with_header("ce_correlationid", "corr-long")
                .with_header("ce_aggregateversion", &(i + 1).to_string())
                .with_value(serde_json::to_vec(&data).expect("json"));
            model
                .ingest(&rec, common::T0_MS + i as i64)
                .expect("ingest");
        }
        let fold = fold_for(model.log(), order);
        assert_eq!(fold.name(), OrderFold.name());
        let list = model.log().aggregate(order).to_vec();
        let cursor = *list.last().expect("events");
        let t = Instant::now();
        let decoded = list
            .iter()
            .filter_map(|&i| model.log().event(i))
            .filter(|e| e.payload.is_some())
            .count();
        let decode = t.elapsed();
        assert_eq!(decoded, k);
        let t = Instant::now();
        let reference = timetravel::replay(model.log(), fold, order, cursor).expect("replay");
        let replay = t.elapsed();
        let t = Instant::now();
        let cold_state = model.state_at(fold, order, cursor).expect("state_at");
        let cold = t.elapsed();
        assert_eq!(cold_state, reference, "snapshot path = replay");
        let mut warm = Vec::new();
        let mut warm_cpu = Vec::new();
        let mut tail = 0;
        for _ in 0..21 {
            let (t, c) = (Instant::now(), thread_cpu());
            let s = model.state_at(fold, order, cursor).expect("state_at");
            warm_cpu.push(thread_cpu() - c);
            warm.push(t.elapsed());
            assert_eq!(s.state, reference.state);
            assert_eq!(s.diff, reference.diff);
            tail = s.replayed;
        }
        let (warm, warm_cpu) = (median(warm), median(warm_cpu));
        // The user scrubbing through the order's history.
        let mut x = 0x1234_5678u64;
        let mut scrub = Vec::new();
        for _ in 0..100 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let c = list[(x >> 33) as usize % list.len()];
            let t = Instant::now();
            let s = model.state_at(fold, order, c);
            scrub.push(t.elapsed());
            assert!(s.is_some());
        }
        let [p50, _, p99, max] = percentiles_ms(&scrub);
        println!(
            "{k}-event order: decoding its {k} events from the log alone {:.1} ms; warm tail {tail} events; 100 random cursors p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
            decode.as_secs_f64() * 1e3
        );
        let line = format!(
            "d. {k}-event order (demo Order fold): state_at {:.2} ms (warm, median of 21, thread CPU {:.2} ms; cold {:.0} ms) vs full replay {:.0} ms: replay/state_at = {:.0}x",
            warm.as_secs_f64() * 1e3,
            warm_cpu.as_secs_f64() * 1e3,
            cold.as_secs_f64() * 1e3,
            replay.as_secs_f64() * 1e3,
            secs(replay) / secs(warm)
        );
        println!("{line}");
        out.push(line);
    }
    out
}

// ---------------------------------------------------------------- b. against kcat

struct CountingContext {
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut f) = self.first_error.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

const TOPIC: &str = "bench.events";

fn produce(bootstrap: &str, n: usize, partitions: i32) -> (Duration, u64) {
    let ctx = CountingContext {
        failed: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    };
    let producer: BaseProducer<CountingContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("compression.type", "none")
        .set("acks", "1")
        .set("log_level", "3")
        .create_with_context(ctx)
        .expect("producer");
    // The tap ingests with the wall clock as `now` (like `eventscope inspect`). Timestamps start
    // an hour ahead so that the stuck-saga lint (60 s idle) stays quiet while the backlog is
    // read partition by partition; the data is clean.
    let mut gen = Gen::new().starting_at(chrono::Utc::now().timestamp_millis() + 3_600_000);
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let mut spent = Duration::ZERO;
    let mut left = n;
    while left > 0 {
        batch.clear();
        batch.extend(gen.by_ref().take(left.min(BATCH)));
        let t = Instant::now();
        for r in &batch {
            let key = r.key.as_deref().unwrap_or_default();
            // One saga, one partition (its causes are read before their effects).
            let corr = r.header("ce_correlationid").unwrap_or(key);
            let p = (common::key_hash(corr) % partitions as u64) as i32;
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header { key: k, value: v });
            }
            let mut rec = BaseRecord::to(TOPIC)
                .partition(p)
                .key(key)
                .payload(r.value.as_deref().unwrap_or_default())
                .headers(headers);
            if let Some(ts) = r.timestamp_ms {
                rec = rec.timestamp(ts);
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        producer.poll(Duration::from_millis(5));
                        rec = back;
                    }
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
        }
        producer.poll(Duration::ZERO);
        spent += t.elapsed();
        left -= batch.len();
    }
    let t = Instant::now();
    producer.flush(Duration::from_secs(300)).expect("flush");
    spent += t.elapsed();
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = producer
            .context()
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone());
        panic!("{failed} deliveries failed, first: {first:?}");
    }
    (spent, gen.bytes)
}

/// (sum of high watermarks, partitions whose low watermark is not 0).
fn watermarks(bootstrap: &str, partitions: i32) -> (i64, usize) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create()
        .expect("consumer");
    let mut high = 0;
    let mut trimmed = 0;
    for p in 0..partitions {
        let (lo, hi) = c
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .expect("watermarks");
        high += hi;
        trimmed += usize::from(lo != 0);
    }
    (high, trimmed)
}

/// Wall time and CPU time of one read of the topic.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    /// For kcat: kcat's own CPU plus this process's (the broker serving it).
    /// For the tap: this process (broker + tap + model).
    cpu: Duration,
}

fn run_kcat(bootstrap: &str) -> Run {
    let (c0, p0) = (children_cpu(), process_cpu());
    let t = Instant::now();
    let mut child = Command::new("/usr/bin/kcat")
        .args([
            "-b",
            bootstrap,
            "-C",
            "-t",
            TOPIC,
            "-e",
            "-o",
            "beginning",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kcat at /usr/bin/kcat");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match child.try_wait().expect("kcat wait") {
            Some(status) => {
                let wall = t.elapsed();
                assert!(status.success(), "kcat failed: {status}");
                let cpu = (children_cpu() - c0) + (process_cpu() - p0);
                return Run { wall, cpu };
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                panic!("kcat did not finish in 600 s");
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The next item of `rx`, waiting up to `secs` seconds; `None` when it ended or stalled.
fn recv_within<T>(
    rt: &tokio::runtime::Runtime,
    rx: &mut mpsc::Receiver<T>,
    secs: u64,
) -> Option<T> {
    match rx.try_recv() {
        Ok(r) => Some(r),
        Err(mpsc::error::TryRecvError::Empty) => rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(secs), rx.recv()).await })
            .ok()
            .flatten(),
        Err(mpsc::error::TryRecvError::Disconnected) => None,
    }
}

/// The tap (src/kafka/tap.rs) from the beginning of the topic; each record is ingested into a
/// fresh Model (`ingest = true`) or only counted. Returns the time to the n-th record.
fn run_tap(rt: &tokio::runtime::Runtime, bootstrap: &str, n: usize, ingest: bool) -> Run {
    let settings = KafkaSettings::new(bootstrap);
    let (records_tx, records_rx) = mpsc::channel::<tap::Batch>(64);
    let (status_tx, status_rx) = watch::channel(TapStatus::Connecting);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut model = Model::default();
    // With the model: envelopes decoded a batch ahead and batches freed behind, as `inspect`
    // does (tap::decode_ahead); without, the tap's batches as they come.
    let (mut raw_rx, mut decoded_rx, drop_aside) = if ingest {
        let (d, a) = tap::decode_ahead(records_rx, model.config().decode.clone());
        (None, Some(d), Some(a))
    } else {
        (Some(records_rx), None, None)
    };
    let p0 = process_cpu();
    let start = Instant::now();
    let handle = rt.spawn(tap::run(
        settings,
        TopicSelection::Named(vec![TOPIC.to_owned()]),
        records_tx,
        status_tx,
        stop_rx,
    ));
    let mut got = 0usize;
    let now_ms = || chrono::Utc::now().timestamp_millis();
    while got < n {
        let next = match (&mut raw_rx, &mut decoded_rx) {
            (_, Some(d)) => recv_within(rt, d, 20),
            (Some(r), None) => recv_within(rt, r, 20).map(|b| (b, Vec::new())),
            (None, None) => None,
        };
        let Some((batch, decoded)) = next else {
            eprintln!("tap stalled or ended: {:?}", *status_rx.borrow());
            break;
        };
        let before = got;
        got += batch.len();
        if ingest {
            // One clock reading per batch, as `inspect` does.
            let now = now_ms();
            for (r, d) in batch.iter().zip(&decoded) {
                model.ingest_decoded(r, d, now).expect("ingest");
            }
            if got / 8192 != before / 8192 {
                model.tick(now_ms());
            }
        }
        if let Some(a) = &drop_aside {
            a.send((batch, decoded));
        }
    }
    if ingest {
        model.tick(now_ms());
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu() - p0;
    let _ = stop_tx.send(true);
    let _ = rt.block_on(handle);
    assert_eq!(got, n, "the tap read every record");
    if ingest {
        assert_eq!(model.log().len(), n);
        let kinds: Vec<String> = model
            .anomaly_counts()
            .iter()
            .filter(|(_, &c)| c > 0)
            .map(|(k, c)| format!("{} {c}", k.as_str()))
            .collect();
        println!(
            "  (tap + Model: {} records in the model; anomalies: {})",
            model.log().len(),
            if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(", ")
            }
        );
    }
    Run { wall: elapsed, cpu }
}

fn bench_kcat(n: usize) -> Vec<String> {
    println!();
    println!(
        "== b. reading the same records from the embedded broker: kcat vs eventscope's tap =="
    );
    let broker = Arc::new(EmbeddedBroker::start(1).expect("embedded broker"));
    let bootstrap = broker.bootstrap().to_owned();
    // The mock keeps about 5 MiB per partition: spread the records so nothing is trimmed.
    let est_bytes = n as f64 * 1100.0;
    let partitions = ((est_bytes / (3.0 * 1024.0 * 1024.0)).ceil() as i32).clamp(3, 1024);
    let partitions = (partitions + 15) / 16 * 16;
    broker
        .create_topic(TOPIC, partitions)
        .expect("create topic");
    println!(
        "embedded broker at {bootstrap}; topic {TOPIC} with {partitions} partitions (the mock keeps ~5 MiB per partition)"
    );
    let (produce_time, bytes) = produce(&bootstrap, n, partitions);
    println!(
        "produced {n} records ({:.1} MB key+headers+value; keys, headers, values as in a., partition = hash of the correlation id) with a BaseProducer (linger 20 ms, batches up to 1 MB, acks=1, no compression): {:.2} s = {:.0} records/s (send + flush; generation not timed)",
        bytes as f64 / 1e6,
        secs(produce_time),
        rate(n, produce_time)
    );
    let (high, trimmed) = watermarks(&bootstrap, partitions);
    println!("high watermarks sum to {high}; partitions trimmed by the mock: {trimmed}");
    assert_eq!(high, n as i64, "every record is on the broker");
    assert_eq!(
        trimmed, 0,
        "the mock dropped old batches: use more partitions"
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let kcat_cmd = format!("kcat -b {bootstrap} -C -t {TOPIC} -e -o beginning -q > /dev/null");
    let show = |what: &str, r: Run| {
        println!(
            "{what}: {:.2} s = {:.0} records/s, {:.1} MB/s; CPU {:.1} s",
            secs(r.wall),
            rate(n, r.wall),
            mb_s(bytes, r.wall),
            secs(r.cpu)
        );
    };
    let mut kcat = Vec::new();
    let mut tapm = Vec::new();
    for round in 1..=2 {
        let k = run_kcat(&bootstrap);
        show(&format!("round {round}: `{kcat_cmd}`"), k);
        kcat.push(k);
        let t = run_tap(&rt, &bootstrap, n, true);
        show(&format!("round {round}: eventscope tap + Model::ingest"), t);
        tapm.push(t);
    }
    let tap_only = run_tap(&rt, &bootstrap, n, false);
    show(
        "eventscope tap alone (records received, not ingested)",
        tap_only,
    );
    let best = |v: &[Run]| v.iter().min_by_key(|r| r.wall).copied();
    let best_k = best(&kcat).expect("ran");
    let best_t = best(&tapm).expect("ran");
    let ratio = rate(n, best_t.wall) / rate(n, best_k.wall);
    let lines = vec![
        format!("b. `{kcat_cmd}`"),
        format!(
            "b. kcat (best of 2): {:.0} records/s, {:.1} MB/s ({:.2} s; CPU {:.1} s incl. the broker)",
            rate(n, best_k.wall),
            mb_s(bytes, best_k.wall),
            secs(best_k.wall),
            secs(best_k.cpu)
        ),
        format!(
            "b. eventscope tap + Model::ingest (best of 2): {:.0} records/s, {:.1} MB/s ({:.2} s; CPU {:.1} s incl. the broker); tap alone {:.0} records/s",
            rate(n, best_t.wall),
            mb_s(bytes, best_t.wall),
            secs(best_t.wall),
            secs(best_t.cpu),
            rate(n, tap_only.wall)
        ),
        format!("b. rate ratio eventscope/kcat = {ratio:.2}"),
    ];
    for l in &lines {
        println!("{l}");
    }
    drop(rt);
    drop(broker);
    lines
}
