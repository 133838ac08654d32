//! The idempotent consumer loop every service runs.
//!
//! For each record: decode the envelope; in ONE transaction mark
//! `processed_events(consumer, event_id)` and apply the effect (with its outbox
//! rows); commit; only then store the offset for the background commit. The
//! records one poll finds ready share that transaction, applied in offset order.
//! Undecodable records go to the `dlq` and the consumer goes on; so does a
//! record whose effect the database refuses for good (a constraint, a trigger).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use opentelemetry::KeyValue;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset};
use tokio::sync::watch;

use crate::context::Ctx;
use crate::contracts::Registry;
use crate::envelope::Envelope;
use crate::faults::Fault;
use crate::saga::SagaMode;
use crate::store::{mark_processed, StoreError, Tx};
use crate::telemetry::{self, attr, Message as TracedMessage, Operation, Trace};
use crate::topics;
use crate::values::ValueCodec;

/// How a task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    /// Killed by an injected fault; the supervisor restarts it.
    Crashed,
}

/// A service's reaction to one message.
pub trait Handler: Send + Sync + 'static {
    /// Consumer group and `processed_events.consumer`.
    fn name(&self) -> &'static str;
    /// The topics this consumer reads while the demo runs sagas in `modes`.
    fn topics(&self, modes: &[SagaMode]) -> Vec<&'static str>;
    /// Whether this consumer handles `msg` at all. A record it passes over
    /// (the other saga mode's, on a topic both modes use) is not a delivery to
    /// it: no transaction, no `processed_events` row, its offset just moves on.
    fn wants(&self, _topic: &str, _msg: &Envelope) -> bool {
        true
    }
    /// The fault that kills this consumer after its effect, before the offset is stored.
    fn crash_fault(&self) -> Fault {
        Fault::ConsumerCrash
    }
    /// Whether the `no-idempotency` fault removes this consumer's duplicate check.
    fn honours_no_idempotency(&self) -> bool {
        true
    }
    /// Whether a recognised redelivery makes this consumer send its stored
    /// replies again (an idempotent receiver answering a repeated request: the
    /// sender may have missed the first answer). The reply keeps its event id,
    /// so observers see a duplicate delivery, never a second effect. In a
    /// choreography the service publishes its outcome again the same way.
    fn replies_again_on_redelivery(&self) -> bool {
        true
    }
    /// Whether this consumer can read `msg`: a contract version it knows (the
    /// registered ones, by default) and a payload that matches it. A record it
    /// cannot read goes to the dlq with the reason.
    fn reads(&self, msg: &Envelope) -> Result<(), String> {
        Registry::demo()
            .and_then(|r| r.read(msg.dataschema.as_deref(), &msg.data))
            .map_err(|e| format!("{} cannot read {}: {e}", self.name(), msg.event_type))
    }
    /// The working state a batch's effects share, a unit of work: opened in
    /// the batch's transaction before its first effect, written back by
    /// [`Handler::close_batch`] before the commit (the orchestrator loads the
    /// batch's sagas in one query and writes each back once).
    type Batch: Default + Send;
    /// Open the batch's unit of work for `msgs` (its records, in offset order).
    fn open_batch<'a>(
        &'a self,
        _tx: &'a mut Tx,
        _msgs: &'a [&'a Envelope],
    ) -> impl Future<Output = Result<Self::Batch, StoreError>> + Send + 'a {
        async { Ok(Self::Batch::default()) }
    }
    /// Write what the batch's effects left in its unit of work.
    fn close_batch<'a>(
        &'a self,
        _tx: &'a mut Tx,
        _batch: Self::Batch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        async { Ok(()) }
    }
    /// Account for a record this consumer could not read, after it went to
    /// the dlq, inside `tx` (the orchestrator still opens the order's saga, so
    /// that its step deadline ends it).
    fn unreadable<'a>(
        &'a self,
        _ctx: &'a Ctx,
        _tx: &'a mut Tx,
        _batch: &'a mut Self::Batch,
        _msg: &'a Envelope,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        async { Ok(()) }
    }
    /// Apply the effect inside `tx`. `trace` is the consumer's span for this
    /// message: the outbox rows written for it are its children.
    fn handle<'a>(
        &'a self,
        ctx: &'a Ctx,
        tx: &'a mut Tx,
        batch: &'a mut Self::Batch,
        msg: &'a Envelope,
        trace: &'a Trace,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;
}

/// The envelope of `m`; an Avro value written with the demo's registry ids (`values`) is
/// read through its schema first.
fn decode(m: &BorrowedMessage<'_>, values: Option<&ValueCodec>) -> Result<Envelope, String> {
    let headers = m.headers();
    let lookup = |name: &str| -> Option<&[u8]> {
        headers.and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
    };
    match m.payload().and_then(|p| values?.decode(p)) {
        Some(data) => {
            let json = serde_json::to_vec(&data?).map_err(|e| e.to_string())?;
            Envelope::from_parts(lookup, Some(&json))
        }
        None => Envelope::from_parts(lookup, m.payload()),
    }
    .map_err(|e| e.to_string())
}

/// The producer's trace context: the W3C header, else the CloudEvents extension.
fn traceparent(m: &BorrowedMessage<'_>) -> Option<String> {
    let headers = m.headers()?;
    let find = |name: &str| {
        headers
            .iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    find(telemetry::TRACEPARENT_HEADER).or_else(|| find(crate::envelope::TRACEPARENT))
}

/// The consumer's span for `m`: a child of the context the producer sent.
fn process_span(ctx: &Ctx, group: &str, m: &BorrowedMessage<'_>, env: Option<&Envelope>) -> Trace {
    let key = m.key().map(String::from_utf8_lossy);
    let parent = telemetry::remote_parent(traceparent(m).as_deref());
    let mut extra = vec![
        KeyValue::new(attr::HOP, "consume"),
        KeyValue::new(attr::CONSUMER_GROUP, group.to_owned()),
        KeyValue::new(attr::KAFKA_CONSUMER_GROUP, group.to_owned()),
    ];
    if let Some(env) = env {
        extra.extend([
            KeyValue::new(attr::CE_ID, env.id.clone()),
            KeyValue::new(attr::CE_TYPE, env.event_type.clone()),
            KeyValue::new(attr::CE_SOURCE, env.source.clone()),
            KeyValue::new(attr::CE_SUBJECT, env.subject.clone()),
            KeyValue::new(attr::ORDER_ID, env.subject.clone()),
        ]);
        if let Some(c) = &env.correlation_id {
            extra.push(KeyValue::new(attr::CORRELATION_ID, c.clone()));
        }
    }
    Trace::messaging(
        &ctx.telemetry.tracer(group),
        &parent,
        Operation::Process,
        &TracedMessage {
            topic: m.topic(),
            key: key.as_deref(),
            message_id: env.map(|e| e.id.as_str()),
            partition: Some(m.partition()),
            offset: Some(m.offset()),
        },
        extra,
    )
}

/// Records one transaction takes at most: what one poll found ready.
const BATCH: usize = 64;

/// A record of a batch to apply in the batch's transaction (a record that is
/// not, undecodable or not for this consumer, only moves its offset on).
struct Work {
    env: Envelope,
    span: Trace,
    /// False: it went to the dlq, the handler only accounts for it.
    readable: bool,
}

/// Run one consumer until shutdown or an injected crash.
///
/// What one poll finds ready (up to [`BATCH`] records) is applied in ONE
/// transaction, record after record in offset order, each with its own
/// processed-event mark and span; the offsets are stored after the commit.
pub async fn run<H: Handler>(
    ctx: Arc<Ctx>,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Exit> {
    let consumer = ClosedAside(std::sync::Arc::new(ctx.kafka.consumer(handler.name())?));
    consumer.subscribe(&handler.topics(&ctx.config.saga_modes()))?;
    let name = handler.name();
    loop {
        let msg = tokio::select! {
            _ = shutdown.changed() => return Ok(Exit::Shutdown),
            m = consumer.recv() => m,
        };
        let first = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(consumer = name, error = %e, "consume error, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            // Only what is ready now: a pending receive is dropped, nothing is taken.
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    tracing::debug!(consumer = name, error = %e, "consume error");
                    break;
                }
                None => break,
            }
        }
        // Each record decoded; None: not for this consumer.
        let decoded: Vec<Result<Option<Envelope>, String>> = batch
            .iter()
            .map(|m| {
                decode(m, ctx.config.values.as_deref())
                    .map(|env| handler.wants(m.topic(), &env).then_some(env))
            })
            .collect();
        // consumer-crash (decided before the work, acted on after it): the
        // first record that dies ends the batch there. It is applied, its
        // offset is not stored; the records after it are not touched now (a
        // consumer that died has not seen them) and come back after the rewind.
        let crash_at = decoded.iter().position(|d| match d {
            Ok(Some(env)) => ctx
                .faults
                .hits_attempt(handler.crash_fault(), &format!("{name}:{}", env.id)),
            _ => false,
        });
        let taken = crash_at.map_or(batch.len(), |i| i + 1);
        let mut items = Vec::with_capacity(taken);
        for (m, d) in batch.iter().zip(decoded).take(taken) {
            items.push(match d {
                Err(why) => {
                    let span = process_span(&ctx, name, m, None);
                    span.fail(format!("undecodable, sent to {}: {why}", topics::DLQ));
                    dead_letter(&ctx, name, m, &why).await;
                    span.end();
                    None
                }
                Ok(None) => None,
                Ok(Some(env)) => {
                    let span = process_span(&ctx, name, m, Some(&env));
                    let readable = match handler.reads(&env) {
                        Ok(()) => true,
                        Err(why) => {
                            span.fail(format!("unreadable, sent to {}: {why}", topics::DLQ));
                            dead_letter(&ctx, name, m, &why).await;
                            ctx.dead_lettered
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            false
                        }
                    };
                    Some(Work {
                        env,
                        span,
                        readable,
                    })
                }
            });
        }
        // The batch's records to apply, and their messages.
        let (works, messages): (Vec<(&Envelope, &Trace, bool)>, Vec<&BorrowedMessage<'_>>) = items
            .iter()
            .zip(&batch)
            .filter_map(|(w, m)| w.as_ref().map(|w| ((&w.env, &w.span, w.readable), m)))
            .unzip();
        if !works.is_empty() {
            let done = retrying(&ctx, name, &works, &mut shutdown, || {
                attempt(&ctx, handler.as_ref(), &works)
            })
            .await;
            let duplicates = match done {
                Outcome::Applied(duplicates) => Some(duplicates),
                Outcome::Shutdown => None,
                // A record of the batch cannot be applied: apply them one at a
                // time, and send the one that cannot to the dlq.
                Outcome::Rejected(_) => {
                    one_by_one(&ctx, handler.as_ref(), &works, &messages, &mut shutdown).await
                }
            };
            let Some(duplicates) = duplicates else {
                for (_, span, _) in &works {
                    span.end();
                }
                return Ok(Exit::Shutdown);
            };
            for ((_, span, _), duplicate) in works.iter().zip(duplicates) {
                if duplicate {
                    ctx.duplicates_skipped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    span.set_attributes(vec![KeyValue::new(attr::DUPLICATE, true)]);
                }
                span.end();
            }
        }
        for m in &batch[..crash_at.unwrap_or(batch.len())] {
            consumer.store_offset_from_message(m)?;
        }
        if let (Some(i), Some(Some(Work { env, .. }))) = (crash_at, items.last()) {
            // Killed after the effect, before the offset is stored. A restarted
            // consumer resumes from the last stored offset: this very record.
            // The restart is simulated in place (a rewind, no group rebalance),
            // so a crash probability of 0.3 costs a redelivery, not seconds of
            // rejoining.
            tracing::warn!(consumer = name, event = %env.id, "injected crash after the effect, before the offset commit");
            if !rewind(&consumer, name, &batch[i..]).await {
                // The rewind did not take: die for real. Dropping the consumer
                // commits the stored offsets (the crashed record's is not
                // among them); the supervisor starts a new one that resumes there.
                return Ok(Exit::Crashed);
            }
            ctx.note_restart();
            tokio::select! {
                _ = shutdown.changed() => return Ok(Exit::Shutdown),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

/// A consumer closed on a thread of its own when dropped. librdkafka's close waits for the
/// group coordinator (it commits the stored offsets and leaves the group) and can wait for
/// ever when the broker does not answer (seen on tansu in CI: a demo's shutdown hung on it);
/// a tokio worker must not block on that, and the shutdown must not wait for it.
struct ClosedAside(std::sync::Arc<StreamConsumer>);

impl std::ops::Deref for ClosedAside {
    type Target = StreamConsumer;
    fn deref(&self) -> &StreamConsumer {
        &self.0
    }
}

impl Drop for ClosedAside {
    fn drop(&mut self) {
        let consumer = self.0.clone();
        // The thread drops the last reference, once this one is gone: the close runs there.
        let _ = std::thread::Builder::new()
            .name("eventscope-consumer-close".into())
            .spawn(move || {
                while std::sync::Arc::strong_count(&consumer) > 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(consumer);
            });
    }
}

/// Seeks tried on a partition still assigned before the rewind gives up.
const SEEK_ATTEMPTS: u32 = 5;

/// Seek every partition of `unstored` (the crashed record and the rest of
/// its batch, not taken) back to its first record there: the earlier ones
/// were stored. False when a partition this consumer still owns would not
/// seek: its records after the crash would be skipped, the caller must
/// restart the consumer instead.
async fn rewind(consumer: &StreamConsumer, name: &str, unstored: &[BorrowedMessage<'_>]) -> bool {
    let mut sought: Vec<(&str, i32)> = Vec::new();
    for m in unstored {
        let tp = (m.topic(), m.partition());
        if sought.contains(&tp) {
            continue;
        }
        sought.push(tp);
        let mut attempt = 0;
        while let Err(e) = consumer.seek(
            m.topic(),
            m.partition(),
            Offset::Offset(m.offset()),
            Duration::from_secs(5),
        ) {
            let assigned = consumer
                .assignment()
                .map(|a| a.find_partition(m.topic(), m.partition()).is_some())
                .unwrap_or(true);
            if !assigned {
                // Revoked meanwhile: its next owner resumes from the
                // committed offset, which redelivers it all the same.
                tracing::debug!(consumer = name, error = %e, "rewind after injected crash: partition revoked");
                break;
            }
            attempt += 1;
            tracing::warn!(
                consumer = name,
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                attempt,
                error = %e,
                "rewind after injected crash: seek failed"
            );
            if attempt >= SEEK_ATTEMPTS {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
        }
    }
    true
}

/// How a batch's transaction ended.
enum Outcome {
    /// Committed; which records were recognised duplicates.
    Applied(Vec<bool>),
    /// A record cannot be applied ([`StoreError::is_about_the_record`]), tried
    /// [`REJECT_AFTER`] times.
    Rejected(StoreError),
    Shutdown,
}

/// Attempts before an error about a record rejects it (the dlq takes it).
const REJECT_AFTER: u32 = 3;

/// Transient errors in a row after which a consumer says it is still retrying
/// (with the back-off, about 8 s), and how often it says so again after that (about a minute).
const TRANSIENTS_REPORTED: u64 = 10;
const TRANSIENTS_REPORTED_EVERY: u64 = 30;

/// Run one transaction for a batch, retrying store errors: transient ones
/// and the database's own (unreachable, a table missing) for as long as they
/// last, an error about a record [`REJECT_AFTER`] times.
async fn retrying<F, Fut>(
    ctx: &Ctx,
    consumer: &str,
    works: &[(&Envelope, &Trace, bool)],
    shutdown: &mut watch::Receiver<bool>,
    mut once: F,
) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<bool>, StoreError>>,
{
    let mut backoff = Duration::from_millis(20);
    let mut rejections = 0;
    let mut transients = 0u64;
    loop {
        match once().await {
            Ok(duplicates) => return Outcome::Applied(duplicates),
            Err(e) if e.is_transient() => {
                tracing::debug!(consumer, error = %e, "transient, retrying");
                transients += 1;
                // A conflict that does not clear holds the consumer back: say so.
                if transients == TRANSIENTS_REPORTED || transients % TRANSIENTS_REPORTED_EVERY == 0
                {
                    tracing::warn!(consumer, error = %e, tries = transients, "still retrying");
                    ctx.report_error(format!(
                        "{consumer}: still retrying a batch after {transients} transient errors: {e}"
                    ));
                }
                for (_, trace, _) in works {
                    trace.add_event("transient store error; retrying", vec![]);
                }
            }
            Err(e) => {
                let events: Vec<&str> = works.iter().map(|(env, _, _)| env.id.as_str()).collect();
                if e.is_about_the_record() {
                    rejections += 1;
                    if rejections >= REJECT_AFTER {
                        tracing::warn!(consumer, events = ?events, error = %e, "cannot apply");
                        return Outcome::Rejected(e);
                    }
                }
                tracing::error!(consumer, events = ?events, error = %e, "cannot apply; retrying");
                ctx.report_error(format!("{consumer}: {e}"));
                for (_, trace, _) in works {
                    trace.add_event(
                        "cannot apply; retrying",
                        vec![KeyValue::new("exception.message", e.to_string())],
                    );
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return Outcome::Shutdown,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Apply a rejected batch's records one transaction each; a record that is
/// rejected on its own goes to the dlq with the error, unapplied, and the
/// consumer goes on (its offset is stored with the others'). Returns which
/// records were duplicates; None on shutdown.
async fn one_by_one<H: Handler>(
    ctx: &Ctx,
    handler: &H,
    works: &[(&Envelope, &Trace, bool)],
    messages: &[&BorrowedMessage<'_>],
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Vec<bool>> {
    let name = handler.name();
    let mut duplicates = Vec::with_capacity(works.len());
    for (work, m) in works.iter().zip(messages) {
        let one = std::slice::from_ref(work);
        match retrying(ctx, name, one, shutdown, || attempt(ctx, handler, one)).await {
            Outcome::Applied(d) => duplicates.extend(d),
            Outcome::Shutdown => return None,
            Outcome::Rejected(e) => {
                let (env, span, _) = work;
                let why = format!("{name} cannot apply {} {}: {e}", env.event_type, env.id);
                span.fail(format!("rejected, sent to {}: {why}", topics::DLQ));
                dead_letter(ctx, name, m, &why).await;
                ctx.dead_lettered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.report_error(why);
                duplicates.push(false);
            }
        }
    }
    Some(duplicates)
}

/// Apply a batch in one transaction: mark every record processed (one
/// statement), then record after record its effect (or for a record that went
/// to the dlq, let the handler account for it). A recognised redelivery skips
/// the effect (and may send the stored replies again). Returns which records
/// were duplicates.
async fn attempt<H: Handler>(
    ctx: &Ctx,
    handler: &H,
    works: &[(&Envelope, &Trace, bool)],
) -> Result<Vec<bool>, StoreError> {
    let mut tx = ctx.db.begin().await?;
    let skip_check = handler.honours_no_idempotency() && ctx.faults.is_on(Fault::NoIdempotency);
    let ids: Vec<&str> = works.iter().map(|(env, _, _)| env.id.as_str()).collect();
    let mut fresh = mark_processed(&mut tx, handler.name(), &ids).await?;
    let envs: Vec<&Envelope> = works.iter().map(|(env, _, _)| *env).collect();
    let mut batch = handler.open_batch(&mut tx, &envs).await?;
    let mut duplicates = Vec::with_capacity(works.len());
    for (env, trace, readable) in works {
        let first = fresh.remove(&env.id);
        if !readable {
            if first {
                handler.unreadable(ctx, &mut tx, &mut batch, env).await?;
            }
            duplicates.push(false);
            continue;
        }
        if !first && !skip_check {
            if handler.replies_again_on_redelivery() {
                sqlx::query(
                    "UPDATE outbox SET published_at = NULL \
                     WHERE service = $1 AND causation_id = $2 AND published_at IS NOT NULL",
                )
                .bind(handler.name())
                .bind(&env.id)
                .execute(&mut *tx)
                .await?;
            }
            duplicates.push(true);
            continue;
        }
        handler.handle(ctx, &mut tx, &mut batch, env, trace).await?;
        duplicates.push(false);
    }
    handler.close_batch(&mut tx, batch).await?;
    tx.commit().await?;
    ctx.outbox_committed();
    Ok(duplicates)
}

/// Forward an undecodable record to the dlq with its origin in headers.
async fn dead_letter(ctx: &Ctx, consumer: &str, m: &BorrowedMessage<'_>, why: &str) {
    tracing::warn!(
        consumer,
        topic = m.topic(),
        partition = m.partition(),
        offset = m.offset(),
        why,
        "poison message to dlq"
    );
    let mut headers = OwnedHeaders::new();
    if let Some(h) = m.headers() {
        for x in h.iter() {
            headers = headers.insert(Header {
                key: x.key,
                value: x.value,
            });
        }
    }
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    headers = headers
        .insert(Header {
            key: "dlq_error",
            value: Some(why),
        })
        .insert(Header {
            key: "dlq_consumer",
            value: Some(consumer),
        })
        .insert(Header {
            key: "dlq_original_topic",
            value: Some(m.topic()),
        })
        .insert(Header {
            key: "dlq_original_partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "dlq_original_offset",
            value: Some(&offset),
        });
    let key = m.key().unwrap_or_default();
    let payload = m.payload().unwrap_or_default();
    loop {
        let rec = FutureRecord::to(topics::DLQ)
            .key(key)
            .payload(payload)
            .headers(headers.clone());
        match ctx.dlq_producer.send(rec, Duration::from_secs(5)).await {
            Ok(_) => return,
            Err((e, _)) => {
                tracing::warn!(error = %e, "dlq publish failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
