//! Shared pieces of the benchmarks: a deterministic generator of CloudEvents binary-mode
//! records shaped like the demo's sagas, the scale knob, process memory, percentiles.
//!
//! Not every bench uses every helper.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use eventscope::model::record::Record;
use eventscope::model::Model;

/// Records per full run; `EVENTSCOPE_BENCH_N` scales it down for a smoke run.
pub fn scale() -> usize {
    std::env::var("EVENTSCOPE_BENCH_N")
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(1_000_000)
}

/// The command that reproduces this run (with the env vars that were set).
pub fn command(bench: &str) -> String {
    let env: String = ["EVENTSCOPE_BENCH_N", "EVENTSCOPE_BENCH_ONLY"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v} ")))
        .collect();
    format!("{env}cargo bench --bench {bench}")
}

/// `/proc/loadavg` (1, 5, 15 min) and the CPU count: other work on the machine skews timings.
pub fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let avg: Vec<&str> = avg.split_whitespace().take(3).collect();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("load average {} on {cpus} CPUs", avg.join(" "))
}

/// 2026-01-01T00:00:00Z in ms.
pub const T0_MS: i64 = 1_767_225_600_000;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A UUID-shaped id (36 chars), deterministic in `x`.
fn uuid_like(x: u64) -> String {
    let a = splitmix(x);
    let b = splitmix(x ^ 0x5555_aaaa_5555_aaaa);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

const WORDS: [&str; 16] = [
    "express",
    "gift",
    "wrap",
    "fragile",
    "leave",
    "at",
    "door",
    "call",
    "before",
    "delivery",
    "customer",
    "requested",
    "invoice",
    "priority",
    "weekend",
    "ok",
];

/// Pad a JSON object to about `target` bytes with a `note` field of words.
fn padded(mut v: serde_json::Value, target: usize, seed: u64) -> Vec<u8> {
    let len = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0);
    let want = target.saturating_sub(len + 10); // `,"note":""`
    if want > 0 {
        let mut s = String::with_capacity(want + 12);
        let mut i = seed;
        while s.len() < want {
            i = splitmix(i);
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(WORDS[(i % 16) as usize]);
        }
        s.truncate(want);
        if let Some(o) = v.as_object_mut() {
            o.insert("note".into(), serde_json::Value::String(s));
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// One step of a saga: topic, type, source, whether it carries its own aggregate.
struct Step {
    topic: &'static str,
    ty: &'static str,
    source: &'static str,
    /// `None`: keyed by the order; `Some(prefix)`: its own aggregate `prefix-<uuid>`, version 1.
    own_aggregate: Option<&'static str>,
    /// Aggregate version of an order event.
    order_version: Option<i64>,
}

const STEPS: [Step; 9] = [
    Step {
        topic: "orders",
        ty: "OrderCreated",
        source: "urn:eventscope-demo:order-service",
        own_aggregate: None,
        order_version: Some(1),
    },
    Step {
        topic: "payments.commands",
        ty: "ProcessPayment",
        source: "urn:eventscope-demo:orchestrator",
        own_aggregate: None,
        order_version: None,
    },
    Step {
        topic: "payments",
        ty: "PaymentCompleted",
        source: "urn:eventscope-demo:payment-service",
        own_aggregate: Some("payment"),
        order_version: None,
    },
    Step {
        topic: "inventory.commands",
        ty: "ReserveStock",
        source: "urn:eventscope-demo:orchestrator",
        own_aggregate: None,
        order_version: None,
    },
    Step {
        topic: "inventory",
        ty: "StockReserved",
        source: "urn:eventscope-demo:inventory-service",
        own_aggregate: Some("reservation"),
        order_version: None,
    },
    Step {
        topic: "shipping.commands",
        ty: "ScheduleShipment",
        source: "urn:eventscope-demo:orchestrator",
        own_aggregate: None,
        order_version: None,
    },
    Step {
        topic: "shipping",
        ty: "ShipmentScheduled",
        source: "urn:eventscope-demo:shipping-service",
        own_aggregate: Some("shipment"),
        order_version: None,
    },
    Step {
        topic: "orders.commands",
        ty: "ApproveOrder",
        source: "urn:eventscope-demo:orchestrator",
        own_aggregate: None,
        order_version: None,
    },
    Step {
        topic: "orders",
        ty: "OrderCompleted",
        source: "urn:eventscope-demo:order-service",
        own_aggregate: None,
        order_version: Some(2),
    },
];

/// Aggregate id of the hot aggregate (see [`Gen::with_hot_account`]).
pub const HOT_ACCOUNT: &str = "account-0000-hot";

struct Saga {
    n: u64,
    order_id: String,
    correlation: String,
    trace: String,
    email: String,
    items: serde_json::Value,
    total: i64,
    last_event: Option<String>,
}

/// Deterministic stream of CloudEvents binary-mode records: complete, clean sagas of the demo's
/// shape (9 records on 8 topics, 3 partitions each, keyed by aggregate id, chained by
/// causation, one correlation id per saga), 64 sagas in flight at a time, 1 ms apart.
/// Values are JSON of about 500 bytes.
pub struct Gen {
    next_saga: u64,
    produced: u64,
    buf: VecDeque<Record>,
    offsets: HashMap<(&'static str, i32), i64>,
    /// Every `hot_every`-th record is an event of [`HOT_ACCOUNT`].
    hot_every: Option<u64>,
    hot_version: i64,
    hot_balance: i64,
    last_corr: String,
    last_id: Option<String>,
    t0_ms: i64,
    pub bytes: u64,
}

const IN_FLIGHT: u64 = 64;
const PARTITIONS: i32 = 3;

/// FNV-1a of a key (partitioning).
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn partition_of(key: &str) -> i32 {
    (key_hash(key.as_bytes()) % PARTITIONS as u64) as i32
}

impl Gen {
    pub fn new() -> Gen {
        Gen {
            next_saga: 0,
            produced: 0,
            buf: VecDeque::new(),
            offsets: HashMap::new(),
            hot_every: None,
            hot_version: 0,
            hot_balance: 0,
            last_corr: String::new(),
            last_id: None,
            t0_ms: T0_MS,
            bytes: 0,
        }
    }

    /// Record timestamps start here (default 2026-01-01T00:00:00Z).
    pub fn starting_at(mut self, t0_ms: i64) -> Gen {
        self.t0_ms = t0_ms;
        self
    }

    /// Make every `every`-th record an event of one long-lived aggregate ([`HOT_ACCOUNT`],
    /// topic `ledger`), with versions 1, 2, 3, ... Its payload always has the same keys.
    pub fn with_hot_account(mut self, every: u64) -> Gen {
        self.hot_every = Some(every.max(2));
        self
    }

    fn offset(&mut self, topic: &'static str, p: i32) -> i64 {
        let o = self.offsets.entry((topic, p)).or_insert(0);
        *o += 1;
        *o - 1
    }

    fn refill(&mut self) {
        let mut sagas: Vec<Saga> = (0..IN_FLIGHT)
            .map(|i| {
                let n = self.next_saga + i;
                let items: Vec<serde_json::Value> = (0..1 + splitmix(n) % 3)
                    .map(|k| {
                        let h = splitmix(n * 7 + k);
                        serde_json::json!({
                            "product_id": format!("sku-{:05}", h % 20_000),
                            "quantity": 1 + (h >> 20) % 4,
                            "unit_price_cents": 199 + (h >> 30) % 20_000,
                        })
                    })
                    .collect();
                let total = items
                    .iter()
                    .map(|i| {
                        i["quantity"].as_i64().unwrap_or(0)
                            * i["unit_price_cents"].as_i64().unwrap_or(0)
                    })
                    .sum();
                Saga {
                    n,
                    order_id: uuid_like(n * 16),
                    correlation: uuid_like(n * 16 + 1),
                    trace: format!("{:016x}{:016x}", splitmix(n * 16 + 2), splitmix(n)),
                    email: format!("customer{:06}@example.com", splitmix(n) % 1_000_000),
                    items: serde_json::Value::Array(items),
                    total,
                    last_event: None,
                }
            })
            .collect();
        self.next_saga += IN_FLIGHT;
        for (si, step) in STEPS.iter().enumerate() {
            for s in &mut sagas {
                let rec = self.saga_record(s, si, step);
                self.buf.push_back(rec);
            }
        }
    }

    fn now(&self) -> i64 {
        self.t0_ms + self.produced as i64
    }

    fn saga_record(&mut self, s: &mut Saga, si: usize, step: &Step) -> Record {
        let id = uuid_like(s.n * 16 + 3 + si as u64);
        let agg = match step.own_aggregate {
            Some(prefix) => format!("{prefix}-{}", uuid_like(s.n * 16 + 13 + si as u64)),
            None => s.order_id.clone(),
        };
        let seed = splitmix(s.n * 31 + si as u64);
        let target = 470 + (seed % 61) as usize;
        let o = &s.order_id;
        let value = match step.ty {
            "OrderCreated" => serde_json::json!({
                "order_id": o,
                "customer_email": s.email,
                "shipping_address": format!("{} Long Street, Springfield {:05}, Freedonia", seed % 9999, seed % 99_999),
                "items": s.items,
                "total_cents": s.total,
            }),
            "ProcessPayment" => serde_json::json!({
                "order_id": o, "amount_cents": s.total, "currency": "EUR", "method": "card",
            }),
            "PaymentCompleted" => serde_json::json!({
                "payment_id": agg, "order_id": o, "amount_cents": s.total, "currency": "EUR",
                "authorization_code": format!("{:08X}", seed as u32), "captured": true,
            }),
            "ReserveStock" | "StockReserved" => serde_json::json!({
                "reservation_id": agg, "order_id": o, "items": s.items, "warehouse": "wh-eu-1",
            }),
            "ScheduleShipment" | "ShipmentScheduled" => serde_json::json!({
                "shipment_id": agg, "order_id": o, "carrier": "acme-post",
                "tracking_number": format!("AP{:012}", seed % 1_000_000_000_000),
                "eta": rfc3339(self.now() + 3 * 86_400_000),
            }),
            "ApproveOrder" => serde_json::json!({ "order_id": o }),
            _ => serde_json::json!({ "order_id": o, "total_cents": s.total }),
        };
        let rec = self.record(Rec {
            topic: step.topic,
            id: &id,
            ty: step.ty,
            source: step.source,
            agg: &agg,
            corr: &s.correlation,
            cause: s.last_event.as_deref(),
            trace: &s.trace,
            version: step.order_version.or(step.own_aggregate.map(|_| 1)),
            value: padded(value, target, seed),
        });
        s.last_event = Some(id);
        rec
    }

    fn hot_record(&mut self) -> Record {
        self.hot_version += 1;
        let v = self.hot_version;
        let seed = splitmix(v as u64 ^ 0xabcdef);
        let delta = (seed % 20_000) as i64 - 10_000;
        self.hot_balance += delta;
        let value = serde_json::json!({
            "account_id": HOT_ACCOUNT,
            "balance_cents": self.hot_balance,
            "currency": "EUR",
            "last_entry": {
                "entry_id": uuid_like(seed),
                "amount_cents": delta,
                "reason": if delta >= 0 { "capture" } else { "refund" },
                "order_id": uuid_like(seed ^ 1),
            },
            "limits": { "daily_cents": 5_000_000, "single_cents": 1_000_000 },
            "entries": v,
        });
        let id = uuid_like(seed ^ 7);
        let corr = self.last_corr.clone();
        let cause = self.last_id.clone();
        self.record(Rec {
            topic: "ledger",
            id: &id,
            ty: "BalanceAdjusted",
            source: "urn:eventscope-demo:ledger-service",
            agg: HOT_ACCOUNT,
            corr: &corr,
            cause: cause.as_deref(),
            trace: &format!("{:032x}", seed as u128),
            version: Some(v),
            value: padded(value, 500, seed),
        })
    }

    /// A record; its timestamp and `ce_time` are set when it is emitted ([`Gen::stamp`]).
    fn record(&mut self, r: Rec<'_>) -> Record {
        let p = partition_of(r.agg);
        let offset = self.offset(r.topic, p);
        let mut rec = Record::new(r.topic, p, offset)
            .with_key(r.agg.as_bytes().to_vec())
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", r.id)
            .with_header("ce_type", r.ty)
            .with_header("ce_source", r.source)
            .with_header("ce_time", "")
            .with_header("ce_subject", r.agg)
            .with_header("content-type", "application/json")
            .with_header("ce_correlationid", r.corr);
        if let Some(c) = r.cause {
            rec = rec.with_header("ce_causationid", c);
        }
        if let Some(v) = r.version {
            rec = rec.with_header("ce_aggregateversion", &v.to_string());
        }
        rec = rec
            .with_header(
                "ce_traceparent",
                &format!("00-{}-{:016x}-01", r.trace, splitmix(self.offset_seed())),
            )
            .with_value(r.value);
        rec
    }

    fn offset_seed(&self) -> u64 {
        self.next_saga ^ (self.offsets.len() as u64) ^ self.hot_version as u64
    }

    /// Emit: records are 1 ms apart in emission order.
    fn stamp(&mut self, mut rec: Record) -> Record {
        let ts = self.now();
        rec.timestamp_ms = Some(ts);
        rec.headers.set("ce_time", Some(rfc3339(ts).as_bytes()));
        self.produced += 1;
        self.bytes += rec.approx_size() as u64;
        rec
    }
}

struct Rec<'a> {
    topic: &'static str,
    id: &'a str,
    ty: &'static str,
    source: &'static str,
    agg: &'a str,
    corr: &'a str,
    cause: Option<&'a str>,
    trace: &'a str,
    version: Option<i64>,
    value: Vec<u8>,
}

impl Default for Gen {
    fn default() -> Self {
        Self::new()
    }
}

impl Iterator for Gen {
    type Item = Record;
    fn next(&mut self) -> Option<Record> {
        if let Some(every) = self.hot_every {
            if self.produced % every == every - 1 && !self.last_corr.is_empty() {
                let r = self.hot_record();
                return Some(self.stamp(r));
            }
        }
        if self.buf.is_empty() {
            self.refill();
        }
        let r = self.buf.pop_front()?;
        if self.hot_every.is_some() {
            self.last_corr = r.header_str("ce_correlationid").unwrap_or("").to_owned();
            self.last_id = r.header_str("ce_id").map(str::to_owned);
        }
        Some(self.stamp(r))
    }
}

/// Fill a model with `n` generated records in batches, ticking the lints every batch with
/// the time of the last record (as an offline import does). Returns the model.
pub fn build_model(gen: Gen, n: usize) -> Model {
    let mut m = Model::default();
    let mut now = 0;
    for r in gen.take(n) {
        now = r.timestamp_ms.unwrap_or(now);
        if let Err(e) = m.ingest(&r, now) {
            panic!("ingest failed: {e}");
        }
        if m.log().len() % 10_000 == 0 {
            m.tick(now);
        }
    }
    m.tick(now);
    m
}

/// (VmRSS, VmHWM) of this process in KiB.
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

fn cpu_clock(clock: i32) -> Duration {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout); std links libc.
    let rc = unsafe { clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID): unaffected by waiting for a CPU.
pub fn thread_cpu() -> Duration {
    cpu_clock(CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of this process, all threads (CLOCK_PROCESS_CPUTIME_ID).
pub fn process_cpu() -> Duration {
    cpu_clock(CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time of waited-for children (cutime + cstime of /proc/self/stat), assuming the usual
/// 100 clock ticks per second.
pub fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // fields 16 and 17 of the file; `rest` starts at field 3
    let ticks = f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// p50, p95, p99, max of the samples, in ms.
pub fn percentiles_ms(samples: &[Duration]) -> [f64; 4] {
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i.min(v.len() - 1)]
    };
    [at(0.50), at(0.95), at(0.99), at(1.0)]
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
