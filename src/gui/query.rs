//! The table's query filter, run off the GUI thread.
//!
//! A worker thread compiles the jq filter and tests the records the app hands
//! it in batches (a few milliseconds of copying per frame); matched indices
//! come back in log order. A new expression starts a new worker; dropping the
//! job ends its worker (its channel closes).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::model::log::{LogIndex, ObservedLog};
use crate::model::record::Record;
use crate::query::Query;

/// Time per frame for copying records to the worker.
const SEND_BUDGET: Duration = Duration::from_millis(4);
const BATCH: usize = 256;

/// What the worker reports: indices matched in a batch, and how far it got.
struct Progress {
    matched: Vec<LogIndex>,
    upto: usize,
}

pub struct QueryJob {
    /// Records with their indices, and where the batch ends in the log.
    tx: mpsc::Sender<(Vec<(LogIndex, Record)>, usize)>,
    rx: mpsc::Receiver<Progress>,
    sent_upto: usize,
    /// Records tested so far (a prefix of the log).
    pub done_upto: usize,
    /// The record the last pump stopped at: its bytes must be read back from Kafka first.
    pub waiting_for: Option<LogIndex>,
    /// Records whose bytes were evicted to Kafka (memory limit) and could not be read back:
    /// not tested.
    pub unreadable: usize,
}

impl QueryJob {
    /// Start a worker for `expr` (already known to parse). `repaint` is called
    /// when results arrive.
    pub fn start(
        expr: &str,
        registry: crate::registry::RegistryHandle,
        repaint: impl Fn() + Send + 'static,
    ) -> std::io::Result<QueryJob> {
        let (tx, work_rx) = mpsc::channel::<(Vec<(LogIndex, Record)>, usize)>();
        let (done_tx, rx) = mpsc::channel();
        let text = expr.to_owned();
        std::thread::Builder::new()
            .name("eventscope-query".into())
            .spawn(move || {
                // Compiled here: a jaq filter cannot move between threads.
                let Ok(query) = Query::parse(&text) else {
                    return;
                };
                while let Ok((batch, upto)) = work_rx.recv() {
                    let matched = batch
                        .iter()
                        .filter(|(_, r)| query.matches_in(r, &registry))
                        .map(|(i, _)| *i)
                        .collect();
                    if done_tx.send(Progress { matched, upto }).is_err() {
                        return;
                    }
                    repaint();
                }
            })?;
        Ok(QueryJob {
            tx,
            rx,
            sent_upto: 0,
            done_upto: 0,
            waiting_for: None,
            unreadable: 0,
        })
    }

    /// Hand the worker more of `log` (within the frame budget) and collect what
    /// it matched so far, in log order.
    ///
    /// A record whose bytes are in Kafka (memory limit) is not read back here: the records
    /// before it are sent, and [`QueryJob::waiting_for`] names it for the caller to read back
    /// off the frame; the next pump goes on from it.
    pub fn pump(&mut self, log: &ObservedLog) -> Vec<LogIndex> {
        let start = Instant::now();
        self.waiting_for = None;
        while self.sent_upto < log.len() && start.elapsed() < SEND_BUDGET {
            let mut end = (self.sent_upto + BATCH).min(log.len());
            if let Some(i) = (self.sent_upto..end)
                .find(|&i| LogIndex::try_from(i).is_ok_and(|idx| log.needs_read_back(idx)))
            {
                self.waiting_for = LogIndex::try_from(i).ok();
                end = i;
            }
            let unreadable = &mut self.unreadable;
            let batch: Vec<(LogIndex, Record)> = (self.sent_upto..end)
                .filter_map(|i| {
                    let idx = LogIndex::try_from(i).ok()?;
                    let rec = log.record(idx);
                    if rec.is_none() && log.unreadable(idx).is_some() {
                        *unreadable += 1;
                    }
                    Some((idx, rec?))
                })
                .collect();
            if !batch.is_empty() && self.tx.send((batch, end)).is_err() {
                break;
            }
            self.sent_upto = end;
            if self.waiting_for.is_some() {
                break;
            }
        }
        let mut out = Vec::new();
        while let Ok(p) = self.rx.try_recv() {
            out.extend(p.matched);
            self.done_upto = self.done_upto.max(p.upto);
        }
        out
    }

    /// Still testing records already in the log.
    pub fn busy(&self, log_len: usize) -> bool {
        self.done_upto < log_len
    }
}
