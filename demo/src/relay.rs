//! The outbox relay: the only path from the services' transactions to Kafka.
//!
//! Polls unpublished rows in id order, publishes them with key = aggregate id and
//! CloudEvents binary headers, waits for the broker's acknowledgements, then marks
//! the acknowledged prefix published. A failed delivery leaves the row (and every
//! later row of the batch) unpublished for the next poll: at-least-once, per-key order kept.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Row;
use tokio::sync::watch;

use crate::consumer::Exit;
use crate::envelope::Envelope;
use crate::faults::Fault;
use crate::store::{now_ms, StoreError};
use crate::system::Ctx;

#[derive(Debug, Clone)]
struct Pending {
    id: i64,
    topic: String,
    key: String,
    envelope: Envelope,
}

async fn fetch_batch(ctx: &Ctx, limit: i64) -> Result<Vec<Pending>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, topic, msg_key, event_id, event_type, source, subject, correlation_id, \
         causation_id, aggregate_version, event_time, payload \
         FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&ctx.db.pool)
    .await?;
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
                data: serde_json::from_str(&payload)?,
            },
        });
    }
    Ok(out)
}

fn in_list(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn mark(ctx: &Ctx, attempted: &[i64], published: &[i64]) -> Result<(), StoreError> {
    let mut tx = ctx.db.begin().await?;
    if !attempted.is_empty() {
        let sql = format!(
            "UPDATE outbox SET publish_count = publish_count + 1 WHERE id IN ({})",
            in_list(attempted.len(), 1)
        );
        let mut q = sqlx::query(&sql);
        for id in attempted {
            q = q.bind(*id);
        }
        q.execute(&mut *tx).await?;
    }
    if !published.is_empty() {
        let sql = format!(
            "UPDATE outbox SET published_at = $1 WHERE id IN ({})",
            in_list(published.len(), 2)
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

fn headers(env: &Envelope) -> OwnedHeaders {
    env.headers().iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_str()),
        })
    })
}

/// Run the relay until shutdown or an injected crash.
pub async fn run(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<Exit> {
    let timeout = ctx.config.relay_delivery_timeout;
    let mut producer: FutureProducer = ctx.kafka.producer(timeout)?;
    // Rows whose "crash before marking" was already injected once.
    let mut duplicated: HashSet<i64> = HashSet::new();
    loop {
        if *shutdown.borrow() {
            return Ok(Exit::Shutdown);
        }
        let batch = match fetch_batch(&ctx, ctx.config.relay_batch).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot read the outbox");
                ctx.report_error(format!("relay: {e}"));
                Vec::new()
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = shutdown.changed() => return Ok(Exit::Shutdown),
                _ = tokio::time::sleep(ctx.config.relay_interval) => {}
            }
            continue;
        }
        let wrong_key = ctx.faults.is_on(Fault::WrongPartitionKey);
        let mut deliveries = Vec::with_capacity(batch.len());
        for row in &batch {
            let key = if wrong_key {
                &row.envelope.id
            } else {
                &row.key
            };
            let payload = serde_json::to_vec(&row.envelope.data)?;
            let rec = FutureRecord::to(&row.topic)
                .key(key.as_bytes())
                .payload(&payload)
                .headers(headers(&row.envelope));
            deliveries.push(producer.send_result(rec).map_err(|(e, _)| e));
        }
        let mut acked = Vec::with_capacity(batch.len());
        let mut failure = None;
        for (row, d) in batch.iter().zip(deliveries) {
            let result = match d {
                Ok(fut) => match fut.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("delivery cancelled".to_owned()),
                },
                Err(e) => Err(e.to_string()),
            };
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
            if ctx.faults.hits(Fault::RelayCrash, &first.envelope.id) {
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
                let crash = !duplicated.contains(&r.id)
                    && ctx.faults.hits(Fault::DuplicatePublish, &r.envelope.id);
                if crash {
                    duplicated.insert(r.id);
                }
                !crash
            })
            .map(|r| r.id)
            .collect();
        if let Err(e) = mark(&ctx, &attempted, &published).await {
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
