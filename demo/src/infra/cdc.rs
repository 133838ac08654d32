//! The CDC relay, Debezium-style: instead of polling the outbox table, it reads
//! the outbox's INSERTs from Postgres logical decoding (a replication slot with
//! the built-in `test_decoding` plugin), in commit order.
//!
//! Changes are peeked, published (key = aggregate id, CloudEvents headers),
//! and only when the broker has acknowledged every insert of a transaction is
//! the slot advanced past that transaction's commit and its rows marked
//! published. A relay killed in between peeks the same changes again on
//! restart: at-least-once, nothing lost, per-aggregate order kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Row;
use tokio::sync::watch;

use crate::consumer::Exit;
use crate::context::Ctx;
use crate::envelope::Envelope;
use crate::faults::Fault;
use crate::store::{now_ms, Backend, Db, StoreError};

/// The CDC relay's service name (its spans' `service.name`).
pub const RELAY: &str = "cdc-relay";

/// Why the CDC relay cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error("the CDC relay reads PostgreSQL logical decoding; it cannot run on SQLite (use --database postgres://… or the polling relay)")]
    NotPostgres,
    #[error("the CDC relay needs wal_level=logical on PostgreSQL (it is {0}): ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL")]
    WalLevel(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The slot of this database (slots are per cluster; one per database here).
pub async fn slot_name(db: &Db) -> Result<String, StoreError> {
    let r = sqlx::query("SELECT current_database()::text")
        .fetch_one(&db.pool)
        .await?;
    let name: String = r.try_get(0)?;
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut slot = format!("eventscope_outbox_{clean}");
    slot.truncate(63);
    Ok(slot)
}

/// Check the server and create the slot if it does not exist yet.
pub async fn ensure_slot(db: &Db) -> Result<String, CdcError> {
    if db.backend != Backend::Postgres {
        return Err(CdcError::NotPostgres);
    }
    let r = sqlx::query("SELECT current_setting('wal_level')::text")
        .fetch_one(&db.pool)
        .await
        .map_err(StoreError::from)?;
    let level: String = r.try_get(0).map_err(StoreError::from)?;
    if level != "logical" {
        return Err(CdcError::WalLevel(level));
    }
    let slot = slot_name(db).await?;
    let exists = db
        .count(&format!(
            "SELECT COUNT(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .await?;
    if exists == 0 {
        sqlx::query("SELECT pg_create_logical_replication_slot($1::name, 'test_decoding')::text")
            .bind(&slot)
            .fetch_one(&db.pool)
            .await
            .map_err(StoreError::from)?;
        tracing::info!(slot, "created the logical replication slot");
    }
    Ok(slot)
}

/// Our slots: `eventscope_outbox_<db>` (`_` escaped for LIKE).
const SLOT_PATTERN: &str = "eventscope\\_outbox\\_%";

/// A replication slot of ours that no process is using.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleSlot {
    pub slot: String,
    pub database: String,
    /// WAL bytes the server keeps for it.
    pub retained_bytes: i64,
}

/// Our slots on this server (any database) that no process uses: each makes PostgreSQL
/// keep WAL until it is dropped or read again.
pub async fn idle_slots(db: &Db) -> Result<Vec<IdleSlot>, StoreError> {
    if db.backend != Backend::Postgres {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT slot_name::text, COALESCE(database::text, ''), \
         COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint \
         FROM pg_replication_slots WHERE slot_name LIKE $1 AND NOT active ORDER BY slot_name",
    )
    .bind(SLOT_PATTERN)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(IdleSlot {
                slot: r.try_get(0)?,
                database: r.try_get(1)?,
                retained_bytes: r.try_get(2)?,
            })
        })
        .collect()
}

/// Warn about our idle slots (a CDC run that was killed, or that ended with work pending).
pub async fn warn_idle_slots(db: &Db) {
    match idle_slots(db).await {
        Ok(slots) => {
            for s in slots {
                tracing::warn!(
                    "found the inactive replication slot {} (database {}, keeping {} KiB of WAL) \
                     left by an earlier `--relay cdc` run: PostgreSQL keeps WAL for it until \
                     it is read again (a `--relay cdc` run on that database resumes from it) or dropped: \
                     SELECT pg_drop_replication_slot('{}')",
                    s.slot,
                    s.database,
                    s.retained_bytes / 1024,
                    s.slot
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list the replication slots"),
    }
}

/// What became of this database's slot at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotRelease {
    /// Nothing was pending: the slot is gone.
    Dropped(String),
    /// Outbox rows are unpublished: the slot is kept so that a later run publishes them.
    Kept { slot: String, pending: i64 },
    /// There was no slot.
    Absent,
}

/// At the end of a clean run: drop this database's slot when no outbox row is
/// unpublished, else keep it (it holds the changes a restarted relay must publish).
pub async fn release_slot(db: &Db) -> Result<SlotRelease, StoreError> {
    let slot = slot_name(db).await?;
    let exists = db
        .count(&format!(
            "SELECT COUNT(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .await?;
    if exists == 0 {
        return Ok(SlotRelease::Absent);
    }
    let pending = db
        .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .await?;
    if pending > 0 {
        return Ok(SlotRelease::Kept { slot, pending });
    }
    sqlx::query("SELECT pg_drop_replication_slot($1::name)::text")
        .bind(&slot)
        .fetch_one(&db.pool)
        .await?;
    Ok(SlotRelease::Dropped(slot))
}

/// One decoded change of interest.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Begin,
    /// An INSERT into `public.outbox`, or an UPDATE that makes a row
    /// unpublished again: column name → value (None for NULL).
    OutboxInsert(HashMap<String, Option<String>>),
    Commit,
    /// Anything else (other tables, updates).
    Other,
}

/// Parse one line of `test_decoding` output.
pub fn parse_change(line: &str) -> Change {
    if line.starts_with("BEGIN") {
        return Change::Begin;
    }
    if line.starts_with("COMMIT") {
        return Change::Commit;
    }
    if let Some(rest) = line.strip_prefix("table public.outbox: INSERT: ") {
        return match parse_columns(rest) {
            Some(cols) => Change::OutboxInsert(cols),
            None => Change::Other,
        };
    }
    // A row set unpublished again (an idempotent receiver answering a
    // redelivered command) is a request to send it again.
    if let Some(rest) = line.strip_prefix("table public.outbox: UPDATE: ") {
        if let Some(cols) = parse_columns(rest) {
            if cols.get("published_at") == Some(&None) {
                return Change::OutboxInsert(cols);
            }
        }
    }
    Change::Other
}

/// `name[type]:value ...` where value is `'quoted ''text'''`, `null`, or a bare token.
fn parse_columns(mut s: &str) -> Option<HashMap<String, Option<String>>> {
    let mut out = HashMap::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Some(out);
        }
        let open = s.find('[')?;
        let name = s[..open].to_owned();
        let close = s[open..].find("]:")? + open;
        s = &s[close + 2..];
        if let Some(q) = s.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if q[i + 1..].starts_with('\'') {
                        value.push('\'');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            s = &q[end?..];
            out.insert(name, Some(value));
        } else {
            let end = s.find(' ').unwrap_or(s.len());
            let token = &s[..end];
            out.insert(name, (token != "null").then(|| token.to_owned()));
            s = &s[end..];
        }
    }
}

#[derive(Debug, Clone)]
struct Row_ {
    id: i64,
    topic: String,
    key: String,
    envelope: Envelope,
    /// The context of the span that wrote the row.
    traceparent: Option<String>,
    /// When the row was written (ms since the epoch), if the change carried it.
    created_at: Option<i64>,
}

fn to_row(cols: &HashMap<String, Option<String>>) -> Option<Row_> {
    let get = |k: &str| cols.get(k).cloned().flatten();
    Some(Row_ {
        id: get("id")?.parse().ok()?,
        topic: get("topic")?,
        key: get("msg_key")?,
        envelope: Envelope {
            id: get("event_id")?,
            event_type: get("event_type")?,
            source: get("source")?,
            time: get("event_time")?,
            subject: get("subject")?,
            correlation_id: get("correlation_id"),
            causation_id: get("causation_id"),
            aggregate_version: get("aggregate_version").and_then(|v| v.parse().ok()),
            dataschema: get("dataschema"),
            saga_mode: get("saga_mode")
                .as_deref()
                .and_then(crate::saga::SagaMode::parse),
            data: serde_json::from_str(&get("payload")?).ok()?,
        },
        traceparent: get("traceparent"),
        created_at: get("created_at").and_then(|v| v.parse().ok()),
    })
}

/// A committed transaction's outbox inserts and the LSN of its commit.
struct Txn {
    rows: Vec<Row_>,
    commit_lsn: String,
}

async fn peek(ctx: &Ctx, slot: &str, limit: i64) -> Result<Vec<Txn>, StoreError> {
    let rows = sqlx::query(
        "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1::name, NULL::pg_lsn, $2::int, 'skip-empty-xacts', '1')",
    )
    .bind(slot)
    .bind(limit)
    .fetch_all(&ctx.db.pool)
    .await?;
    let mut out = Vec::new();
    let mut current: Option<Vec<Row_>> = None;
    for r in rows {
        let lsn: String = r.try_get(0)?;
        let data: String = r.try_get(1)?;
        match parse_change(&data) {
            Change::Begin => current = Some(Vec::new()),
            Change::OutboxInsert(cols) => match (to_row(&cols), current.as_mut()) {
                (Some(row), Some(txn)) => txn.push(row),
                (None, _) => {
                    ctx.report_error(format!("cdc relay: cannot read an outbox insert: {data}"));
                }
                (Some(_), None) => {}
            },
            Change::Commit => {
                if let Some(rows) = current.take() {
                    out.push(Txn {
                        rows,
                        commit_lsn: lsn,
                    });
                }
            }
            Change::Other => {}
        }
    }
    Ok(out)
}

/// Mark the published rows and move the slot past the acknowledged commit, in that order.
async fn confirm(ctx: &Ctx, slot: &str, ids: &[i64], upto_lsn: &str) -> Result<(), StoreError> {
    if !ids.is_empty() {
        let list = (0..ids.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE outbox SET published_at = COALESCE(published_at, $1), publish_count = publish_count + 1 WHERE id IN ({list})"
        );
        let mut q = sqlx::query(&sql).bind(now_ms());
        for id in ids {
            q = q.bind(*id);
        }
        q.execute(&ctx.db.pool).await?;
    }
    sqlx::query("SELECT pg_replication_slot_advance($1::name, $2::pg_lsn)::text")
        .bind(slot)
        .bind(upto_lsn)
        .fetch_one(&ctx.db.pool)
        .await?;
    Ok(())
}

/// Run the CDC relay until shutdown or an injected crash.
pub async fn run(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<Exit> {
    let slot = ensure_slot(&ctx.db).await?;
    let timeout = ctx.config.relay_delivery_timeout;
    let mut producer: FutureProducer = ctx.kafka.producer(timeout)?;
    // Commits whose "crash before confirming" was already injected once.
    let mut duplicated: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        if *shutdown.borrow() {
            return Ok(Exit::Shutdown);
        }
        let txns = match peek(&ctx, &slot, ctx.config.relay_batch).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cdc relay cannot read the slot");
                ctx.report_error(format!("cdc relay: {e}"));
                Vec::new()
            }
        };
        if txns.is_empty() {
            if !ctx.await_outbox(&mut shutdown).await {
                return Ok(Exit::Shutdown);
            }
            continue;
        }
        let wrong_key = ctx.faults.is_on(Fault::WrongPartitionKey);
        // Publish everything peeked, then wait for the acknowledgements in order.
        let mut sends = Vec::new();
        for (t, txn) in txns.iter().enumerate() {
            for row in &txn.rows {
                let key = if wrong_key {
                    &row.envelope.id
                } else {
                    &row.key
                };
                let (span, traceparent) = crate::relay::publish_span(
                    &ctx,
                    RELAY,
                    &row.topic,
                    key,
                    &row.envelope,
                    row.traceparent.as_deref(),
                );
                let (payload, content_type) = ctx.config.value_bytes(&row.envelope)?;
                let rec = FutureRecord::to(&row.topic)
                    .key(key.as_bytes())
                    .payload(&payload)
                    .headers(crate::relay::traced_headers(
                        &row.envelope,
                        content_type,
                        traceparent.as_deref(),
                    ));
                sends.push((
                    t,
                    (row.id, row.created_at),
                    span,
                    producer.send_result(rec).map_err(|(e, _)| e),
                ));
            }
        }
        let mut failed: Option<(usize, String)> = None;
        let mut acked_ids = Vec::new();
        for (t, (id, created_at), span, send) in sends {
            let landed = crate::relay::landed(send).await;
            if let (Ok(_), Some(c)) = (&landed, created_at) {
                ctx.relay_latency.record(crate::store::now_ms() - c);
            }
            crate::relay::end_publish_span(&span, &landed);
            let result = landed.map(|_| ());
            match result {
                Ok(()) if failed.is_none() => acked_ids.push((t, id)),
                Ok(()) => {}
                Err(e) => {
                    if failed.is_none() {
                        failed = Some((t, e));
                    }
                }
            }
        }
        // Whole transactions acknowledged, in commit order.
        let acked_txns = failed.as_ref().map(|(t, _)| *t).unwrap_or(txns.len());
        if acked_txns > 0 {
            let last = &txns[acked_txns - 1];
            if ctx.faults.hits_attempt(Fault::RelayCrash, &last.commit_lsn) {
                tracing::warn!("injected cdc relay crash before confirming");
                return Ok(Exit::Crashed);
            }
            let dup = !duplicated.contains(&last.commit_lsn)
                && last
                    .rows
                    .first()
                    .is_some_and(|r| ctx.faults.hits(Fault::DuplicatePublish, &r.envelope.id));
            if dup {
                // "Crash" before confirming: the same changes are peeked and sent again.
                duplicated.insert(last.commit_lsn.clone());
            } else {
                let ids: Vec<i64> = acked_ids
                    .iter()
                    .filter(|(t, _)| *t < acked_txns)
                    .map(|(_, id)| *id)
                    .collect();
                if let Err(e) = confirm(&ctx, &slot, &ids, &last.commit_lsn).await {
                    tracing::warn!(error = %e, "cdc relay cannot confirm; the changes will be sent again");
                    ctx.report_error(format!("cdc relay: {e}"));
                }
            }
        }
        if let Some((_, e)) = failed {
            tracing::warn!(error = %e, "cdc relay delivery failed; backing off");
            ctx.report_error(format!("cdc relay: delivery failed: {e}"));
            tokio::select! {
                _ = shutdown.changed() => return Ok(Exit::Shutdown),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            producer = ctx.kafka.producer(timeout)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_test_decoding_lines() {
        assert_eq!(parse_change("BEGIN 745"), Change::Begin);
        assert_eq!(parse_change("COMMIT 745"), Change::Commit);
        assert_eq!(
            parse_change("table public.stock: UPDATE: product_id[text]:'lamp' quantity[bigint]:3"),
            Change::Other
        );
        let line = "table public.outbox: INSERT: id[bigint]:17 event_id[text]:'e-1' topic[text]:'orders' \
                    msg_key[text]:'o 1' payload[text]:'{\"note\":\"it''s [x]: y\"}' causation_id[text]:null \
                    aggregate_version[bigint]:3";
        let Change::OutboxInsert(cols) = parse_change(line) else {
            panic!("not an insert");
        };
        assert_eq!(cols["id"].as_deref(), Some("17"));
        assert_eq!(cols["msg_key"].as_deref(), Some("o 1"));
        assert_eq!(
            cols["payload"].as_deref(),
            Some("{\"note\":\"it's [x]: y\"}")
        );
        assert_eq!(cols["causation_id"], None);
        assert_eq!(cols["aggregate_version"].as_deref(), Some("3"));
        let again = "table public.outbox: UPDATE: id[bigint]:17 published_at[bigint]:null";
        assert!(matches!(parse_change(again), Change::OutboxInsert(_)));
        let marked = "table public.outbox: UPDATE: id[bigint]:17 published_at[bigint]:5";
        assert_eq!(parse_change(marked), Change::Other);
        // Truncated input is not an insert, never a panic.
        assert_eq!(
            parse_change("table public.outbox: INSERT: id[bigint]:17 event_id[text]:'e-"),
            Change::Other
        );
    }
}
