//! Wiring: the demo's tasks, their supervisor, the order generator and the
//! fault injector that needs the broker (outage, poison records).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use rand::{Rng, SeedableRng};
use rdkafka::producer::FutureRecord;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::consumer::{self, Exit, Handler};
use crate::domain::{LineItem, OrderCommand, OrderError};
use crate::faults::{Fault, Faults};
use crate::kafka::KafkaSetupError;
use crate::orchestrator::{self, Orchestrator};
use crate::order_service::{self, Meta, OrderCommands};
use crate::read_model::OrderView;
use crate::saga::SagaMode;
use crate::services::{Inventory, Payment, Shipping};
use crate::store::{Backend, Db, StoreError};
use crate::telemetry::{attr, ExportReport, Telemetry, TelemetryError};
use crate::{ids, relay, topics};

/// Polling relays running side by side on PostgreSQL.
pub const RELAYS_ON_POSTGRES: usize = 2;

/// Order requests waiting for the order service at most; a caller beyond waits to send.
const REQUESTS_QUEUED: usize = 1024;

pub use crate::context::{Ctx, DemoConfig, LatencyLog, RelayMode, PRODUCTS};

/// A saga mode the running demo has no consumers for.
#[derive(Debug, thiserror::Error)]
#[error(
    "this demo runs {running} sagas only (started without the switch): cannot place {asked} orders"
)]
pub struct SagaModeError {
    pub running: SagaMode,
    pub asked: SagaMode,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("Kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Cdc(#[from] crate::cdc::CdcError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
}

/// The running demo.
pub struct DemoSystem {
    pub ctx: Arc<Ctx>,
    shutdown_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
    next_order: AtomicU64,
    /// New orders are choreographed (else orchestrated).
    choreographed: AtomicBool,
    /// The order service's requests ([`order_service::serve`]).
    requests_tx: mpsc::Sender<order_service::Request>,
}

async fn supervise<F, Fut>(
    name: &'static str,
    ctx: Arc<Ctx>,
    shutdown: watch::Receiver<bool>,
    mut start: F,
) where
    F: FnMut(Arc<Ctx>, watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Exit>>,
{
    loop {
        let exit = start(ctx.clone(), shutdown.clone()).await;
        if *shutdown.borrow() {
            return;
        }
        match exit {
            Ok(Exit::Shutdown) => return,
            Ok(Exit::Crashed) => {
                tracing::warn!(task = name, "restarting after injected crash");
                ctx.restarts.fetch_add(1, Ordering::SeqCst);
                if name == orchestrator::NAME {
                    if let Ok(n) = orchestrator::open_sagas(&ctx.db).await {
                        tracing::info!(open_sagas = n, "orchestrator resumes open sagas");
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::error!(task = name, error = %e, "task failed; restarting in 1s");
                ctx.report_error(format!("{name}: {e:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn spawn_consumer<H: Handler>(
    set: &mut JoinSet<()>,
    ctx: &Arc<Ctx>,
    rx: &watch::Receiver<bool>,
    h: H,
) {
    let h = Arc::new(h);
    let name = h.name();
    set.spawn(supervise(name, ctx.clone(), rx.clone(), move |c, s| {
        consumer::run(c, h.clone(), s)
    }));
}

impl DemoSystem {
    /// Connect, migrate, seed stock, create topics and start every task.
    pub async fn start(config: DemoConfig, faults: Arc<Faults>) -> Result<DemoSystem, DemoError> {
        let db = Db::connect(&config.database_url).await?;
        crate::cdc::warn_idle_slots(&db).await;
        if config.relay == RelayMode::Cdc {
            crate::cdc::ensure_slot(&db).await?;
        }
        for (product, _) in PRODUCTS {
            sqlx::query("INSERT INTO stock (product_id, quantity, initial_quantity) VALUES ($1, $2, $2) ON CONFLICT (product_id) DO NOTHING")
                .bind(product)
                .bind(config.initial_stock)
                .execute(&db.pool)
                .await
                .map_err(StoreError::from)?;
        }
        let kafka = config.kafka.clone();
        let probe = kafka.clone();
        tokio::task::spawn_blocking(move || probe.probe(Duration::from_secs(5)))
            .await
            .map_err(|e| KafkaSetupError::Unreachable {
                brokers: kafka.brokers.clone(),
                why: e.to_string(),
            })??;
        kafka.ensure_topics(&topics::ALL, config.partitions).await?;
        let dlq_producer = kafka.producer(Duration::from_secs(10))?;
        let already = db
            .count("SELECT COUNT(*) FROM order_events WHERE event_type = 'OrderCreated'")
            .await?;
        let mut services: Vec<&'static str> = Self::groups().iter().map(|(g, _)| *g).collect();
        let choreographed = AtomicBool::new(config.saga == SagaMode::Choreography);
        let modes = config.saga_modes();
        services.extend([relay::RELAY, crate::cdc::RELAY]);
        let telemetry = Telemetry::new(&services, config.otlp.as_ref())?;
        let ctx = Arc::new(Ctx {
            db,
            kafka,
            faults,
            config,
            dlq_producer,
            errors: Mutex::new(Vec::new()),
            restarts: AtomicU64::new(0),
            duplicates_skipped: AtomicU64::new(0),
            schema_refused: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            telemetry,
            relay_latency: LatencyLog::default(),
            relay_duplicated: Mutex::default(),
            outbox_written: tokio::sync::Notify::new(),
        });
        let (shutdown_tx, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        match ctx.config.relay {
            // PostgreSQL takes relays side by side (each claims with SKIP
            // LOCKED, never a key's later row before its earlier one); SQLite
            // has one writer.
            RelayMode::Poll => {
                let relays = match ctx.db.backend {
                    Backend::Postgres => RELAYS_ON_POSTGRES,
                    Backend::Sqlite => 1,
                };
                for _ in 0..relays {
                    tasks.spawn(supervise(
                        "outbox-relay",
                        ctx.clone(),
                        rx.clone(),
                        relay::run,
                    ));
                }
                if ctx.db.backend == Backend::Postgres {
                    tasks.spawn(relay::listen(ctx.clone(), rx.clone()));
                }
            }
            RelayMode::Cdc => {
                tasks.spawn(supervise(
                    "cdc-relay",
                    ctx.clone(),
                    rx.clone(),
                    crate::cdc::run,
                ));
                tasks.spawn(relay::listen(ctx.clone(), rx.clone()));
            }
        }
        spawn_consumer(&mut tasks, &ctx, &rx, Payment);
        spawn_consumer(&mut tasks, &ctx, &rx, Inventory);
        spawn_consumer(&mut tasks, &ctx, &rx, Shipping);
        spawn_consumer(&mut tasks, &ctx, &rx, OrderCommands);
        spawn_consumer(&mut tasks, &ctx, &rx, OrderView);
        // Choreography has no orchestrator (and so no step deadlines).
        if modes.contains(&SagaMode::Orchestration) {
            spawn_consumer(&mut tasks, &ctx, &rx, Orchestrator);
            tasks.spawn(supervise(
                "saga-deadlines",
                ctx.clone(),
                rx.clone(),
                orchestrator::run_deadlines,
            ));
        }
        let (requests_tx, requests_rx) = mpsc::channel(REQUESTS_QUEUED);
        tasks.spawn(order_service::serve(ctx.clone(), requests_rx, rx.clone()));
        tasks.spawn(fault_injector(ctx.clone(), rx));
        Ok(DemoSystem {
            ctx,
            shutdown_tx,
            tasks,
            next_order: AtomicU64::new(already as u64),
            choreographed,
            requests_tx,
        })
    }

    /// The consumer groups of the demo and the topics each reads, with the
    /// consumers of both saga modes (a demo that can switch runs them all).
    pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
        Self::groups_in(&SagaMode::ALL)
    }

    /// The consumer groups that run for sagas in `modes`, and their topics.
    pub fn groups_in(modes: &[SagaMode]) -> Vec<(&'static str, Vec<&'static str>)> {
        [
            (Orchestrator.name(), Orchestrator.topics(modes)),
            (Payment.name(), Payment.topics(modes)),
            (Inventory.name(), Inventory.topics(modes)),
            (Shipping.name(), Shipping.topics(modes)),
            (OrderCommands.name(), OrderCommands.topics(modes)),
            (OrderView.name(), OrderView.topics(modes)),
        ]
        .into_iter()
        .filter(|(_, topics)| !topics.is_empty())
        .collect()
    }

    /// The consumer groups this demo runs, and their topics.
    pub fn consumer_groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        Self::groups_in(&self.ctx.config.saga_modes())
    }

    /// How the sagas of new orders run.
    pub fn saga_mode(&self) -> SagaMode {
        if self.choreographed.load(Ordering::SeqCst) {
            SagaMode::Choreography
        } else {
            SagaMode::Orchestration
        }
    }

    /// Run the sagas of orders placed from now on in `mode` (orders already
    /// placed finish in theirs). Needs the consumers of `mode`.
    pub fn set_saga_mode(&self, mode: SagaMode) -> Result<(), SagaModeError> {
        if !self.ctx.config.saga_modes().contains(&mode) {
            return Err(SagaModeError {
                running: self.ctx.config.saga,
                asked: mode,
            });
        }
        self.choreographed
            .store(mode == SagaMode::Choreography, Ordering::SeqCst);
        Ok(())
    }

    /// The `n`-th order of this seed: deterministic items and customer.
    pub fn order_command(seed: u64, n: u64) -> (String, OrderCommand) {
        let order_id = ids::order_id(seed, n);
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n);
        let lines = rng.random_range(1..=3);
        let mut items: Vec<LineItem> = Vec::new();
        for _ in 0..lines {
            let (product, price) = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
            if items.iter().any(|i| i.product_id == product) {
                continue;
            }
            items.push(LineItem {
                product_id: product.to_owned(),
                quantity: rng.random_range(1..=4),
                unit_price_cents: price,
            });
        }
        let cmd = OrderCommand::PlaceOrder {
            order_id: order_id.clone(),
            customer_email: format!("customer{n}@example.com"),
            shipping_address: format!("{} Harbour Street, Springfield", 10 + n % 90),
            items,
        };
        (order_id, cmd)
    }

    /// Place the next order (as a client's request to the order service would).
    pub async fn place_order(&self) -> Result<Result<String, OrderError>, StoreError> {
        let n = self.next_order.fetch_add(1, Ordering::SeqCst);
        let (order_id, cmd) = Self::order_command(self.ctx.config.seed, n);
        let correlation_id = ids::derive(&[&order_id, "correlation"]);
        // The root of the order's trace: every later hop descends from it.
        let trace = self.ctx.telemetry.trace_for(order_service::NAME).child(
            "place order",
            SpanKind::Server,
            vec![
                KeyValue::new(attr::HOP, "order placed"),
                KeyValue::new(attr::ORDER_ID, order_id.clone()),
                KeyValue::new(attr::CORRELATION_ID, correlation_id.clone()),
            ],
        );
        // The contract version this order's OrderCreated is written in.
        let faults = &self.ctx.faults;
        let created_version = if faults.hits(Fault::SchemaDrift, &order_id) {
            Some(3)
        } else if faults.hits(Fault::SchemaEvolve, &order_id) {
            Some(2)
        } else {
            None
        };
        let meta = Meta {
            correlation_id: Some(correlation_id),
            causation_id: None,
            trace: trace.clone(),
            created_version,
            skip_schema_check: faults.is_on(Fault::NoSchemaCheck),
            saga_mode: self.saga_mode(),
        };
        // Requests that arrive together are decided in one transaction.
        let (answer_tx, answer_rx) = oneshot::channel();
        let request = order_service::Request {
            order_id: order_id.clone(),
            command: cmd,
            meta,
            answer_tx,
        };
        let result = match self.requests_tx.send(request).await {
            Ok(()) => answer_rx.await.unwrap_or(Err(StoreError::Stopped)),
            Err(_) => Err(StoreError::Stopped),
        };
        match &result {
            Err(e) => trace.fail(e.to_string()),
            Ok(Err(e)) => trace.fail(e.to_string()),
            Ok(Ok(_)) => {}
        }
        trace.end();
        if let Err(StoreError::Contract(e)) = &result {
            self.ctx.schema_refused.fetch_add(1, Ordering::SeqCst);
            self.ctx
                .report_error(format!("order-service: order {order_id} refused: {e}"));
        }
        Ok(result?.map(|_| order_id))
    }

    /// Writes the producer-side contract check refused so far.
    pub fn schema_refused(&self) -> u64 {
        self.ctx.schema_refused.load(Ordering::SeqCst)
    }

    /// Records consumers sent to the dlq so far.
    pub fn dead_lettered(&self) -> u64 {
        self.ctx.dead_lettered.load(Ordering::SeqCst)
    }

    /// The relay's publish latency (outbox write → broker ack): p50, p99, max, samples.
    pub fn relay_latency(&self) -> Option<(u32, u32, u32, usize)> {
        self.ctx.relay_latency.percentiles()
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.ctx.faults
    }

    /// Errors reported by background tasks since the last call.
    pub fn take_errors(&self) -> Vec<String> {
        let mut errors = self
            .ctx
            .errors
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        errors.extend(self.ctx.telemetry.take_failure_notice());
        errors
    }

    /// What the OTLP export did so far; None when export is off.
    pub fn export_report(&self) -> Option<ExportReport> {
        self.ctx.telemetry.export_report()
    }

    pub fn restarts(&self) -> u64 {
        self.ctx.restarts.load(Ordering::SeqCst)
    }

    pub fn duplicates_skipped(&self) -> u64 {
        self.ctx.duplicates_skipped.load(Ordering::SeqCst)
    }

    /// Stop every task and wait for them.
    /// With the CDC relay, the replication slot is dropped when no outbox row is left
    /// unpublished, else kept for the next run (what became of it is returned and logged).
    pub async fn shutdown(mut self) -> Option<crate::cdc::SlotRelease> {
        let _ = self.shutdown_tx.send(true);
        while self.tasks.join_next().await.is_some() {}
        // Export what the tasks left queued; bounded when the collector is down.
        self.ctx.telemetry.shutdown().await;
        if self.ctx.config.relay != RelayMode::Cdc {
            return None;
        }
        match crate::cdc::release_slot(&self.ctx.db).await {
            Ok(r) => {
                match &r {
                    crate::cdc::SlotRelease::Dropped(slot) => {
                        tracing::info!(slot, "nothing pending: dropped the replication slot")
                    }
                    crate::cdc::SlotRelease::Kept { slot, pending } => tracing::warn!(
                        "kept the replication slot {slot}: {pending} outbox row(s) unpublished; \
                         a later `--relay cdc` run on this database publishes them (until then \
                         PostgreSQL keeps WAL for it)"
                    ),
                    crate::cdc::SlotRelease::Absent => {}
                }
                Some(r)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the replication slot");
                None
            }
        }
    }
}

/// Faults that act on the broker rather than inside a service.
async fn fault_injector(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    // Topics whose records a service takes as requests: the command topics,
    // or in a choreography (no command topics) the event topics.
    let poison_topics = if ctx.config.saga_modes().contains(&SagaMode::Orchestration) {
        [
            topics::PAYMENT_COMMANDS,
            topics::INVENTORY_COMMANDS,
            topics::SHIPPING_COMMANDS,
        ]
    } else {
        [topics::PAYMENTS, topics::INVENTORY, topics::SHIPPING]
    };
    let mut poisoned = 0usize;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if let Some(seconds) = ctx.faults.take(Fault::BrokerOutage) {
            match &ctx.kafka.control {
                Some(control) => {
                    tracing::warn!(seconds, "injected broker outage: broker down");
                    if let Err(e) = control.set_down(true) {
                        ctx.report_error(format!("broker-outage: {e}"));
                        continue;
                    }
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
                    }
                    if let Err(e) = control.set_down(false) {
                        ctx.report_error(format!("broker-outage: {e}"));
                    }
                    tracing::warn!("broker back up");
                }
                None => ctx.report_error(
                    "broker-outage needs the embedded broker; stop your Kafka to reproduce it"
                        .into(),
                ),
            }
        }
        if ctx.faults.is_on(Fault::PoisonMessage)
            && ctx.faults.hits(Fault::PoisonMessage, &poisoned.to_string())
        {
            let topic = poison_topics[poisoned % poison_topics.len()];
            poisoned += 1;
            let garbage: Vec<u8> = {
                let mut rng =
                    rand_chacha::ChaCha8Rng::seed_from_u64(ctx.faults.seed() ^ poisoned as u64);
                let mut v = b"{\"order_id\": \"truncated".to_vec();
                v.extend((0..16).map(|_| rng.random::<u8>()));
                v
            };
            let key = format!("poison-{poisoned}");
            let rec = FutureRecord::to(topic).key(&key).payload(&garbage);
            match ctx.dlq_producer.send(rec, Duration::from_secs(5)).await {
                Ok(_) => tracing::warn!(topic, "injected a poison record"),
                Err((e, _)) => ctx.report_error(format!("poison-message: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod latency_tests {
    use super::LatencyLog;

    #[test]
    fn percentiles_of_the_kept_samples() {
        let l = LatencyLog::default();
        assert_eq!(l.percentiles(), None);
        for ms in 1..=100 {
            l.record(ms);
        }
        l.record(-5);
        let (p50, p99, max, n) = l.percentiles().unwrap();
        assert_eq!((p50, p99, max, n), (50, 99, 100, 101));
    }
}
