//! Failure injection: runtime switches shared by the CLI (`--faults`) and the GUI.
//!
//! Decisions are deterministic under a seed: a probability fault hashes
//! (seed, fault, a stable business key) instead of drawing from a shared RNG,
//! so task scheduling does not change which orders are hit.
//!
//! Crash faults are decided per delivery attempt ([`Faults::hits_attempt`]):
//! the n-th attempt at the same record hashes (seed, fault, key, n), so a
//! redelivered record is decided afresh and eventually gets through. Deciding
//! by the record alone would crash on every redelivery: a poison pill, not a
//! crash.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    DuplicatePublish,
    NoIdempotency,
    ConsumerCrash,
    PaymentDecline,
    OutOfStock,
    ShippingFailure,
    WrongPartitionKey,
    BrokerOutage,
    RelayCrash,
    OrchestratorCrash,
    PoisonMessage,
    MissingCorrelation,
    SchemaDrift,
    NoSchemaCheck,
    SchemaEvolve,
}

/// How a fault's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// On or off.
    Switch,
    /// A probability in (0, 1] per decision, or a count of hits when the value is >= 1.
    Chance,
    /// A number of occurrences.
    Count,
    /// Seconds.
    Seconds,
}

impl Fault {
    pub const ALL: [Fault; 15] = [
        Fault::DuplicatePublish,
        Fault::NoIdempotency,
        Fault::ConsumerCrash,
        Fault::PaymentDecline,
        Fault::OutOfStock,
        Fault::ShippingFailure,
        Fault::WrongPartitionKey,
        Fault::BrokerOutage,
        Fault::RelayCrash,
        Fault::OrchestratorCrash,
        Fault::PoisonMessage,
        Fault::MissingCorrelation,
        Fault::SchemaDrift,
        Fault::NoSchemaCheck,
        Fault::SchemaEvolve,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::DuplicatePublish => "duplicate-publish",
            Fault::NoIdempotency => "no-idempotency",
            Fault::ConsumerCrash => "consumer-crash",
            Fault::PaymentDecline => "payment-decline",
            Fault::OutOfStock => "out-of-stock",
            Fault::ShippingFailure => "shipping-failure",
            Fault::WrongPartitionKey => "wrong-partition-key",
            Fault::BrokerOutage => "broker-outage",
            Fault::RelayCrash => "relay-crash",
            Fault::OrchestratorCrash => "orchestrator-crash",
            Fault::PoisonMessage => "poison-message",
            Fault::MissingCorrelation => "missing-correlation",
            Fault::SchemaDrift => "schema-drift",
            Fault::NoSchemaCheck => "no-schema-check",
            Fault::SchemaEvolve => "schema-evolve",
        }
    }

    /// The production incident it reproduces, in one line.
    pub fn description(self) -> &'static str {
        match self {
            Fault::DuplicatePublish => {
                "Relay publishes, crashes before marking the row published, publishes again"
            }
            Fault::NoIdempotency => {
                "Consumers skip the processed_events check: a redelivery repeats the effect"
            }
            Fault::ConsumerCrash => {
                "A consumer dies after its effect, before committing the offset: redelivery"
            }
            Fault::PaymentDecline => {
                "The payment provider declines: the saga refunds nothing and cancels"
            }
            Fault::OutOfStock => "Inventory rejects the reservation: refund, then cancel",
            Fault::ShippingFailure => {
                "Shipping fails: restore stock, refund, cancel, in reverse order"
            }
            Fault::WrongPartitionKey => {
                "Relay keys records by event id: one order's events spread over partitions"
            }
            Fault::BrokerOutage => {
                "The broker is unreachable for a while: the outbox backlog grows, then drains"
            }
            Fault::RelayCrash => {
                "The relay is killed between publishing and marking: it restarts and resumes"
            }
            Fault::OrchestratorCrash => {
                "The orchestrator dies mid-saga: it restarts and resumes every open saga"
            }
            Fault::PoisonMessage => {
                "An undecodable record lands on a command topic: it must go to the dlq"
            }
            Fault::MissingCorrelation => "A service drops the correlation id: the chain breaks",
            Fault::SchemaDrift => {
                "The order service ships OrderCreated v3 with items renamed: refused by the schema check"
            }
            Fault::NoSchemaCheck => {
                "Producers skip the contract check: a breaking version reaches the consumers"
            }
            Fault::SchemaEvolve => {
                "The order service writes OrderCreated v2 (optional currency added): compatible"
            }
        }
    }

    pub fn kind(self) -> FaultKind {
        match self {
            Fault::NoIdempotency | Fault::WrongPartitionKey | Fault::NoSchemaCheck => {
                FaultKind::Switch
            }
            Fault::DuplicatePublish
            | Fault::PaymentDecline
            | Fault::OutOfStock
            | Fault::ShippingFailure
            | Fault::MissingCorrelation
            | Fault::ConsumerCrash
            | Fault::RelayCrash
            | Fault::OrchestratorCrash
            | Fault::SchemaDrift
            | Fault::SchemaEvolve => FaultKind::Chance,
            Fault::PoisonMessage => FaultKind::Count,
            Fault::BrokerOutage => FaultKind::Seconds,
        }
    }

    /// The value used when the fault is named without one.
    pub fn default_value(self) -> f64 {
        match self {
            Fault::NoIdempotency | Fault::WrongPartitionKey | Fault::NoSchemaCheck => 1.0,
            Fault::SchemaDrift => 0.3,
            Fault::SchemaEvolve => 0.5,
            Fault::DuplicatePublish => 0.1,
            Fault::PaymentDecline | Fault::OutOfStock | Fault::ShippingFailure => 0.2,
            Fault::MissingCorrelation => 0.05,
            Fault::ConsumerCrash => 3.0,
            Fault::RelayCrash | Fault::OrchestratorCrash => 1.0,
            Fault::PoisonMessage => 3.0,
            Fault::BrokerOutage => 6.0,
        }
    }

    fn index(self) -> usize {
        Fault::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultSpecError {
    #[error("unknown fault '{name}' (known: {known})")]
    Unknown { name: String, known: String },
    #[error("fault '{fault}': '{value}' is not a number")]
    NotANumber { fault: &'static str, value: String },
    #[error("fault '{fault}': {value} is out of range: {why}")]
    OutOfRange {
        fault: &'static str,
        value: f64,
        why: &'static str,
    },
    #[error("fault '{0}' is named twice")]
    Repeated(&'static str),
}

impl FromStr for Fault {
    type Err = FaultSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .iter()
            .copied()
            .find(|f| f.name() == s)
            .ok_or_else(|| FaultSpecError::Unknown {
                name: s.to_owned(),
                known: Fault::ALL.map(Fault::name).join(", "),
            })
    }
}

/// A parsed `--faults` spec: `duplicate-publish=0.1,no-idempotency,poison-message=3`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultSpec(pub Vec<(Fault, f64)>);

impl FromStr for FaultSpec {
    type Err = FaultSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out: Vec<(Fault, f64)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (part, None),
            };
            let fault: Fault = name.parse()?;
            if out.iter().any(|(f, _)| *f == fault) {
                return Err(FaultSpecError::Repeated(fault.name()));
            }
            let value = match value {
                None => fault.default_value(),
                Some(v) => {
                    let v = v.trim_end_matches('s');
                    v.parse::<f64>().map_err(|_| FaultSpecError::NotANumber {
                        fault: fault.name(),
                        value: v.to_owned(),
                    })?
                }
            };
            validate(fault, value)?;
            out.push((fault, value));
        }
        Ok(FaultSpec(out))
    }
}

fn validate(fault: Fault, value: f64) -> Result<(), FaultSpecError> {
    let bad = |why| {
        Err(FaultSpecError::OutOfRange {
            fault: fault.name(),
            value,
            why,
        })
    };
    if !value.is_finite() || value < 0.0 {
        return bad("must be a non-negative number");
    }
    match fault.kind() {
        FaultKind::Switch if value != 0.0 && value != 1.0 => {
            bad("is a switch: give no value, 1 or 0")
        }
        FaultKind::Chance if value > 1.0 && value.fract() != 0.0 => {
            bad("give a probability in [0, 1] or a whole count")
        }
        FaultKind::Count if value.fract() != 0.0 => bad("give a whole count"),
        _ => Ok(()),
    }
}

/// Keys [`Faults::hits_attempt`] remembers before it starts afresh.
const MAX_ATTEMPT_KEYS: usize = 200_000;

#[derive(Debug, Default)]
struct Slot {
    enabled: AtomicBool,
    /// f64 bits.
    value: AtomicU64,
    /// Hits left for count faults; unused for probabilities.
    remaining: AtomicI64,
    /// How often it fired.
    fired: AtomicU64,
}

/// The live fault switches. Cheap to read from every task.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    slots: [Slot; 15],
    /// Attempts so far per (fault, key) for [`Faults::hits_attempt`]. Kept
    /// after an attempt gets through: a record can come round again (a relay
    /// restarted after another fault re-reads its batch), and must then be
    /// decided as a further attempt, not as the first one again.
    attempts: Mutex<HashMap<(Fault, String), u32>>,
}

/// A snapshot of one fault's setting, for display.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultState {
    pub fault: Fault,
    pub enabled: bool,
    pub value: f64,
    pub remaining: i64,
    pub fired: u64,
}

impl Faults {
    pub fn new(seed: u64) -> Faults {
        Faults {
            seed,
            slots: Default::default(),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_spec(seed: u64, spec: &FaultSpec) -> Faults {
        let f = Faults::new(seed);
        for (fault, value) in &spec.0 {
            f.set(*fault, true, *value);
        }
        f
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Turn a fault on or off with a value (probability, count or seconds).
    pub fn set(&self, fault: Fault, enabled: bool, value: f64) {
        let slot = &self.slots[fault.index()];
        slot.value.store(value.to_bits(), Ordering::SeqCst);
        let count = if value >= 1.0 { value as i64 } else { -1 };
        slot.remaining.store(count, Ordering::SeqCst);
        slot.enabled.store(enabled && value > 0.0, Ordering::SeqCst);
    }

    pub fn is_on(&self, fault: Fault) -> bool {
        self.slots[fault.index()].enabled.load(Ordering::SeqCst)
    }

    pub fn value(&self, fault: Fault) -> f64 {
        f64::from_bits(self.slots[fault.index()].value.load(Ordering::SeqCst))
    }

    pub fn state(&self, fault: Fault) -> FaultState {
        let slot = &self.slots[fault.index()];
        FaultState {
            fault,
            enabled: slot.enabled.load(Ordering::SeqCst),
            value: self.value(fault),
            remaining: slot.remaining.load(Ordering::SeqCst),
            fired: slot.fired.load(Ordering::SeqCst),
        }
    }

    /// Should the fault hit the thing identified by `key`?
    /// Switches: whenever on. Probabilities (< 1): a seeded hash of the key.
    /// Counts (>= 1): the next `n` decisions, then the fault turns itself off.
    pub fn hits(&self, fault: Fault, key: &str) -> bool {
        let slot = &self.slots[fault.index()];
        if !slot.enabled.load(Ordering::SeqCst) {
            return false;
        }
        let hit = match fault.kind() {
            FaultKind::Switch => true,
            FaultKind::Seconds => false,
            FaultKind::Chance | FaultKind::Count => {
                let p = self.value(fault);
                if p < 1.0 {
                    self.chance(fault, key) < p
                } else {
                    let left = slot.remaining.fetch_sub(1, Ordering::SeqCst);
                    if left <= 1 {
                        slot.enabled.store(false, Ordering::SeqCst);
                    }
                    left >= 1
                }
            }
        };
        if hit {
            slot.fired.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    /// Should the fault hit this attempt at the thing identified by `key`?
    /// Like [`Faults::hits`], but a probability is decided afresh for every
    /// attempt at the same key (the n-th attempt hashes `key#n`), so a record
    /// that is redelivered after an injected crash gets through with
    /// probability `1 - p` each time instead of crashing forever. Counts and
    /// switches are as in `hits`.
    pub fn hits_attempt(&self, fault: Fault, key: &str) -> bool {
        if !self.is_on(fault) {
            return false;
        }
        if self.value(fault) >= 1.0 || fault.kind() != FaultKind::Chance {
            return self.hits(fault, key);
        }
        let Ok(mut attempts) = self.attempts.lock() else {
            return false;
        };
        // Bounded: a long session forgets old keys (their next attempt counts from 0).
        if attempts.len() >= MAX_ATTEMPT_KEYS {
            attempts.clear();
        }
        let n = attempts.entry((fault, key.to_owned())).or_insert(0);
        let hit = self.hits(fault, &format!("{key}#{n}"));
        *n += 1;
        hit
    }

    /// Take a one-shot fault (broker outage): returns its value and turns it off.
    pub fn take(&self, fault: Fault) -> Option<f64> {
        let slot = &self.slots[fault.index()];
        if slot.enabled.swap(false, Ordering::SeqCst) {
            slot.fired.fetch_add(1, Ordering::SeqCst);
            Some(self.value(fault))
        } else {
            None
        }
    }

    /// A uniform number in [0, 1) from (seed, fault, key).
    fn chance(&self, fault: Fault, key: &str) -> f64 {
        let mut buf = Vec::with_capacity(key.len() + 32);
        buf.extend_from_slice(fault.name().as_bytes());
        buf.push(0);
        buf.extend_from_slice(key.as_bytes());
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(&buf, self.seed);
        (h >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let spec: FaultSpec = "duplicate-publish=0.1, no-idempotency,poison-message=3"
            .parse()
            .unwrap();
        assert_eq!(
            spec.0,
            vec![
                (Fault::DuplicatePublish, 0.1),
                (Fault::NoIdempotency, 1.0),
                (Fault::PoisonMessage, 3.0)
            ]
        );
        assert!(matches!(
            "nope".parse::<FaultSpec>(),
            Err(FaultSpecError::Unknown { .. })
        ));
        assert!(matches!(
            "payment-decline=x".parse::<FaultSpec>(),
            Err(FaultSpecError::NotANumber { .. })
        ));
        assert!(matches!(
            "payment-decline=1.5".parse::<FaultSpec>(),
            Err(FaultSpecError::OutOfRange { .. })
        ));
        assert!(matches!(
            "poison-message=0.5".parse::<FaultSpec>(),
            Err(FaultSpecError::OutOfRange { .. })
        ));
        assert!(matches!(
            "relay-crash=1.5".parse::<FaultSpec>(),
            Err(FaultSpecError::OutOfRange { .. })
        ));
        assert_eq!(
            "relay-crash=0.5".parse::<FaultSpec>().unwrap().0,
            vec![(Fault::RelayCrash, 0.5)]
        );
        assert!(matches!(
            "relay-crash,relay-crash".parse::<FaultSpec>(),
            Err(FaultSpecError::Repeated(_))
        ));
        assert_eq!(
            "broker-outage=4s".parse::<FaultSpec>().unwrap().0,
            vec![(Fault::BrokerOutage, 4.0)]
        );
        assert_eq!("".parse::<FaultSpec>().unwrap().0, vec![]);
    }

    #[test]
    fn probability_is_deterministic_and_roughly_right() {
        let a = Faults::new(7);
        let b = Faults::new(7);
        a.set(Fault::PaymentDecline, true, 0.2);
        b.set(Fault::PaymentDecline, true, 0.2);
        let keys: Vec<String> = (0..5000).map(|i| format!("order-{i}")).collect();
        let hits_a: Vec<bool> = keys
            .iter()
            .map(|k| a.hits(Fault::PaymentDecline, k))
            .collect();
        let hits_b: Vec<bool> = keys
            .iter()
            .map(|k| b.hits(Fault::PaymentDecline, k))
            .collect();
        assert_eq!(hits_a, hits_b);
        let n = hits_a.iter().filter(|h| **h).count();
        assert!((800..1200).contains(&n), "{n}");
        assert!(
            !a.hits(Fault::OutOfStock, "order-1"),
            "off faults never hit"
        );
    }

    #[test]
    fn attempts_are_decided_afresh() {
        let f = Faults::new(3);
        f.set(Fault::ConsumerCrash, true, 0.9);
        // With p = 0.9 a per-record decision would crash about 9 in 10 records
        // forever; per attempt, every record gets through within a few tries.
        for i in 0..200 {
            let key = format!("payment:{i}");
            let tries = (1..=500)
                .find(|_| !f.hits_attempt(Fault::ConsumerCrash, &key))
                .unwrap();
            assert!(tries < 500, "record {i} never got through");
        }
        // Repeatable under the same seed: the same attempt sequence.
        let seq = |seed| {
            let f = Faults::new(seed);
            f.set(Fault::RelayCrash, true, 0.5);
            (0..64)
                .map(|i| f.hits_attempt(Fault::RelayCrash, &format!("r{}", i / 4)))
                .collect::<Vec<_>>()
        };
        assert_eq!(seq(9), seq(9));
        // A key that comes round again after getting through is a further
        // attempt: decided afresh, not as attempt 0 again (which, when attempt
        // 0 hits, would crash a relay on every other pass forever).
        let f = Faults::new(42);
        f.set(Fault::RelayCrash, true, 0.02);
        let key = "f599f109-598c-50d3-9cc7-1514d4328aa1";
        assert!(
            f.hits(Fault::RelayCrash, &format!("{key}#0")),
            "attempt 0 hits"
        );
        let crashes = (0..343)
            .filter(|_| f.hits_attempt(Fault::RelayCrash, key))
            .count();
        assert!(
            crashes < 20,
            "{crashes} of 343 attempts crashed at p = 0.02"
        );
        assert!(seq(9).iter().any(|h| *h) && seq(9).iter().any(|h| !*h));
        // A count stays a count.
        let c = Faults::new(1);
        c.set(Fault::OrchestratorCrash, true, 2.0);
        assert!(c.hits_attempt(Fault::OrchestratorCrash, "x"));
        assert!(c.hits_attempt(Fault::OrchestratorCrash, "x"));
        assert!(!c.hits_attempt(Fault::OrchestratorCrash, "x"));
    }

    #[test]
    fn counts_run_out() {
        let f = Faults::new(1);
        f.set(Fault::PoisonMessage, true, 2.0);
        assert!(f.hits(Fault::PoisonMessage, "a"));
        assert!(f.hits(Fault::PoisonMessage, "b"));
        assert!(!f.hits(Fault::PoisonMessage, "c"));
        assert!(!f.is_on(Fault::PoisonMessage));
        assert_eq!(f.state(Fault::PoisonMessage).fired, 2);
    }
}
