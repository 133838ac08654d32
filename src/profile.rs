//! The profile of an observed system (`--profile FILE`, TOML): what eventscope cannot guess about
//! a system nobody here wrote — which topics carry commands, which event types end its flows,
//! where plain-JSON records keep their ids, which fields are personal data, where its traces
//! are. Without a profile the defaults fit the demo. `inspect --print-profile` writes the
//! effective profile with suggestions inferred from what was read.
//!
//! ```toml
//! topics = ["bank.transfers", "bank.payments"]
//! command_topics = ["*.commands", "bank.*.cmd"]
//! terminal_types = ["OrderCompleted", "OrderCancelled"]   # sagas that carry commands
//! start_types = ["OrderCreated"]      # choreographed sagas (events only) start with these
//! stuck_saga_timeout_ms = 60000
//! pii_fields = ["email", "iban"]
//! trace_link = "http://localhost:16686/trace/{trace_id}"
//! schemas = "contracts/"      # JSON Schemas <Type>/v<N>.json that dataschema URIs name
//!
//! [json_paths]        # plain-JSON records
//! id = "meta.id"
//! event_type = "meta.type"
//! correlation = "meta.correlation"
//!
//! [[flows]]           # chains judged whether they carry commands or not
//! name = "transfer"
//! start_types = ["TransferInitiated"]
//! terminal_types = ["TransferCompleted", "TransferFailed"]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::detect::FlowConfig;
use crate::model::envelope::PlainJsonPaths;
use crate::model::{Model, ModelConfig};

/// Field names masked as personal data by default (a field matches when its name contains one).
pub const DEFAULT_PII_FIELDS: [&str; 6] = ["email", "address", "phone", "name", "iban", "card"];

/// The trace link of the Jaeger UI on this machine.
pub const DEFAULT_TRACE_LINK: &str = "http://localhost:16686/trace/{trace_id}";

/// What the user tells eventscope about the observed system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Topics to observe (`inspect` without `--topics`); empty: every non-internal topic.
    pub topics: Vec<String>,
    /// Topics that carry commands: glob patterns (`*`, `?`).
    pub command_topics: Vec<String>,
    /// Event types that end a saga that carries commands, or starts with `start_types`.
    pub terminal_types: Vec<String>,
    /// Event types that start a saga without commands (a choreography).
    pub start_types: Vec<String>,
    /// A saga idle this long without its terminal event is stuck.
    pub stuck_saga_timeout_ms: i64,
    /// The system's own flows, judged whether they carry commands or not.
    pub flows: Vec<FlowConfig>,
    /// Where plain-JSON records keep their envelope facts.
    pub json_paths: PlainJsonPaths,
    /// Field names masked as personal data (a field matches when its name contains one).
    pub pii_fields: Vec<String>,
    /// Link to a trace; `{trace_id}` is replaced.
    pub trace_link: String,
    /// A directory of JSON Schemas (`<Type>/v<N>.json`) that the records' `dataschema`
    /// URIs name; `--schemas DIR` overrides it.
    pub schemas: Option<std::path::PathBuf>,
    /// Bytes the observed log may hold (`--memory-limit`, not a profile key: it travels with
    /// the profile into [`ModelConfig::memory_limit`]).
    #[serde(skip)]
    pub memory_limit: Option<u64>,
    /// Where payloads evicted under the memory limit are read back from (the connection's
    /// Kafka; not a profile key): into [`ModelConfig::record_store`].
    #[serde(skip)]
    pub record_store: crate::model::store::RecordStoreHandle,
}

impl Default for Profile {
    fn default() -> Self {
        let m = ModelConfig::default();
        Profile {
            topics: Vec::new(),
            command_topics: m.decode.command_topics,
            terminal_types: m.detect.terminal_types,
            start_types: m.detect.start_types,
            stuck_saga_timeout_ms: m.detect.stuck_saga_timeout_ms,
            flows: m.detect.flows,
            json_paths: m.decode.plain,
            pii_fields: DEFAULT_PII_FIELDS.iter().map(|s| (*s).to_owned()).collect(),
            trace_link: DEFAULT_TRACE_LINK.to_owned(),
            schemas: None,
            memory_limit: None,
            record_store: crate::model::store::RecordStoreHandle::default(),
        }
    }
}

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read the profile {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the profile {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("--schemas: {0}")]
    Schemas(#[from] eventscope_demo::contracts::ContractError),
}

impl Profile {
    /// Parse a profile; keys not given keep their defaults, unknown keys are an error.
    pub fn parse(text: &str, path: &str) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| ProfileError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let invalid = |reason: String| ProfileError::Invalid {
            path: path.to_owned(),
            reason,
        };
        if p.json_paths.id.trim().is_empty() {
            return Err(invalid("json_paths.id cannot be empty".into()));
        }
        if p.stuck_saga_timeout_ms <= 0 {
            return Err(invalid("stuck_saga_timeout_ms must be positive".into()));
        }
        for f in &p.flows {
            if f.terminal_types.is_empty() {
                return Err(invalid(format!(
                    "flow `{}` names no terminal_types",
                    f.name
                )));
            }
        }
        Ok(p)
    }

    /// Read and parse a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The profile at `path`, or the defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Profile, ProfileError> {
        path.map_or_else(|| Ok(Profile::default()), Profile::load)
    }

    /// The profile for a command line: `--profile FILE` (or the defaults) with
    /// `--schemas DIR` over it; the schema directory is loaded once here so that a
    /// bad file is reported with its path and reason before anything runs.
    pub fn for_connection(conn: &crate::cli::Connection) -> Result<Profile, ProfileError> {
        let mut p = Self::load_or_default(conn.profile.as_deref())?;
        if let Some(dir) = &conn.schemas {
            p.schemas = Some(dir.clone());
        }
        if let Some(dir) = &p.schemas {
            eventscope_demo::contracts::Registry::load_dir(dir)?;
        }
        p.memory_limit = conn.memory_limit_bytes();
        p.record_store = conn.record_store();
        Ok(p)
    }

    /// The model settings this profile makes.
    pub fn model_config(&self) -> ModelConfig {
        let mut cfg = ModelConfig::default();
        cfg.decode.command_topics = self.command_topics.clone();
        cfg.decode.plain = self.json_paths.clone();
        cfg.detect.terminal_types = self.terminal_types.clone();
        cfg.detect.start_types = self.start_types.clone();
        cfg.detect.stuck_saga_timeout_ms = self.stuck_saga_timeout_ms;
        cfg.detect.flows = self.flows.clone();
        cfg.detect.schemas_dir = self.schemas.clone();
        cfg.memory_limit = self.memory_limit;
        cfg.record_store = self.record_store.clone();
        cfg
    }

    /// As TOML (what `--print-profile` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// What the records read suggest for a profile, as TOML comments.
pub fn suggestions(model: &Model) -> String {
    let log = model.log();
    // Per chain: the first and the last event type (log order); grouped by first type.
    let mut chains: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut command_topics = std::collections::BTreeSet::new();
    // Types seen before the end of some chain: not an end, wherever else they come last.
    let mut inner = std::collections::HashSet::new();
    for row in log.rows() {
        let Some(m) = row.meta() else { continue };
        if m.is_command {
            command_topics.insert(log.resolve(row.topic));
        }
        let Some(corr) = m.correlation_id else {
            continue;
        };
        if !seen.insert(corr) {
            continue;
        }
        let chain = log.chain_of(corr);
        let ty = |i: Option<&u32>| {
            i.and_then(|&i| log.meta(i))
                .and_then(|m| log.resolve_opt(m.event_type))
        };
        if let (Some(first), Some(last)) = (ty(chain.first()), ty(chain.last())) {
            if chain.len() > 1 {
                *chains.entry(first).or_default().entry(last).or_default() += 1;
                let (_, before_last) = chain.split_last().unwrap_or((&0, &[]));
                inner.extend(before_last.iter().filter_map(|i| ty(Some(i))));
            }
        }
    }
    let mut out = format!(
        "\n# Suggestions from the {} records read (uncomment what fits):\n",
        log.len()
    );
    if !command_topics.is_empty() {
        out.push_str(&format!(
            "# topics read as command topics: {}\n",
            command_topics.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if chains.is_empty() {
        out.push_str("# no correlation chains of two or more events were seen\n");
    }
    for (first, lasts) in chains {
        let total: u64 = lasts.values().sum();
        let mut lasts: Vec<(&str, u64)> = lasts.into_iter().collect();
        lasts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        // Candidates: the chains' last types that never come before another event of a chain
        // (a chain that stopped there is the one that may be stuck), else every last type.
        let ends: Vec<&str> = lasts
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t != first && !inner.contains(t))
            .collect();
        let ends = if ends.is_empty() {
            lasts
                .iter()
                .map(|(t, _)| *t)
                .filter(|t| *t != first)
                .collect()
        } else {
            ends
        };
        let terminal: Vec<String> = ends.iter().take(3).map(|t| format!("{t:?}")).collect();
        if terminal.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "# [[flows]]   # {total} chain(s) start with {first}; they ended with: {}\n# name = {first:?}\n# start_types = [{first:?}]\n# terminal_types = [{}]\n",
            lasts
                .iter()
                .map(|(t, n)| format!("{t} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
            terminal.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_the_demo_and_round_trip() {
        let p = Profile::default();
        assert_eq!(p.command_topics, vec!["*.commands".to_owned()]);
        assert_eq!(p.model_config(), ModelConfig::default());
        let again = Profile::parse(&p.to_toml(), "x").expect("round trip");
        assert_eq!(again, p);
        assert_eq!(Profile::parse("", "x").expect("empty"), p);
    }

    #[test]
    fn a_users_profile() {
        let p = Profile::parse(
            r#"
topics = ["bank.transfers"]
command_topics = ["bank.*.cmd"]
stuck_saga_timeout_ms = 2000
pii_fields = ["iban"]
[json_paths]
id = "meta.id"
correlation = "meta.corr"
[[flows]]
name = "transfer"
start_types = ["TransferInitiated"]
terminal_types = ["TransferCompleted"]
"#,
            "p.toml",
        )
        .expect("valid");
        let cfg = p.model_config();
        assert!(cfg.decode.is_command_topic("bank.transfers.cmd"));
        assert!(!cfg.decode.is_command_topic("orders.commands"));
        assert_eq!(cfg.decode.plain.id, "meta.id");
        assert_eq!(cfg.decode.plain.correlation.as_deref(), Some("meta.corr"));
        assert_eq!(cfg.decode.plain.event_type.as_deref(), Some("type"));
        assert_eq!(cfg.detect.stuck_saga_timeout_ms, 2000);
        assert_eq!(
            cfg.detect.flows[0].terminal_types,
            vec!["TransferCompleted"]
        );
        assert_eq!(
            cfg.detect.terminal_types,
            ModelConfig::default().detect.terminal_types
        );
        for bad in [
            "nonsense = 1",
            "stuck_saga_timeout_ms = 0",
            "[json_paths]\nid = \"\"",
            "[[flows]]\nname = \"x\"",
            "topics = 3",
        ] {
            assert!(Profile::parse(bad, "bad.toml").is_err(), "{bad}");
        }
    }
}
