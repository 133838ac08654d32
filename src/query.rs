//! Record queries: a jq filter over what a record says.
//!
//! jq syntax, run by jaq (a maintained pure-Rust jq implementation, no C
//! library): the language of `jq` and of Kpow's kJQ, which people filtering
//! Kafka records already write, and it reaches into nested JSON payloads and
//! arrays naturally (`.data.items[].sku == "A1"`), which CEL does only with macros.
//!
//! The filter's input is the record's payload parsed as JSON (a payload that is
//! not JSON is a string; no payload is `null`). The rest of the record is in
//! variables: `$key` (string or null), `$headers` (object: name → string; the
//! last one wins), `$topic`, `$partition`, `$offset`. A record matches when the
//! filter yields a value that is neither `false` nor `null`; a runtime error
//! (`.a.b` on a string, say) is no match.
//!
//! Pure: no I/O, no clock.

use jaq_core::load::{lex, parse, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Filter, Native, RcIter};
use jaq_json::Val;
use serde_json::{Map, Value};

use crate::model::jsonl;
use crate::model::log::{LogIndex, ObservedLog};
use crate::model::record::Record;
use crate::registry::RegistryHandle;

/// Why an expression is not a query: the parser's or compiler's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// The variables a query may use, in the order their values are given.
const VARS: [&str; 5] = ["$key", "$headers", "$topic", "$partition", "$offset"];

/// A compiled query. Not `Send` (jaq shares values with `Rc`): compile it on
/// the thread that runs it.
pub struct Query {
    filter: Filter<Native<Val>>,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Query")
    }
}

fn near(rest: &str) -> String {
    let rest = rest.trim();
    if rest.is_empty() {
        return "at the end".into();
    }
    let shown: String = rest.chars().take(20).collect();
    if shown.len() < rest.len() {
        format!("at `{shown}...`")
    } else {
        format!("at `{shown}`")
    }
}

fn load_error(e: &jaq_core::load::Error<&str>) -> String {
    match e {
        jaq_core::load::Error::Io(errs) => errs
            .iter()
            .map(|(path, why)| format!("{path}: {why}"))
            .collect::<Vec<_>>()
            .join("; "),
        jaq_core::load::Error::Lex(errs) => errs
            .iter()
            .map(|(expect, rest): &lex::Error<&str>| {
                format!("expected {} {}", expect.as_str(), near(rest))
            })
            .collect::<Vec<_>>()
            .join("; "),
        jaq_core::load::Error::Parse(errs) => errs
            .iter()
            .map(|(expect, rest): &parse::Error<&str>| {
                format!("expected {} {}", expect.as_str(), near(rest))
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

impl Query {
    /// Parse and compile `expr`.
    pub fn parse(expr: &str) -> Result<Query, QueryError> {
        if expr.trim().is_empty() {
            return Err(QueryError("empty query".into()));
        }
        let loader = Loader::new(jaq_std::defs().chain(jaq_json::defs()));
        let arena = Arena::default();
        let program = File {
            code: expr,
            path: (),
        };
        let modules = loader.load(&arena, program).map_err(|errs| {
            QueryError(
                errs.iter()
                    .map(|(_, e)| load_error(e))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let filter = Compiler::default()
            .with_funs(jaq_std::funs().chain(jaq_json::funs()))
            .with_global_vars(VARS)
            .compile(modules)
            .map_err(|errs| {
                QueryError(
                    errs.iter()
                        .flat_map(|(_, es)| es.iter())
                        .map(|(name, undefined)| format!("undefined {} {name}", undefined.as_str()))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
        Ok(Query { filter })
    }

    /// Does `record` match?
    pub fn matches(&self, record: &Record) -> bool {
        self.matches_in(record, &RegistryHandle::default())
    }

    /// Does `record` match, its Confluent-framed value and key decoded through `registry`
    /// (the filter sees the decoded JSON)?
    pub fn matches_in(&self, record: &Record, registry: &RegistryHandle) -> bool {
        let input = match &record.value {
            None => Value::Null,
            Some(bytes) => unframed(bytes, registry)
                .or_else(|| serde_json::from_slice(bytes).ok())
                .unwrap_or_else(|| Value::String(String::from_utf8_lossy(bytes).into_owned())),
        };
        let key = record
            .key
            .as_deref()
            .map_or(Value::Null, |k| match unframed(k, registry) {
                Some(Value::String(s)) => Value::String(s),
                Some(v) => v,
                None => Value::String(String::from_utf8_lossy(k).into_owned()),
            });
        let headers: Map<String, Value> = record
            .headers
            .iter()
            .map(|(k, v)| {
                let v = v.map_or(Value::Null, |v| {
                    Value::String(String::from_utf8_lossy(v).into_owned())
                });
                (k.to_owned(), v)
            })
            .collect();
        let vars = [
            key,
            Value::Object(headers),
            Value::String(record.topic.clone()),
            Value::from(record.partition),
            Value::from(record.offset),
        ]
        .map(Val::from);
        let inputs = RcIter::new(core::iter::empty());
        let mut out = self.filter.run((Ctx::new(vars, &inputs), Val::from(input)));
        out.any(|v| matches!(v, Ok(v) if jaq_core::ValT::as_bool(&v)))
    }
}

/// Indices of the log's records that `query` matches, in log order.
pub fn matching(log: &ObservedLog, query: &Query) -> Vec<LogIndex> {
    matching_or_why(log, query).0
}

/// [`matching`], and why each held record that could not be read was not judged (its bytes
/// were evicted to Kafka and cannot be read back), in one pass over the log.
fn matching_or_why(log: &ObservedLog, query: &Query) -> (Vec<LogIndex>, Vec<String>) {
    let registry = &log.decode_config().registry;
    let (mut matched, mut unreadable) = (Vec::new(), Vec::new());
    for i in log.held() {
        match log.record(i) {
            Some(r) if query.matches_in(&r, registry) => matched.push(i),
            Some(_) => {}
            None => unreadable.extend(log.unreadable(i)),
        }
    }
    (matched, unreadable)
}

/// Confluent-framed bytes decoded through the registry, if they are and it can.
fn unframed(bytes: &[u8], registry: &RegistryHandle) -> Option<Value> {
    registry.unframe(bytes)?.ok().map(|(v, _)| v)
}

/// The report's `filter` section: the expression, how many records it
/// matched of how many, and the matching records (as in a JSONL export).
pub fn report_section(log: &ObservedLog, query: &Query, expression: &str) -> Value {
    // Held records whose bytes were evicted to Kafka and cannot be read back are not judged:
    // counted, with the first reason.
    let (matched, unreadable) = matching_or_why(log, query);
    let records: Vec<Value> = matched
        .iter()
        .filter_map(|&i| log.record(i))
        .filter_map(|r| jsonl::to_line(&r).ok())
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect();
    serde_json::json!({
        "expression": expression,
        "observed": log.len(),
        "matched": matched.len(),
        "records": records,
        "unreadable": unreadable.len(),
        "unreadable_reason": unreadable.first(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> Record {
        Record {
            topic: "shop".into(),
            partition: 1,
            offset: 7,
            timestamp_ms: None,
            key: Some(b"order-1".to_vec()),
            headers: [("ce_type", Some(&b"OrderPlaced"[..])), ("empty", None)]
                .into_iter()
                .collect(),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn matches(expr: &str, value: &str) -> bool {
        Query::parse(expr).unwrap().matches(&record(value))
    }

    #[test]
    fn payload_fields() {
        let v = r#"{"data":{"amount":150,"customer":"c-1","items":[{"sku":"A1"},{"sku":"B2"}]}}"#;
        assert!(matches(".data.amount > 100", v));
        assert!(!matches(".data.amount > 200", v));
        assert!(matches(r#".data.customer == "c-1""#, v));
        assert!(
            matches(r#".data.items[].sku == "B2""#, v),
            "any output counts"
        );
        assert!(!matches(r#".data.items[].sku == "C3""#, v));
        assert!(
            matches(r#".data.customer | test("^c-")"#, v),
            "std functions"
        );
        assert!(!matches(".data.missing", v), "null is no match");
    }

    #[test]
    fn key_headers_and_coordinates() {
        let v = "{}";
        assert!(matches(r#"$key == "order-1""#, v));
        assert!(matches(r#"$headers.ce_type == "OrderPlaced""#, v));
        assert!(matches(r#"$headers.empty == null"#, v));
        assert!(matches(
            r#"$topic == "shop" and $partition == 1 and $offset == 7"#,
            v
        ));
        assert!(!matches(r#"$headers.ce_type == "Other""#, v));
    }

    #[test]
    fn payloads_that_are_not_json() {
        assert!(matches(r#". == "not json""#, "not json"));
        assert!(
            !matches(".data.amount > 1", "not json"),
            "an error is no match"
        );
        let mut r = record("");
        r.value = None;
        assert!(Query::parse(". == null").unwrap().matches(&r));
    }

    #[test]
    fn bad_expressions_say_why() {
        let e = Query::parse(".data.amount >").unwrap_err();
        assert!(e.0.contains("expected"), "{e}");
        let e = Query::parse(".a | nosuchfn").unwrap_err();
        assert!(e.0.contains("undefined filter nosuchfn"), "{e}");
        let e = Query::parse("$nope").unwrap_err();
        assert!(e.0.contains("undefined variable"), "{e}");
        assert!(Query::parse("  ").is_err());
        assert!(Query::parse("(.a").is_err());
    }
}
