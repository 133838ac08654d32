//! The outbox relay: the only path from the services' transactions to Kafka.
//!
//! Polls unpublished rows in id order, publishes them with key = aggregate id and
//! CloudEvents binary headers, waits for the broker's acknowledgements, then marks
//! the acknowledged prefix published. A failed delivery leaves the row (and every
//! later row of the batch) unpublished for the next poll: at-least-once, per-key order kept.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Row;
use tokio::sync::watch;

use crate::consumer::Exit;
use crate::context::Ctx;
use crate::envelope::Envelope;
use crate::faults::Fault;
use crate::saga::SagaMode;
use crate::store::{now_ms, StoreError, Tx};
use crate::telemetry::{self, attr, Operation, Trace};

/// The polling relay's service name (its spans' `service.name`).
pub const RELAY: &str = "outbox-relay";

#[derive(Debug, Clone)]
struct Pending {
    id: i64,
    topic: String,
    key: String,
    envelope: Envelope,
    /// The context of the span that wrote the row.
    traceparent: Option<String>,
    /// When the row was written (ms since the epoch).
    created_at: i64,
}

/// The SELECT of the outbox columns [`pending`] reads, for both claims.
macro_rules! pending_columns {
    () => {
        "SELECT id, topic, msg_key, event_id, event_type, source, subject, correlation_id, \
         causation_id, aggregate_version, dataschema, event_time, payload, traceparent, \
         saga_mode, created_at"
    };
}

/// The columns a relay reads; `{claim}` is empty on SQLite (one writer) and
/// `FOR UPDATE SKIP LOCKED` on Postgres, where relays may run side by side.
/// A row is only taken when no earlier row of its key is still unpublished
/// (it is its key's first unpublished row), so a second relay never overtakes
/// the first within one aggregate.
///
/// The candidates (each key's first unpublished row, one pass over the
/// unpublished rows, grouped) are worked out once, in a materialized CTE, and
/// the rows then locked among them. Asked as "no earlier unpublished row of
/// its key" per row, PostgreSQL planned a nested loop, quadratic in the
/// backlog, while its statistics lagged behind an outbox that grew within the
/// last minute (1.4 s for 4,000 rows); and a row another relay marked
/// meanwhile is checked again by running the claim's plan once more for it:
/// with the grouping inside that plan, a grouping per such row (1–2 s claims
/// with two relays). The outer `published_at IS NULL` is what that check reads.
const CLAIM_SQL: &str = concat!(
    "WITH c AS MATERIALIZED (SELECT MIN(id) AS id FROM outbox WHERE published_at IS NULL \
     GROUP BY msg_key ORDER BY 1 LIMIT $1) ",
    pending_columns!(),
    " FROM outbox WHERE published_at IS NULL AND id IN (SELECT id FROM c) ORDER BY id"
);

/// [`CLAIM_SQL`]'s columns, every unpublished row in id order: on SQLite,
/// where one relay runs, nothing can overtake it within a key, and a key's
/// rows go out in one batch instead of one per batch (rows a consumer's
/// transaction writes for one order at once waited a round each).
const CLAIM_ALL_SQL: &str = concat!(
    pending_columns!(),
    " FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1"
);

/// Claim a batch. On Postgres the rows stay locked by the returned
/// transaction until it commits (after marking) or is dropped (a crash): no
/// other relay takes them meanwhile. On SQLite (one relay, one writer) the
/// claim is a plain read on the reader connection: no transaction, no turn
/// on the writer, and nothing held while the broker answers.
async fn claim(ctx: &Ctx, limit: i64) -> Result<(Option<Tx>, Vec<Pending>), StoreError> {
    if let Some(reader) = &ctx.db.reader {
        let rows = sqlx::query(CLAIM_ALL_SQL)
            .bind(limit)
            .fetch_all(reader)
            .await?;
        return Ok((None, pending(rows)?));
    }
    let mut tx = ctx.db.begin().await?;
    let sql = format!("{CLAIM_SQL} FOR UPDATE SKIP LOCKED");
    let rows = sqlx::query(&sql).bind(limit).fetch_all(&mut *tx).await?;
    let batch = pending(rows)?;
    // Nothing to publish: end the transaction now, not after the sleep.
    Ok((if batch.is_empty() { None } else { Some(tx) }, batch))
}

fn pending(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Pending>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let payload: String = r.try_get("payload")?;
        out.push(Pending {
            id: r.try_get("id")?,
            topic: r.try_get("topic")?,
            key: r.try_get("msg_key")?,
            envelope: Envelope {
                id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                source: r.try_get("source")?,
                time: r.try_get("event_time")?,
                subject: r.try_get("subject")?,
                correlation_id: r.try_get("correlation_id")?,
                causation_id: r.try_get("causation_id")?,
                aggregate_version: r.try_get("aggregate_version")?,
                dataschema: r.try_get("dataschema")?,
                saga_mode: r
                    .try_get::<Option<String>, _>("saga_mode")?
                    .as_deref()
                    .and_then(SagaMode::parse),
                data: serde_json::from_str(&payload)?,
            },
            traceparent: r.try_get("traceparent")?,
            created_at: r.try_get("created_at")?,
        });
    }
    Ok(out)
}

/// Count the attempts and mark the acknowledged rows, in the claim's
/// transaction when there is one (Postgres), else in a new one. `published`
/// is a subset of `attempted`: a row sent but left unmarked (the
/// `duplicate-publish` fault) only counts its attempt.
async fn mark(
    ctx: &Ctx,
    claim: Option<Tx>,
    attempted: &[i64],
    published: &[i64],
) -> Result<(), StoreError> {
    let mut tx = match claim {
        Some(tx) => tx,
        None => ctx.db.begin().await?,
    };
    let marked: HashSet<i64> = published.iter().copied().collect();
    let unmarked: Vec<i64> = attempted
        .iter()
        .copied()
        .filter(|id| !marked.contains(id))
        .collect();
    if !unmarked.is_empty() {
        let sql = format!(
            "UPDATE outbox SET publish_count = publish_count + 1 WHERE id IN ({})",
            tx.backend.params(unmarked.len(), 1)
        );
        let mut q = sqlx::query(&sql);
        for id in &unmarked {
            q = q.bind(*id);
        }
        q.execute(&mut *tx).await?;
    }
    if !published.is_empty() {
        let p = tx.backend.placeholders(published.len() + 1, 1);
        let sql = format!(
            "UPDATE outbox SET publish_count = publish_count + 1, published_at = {} WHERE id IN ({})",
            p[0],
            p[1..].join(", ")
        );
        let mut q = sqlx::query(&sql).bind(now_ms());
        for id in published {
            q = q.bind(*id);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Where a sent record landed (partition, offset), or why it did not.
pub(crate) async fn landed(
    send: Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError>,
) -> Result<(i32, i64), String> {
    match send {
        Ok(fut) => match fut.await {
            Ok(Ok(d)) => Ok((d.partition, d.offset)),
            Ok(Err((e, _))) => Err(e.to_string()),
            Err(_) => Err("delivery cancelled".to_owned()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// The CloudEvents headers, with `content-type` the value's media type.
pub(crate) fn headers(env: &Envelope, content_type: &str) -> OwnedHeaders {
    env.headers().iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        let value = if *k == crate::envelope::CONTENT_TYPE {
            content_type
        } else {
            v.as_str()
        };
        h.insert(Header {
            key: k,
            value: Some(value),
        })
    })
}

/// The CloudEvents headers plus the trace context, as the CloudEvents
/// `ce_traceparent` extension and as the plain W3C `traceparent` header.
pub(crate) fn traced_headers(
    env: &Envelope,
    content_type: &str,
    traceparent: Option<&str>,
) -> OwnedHeaders {
    let h = headers(env, content_type);
    match traceparent {
        None => h,
        Some(tp) => h
            .insert(Header {
                key: crate::envelope::TRACEPARENT,
                value: Some(tp),
            })
            .insert(Header {
                key: telemetry::TRACEPARENT_HEADER,
                value: Some(tp),
            }),
    }
}

/// The relay's span for publishing one outbox row: a child of the context
/// stored with the row. Returns it with the context the record carries: the
/// row's (the span that wrote it; consumers continue from there), or for a row
/// written without one, the relay span's own.
pub(crate) fn publish_span(
    ctx: &Ctx,
    relay: &str,
    topic: &str,
    key: &str,
    env: &Envelope,
    stored: Option<&str>,
) -> (Trace, Option<String>) {
    let parent = telemetry::remote_parent(stored);
    let span = Trace::messaging(
        &ctx.telemetry.tracer(relay),
        &parent,
        Operation::Send,
        &telemetry::Message {
            topic,
            key: Some(key),
            message_id: Some(&env.id),
            partition: None,
            offset: None,
        },
        vec![
            KeyValue::new(attr::HOP, "relay publish"),
            KeyValue::new(attr::CE_TYPE, env.event_type.clone()),
            KeyValue::new(attr::ORDER_ID, env.subject.clone()),
        ],
    );
    let carried = telemetry::traceparent_of(&parent).or_else(|| span.traceparent());
    (span, carried)
}

/// Close a publish span with where the record landed, or why it did not.
pub(crate) fn end_publish_span(span: &Trace, result: &Result<(i32, i64), String>) {
    match result {
        Ok((p, o)) => span.set_attributes(telemetry::partition_attributes(Some(*p), Some(*o))),
        Err(e) => span.fail(format!("delivery failed: {e}")),
    }
    span.end();
}

/// The channel the outbox trigger NOTIFYs on commit (migration 0005, PostgreSQL).
pub const NOTIFY_CHANNEL: &str = "eventscope_outbox";

/// On PostgreSQL: LISTEN for the outbox trigger's NOTIFY and wake an idle
/// relay, so that rows committed by any process, not only this one, are
/// published at once. A lost connection is re-established; meanwhile the
/// relays fall back to polling.
pub async fn listen(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = async {
            let mut listener =
                sqlx::postgres::PgListener::connect(&ctx.config.database_url).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            loop {
                listener.recv().await?;
                ctx.outbox_committed();
            }
        };
        let ended: Result<(), sqlx::Error> = tokio::select! {
            _ = shutdown.changed() => return,
            r = session => r,
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "outbox listener lost; relays poll meanwhile");
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Run the relay until shutdown or an injected crash.
pub async fn run(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<Exit> {
    let timeout = ctx.config.relay_delivery_timeout;
    let mut producer: FutureProducer = ctx.kafka.producer(timeout)?;
    loop {
        if *shutdown.borrow() {
            return Ok(Exit::Shutdown);
        }
        let (tx, batch) = match claim(&ctx, ctx.config.relay_batch).await {
            Ok((tx, b)) if !b.is_empty() => (Some(tx), b),
            Ok(_) => (None, Vec::new()),
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot read the outbox");
                ctx.report_error(format!("relay: {e}"));
                (None, Vec::new())
            }
        };
        let Some(tx) = tx else {
            if !ctx.await_outbox(&mut shutdown).await {
                return Ok(Exit::Shutdown);
            }
            continue;
        };
        let wrong_key = ctx.faults.is_on(Fault::WrongPartitionKey);
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut spans = Vec::with_capacity(batch.len());
        for row in &batch {
            let key = if wrong_key {
                &row.envelope.id
            } else {
                &row.key
            };
            let (span, traceparent) = publish_span(
                &ctx,
                RELAY,
                &row.topic,
                key,
                &row.envelope,
                row.traceparent.as_deref(),
            );
            spans.push(span);
            let (payload, content_type) = ctx.config.value_bytes(&row.envelope)?;
            let rec = FutureRecord::to(&row.topic)
                .key(key.as_bytes())
                .payload(&payload)
                .headers(traced_headers(
                    &row.envelope,
                    content_type,
                    traceparent.as_deref(),
                ));
            deliveries.push(producer.send_result(rec).map_err(|(e, _)| e));
        }
        let mut acked = Vec::with_capacity(batch.len());
        let mut failure = None;
        for ((row, d), span) in batch.iter().zip(deliveries).zip(&spans) {
            let landed = landed(d).await;
            if landed.is_ok() {
                ctx.relay_latency.record(now_ms() - row.created_at);
            }
            end_publish_span(span, &landed);
            let result = landed.map(|_| ());
            match result {
                Ok(()) if failure.is_none() => acked.push(row),
                Ok(()) => {}
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(e);
                    }
                }
            }
        }
        // relay-crash: killed after publishing, before marking anything.
        if let Some(first) = acked.first() {
            if ctx
                .faults
                .hits_attempt(Fault::RelayCrash, &first.envelope.id)
            {
                tracing::warn!(
                    rows = acked.len(),
                    "injected relay crash before marking published"
                );
                return Ok(Exit::Crashed);
            }
        }
        let attempted: Vec<i64> = acked.iter().map(|r| r.id).collect();
        let published: Vec<i64> = acked
            .iter()
            .filter(|r| {
                // Injected once per row, whichever relay sends it.
                let crash = ctx.faults.hits(Fault::DuplicatePublish, &r.envelope.id)
                    && ctx
                        .relay_duplicated
                        .lock()
                        .is_ok_and(|mut done| done.insert(r.id));
                !crash
            })
            .map(|r| r.id)
            .collect();
        if let Err(e) = mark(&ctx, tx, &attempted, &published).await {
            tracing::warn!(error = %e, "relay cannot mark rows published; they will be sent again");
            ctx.report_error(format!("relay: {e}"));
        }
        if let Some(e) = failure {
            tracing::warn!(error = %e, published = published.len(), "relay delivery failed; backing off");
            ctx.report_error(format!("relay: delivery failed: {e}"));
            tokio::select! {
                _ = shutdown.changed() => return Ok(Exit::Shutdown),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            // A fresh producer: an idempotent producer may be left fenced after timeouts.
            producer = ctx.kafka.producer(timeout)?;
        }
    }
}
