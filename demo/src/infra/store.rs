//! The database: sqlx `Any` over SQLite (default) or PostgreSQL, migrations at start,
//! and the two writes every service shares: the outbox row and the processed-event mark.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

use crate::contracts::{ContractError, Registry};
use crate::envelope::Envelope;
use crate::telemetry::Trace;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// A transaction of the demo's database. Statements run on it as on the
/// connection (`&mut **tx`); outbox rows written in it ([`insert_outbox`]) are
/// held and inserted together, in the order written, when it commits: one
/// statement for all of a batch's rows instead of one each. An event already
/// in the outbox (its id is derived from its cause) is not written twice.
pub struct Tx {
    inner: Transaction<'static, Any>,
    outbox: Vec<CheckedRow>,
    pub backend: Backend,
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

impl Tx {
    /// Hold `row` until this transaction commits.
    pub fn queue_outbox(&mut self, row: CheckedRow) {
        self.outbox.push(row);
    }

    /// Insert the outbox rows written, then commit.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let rows = std::mem::take(&mut self.outbox);
        // `created_at` is when the rows reach the table, just before the commit: the relay's
        // latency (`relay.latency_ms`) runs from there to the broker's acknowledgement, not
        // from when the effect queued them, earlier in a batch's transaction.
        let written_at = now_ms();
        for chunk in rows.chunks(OUTBOX_ROWS_PER_INSERT) {
            insert_outbox_rows(&mut self.inner, self.backend, chunk, written_at).await?;
        }
        self.inner.commit().await?;
        Ok(())
    }

    /// Roll back: nothing of it, outbox rows included, is written.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.inner.rollback().await?;
        Ok(())
    }
}

/// Outbox rows per INSERT at commit (16 parameters each: within SQLite's and
/// PostgreSQL's limits on bound parameters).
const OUTBOX_ROWS_PER_INSERT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    #[error("cannot open database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("concurrent update of {0}; retry")]
    Conflict(String),
    /// The producer-side contract check refused the write.
    #[error("schema check refused the write: {0}")]
    Contract(#[from] ContractError),
    /// The order service was shut down before it answered.
    #[error("the order service is stopped")]
    Stopped,
}

impl StoreError {
    /// Worth retrying the whole transaction (busy, lock, unique race)?
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Conflict(_) => true,
            StoreError::Sql(e) => match e {
                sqlx::Error::Database(d) => {
                    let m = d.message().to_ascii_lowercase();
                    m.contains("locked")
                        || m.contains("busy")
                        || d.code()
                            .is_some_and(|c| c == "40001" || c == "40P01" || c == "23505")
                }
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
                _ => false,
            },
            _ => false,
        }
    }

    /// An error about what the record makes the service write, not about the
    /// database: a constraint or a trigger refused it (PostgreSQL SQLSTATE
    /// classes 22 and 23, `RAISE EXCEPTION`; SQLite `SQLITE_CONSTRAINT`), the
    /// contract check refused it, a value is not valid JSON. Applying the same
    /// record again cannot succeed. A lost connection or a missing table is
    /// not one: that is the database, and every record would fail alike.
    pub fn is_about_the_record(&self) -> bool {
        match self {
            StoreError::Contract(_) | StoreError::Json(_) => true,
            StoreError::Sql(sqlx::Error::Database(d)) if !self.is_transient() => {
                d.code().is_some_and(|c| match c.len() {
                    // A PostgreSQL SQLSTATE.
                    5 => c.starts_with("22") || c.starts_with("23") || c == "P0001",
                    // An SQLite extended result code: its low byte is the primary code.
                    _ => c.parse::<i32>().is_ok_and(|n| n & 0xff == 19),
                })
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the demo's database.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    /// SQLite only: a connection that only reads, beside the one writer. In
    /// WAL mode a read does not wait for the writer, nor the writer for it, so
    /// the relay's claim does not take a turn on the writer (every consumer's
    /// transaction, the order service's and the relay's mark take turns there).
    /// A read sees what was committed before it began. Only the relay's claim
    /// reads there; counts and the report read on the pool.
    pub reader: Option<AnyPool>,
    pub backend: Backend,
    /// The URL with any password removed, for messages.
    pub display_url: String,
}

/// Remove passwords from a URL for display: the user info's (`user:***@`, even when the
/// password holds an unescaped `@`) and query parameters named like a secret
/// (`?password=***`, `sslpassword`, tokens).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let query_at = rest.find('?').unwrap_or(rest.len());
    let (head, query) = rest.split_at(query_at);
    let head = match head.rfind('@') {
        Some(at) if head[..at].contains(':') => {
            let user = head[..at].split(':').next().unwrap_or("");
            format!("{user}:***{}", &head[at..])
        }
        _ => head.to_owned(),
    };
    let query = match query.strip_prefix('?') {
        None => String::new(),
        Some(q) => {
            let params: Vec<String> = q
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if is_secret_name(k) => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("?{}", params.join("&"))
        }
    };
    format!("{scheme}://{head}{query}")
}

/// A setting whose value is a secret: `password`, `sslpassword`, `sasl.password`,
/// `*secret*`, `*token*`, `*credentials*` (ASCII case ignored).
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["pass", "secret", "token", "credential"]
        .iter()
        .any(|w| n.contains(w))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A pool of one SQLite connection, set up as the demo's writer and reader are.
fn sqlite_pool_options() -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("PRAGMA busy_timeout = 10000")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("PRAGMA synchronous = NORMAL")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
}

impl Db {
    /// Open (creating a SQLite file if needed) and migrate.
    pub async fn connect(url: &str) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let display_url = redact_url(url);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl(display_url));
        };
        let mut url = url.to_owned();
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or("")
                .to_owned();
            if path.is_empty() || path == ":memory:" {
                return Err(StoreError::BadUrl(display_url));
            }
            if let Some(parent) = Path::new(&path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StoreError::DataDir(parent.display().to_string(), e))?;
                }
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
        }
        let options = AnyConnectOptions::from_str(&url).map_err(|source| StoreError::Connect {
            url: display_url.clone(),
            source,
        })?;
        let pool_options = match backend {
            // One writer at a time: SQLite serialises writes anyway, and a single
            // connection avoids BUSY upgrades between deferred transactions.
            Backend::Sqlite => sqlite_pool_options(),
            Backend::Postgres => AnyPoolOptions::new().max_connections(8),
        }
        .acquire_timeout(Duration::from_secs(5));
        let pool = pool_options
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Connect {
                url: display_url.clone(),
                source,
            })?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: display_url.clone(),
                source,
            })?;
        // Opened after the migrations: the file and its WAL mode exist by then.
        let reader = match backend {
            Backend::Sqlite => Some(
                sqlite_pool_options()
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await
                    .map_err(|source| StoreError::Connect {
                        url: display_url.clone(),
                        source,
                    })?,
            ),
            Backend::Postgres => None,
        };
        Ok(Db {
            pool,
            reader,
            backend,
            display_url,
        })
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            inner: self.pool.begin().await?,
            outbox: Vec::new(),
            backend: self.backend,
        })
    }

    pub async fn count(&self, sql: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(sql).fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>(0)?)
    }
}

/// A row for the outbox: everything the relay needs to publish a CloudEvent.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub service: &'static str,
    pub topic: String,
    pub envelope: Envelope,
    /// Check the payload against its contract before writing (off only with
    /// the `no-schema-check` fault).
    pub schema_check: bool,
}

/// Append an outbox row inside the caller's transaction, in an `outbox write`
/// span under `trace`; that span's context is stored with the row, and the
/// relay sends it with the record. The row is held until the transaction
/// commits (see [`Tx`]).
pub async fn insert_outbox(tx: &mut Tx, row: OutboxRow, trace: &Trace) -> Result<(), StoreError> {
    let row = checked_outbox_row(row, trace)?;
    tx.queue_outbox(row);
    Ok(())
}

/// An outbox row checked against its contract, in its `outbox write` span
/// under `trace`, ready to be queued in a transaction ([`Tx::queue_outbox`]):
/// a writer that makes several rows at once checks them all before it
/// queues any, so that a refused one leaves none of them behind.
pub fn checked_outbox_row(row: OutboxRow, trace: &Trace) -> Result<CheckedRow, StoreError> {
    let e = &row.envelope;
    let span = trace.outbox_write(&row.topic, &e.subject, &e.id, &e.event_type);
    let checked = match row.schema_check {
        true => Registry::demo()
            .and_then(|r| r.admit(e.dataschema.as_deref(), &e.data))
            .map_err(StoreError::from),
        false => Ok(()),
    };
    let result = checked
        .and_then(|()| Ok(serde_json::to_string(&e.data)?))
        .map(|payload| CheckedRow {
            traceparent: span.traceparent(),
            payload,
            row,
        });
    if let Err(err) = &result {
        span.fail(err.to_string());
    }
    span.end();
    result
}

/// An outbox row written in a transaction, inserted when it commits.
pub struct CheckedRow {
    row: OutboxRow,
    /// The envelope's data as stored.
    payload: String,
    traceparent: Option<String>,
}

impl Backend {
    /// `n` bound parameters, the first numbered `first`: `$first, $first+1, …`
    /// on PostgreSQL; plain `?`s on SQLite, which must then be bound in the
    /// order they appear, in a statement with no `$N` (sqlx numbers the `?`s
    /// from 1 whatever else it holds). (SQLite looks a numbered parameter up by walking the
    /// statement's list of names at every bind, quadratic in a multi-row
    /// statement: 16 % of its time in a 2,000-order run.)
    pub(crate) fn params(self, n: usize, first: usize) -> String {
        self.placeholders(n, first).join(", ")
    }

    /// `rows` parenthesised groups of `columns` parameters each, numbered
    /// from 1: the VALUES of a multi-row INSERT.
    pub(crate) fn rows(self, rows: usize, columns: usize) -> String {
        self.typed_rows(rows, &vec![None; columns])
    }

    /// [`Backend::rows`] with a type per column: `Some(t)` casts that column's
    /// parameter (`CAST($2 AS BIGINT)`), so that VALUES in a CTE have the same
    /// column types on SQLite and PostgreSQL.
    pub(crate) fn typed_rows(self, rows: usize, casts: &[Option<&str>]) -> String {
        let columns = casts.len();
        (0..rows)
            .map(|r| {
                let cells: Vec<String> = self
                    .placeholders(columns, r * columns + 1)
                    .into_iter()
                    .zip(casts)
                    .map(|(p, cast)| match cast {
                        Some(t) => format!("CAST({p} AS {t})"),
                        None => p,
                    })
                    .collect();
                format!("({})", cells.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The parameters of [`Backend::params`], one by one.
    pub(crate) fn placeholders(self, n: usize, first: usize) -> Vec<String> {
        match self {
            Backend::Postgres => (first..first + n).map(|i| format!("${i}")).collect(),
            Backend::Sqlite => vec!["?".to_owned(); n],
        }
    }
}

/// One INSERT for `rows`, in their order (their ids ascend likewise).
async fn insert_outbox_rows(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    rows: &[CheckedRow],
    created_at: i64,
) -> Result<(), StoreError> {
    const COLUMNS: usize = 16;
    let values = backend.rows(rows.len(), COLUMNS);
    let sql = format!(
        "INSERT INTO outbox (event_id, service, topic, msg_key, event_type, source, subject, \
         correlation_id, causation_id, aggregate_version, event_time, payload, created_at, traceparent, dataschema, saga_mode) \
         VALUES {values} ON CONFLICT (event_id) DO NOTHING"
    );
    let mut q = sqlx::query(&sql);
    for p in rows {
        let e = &p.row.envelope;
        q = q
            .bind(&e.id)
            .bind(p.row.service)
            .bind(&p.row.topic)
            .bind(&e.subject)
            .bind(&e.event_type)
            .bind(&e.source)
            .bind(&e.subject)
            .bind(e.correlation_id.clone())
            .bind(e.causation_id.clone())
            .bind(e.aggregate_version)
            .bind(&e.time)
            .bind(&p.payload)
            .bind(created_at)
            .bind(p.traceparent.clone())
            .bind(e.dataschema.clone())
            .bind(e.saga_mode.map(|m| m.as_str()));
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Record that `consumer` handled each of `event_ids`, in one statement.
/// Returns the ids it had not handled before (an id twice in `event_ids` is
/// returned once: its second delivery is a duplicate).
pub async fn mark_processed(
    tx: &mut Tx,
    consumer: &str,
    event_ids: &[&str],
) -> Result<std::collections::HashSet<String>, StoreError> {
    if event_ids.is_empty() {
        return Ok(Default::default());
    }
    let values = tx.backend.rows(event_ids.len(), 3);
    let sql = format!(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES {values} \
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
    );
    let now = now_ms();
    let mut q = sqlx::query(&sql);
    for id in event_ids {
        q = q.bind(consumer).bind(*id).bind(now);
    }
    q.fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
        .collect()
}

/// A database for the demo's own tests.
#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::Db;

    /// A fresh database: SQLite in `dir`, or with `EVENTSCOPE_TEST_DB=postgres`
    /// a PostgreSQL database of its own (dropped by the returned guard).
    pub async fn db(dir: &tempfile::TempDir) -> (Db, Option<PgDatabase>) {
        if std::env::var("EVENTSCOPE_TEST_DB").is_ok_and(|v| v == "postgres") {
            let server = std::env::var("EVENTSCOPE_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
            let name = format!("es_uow_{}", uuid::Uuid::new_v4().simple());
            let admin = Db::connect(&format!("{server}/postgres"))
                .await
                .expect("connect");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin.pool)
                .await
                .expect("create database");
            let db = Db::connect(&format!("{server}/{name}"))
                .await
                .expect("connect");
            return (db, Some(PgDatabase { admin, name }));
        }
        let url = format!("sqlite://{}/t.sqlite", dir.path().display());
        (Db::connect(&url).await.expect("connect"), None)
    }

    pub struct PgDatabase {
        admin: Db,
        name: String,
    }

    impl PgDatabase {
        pub async fn drop_it(self, db: Db) {
            db.pool.close().await;
            // WITH (FORCE): a closed pool's server sessions may still be ending.
            sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
                .execute(&self.admin.pool)
                .await
                .expect("drop database");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multi-row VALUES: numbered on PostgreSQL, plain `?` on SQLite, casts where asked.
    #[test]
    fn values_rows_number_and_cast_their_parameters() {
        assert_eq!(Backend::Postgres.rows(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(Backend::Sqlite.rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(
            Backend::Postgres.typed_rows(2, &[None, Some("BIGINT")]),
            "($1, CAST($2 AS BIGINT)), ($3, CAST($4 AS BIGINT))"
        );
        assert_eq!(
            Backend::Sqlite.typed_rows(1, &[Some("BIGINT"), None]),
            "(CAST(? AS BIGINT), ?)"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u:p@ss:w/rd@h:5432/db?sslmode=require&password=x&user=u"),
            "postgres://u:***@h:5432/db?sslmode=require&password=***&user=u"
        );
        assert_eq!(
            redact_url("postgresql:///db?host=/run&passfile=/p"),
            "postgresql:///db?host=/run&passfile=***"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
