//! The tap: the debugger's own consumer. It assigns every partition of the
//! chosen topics from the beginning (no group membership, so it never takes
//! partitions from anyone's group) and follows them live.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use eventscope_demo::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use crate::model::record::{self, Record};

/// Which topics to follow.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicSelection {
    /// Every topic whose name does not start with `__`, including new ones.
    AllNonInternal,
    Named(Vec<String>),
    /// Every topic not starting with `__` except these (the window's topic selection).
    AllExcept(Vec<String>),
}

impl TopicSelection {
    pub fn wants(&self, topic: &str) -> bool {
        match self {
            TopicSelection::AllNonInternal => !topic.starts_with("__"),
            TopicSelection::Named(names) => names.iter().any(|n| n == topic),
            TopicSelection::AllExcept(names) => {
                !topic.starts_with("__") && !names.iter().any(|n| n == topic)
            }
        }
    }
}

/// A topic of the cluster as the tap's metadata saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: usize,
}

/// What a window changes while the tap runs: the selection (in), the
/// cluster's non-internal topics (out).
pub struct Steering {
    pub selection: watch::Receiver<TopicSelection>,
    pub topics: watch::Sender<Vec<TopicInfo>>,
}

/// Connection status of the tap, latest value only.
#[derive(Debug, Clone, PartialEq)]
pub enum TapStatus {
    Connecting,
    Following { partitions: usize },
    Error { reason: String },
}

/// Records handed from the tap to its reader together: what one poll found ready, up to
/// [`MAX_BATCH`]. One channel message per batch, not per record.
pub type Batch = Vec<Record>;

/// Most records in one [`Batch`].
pub const MAX_BATCH: usize = 1024;

/// How long the tap waits for a record before it looks at its stop signal again.
const POLL_WAIT: Duration = Duration::from_millis(10);

pub fn to_record(m: &BorrowedMessage<'_>) -> Record {
    let headers = m
        .headers()
        .map(|h| {
            // Sized first: one allocation per buffer.
            let (names, values) = h.iter().fold((0, 0), |(n, v), x| {
                (n + x.key.len(), v + x.value.map_or(0, <[u8]>::len))
            });
            let mut out = record::Headers::with_capacity(h.count(), names, values);
            for x in h.iter() {
                out.push(x.key, x.value);
            }
            out
        })
        .unwrap_or_default();
    let timestamp_ms = match m.timestamp() {
        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
        Timestamp::NotAvailable => None,
    };
    Record {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms,
        key: m.key().map(<[u8]>::to_vec),
        headers,
        value: m.payload().map(<[u8]>::to_vec),
    }
}

fn create(settings: &KafkaSettings) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    let mut c = settings.base();
    c.set(
        "group.id",
        format!("eventscope-tap-{}", uuid::Uuid::new_v4()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.partition.eof", "false")
    .set("fetch.wait.max.ms", "50")
    .set("client.id", "eventscope-tap");
    c.create()
}

/// Partitions of every topic that exists now (metadata for all topics: it
/// never auto-creates one).
fn discover(consumer: &BaseConsumer) -> Result<Vec<TopicInfo>, rdkafka::error::KafkaError> {
    let md = consumer.fetch_metadata(None, Duration::from_secs(5))?;
    let mut out: Vec<TopicInfo> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| TopicInfo {
            name: t.name().to_owned(),
            partitions: t.partitions().len(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Follow the topics, sending each record to `records_tx` until shutdown.
/// The send waits for room: nothing observed is lost. A GUI puts its own
/// dropping stage behind this channel, so a slow frame never slows the tap.
pub async fn run(
    settings: KafkaSettings,
    sel: TopicSelection,
    records_tx: mpsc::Sender<Batch>,
    status_tx: watch::Sender<TapStatus>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    run_from(
        settings,
        sel,
        HashMap::new(),
        records_tx,
        status_tx,
        shutdown,
    )
    .await
}

/// Like [`run`], but partitions listed in `from` start at that offset (for a
/// run that should see only its own records on a broker with history).
pub async fn run_from(
    settings: KafkaSettings,
    sel: TopicSelection,
    from: HashMap<(String, i32), i64>,
    records_tx: mpsc::Sender<Batch>,
    status_tx: watch::Sender<TapStatus>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (_keep, selection) = watch::channel(sel);
    let (topics, _) = watch::channel(Vec::new());
    let steer = Steering { selection, topics };
    // A plain polling consumer on a thread of its own: no timer or waker per
    // record on the hot path (tap + model went from 82k to 104k records/s).
    tokio::task::spawn_blocking(move || {
        tap_loop(settings, steer, from, records_tx, status_tx, shutdown)
    })
    .await?
}

/// Like [`run`], with the selection changed while running: a topic dropped
/// from it is unassigned; taken back, it resumes after the last record seen,
/// so nothing is delivered twice. The cluster's topics are published on
/// `steer.topics` as they are discovered.
pub async fn run_steered(
    settings: KafkaSettings,
    steer: Steering,
    records_tx: mpsc::Sender<Batch>,
    status_tx: watch::Sender<TapStatus>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        tap_loop(
            settings,
            steer,
            HashMap::new(),
            records_tx,
            status_tx,
            shutdown,
        )
    })
    .await?
}

/// Asked to stop, or nobody left to tell or to listen (the session was dropped).
fn stopped(shutdown: &watch::Receiver<bool>, records_tx: &mpsc::Sender<Batch>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err() || records_tx.is_closed()
}

fn tap_loop(
    settings: KafkaSettings,
    mut steer: Steering,
    from: HashMap<(String, i32), i64>,
    records_tx: mpsc::Sender<Batch>,
    status_tx: watch::Sender<TapStatus>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let consumer = create(&settings)?;
    let mut assigned: HashSet<(String, i32)> = HashSet::new();
    // Next offset per partition: where to start or resume.
    let mut next = from;
    let mut last_discovery = Instant::now() - Duration::from_secs(60);
    let mut since_check = 0u32;
    loop {
        since_check += 1;
        if since_check >= 1024 || last_discovery.elapsed() > Duration::from_secs(2) {
            since_check = 0;
            if stopped(&shutdown, &records_tx) {
                return Ok(());
            }
        }
        let reselected = steer.selection.has_changed().unwrap_or(false);
        if reselected || last_discovery.elapsed() > Duration::from_secs(2) {
            last_discovery = Instant::now();
            let sel = steer.selection.borrow_and_update().clone();
            // The consumer's own metadata: it then knows each partition's leader when the
            // partition is assigned, and asks for its first offset at once (a separate client
            // left it to find the leader by itself, half a second later).
            match discover(&consumer) {
                Ok(topics) => {
                    let wanted: HashSet<(String, i32)> = topics
                        .iter()
                        .filter(|t| sel.wants(&t.name))
                        .flat_map(|t| {
                            (0..i32::try_from(t.partitions).unwrap_or(0))
                                .map(|p| (t.name.clone(), p))
                        })
                        .collect();
                    let mut add = TopicPartitionList::new();
                    for (t, p) in &wanted {
                        if assigned.insert((t.clone(), *p)) {
                            let start = match next.get(&(t.clone(), *p)) {
                                Some(&o) => Offset::Offset(o),
                                None => Offset::Beginning,
                            };
                            add.add_partition_offset(t, *p, start)?;
                        }
                    }
                    let mut gone = TopicPartitionList::new();
                    assigned.retain(|(t, p)| {
                        let keep = wanted.contains(&(t.clone(), *p));
                        if !keep {
                            gone.add_partition(t, *p);
                        }
                        keep
                    });
                    if gone.count() > 0 {
                        // Remember where each stops (the next offset the
                        // application would have got), to resume there.
                        if let Ok(pos) = consumer.position() {
                            for e in gone.elements() {
                                if let Some(Offset::Offset(o)) = pos
                                    .find_partition(e.topic(), e.partition())
                                    .map(|x| x.offset())
                                {
                                    next.insert((e.topic().to_owned(), e.partition()), o);
                                }
                            }
                        }
                        consumer.incremental_unassign(&gone)?;
                    }
                    if add.count() > 0 {
                        consumer.incremental_assign(&add)?;
                    }
                    let _ = status_tx.send(TapStatus::Following {
                        partitions: assigned.len(),
                    });
                    let listed: Vec<TopicInfo> = topics
                        .into_iter()
                        .filter(|t| !t.name.starts_with("__"))
                        .collect();
                    steer.topics.send_if_modified(|old| {
                        let changed = *old != listed;
                        if changed {
                            *old = listed;
                        }
                        changed
                    });
                }
                Err(e) => {
                    let _ = status_tx.send(TapStatus::Error {
                        reason: e.to_string(),
                    });
                }
            }
        }
        // A short wait: when nothing comes, a stop is seen within it.
        match consumer.poll(POLL_WAIT) {
            None => {
                if stopped(&shutdown, &records_tx) {
                    return Ok(());
                }
            }
            Some(Ok(m)) => {
                // What librdkafka has fetched already goes in the same hand-off.
                let mut batch = Vec::with_capacity(64);
                batch.push(to_record(&m));
                drop(m);
                let mut failed = None;
                while batch.len() < MAX_BATCH {
                    match consumer.poll(Duration::ZERO) {
                        Some(Ok(m)) => batch.push(to_record(&m)),
                        Some(Err(e)) => {
                            failed = Some(e);
                            break;
                        }
                        None => break,
                    }
                }
                // Waits for room: nothing observed is lost.
                if records_tx.blocking_send(batch).is_err() {
                    return Ok(());
                }
                if let Some(e) = failed {
                    let _ = status_tx.send(TapStatus::Error {
                        reason: e.to_string(),
                    });
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Some(Err(e)) => {
                let _ = status_tx.send(TapStatus::Error {
                    reason: e.to_string(),
                });
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Next offset to read of every partition, from what was observed.
pub fn positions<'a>(records: impl Iterator<Item = &'a Record>) -> HashMap<(String, i32), i64> {
    // Keyed by borrowed names while counting; a name is copied once per partition.
    let mut m: HashMap<(&str, i32), i64, foldhash::fast::RandomState> = HashMap::default();
    for r in records {
        let e = m.entry((r.topic.as_str(), r.partition)).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    m.into_iter()
        .map(|((t, p), o)| ((t.to_owned(), p), o))
        .collect()
}

/// The batches of `records`, their envelopes decoded on a thread of its own (see
/// [`crate::model::decode_batch`]); ends when `records` ends. Batches the model is done with
/// go to the [`DropAside`], to be freed on another thread (a batch is thousands of small
/// allocations).
pub fn decode_ahead(
    mut records: mpsc::Receiver<Batch>,
    cfg: crate::model::envelope::DecodeConfig,
) -> (mpsc::Receiver<crate::model::DecodedBatch>, DropAside) {
    let (tx, rx) = mpsc::channel(4);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<crate::model::DecodedBatch>();
    let dropper = std::thread::Builder::new()
        .name("tap-free".into())
        .spawn(move || for _ in done_rx {});
    let drop_aside = DropAside(dropper.ok().map(|_| done_tx));
    let spawned = std::thread::Builder::new()
        .name("tap-decode".into())
        .spawn(move || {
            while let Some(batch) = records.blocking_recv() {
                if tx
                    .blocking_send(crate::model::decode_batch(batch, &cfg))
                    .is_err()
                {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("cannot start the decoding thread ({e}); nothing is read");
    }
    (rx, drop_aside)
}

/// Where the model hands the batches it is done with, to be freed on a thread of their own
/// (or here, if that thread could not start).
pub struct DropAside(Option<std::sync::mpsc::Sender<crate::model::DecodedBatch>>);

impl DropAside {
    pub fn send(&self, batch: crate::model::DecodedBatch) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each partition's next offset: one past the highest seen, whatever the runs.
    #[test]
    fn positions_are_one_past_the_highest_offset_of_each_partition() {
        let recs: Vec<Record> = [
            ("a", 0, 5),
            ("a", 0, 6),
            ("a", 1, 9),
            ("a", 0, 4),
            ("b", 0, 1),
            ("a", 1, 8),
            ("a", 0, 7),
        ]
        .into_iter()
        .map(|(t, p, o)| Record::new(t, p, o))
        .collect();
        let got = positions(recs.iter());
        let want: HashMap<(String, i32), i64> = [
            (("a".to_owned(), 0), 8),
            (("a".to_owned(), 1), 10),
            (("b".to_owned(), 0), 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
        assert!(positions(std::iter::empty()).is_empty());
    }
}
