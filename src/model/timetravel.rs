//! Time travel: a cursor over the global log, an aggregate's state at the cursor (a [`Fold`] with
//! snapshots every N applied events), and the JSON diff made by the last event.
//!
//! The cursor only changes through [`CursorCommand`]s ([`Cursor::apply`]).
//! A fold sees each event id once (its first delivery), like an idempotent consumer.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::envelope::ObservedEvent;
use super::log::{LogIndex, ObservedLog, Sym};

mod patch;
pub use patch::patch_json;

// ---------------------------------------------------------------- cursor

/// Where the user stands in the log: records `0..=pos` have "happened".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    pos: Option<LogIndex>,
}

/// Ways to move the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CursorCommand {
    /// Move by `n` records (negative: back); clamped to the log.
    Step(i64),
    /// Go to a log index (clamped).
    JumpTo(LogIndex),
    /// Go to the first record at or after a time (ms); past the end: the last record.
    JumpToTime(i64),
    NextAnomaly,
    PrevAnomaly,
    ToStart,
    ToEnd,
}

impl Cursor {
    pub fn at(idx: LogIndex) -> Self {
        Cursor { pos: Some(idx) }
    }

    /// The current log index; `None` while the log is empty.
    pub fn pos(&self) -> Option<LogIndex> {
        self.pos
    }

    /// Apply one command. `anomalies` are the log indices anomalies are reported at.
    pub fn apply(&mut self, cmd: CursorCommand, log: &ObservedLog, anomalies: &BTreeSet<LogIndex>) {
        let Some(last) = log.len().checked_sub(1) else {
            self.pos = None;
            return;
        };
        let last = LogIndex::try_from(last).unwrap_or(LogIndex::MAX);
        // Records the memory limit dropped are stepped over (an anomaly at one can still be
        // visited: its finding stays).
        let first = log.first_held().min(last);
        let cur = self.pos.unwrap_or(first).min(last);
        let new = match cmd {
            CursorCommand::Step(n) => {
                let target = i64::from(cur)
                    .saturating_add(n)
                    .clamp(i64::from(first), i64::from(last));
                LogIndex::try_from(target).unwrap_or(cur)
            }
            CursorCommand::JumpTo(i) => i.clamp(first, last),
            CursorCommand::JumpToTime(t) => log.first_at_or_after(t).unwrap_or(last),
            CursorCommand::NextAnomaly => anomalies
                .range(cur.saturating_add(1)..)
                .next()
                .copied()
                .filter(|&i| i <= last)
                .unwrap_or(cur),
            CursorCommand::PrevAnomaly => {
                anomalies.range(..cur).next_back().copied().unwrap_or(cur)
            }
            CursorCommand::ToStart => first,
            CursorCommand::ToEnd => last,
        };
        self.pos = Some(new);
    }
}

// ---------------------------------------------------------------- folds

/// A fold's state between two events, in whatever type the fold keeps it (the demo's
/// `OrderState`, a JSON value...). The engine clones it for snapshots and turns it into JSON
/// only to answer a query (the state before the last event, then patched into the state after
/// it, which gives the diff), never per event.
pub trait FoldState: Any + Send + Sync {
    /// The state as JSON, for display and diffs.
    fn to_json(&self) -> Value;
    /// Make `json` (the JSON of an earlier state) the JSON of this state and return what
    /// changed, as [`json_diff`] would. Default: [`FoldState::to_json`] and [`json_diff`]; a
    /// state that implements `Serialize` does better with [`patch_json`], which allocates only
    /// what changed.
    fn patch_json(&self, json: &mut Value) -> Vec<JsonChange> {
        let new = self.to_json();
        let diff = json_diff(json, &new);
        *json = new;
        diff
    }
    fn clone_box(&self) -> Box<dyn FoldState>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl FoldState for Value {
    fn to_json(&self) -> Value {
        self.clone()
    }
    fn clone_box(&self) -> Box<dyn FoldState> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Clone for Box<dyn FoldState> {
    fn clone(&self) -> Self {
        (**self).clone_box()
    }
}

/// How an aggregate's events become its state. Must be pure and deterministic: snapshots are
/// cached per fold name.
///
/// A fold works on JSON ([`Fold::initial`], [`Fold::apply`]); one that keeps a typed state
/// between events (so that it does not parse and re-serialize the whole state per event) also
/// overrides [`Fold::initial_state`] and [`Fold::apply_state`], which the engine uses. Both
/// paths must agree: `apply_state` then `to_json` equals `apply` on the JSON.
pub trait Fold: Send + Sync {
    /// Unique name; the snapshot cache is keyed by it.
    fn name(&self) -> &str;
    fn initial(&self) -> Value {
        Value::Null
    }
    /// Whether a record of the aggregate takes part (decided from cheap row facts, no decoding).
    fn accepts(&self, _topic: &str, _event_type: Option<&str>, _is_command: bool) -> bool {
        true
    }
    fn apply(&self, state: Value, event: &ObservedEvent, payload: &Value) -> Value;
    /// The state before any event, in the fold's own type. Default: [`Fold::initial`].
    fn initial_state(&self) -> Box<dyn FoldState> {
        Box::new(self.initial())
    }
    /// Apply one event in place. Default: [`Fold::apply`] on a JSON state (a state of
    /// another type is left as is).
    fn apply_state(&self, state: &mut dyn FoldState, event: &ObservedEvent, payload: &Value) {
        if let Some(v) = state.as_any_mut().downcast_mut::<Value>() {
            let s = std::mem::take(v);
            *v = self.apply(s, event, payload);
        }
    }
    /// How the fold reads an event written in an older (or newer) version of its
    /// schema, e.g. "read as v2 (upcast from v1)"; `None` when read as written.
    fn read_as(&self, _event: &ObservedEvent) -> Option<String> {
        None
    }
}

/// The default fold for foreign aggregates: deep object merge of the payloads, plus
/// `_version` (the event's version/sequence, else previous + 1) and `_last_type`.
/// Commands (`*.commands` topics) are skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonMergeFold;

impl Fold for JsonMergeFold {
    fn name(&self) -> &str {
        "json-merge"
    }
    fn initial(&self) -> Value {
        Value::Object(Map::new())
    }
    fn accepts(&self, _topic: &str, _event_type: Option<&str>, is_command: bool) -> bool {
        !is_command
    }
    fn apply(&self, state: Value, event: &ObservedEvent, payload: &Value) -> Value {
        let mut obj = match state {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        let prev_version = obj.get("_version").and_then(Value::as_i64).unwrap_or(0);
        match payload {
            Value::Object(p) => merge_into(&mut obj, p),
            Value::Null => {}
            other => {
                obj.insert("_payload".into(), other.clone());
            }
        }
        let version = event
            .order_key()
            .map_or(prev_version.saturating_add(1), |(_, v)| v);
        obj.insert("_version".into(), Value::from(version));
        obj.insert(
            "_last_type".into(),
            event.event_type.clone().map_or(Value::Null, Value::String),
        );
        Value::Object(obj)
    }
}

fn merge_into(dst: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => merge_into(d, s),
            _ => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

// ---------------------------------------------------------------- diff

/// One changed path (JSON Pointer) between two states. `None` = absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// The changed leaves between two JSON values, as JSON Pointer paths in key order.
pub fn json_diff(old: &Value, new: &Value) -> Vec<JsonChange> {
    let mut out = Vec::new();
    diff_at(&mut String::new(), Some(old), Some(new), &mut out);
    out
}

fn diff_at(path: &mut String, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<JsonChange>) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (a.get(k), b.get(k));
                if unchanged_leaf(x, y) {
                    continue;
                }
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                diff_at(path, x, y, out);
                path.truncate(len);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                let (x, y) = (a.get(i), b.get(i));
                if unchanged_leaf(x, y) {
                    continue;
                }
                let len = path.len();
                // Writing to a String cannot fail.
                let _ = write!(path, "/{i}");
                diff_at(path, x, y, out);
                path.truncate(len);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(JsonChange {
            path: path.clone(),
            old: a.cloned(),
            new: b.cloned(),
        }),
    }
}

/// Two equal scalars: nothing to report, and no path to build (a long array of notes is
/// mostly these).
fn unchanged_leaf(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Array(_) | Value::Object(_)), _) => false,
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

// ---------------------------------------------------------------- state at a cursor

/// An aggregate's state at a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateState {
    pub state: Value,
    /// Events applied so far.
    pub applied: usize,
    /// Log index of the last applied event.
    pub last_index: Option<LogIndex>,
    /// What the last applied event changed.
    pub diff: Vec<JsonChange>,
    /// Events folded to answer this query (the tail after the snapshot).
    pub replayed: usize,
    /// Events of the aggregate the memory limit dropped before they could be folded in: not
    /// 0, the state is folded from a partial history (the newest events only).
    #[serde(default)]
    pub dropped: u32,
}

/// A fold in progress: the state in the fold's own type and what was applied to it.
#[derive(Clone)]
struct Run {
    state: Box<dyn FoldState>,
    applied: usize,
    last_index: Option<LogIndex>,
    /// Events this run should have folded but were dropped (memory limit).
    dropped: u32,
}

#[derive(Clone)]
struct Snap {
    /// The aggregate's entries below this log index are folded in (a log index, not a position
    /// in the list: the memory limit drops the list's oldest entries).
    upto: LogIndex,
    /// The state after them: a warm query clones it and folds a short tail.
    run: Run,
}

/// Snapshot cache and fold driver.
pub struct StateEngine {
    snapshot_every: usize,
    cache: HashMap<(String, Sym), Vec<Snap>>,
}

impl Default for StateEngine {
    fn default() -> Self {
        Self::new(100)
    }
}

fn accepted(log: &ObservedLog, fold: &dyn Fold, idx: LogIndex) -> bool {
    match (log.row(idx), log.meta(idx)) {
        (Some(row), Some(m)) if m.first_delivery => fold.accepts(
            log.resolve(row.topic),
            log.resolve_opt(m.event_type),
            m.is_command,
        ),
        _ => false,
    }
}

/// Fold the accepted entries of `list[range]` onto `run`, decoding each from the log. Returns
/// the JSON of the state before the entry at `last_pos` when that entry is in the range (for
/// the diff the last event made); `on_applied(run)` runs after each applied event.
fn fold_range(
    log: &ObservedLog,
    fold: &dyn Fold,
    list: &[LogIndex],
    range: std::ops::Range<usize>,
    last_pos: Option<usize>,
    run: &mut Run,
    mut on_applied: impl FnMut(&Run),
) -> Option<Value> {
    let mut before = None;
    for p in range {
        let Some(&idx) = list.get(p) else { break };
        if !accepted(log, fold, idx) {
            continue;
        }
        if Some(p) == last_pos {
            before = Some(run.state.to_json());
        }
        if let Some(ev) = log.event(idx) {
            static NULL: Value = Value::Null;
            let payload = ev.payload.as_ref().unwrap_or(&NULL);
            fold.apply_state(run.state.as_mut(), &ev, payload);
        }
        run.applied += 1;
        run.last_index = Some(idx);
        on_applied(run);
    }
    before
}

/// The answer to a query once the fold is done: the state before the last event as JSON,
/// patched into the state after it (which gives the diff).
fn finish(run: Run, before: Option<Value>, replayed: usize) -> AggregateState {
    let (state, diff) = match before {
        Some(mut json) => {
            let diff = run.state.patch_json(&mut json);
            (json, diff)
        }
        None => (run.state.to_json(), Vec::new()),
    };
    AggregateState {
        state,
        applied: run.applied,
        last_index: run.last_index,
        diff,
        replayed,
        dropped: run.dropped,
    }
}

/// A run starting after `upto` misses the aggregate's dropped events it has not folded.
fn note_dropped(log: &ObservedLog, agg: Sym, upto: LogIndex, run: &mut Run) {
    if let Some((n, last)) = log.aggregate_dropped(agg) {
        if last >= upto {
            run.dropped = run.dropped.max(n);
        }
    } else if upto == 0 && log.maybe_forgotten(agg) {
        // Seen before and forgotten under the memory limit: its history is partial, by how
        // much is not known any more.
        run.dropped = run.dropped.max(1);
    }
}

impl StateEngine {
    /// Snapshot every `n` applied events (at least 1).
    pub fn new(snapshot_every: usize) -> Self {
        StateEngine {
            snapshot_every: snapshot_every.max(1),
            cache: HashMap::new(),
        }
    }

    pub fn snapshot_every(&self) -> usize {
        self.snapshot_every
    }

    /// Number of snapshots held (all aggregates).
    pub fn snapshot_count(&self) -> usize {
        self.cache.values().map(Vec::len).sum()
    }

    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// The log forgot ids ([`ObservedLog::forget_epoch`]): drop their snapshots.
    pub fn on_forget(&mut self, log: &ObservedLog) {
        self.cache.retain(|(_, agg), _| log.is_live(*agg));
    }

    /// The state of `aggregate_id` with every record up to and including `cursor` applied:
    /// the nearest snapshot plus a short tail. `None` if the aggregate was never seen.
    ///
    /// Snapshots and the tail hold the fold's own state type ([`Fold::apply_state`]); the
    /// state becomes JSON twice per query, before and after the last applied event (the diff).
    pub fn state_at(
        &mut self,
        log: &ObservedLog,
        fold: &dyn Fold,
        aggregate_id: &str,
        cursor: LogIndex,
    ) -> Option<AggregateState> {
        let agg = log.sym(aggregate_id)?;
        let list = log.aggregate_of(agg);
        if list.is_empty() {
            return None;
        }
        let k = list.partition_point(|&i| i <= cursor);
        // The last applied event must be in the tail so that its diff can be computed.
        let last_pos = (0..k)
            .rev()
            .find(|&p| list.get(p).is_some_and(|&i| accepted(log, fold, i)));
        let snaps = self
            .cache
            .entry((fold.name().to_owned(), agg))
            .or_insert_with(|| {
                vec![Snap {
                    upto: 0,
                    run: Run {
                        state: fold.initial_state(),
                        applied: 0,
                        last_index: None,
                        dropped: 0,
                    },
                }]
            });
        // The snapshot must not hold the last applied event (its diff is computed).
        let limit = last_pos.and_then(|p| list.get(p)).copied().unwrap_or(0);
        let si = snaps.partition_point(|s| s.upto <= limit).saturating_sub(1);
        let is_last_snap = si + 1 == snaps.len();
        let Snap { upto, mut run } = snaps.get(si).cloned()?;
        note_dropped(log, agg, upto, &mut run);
        let from = run.applied;
        let every = self.snapshot_every;
        let start = list.partition_point(|&i| i < upto);
        let before = fold_range(log, fold, list, start..k, last_pos, &mut run, |r| {
            if is_last_snap && r.applied % every == 0 {
                snaps.push(Snap {
                    upto: r.last_index.map_or(0, |i| i + 1),
                    run: r.clone(),
                });
            }
        });
        let replayed = run.applied - from;
        Some(finish(run, before, replayed))
    }
}

/// Full replay without snapshots (reference implementation, and for comparisons).
pub fn replay(
    log: &ObservedLog,
    fold: &dyn Fold,
    aggregate_id: &str,
    cursor: LogIndex,
) -> Option<AggregateState> {
    let list = log.aggregate(aggregate_id);
    if list.is_empty() {
        return None;
    }
    let visible = list.partition_point(|&i| i <= cursor);
    let last_pos = (0..visible)
        .rev()
        .find(|&p| list.get(p).is_some_and(|&i| accepted(log, fold, i)));
    let mut run = Run {
        state: fold.initial_state(),
        applied: 0,
        last_index: None,
        dropped: 0,
    };
    if let Some(agg) = log.sym(aggregate_id) {
        note_dropped(log, agg, 0, &mut run);
    }
    let before = fold_range(log, fold, list, 0..visible, last_pos, &mut run, |_| {});
    let replayed = run.applied;
    Some(finish(run, before, replayed))
}

#[cfg(test)]
mod tests {
    use super::super::log::tests::Ev;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn cursor_commands() {
        let mut log = ObservedLog::default();
        for i in 0..10 {
            let id = format!("e{i}");
            log.append(
                &Ev {
                    id: &id,
                    ts: 100 * i,
                    ..Ev::default()
                }
                .rec(),
                0,
            )
            .unwrap();
        }
        let anomalies: BTreeSet<LogIndex> = [2, 7].into();
        let mut c = Cursor::default();
        let mut go = |cmd| {
            c.apply(cmd, &log, &anomalies);
            c.pos()
        };
        assert_eq!(go(CursorCommand::Step(1)), Some(1));
        assert_eq!(go(CursorCommand::Step(-5)), Some(0));
        assert_eq!(go(CursorCommand::Step(i64::MAX)), Some(9));
        assert_eq!(go(CursorCommand::PrevAnomaly), Some(7));
        assert_eq!(go(CursorCommand::PrevAnomaly), Some(2));
        assert_eq!(go(CursorCommand::PrevAnomaly), Some(2));
        assert_eq!(go(CursorCommand::NextAnomaly), Some(7));
        assert_eq!(go(CursorCommand::NextAnomaly), Some(7));
        assert_eq!(go(CursorCommand::JumpTo(4)), Some(4));
        assert_eq!(go(CursorCommand::JumpTo(400)), Some(9));
        assert_eq!(go(CursorCommand::JumpToTime(250)), Some(3));
        assert_eq!(go(CursorCommand::JumpToTime(99_999)), Some(9));
        assert_eq!(go(CursorCommand::ToStart), Some(0));
        assert_eq!(go(CursorCommand::ToEnd), Some(9));
        let mut empty = Cursor::default();
        empty.apply(CursorCommand::Step(1), &ObservedLog::default(), &anomalies);
        assert_eq!(empty.pos(), None);
    }

    #[test]
    fn merge_fold_and_diff() {
        let mut log = ObservedLog::default();
        let recs = [
            Ev {
                id: "a",
                payload: r#"{"status":"new","items":[1],"addr":{"city":"X"}}"#,
                version: Some(1),
                ..Ev::default()
            },
            Ev {
                id: "b",
                topic: "orders.commands",
                payload: r#"{"cmd":true}"#,
                ..Ev::default()
            },
            Ev {
                id: "c",
                payload: r#"{"status":"paid","addr":{"zip":"9"}}"#,
                ty: "OrderPaid",
                version: Some(2),
                ..Ev::default()
            },
        ];
        for r in &recs {
            log.append(&r.rec(), 0).unwrap();
        }
        log.append(&recs[0].rec(), 0).unwrap(); // redelivery is not applied again
        let mut eng = StateEngine::new(1);
        let s = eng.state_at(&log, &JsonMergeFold, "order-1", 3).unwrap();
        assert_eq!(
            s.state,
            json!({"status":"paid","items":[1],"addr":{"city":"X","zip":"9"},"_version":2,"_last_type":"OrderPaid"})
        );
        assert_eq!(s.applied, 2);
        assert_eq!(s.last_index, Some(2));
        let paths: Vec<&str> = s.diff.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/_last_type", "/_version", "/addr/zip", "/status"]);
        assert_eq!(s.diff[2].old, None);
        assert_eq!(s.diff[3].old, Some(json!("new")));
        assert_eq!(Some(s), replay(&log, &JsonMergeFold, "order-1", 3));
        assert!(eng.state_at(&log, &JsonMergeFold, "nope", 3).is_none());
    }

    #[test]
    fn diff_escapes_and_arrays() {
        let d = json_diff(&json!({"a/b":[1,2],"t~":1}), &json!({"a/b":[1],"t~":1}));
        assert_eq!(
            d,
            vec![JsonChange {
                path: "/a~1b/1".into(),
                old: Some(json!(2)),
                new: None
            }]
        );
        assert_eq!(json_diff(&json!(1), &json!(2))[0].path, "");
    }

    fn build_log(ops: &[(u8, u8, u8, bool, bool)]) -> ObservedLog {
        let mut log = ObservedLog::default();
        let mut ids = Vec::new();
        for (n, &(agg, key, val, redeliver, command)) in ops.iter().enumerate() {
            let id = if redeliver && !ids.is_empty() {
                ids[n % ids.len()]
            } else {
                n
            };
            ids.push(id);
            let id_s = format!("e{id}");
            let agg_s = format!("agg-{agg}");
            let payload = format!(r#"{{"k{key}":{val},"nested":{{"n{}":{val}}}}}"#, key % 2);
            let topic = if command { "x.commands" } else { "x" };
            log.append(
                &Ev {
                    id: &id_s,
                    agg: &agg_s,
                    topic,
                    payload: &payload,
                    ..Ev::default()
                }
                .rec(),
                0,
            )
            .unwrap();
        }
        log
    }

    proptest! {
        #[test]
        fn snapshot_plus_tail_equals_full_replay(
            ops in proptest::collection::vec((0u8..3, 0u8..5, 0u8..100, proptest::bool::weighted(0.1), proptest::bool::weighted(0.1)), 1..200),
            every in 1usize..12,
            cursors in proptest::collection::vec(0u32..220, 1..30),
        ) {
            let log = build_log(&ops);
            let mut eng = StateEngine::new(every);
            for c in cursors {
                for agg in ["agg-0", "agg-1", "agg-2"] {
                    let fast = eng.state_at(&log, &JsonMergeFold, agg, c).map(|mut s| { s.replayed = 0; s });
                    let full = replay(&log, &JsonMergeFold, agg, c).map(|mut s| { s.replayed = 0; s });
                    prop_assert_eq!(fast, full);
                }
            }
        }
    }

    #[test]
    fn warm_queries_replay_a_short_tail() {
        let ops: Vec<_> = (0..1000u32)
            .map(|i| (0u8, (i % 5) as u8, (i % 97) as u8, false, false))
            .collect();
        let log = build_log(&ops);
        let mut eng = StateEngine::new(50);
        let cold = eng.state_at(&log, &JsonMergeFold, "agg-0", 999).unwrap();
        assert_eq!(cold.replayed, 1000);
        let warm = eng.state_at(&log, &JsonMergeFold, "agg-0", 777).unwrap();
        assert!(warm.replayed <= 50, "{}", warm.replayed);
        assert_eq!(warm.applied, 778);
    }

    /// The cursor steps over records the memory limit dropped.
    #[test]
    fn the_cursor_skips_dropped_records() {
        let mut log = ObservedLog::default();
        log.set_memory_limit(Some(1 << 20));
        for i in 0..20_000i64 {
            log.append(&super::super::log::tests::filler(i), 0).unwrap();
            log.shed();
        }
        let first = log.first_held();
        assert!(first > 0);
        let none = BTreeSet::new();
        let mut c = Cursor::default();
        let mut go = |cmd| {
            c.apply(cmd, &log, &none);
            c.pos()
        };
        assert_eq!(go(CursorCommand::ToStart), Some(first));
        assert_eq!(go(CursorCommand::Step(-3)), Some(first));
        assert_eq!(go(CursorCommand::Step(2)), Some(first + 2));
        assert_eq!(go(CursorCommand::JumpTo(0)), Some(first));
        assert_eq!(go(CursorCommand::JumpToTime(0)), Some(first));
        assert_eq!(go(CursorCommand::ToEnd), Some(19_999));
    }

    /// An aggregate whose early events the memory limit dropped: a fold that starts after
    /// them says so (`dropped`); one that continues a snapshot taken before the drop is whole.
    #[test]
    fn partial_history_is_said() {
        let mut whole = ObservedLog::default();
        let mut log = ObservedLog::default();
        log.set_memory_limit(Some(4 << 20));
        let mut eng = StateEngine::new(10);
        let mut fresh_after_drop = None;
        for i in 0..40_000i64 {
            let rec = super::super::log::tests::filler(i);
            whole.append(&rec, 0).unwrap();
            let idx = log.append(&rec, 0).unwrap();
            log.shed();
            if i % 7 == 0 {
                // Queried as it grows: the snapshots keep up with the aggregate.
                let s = eng.state_at(&log, &JsonMergeFold, "order-0", idx).unwrap();
                assert_eq!(s.dropped, 0, "record {i}");
            }
            if fresh_after_drop.is_none() && log.first_held() > 0 {
                fresh_after_drop = Some(idx);
            }
        }
        let first = log.first_held();
        assert!(first > 5_000, "{first}");
        let last = whole.aggregate("order-0").last().copied().unwrap();
        let full = replay(&whole, &JsonMergeFold, "order-0", last).unwrap();
        let kept = eng.state_at(&log, &JsonMergeFold, "order-0", last).unwrap();
        assert_eq!((kept.dropped, &kept.state), (0, &full.state));
        // A fresh engine (or a plain replay) can only fold what is held: partial, said so.
        let (n, _) = log.aggregate_dropped(log.sym("order-0").unwrap()).unwrap();
        let partial = StateEngine::new(10)
            .state_at(&log, &JsonMergeFold, "order-0", last)
            .unwrap();
        assert_eq!(partial.dropped, n);
        assert_eq!(partial.applied, log.aggregate("order-0").len());
        assert!(partial.applied < full.applied);
        assert_eq!(
            replay(&log, &JsonMergeFold, "order-0", last)
                .unwrap()
                .dropped,
            n
        );
        assert!(fresh_after_drop.is_some());
    }
}
