//! Consumer groups: per partition the committed offset, the lag in records
//! and in time, and a verdict in the spirit of Burrow, from samples of the
//! committed offsets and high watermarks taken over time.
//!
//! - `OK`: caught up, or moving and not falling behind;
//! - `WARN`: the lag grew at every sample of the window while the offset moved;
//! - `STALL`: the offset did not move over the whole window while records wait;
//! - `STOP`: the offset has not moved for longer than the stop time while records wait;
//! - `REWIND`: the offset went back.
//!
//! Lag in time is now minus the timestamp of the record at the committed
//! offset (the oldest record the group has not processed), when the observer
//! has seen it.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::log::{LogIndex, ObservedLog};

/// One look at a partition for a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetSample {
    pub at_ms: i64,
    /// The group's committed offset (the next record it will read); None: never committed.
    pub committed: Option<i64>,
    /// The partition's high watermark.
    pub high: i64,
}

impl OffsetSample {
    pub fn lag(&self) -> i64 {
        self.high.saturating_sub(self.committed.unwrap_or(0)).max(0)
    }
}

/// A group's committed offsets for some partitions, as sampled at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSample {
    pub group: String,
    /// (topic, partition, committed, high)
    pub partitions: Vec<(String, i32, Option<i64>, i64)>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Warn,
    Stall,
    Stop,
    Rewind,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Stall => "STALL",
            Verdict::Stop => "STOP",
            Verdict::Rewind => "REWIND",
        }
    }
}

/// One partition of one group, judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub high: i64,
    pub lag: i64,
    /// Now minus the timestamp of the record at the committed offset.
    pub lag_ms: Option<i64>,
    pub verdict: Verdict,
    pub detail: String,
    /// The record at the committed offset (or the partition's last seen), if observed.
    #[serde(skip)]
    pub at: Option<LogIndex>,
}

/// A group's verdict: its worst partition's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    pub group: String,
    pub verdict: Verdict,
    pub lag: i64,
    pub partitions: Vec<PartitionLag>,
}

/// Keeps the last samples per (group, topic, partition) and judges them.
#[derive(Debug, Clone)]
pub struct GroupTracker {
    /// Samples judged together.
    pub window: usize,
    /// No movement for longer than this while records wait: STOP.
    pub stop_after_ms: i64,
    history: BTreeMap<(String, String, i32), VecDeque<OffsetSample>>,
    /// When the committed offset last moved (or was first seen).
    moved_at: BTreeMap<(String, String, i32), i64>,
}

impl Default for GroupTracker {
    fn default() -> Self {
        GroupTracker::new(5, 60_000)
    }
}

impl GroupTracker {
    pub fn new(window: usize, stop_after_ms: i64) -> GroupTracker {
        GroupTracker {
            window: window.max(2),
            stop_after_ms,
            history: BTreeMap::new(),
            moved_at: BTreeMap::new(),
        }
    }

    /// Whether any group has been sampled.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    pub fn record(&mut self, sample: &GroupSample) {
        for (topic, partition, committed, high) in &sample.partitions {
            let key = (sample.group.clone(), topic.clone(), *partition);
            let h = self.history.entry(key.clone()).or_default();
            let s = OffsetSample {
                at_ms: sample.at_ms,
                committed: *committed,
                high: *high,
            };
            let moved = h.back().is_none_or(|last| last.committed != s.committed);
            if moved {
                self.moved_at.insert(key, sample.at_ms);
            }
            h.push_back(s);
            // Keep one more than the window: a REWIND needs the step before it.
            while h.len() > self.window + 1 {
                h.pop_front();
            }
        }
    }

    /// Every sampled group, judged as of `now_ms`.
    pub fn verdicts(&self, log: &ObservedLog, now_ms: i64) -> Vec<GroupLag> {
        let mut groups: BTreeMap<&str, GroupLag> = BTreeMap::new();
        for ((group, topic, partition), h) in &self.history {
            let Some(last) = h.back() else { continue };
            let moved_at = self
                .moved_at
                .get(&(group.clone(), topic.clone(), *partition))
                .copied()
                .unwrap_or(last.at_ms);
            let (verdict, detail) = judge(
                h,
                self.window,
                now_ms.saturating_sub(moved_at),
                self.stop_after_ms,
            );
            let at = record_at(log, topic, *partition, last.committed);
            let lag_ms = (last.lag() > 0)
                .then(|| {
                    at.and_then(|i| log.row(i))
                        .map(|r| now_ms.saturating_sub(r.time_ms))
                })
                .flatten();
            let p = PartitionLag {
                group: group.clone(),
                topic: topic.clone(),
                partition: *partition,
                committed: last.committed,
                high: last.high,
                lag: last.lag(),
                lag_ms,
                verdict,
                detail,
                at,
            };
            let g = groups.entry(group).or_insert_with(|| GroupLag {
                group: group.clone(),
                verdict: Verdict::Ok,
                lag: 0,
                partitions: Vec::new(),
            });
            g.verdict = g.verdict.max(verdict);
            g.lag += p.lag;
            g.partitions.push(p);
        }
        groups.into_values().collect()
    }
}

/// The verdict on one partition's samples (oldest first).
fn judge(
    h: &VecDeque<OffsetSample>,
    window: usize,
    unmoved_ms: i64,
    stop_after_ms: i64,
) -> (Verdict, String) {
    let Some(last) = h.back() else {
        return (Verdict::Ok, String::new());
    };
    let samples: Vec<&OffsetSample> = h.iter().collect();
    for w in samples.windows(2) {
        if let (Some(a), Some(b)) = (w[0].committed, w[1].committed) {
            if b < a {
                return (
                    Verdict::Rewind,
                    format!("committed offset went back from {a} to {b}"),
                );
            }
        }
    }
    let lag = last.lag();
    if lag == 0 {
        return (Verdict::Ok, "caught up".into());
    }
    if unmoved_ms > stop_after_ms {
        return (
            Verdict::Stop,
            format!(
                "no commit has moved for {} s while {lag} records wait",
                unmoved_ms / 1000
            ),
        );
    }
    let recent: Vec<&OffsetSample> = samples.iter().rev().take(window).rev().copied().collect();
    if recent.len() >= window {
        let still = recent.windows(2).all(|w| w[0].committed == w[1].committed);
        if still {
            return (
                Verdict::Stall,
                format!(
                    "committed offset stays at {} over {} samples while {lag} records wait",
                    last.committed.map_or("none".into(), |c| c.to_string()),
                    recent.len()
                ),
            );
        }
        let growing = recent.windows(2).all(|w| w[1].lag() > w[0].lag());
        if growing {
            return (
                Verdict::Warn,
                format!(
                    "lag grew at every sample, from {} to {lag}",
                    recent.first().map_or(0, |s| s.lag())
                ),
            );
        }
    }
    (Verdict::Ok, format!("moving, {lag} behind"))
}

/// The record at `offset` on a partition, else the partition's last observed record.
fn record_at(
    log: &ObservedLog,
    topic: &str,
    partition: i32,
    offset: Option<i64>,
) -> Option<LogIndex> {
    let list = log.partition(topic, partition);
    let found = offset.and_then(|o| {
        list.iter()
            .copied()
            .find(|&i| log.row(i).is_some_and(|r| r.offset == o))
    });
    found.or_else(|| list.last().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, committed: i64, high: i64) -> GroupSample {
        GroupSample {
            group: "g".into(),
            partitions: vec![("t".into(), 0, Some(committed), high)],
            at_ms: at,
        }
    }

    fn verdict_after(samples: &[(i64, i64, i64)]) -> Verdict {
        let mut t = GroupTracker::new(3, 10_000);
        for &(at, c, h) in samples {
            t.record(&sample(at, c, h));
        }
        let log = ObservedLog::new(Default::default());
        let now = samples.last().map_or(0, |s| s.0);
        t.verdicts(&log, now)[0].verdict
    }

    #[test]
    fn burrow_style_verdicts() {
        // Caught up.
        assert_eq!(
            verdict_after(&[(0, 5, 5), (1000, 9, 9), (2000, 9, 9)]),
            Verdict::Ok
        );
        // Moving and not falling behind.
        assert_eq!(
            verdict_after(&[(0, 5, 8), (1000, 8, 10), (2000, 10, 12)]),
            Verdict::Ok
        );
        // Falling behind at every sample.
        assert_eq!(
            verdict_after(&[(0, 5, 6), (1000, 6, 9), (2000, 7, 14)]),
            Verdict::Warn
        );
        // Not moving while records wait.
        assert_eq!(
            verdict_after(&[(0, 5, 9), (1000, 5, 9), (2000, 5, 9)]),
            Verdict::Stall
        );
        // ... for longer than the stop time.
        assert_eq!(
            verdict_after(&[(0, 5, 9), (6000, 5, 9), (12_000, 5, 9)]),
            Verdict::Stop
        );
        // Going back.
        assert_eq!(
            verdict_after(&[(0, 5, 9), (1000, 2, 9), (2000, 4, 9)]),
            Verdict::Rewind
        );
        // Too few samples to call a stall.
        assert_eq!(verdict_after(&[(0, 5, 9), (1000, 5, 9)]), Verdict::Ok);
    }

    #[test]
    fn a_group_is_as_bad_as_its_worst_partition() {
        let mut t = GroupTracker::new(2, 60_000);
        for at in [0, 1000] {
            t.record(&GroupSample {
                group: "g".into(),
                partitions: vec![("t".into(), 0, Some(3), 3), ("t".into(), 1, Some(1), 4)],
                at_ms: at,
            });
        }
        let log = ObservedLog::new(Default::default());
        let v = t.verdicts(&log, 1000);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].verdict, v[0].lag), (Verdict::Stall, 3));
        assert_eq!(v[0].partitions[0].verdict, Verdict::Ok);
    }
}
