//! Command line (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use eventscope_demo::contracts::Compatibility;
use eventscope_demo::faults::FaultSpec;
use eventscope_demo::telemetry::{OtlpProtocol, OtlpSettings};

#[derive(Debug, Parser)]
#[command(
    name = "eventscope",
    version,
    about = "A debugger for event-driven systems on Kafka"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub conn: Connection,
}

/// How the demo's sagas run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SagaArg {
    /// The saga orchestrator sends commands (`*.commands` topics).
    #[default]
    Orchestration,
    /// No orchestrator, no command topics: each service reacts to the previous
    /// service's event; compensations by each owner, in reverse order.
    Choreography,
}

impl From<SagaArg> for eventscope_demo::saga::SagaMode {
    fn from(s: SagaArg) -> Self {
        match s {
            SagaArg::Orchestration => eventscope_demo::saga::SagaMode::Orchestration,
            SagaArg::Choreography => eventscope_demo::saga::SagaMode::Choreography,
        }
    }
}

/// The outbox relay's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RelayArg {
    #[default]
    Poll,
    Cdc,
}

impl From<RelayArg> for eventscope_demo::system::RelayMode {
    fn from(r: RelayArg) -> Self {
        match r {
            RelayArg::Poll => eventscope_demo::system::RelayMode::Poll,
            RelayArg::Cdc => eventscope_demo::system::RelayMode::Cdc,
        }
    }
}

/// Where the broker and database are. Without `--brokers`, an embedded broker runs in-process.
#[derive(Debug, Clone, Args, Default)]
pub struct Connection {
    /// Kafka bootstrap servers (host:port,...). Default: the embedded broker.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub brokers: Option<String>,
    /// Extra librdkafka client property, repeatable (e.g. security.protocol=SASL_SSL).
    #[arg(long = "kafka-config", global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
    /// A file of librdkafka client properties (key=value lines, # comments),
    /// e.g. for SASL_SSL with SCRAM; --kafka-config pairs override it.
    #[arg(long = "kafka-config-file", global = true, value_name = "FILE")]
    pub kafka_config_file: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Default: a SQLite file in the data dir.
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    /// How the demo's outbox rows reach Kafka: poll the table, or CDC from
    /// PostgreSQL logical decoding (needs --database postgres://… and wal_level=logical).
    #[arg(long, global = true, value_enum, default_value_t = RelayArg::Poll)]
    pub relay: RelayArg,
    /// Directory for SQLite files and recordings. Default: the platform data dir.
    #[arg(long = "data-dir", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Export the demo's OpenTelemetry spans to this OTLP collector (base URL, e.g.
    /// http://127.0.0.1:4318 for HTTP, http://127.0.0.1:4317 for gRPC). Default: no export.
    #[arg(long = "otlp-endpoint", global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: http (HTTP/protobuf, spans POSTed to URL/v1/traces) or grpc.
    #[arg(long = "otlp-protocol", global = true, value_name = "PROTOCOL", default_value_t = OtlpProtocol::HttpProtobuf)]
    pub otlp_protocol: OtlpProtocol,
    /// The observed system's profile (TOML): command topics, terminal event types and flows,
    /// JSON paths, PII fields, trace link, topics. Default: settings that fit the demo.
    #[arg(long, global = true, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// A directory of JSON Schemas laid out as <Type>/v<N>.json: records whose
    /// `dataschema` ends in <Type>/v<N>.json are checked against them (schema-drift).
    #[arg(long, global = true, value_name = "DIR")]
    pub schemas: Option<PathBuf>,
    /// A Confluent-compatible Schema Registry (http[s]://HOST:PORT) to decode records in the
    /// Confluent wire format (Avro, Protobuf, JSON Schema). Also `schema.registry.url` in the
    /// --kafka-config-file.
    #[arg(long = "schema-registry", global = true, value_name = "URL")]
    pub schema_registry: Option<String>,
    /// Basic auth for the registry. Also `basic.auth.user.info` in the --kafka-config-file.
    #[arg(
        long = "schema-registry-auth",
        global = true,
        value_name = "USER:PASSWORD"
    )]
    pub schema_registry_auth: Option<String>,
    /// How the demo writes its values: `cloudevents-json` (CloudEvents binary mode, JSON
    /// data), `json-schema` or `avro` (the Confluent wire format: the demo registers its
    /// contracts, as JSON Schema or rendered in Avro, with --schema-registry and frames each
    /// value with its schema id; the CloudEvents attributes stay in the headers).
    #[arg(long = "value-format", global = true, value_enum, default_value_t = ValueFormat::CloudeventsJson)]
    pub value_format: ValueFormat,
    /// Memory the observed log may hold (e.g. 512MiB, 2GiB; 0 or off: no limit). Beyond it
    /// the oldest records are dropped, counted in the status bar and the report (`memory`);
    /// the lints' verdicts stay. Default: a quarter of the physical memory.
    #[arg(long = "memory-limit", global = true, value_name = "SIZE", value_parser = parse_memory_limit)]
    pub memory_limit: Option<MemoryLimit>,
}

/// `--memory-limit`: a size, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    Off,
    Bytes(u64),
}

/// A size as `--memory-limit` takes it: a number of bytes with an optional unit (B, KiB,
/// MiB, GiB, TiB; KB, MB, GB, TB are powers of 1000; K, M, G, T are taken as KiB...), a
/// fraction allowed (`1.5GiB`); `0` or `off` for no limit.
pub fn parse_memory_limit(s: &str) -> Result<MemoryLimit, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(MemoryLimit::Off);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!(
            "`{s}` is not a size: give a number with an optional unit, e.g. 512MiB, 2GiB, \
             1500MB (or 0 / off for no limit)"
        )
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(bad()),
    };
    let bytes = n * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(match bytes as u64 {
        0 => MemoryLimit::Off,
        b => MemoryLimit::Bytes(b),
    })
}

/// Physical memory in bytes, where the platform tells (Linux: `/proc/meminfo`).
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The default `--memory-limit`: a quarter of the physical memory, else 2 GiB.
pub fn default_memory_limit() -> u64 {
    physical_memory().map_or(2 << 30, |b| b / 4)
}

/// How the demo writes record values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ValueFormat {
    #[default]
    CloudeventsJson,
    JsonSchema,
    Avro,
}

/// Properties of a Confluent client config file that are for the Schema Registry, not for
/// librdkafka (which would refuse them).
fn is_registry_property(key: &str) -> bool {
    key.starts_with("schema.registry.") || key.starts_with("basic.auth.")
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the demo order system: in the window, or with --headless to quiescence and a report.
    Demo(DemoArgs),
    /// Run the embedded broker alone until Ctrl-C.
    Broker(BrokerArgs),
    /// Observe topics of any system from the beginning (no demo) and report anomalies.
    Inspect(InspectArgs),
    /// Rebuild the model from a JSON Lines recording and report (or open it in the GUI).
    Import(ImportArgs),
    /// Event contracts (JSON Schema): compatibility checks.
    #[command(subcommand)]
    Schema(SchemaCommand),
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Compare a new version of a contract with the previous one: print each
    /// change, breaking or not; exit 1 when a change breaks compatibility.
    Check(SchemaCheckArgs),
}

#[derive(Debug, Args)]
pub struct SchemaCheckArgs {
    /// The previous version (a JSON Schema file).
    pub old: PathBuf,
    /// The new version.
    pub new: PathBuf,
    /// BACKWARD (the new schema reads old data, a schema registry's default),
    /// FORWARD (old readers read new data) or FULL (both).
    #[arg(long, default_value = "backward", value_parser = parse_compatibility)]
    pub mode: Compatibility,
}

fn parse_compatibility(s: &str) -> Result<Compatibility, String> {
    s.parse()
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Topics to read (comma separated). Default: every topic not starting with `__`.
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Where to write the JSON report (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also write every observed record as JSON Lines.
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
    /// Mask personal data in what is written (--export, and the records of the report's
    /// `filter` section): values of the profile's PII fields (email, address, ...) become
    /// "••••••", as the inspector shows them. Keys and headers are kept.
    #[arg(long)]
    pub redact: bool,
    /// Field paths for plain-JSON records, e.g. id=meta.id,type=meta.type,correlation=meta.corr.
    #[arg(long, value_name = "PATHS")]
    pub json_paths: Option<String>,
    /// Seconds to keep watching after reaching the end (time-based lints such as stuck-saga need time).
    #[arg(long, default_value_t = 0)]
    pub settle: u64,
    /// Give up reaching the end after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Write the effective profile (TOML) to stdout, with suggestions inferred from what was
    /// read, instead of the report (which then goes only to --report).
    #[arg(long)]
    pub print_profile: bool,
    /// List the records this jq filter matches in the report (`filter`): input is
    /// the payload, with $key, $headers, $topic, $partition, $offset; e.g.
    /// '.data.amount > 100'. A bad expression exits 2.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Consumer groups to judge (repeatable; default: every group the cluster lists).
    /// Their committed offsets are read without joining them.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The recording (JSON Lines, as exported by the GUI or `inspect --export`).
    pub file: PathBuf,
    /// Open the recording in the GUI instead of printing a report.
    #[arg(long)]
    pub gui: bool,
    /// Where to write the JSON report (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// List the records this jq filter matches in the report (as for inspect).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run without a window and exit when the demo is quiescent.
    #[arg(long)]
    pub headless: bool,
    /// Orders to place. 0 resumes an earlier run against the same --database and
    /// --brokers: places nothing, drives open sagas, unpublished outbox rows and
    /// uncommitted offsets to quiescence, and reports on every order in the database.
    #[arg(long, default_value_t = 100)]
    pub orders: u64,
    /// Faults to inject, e.g. duplicate-publish=0.1,payment-decline=0.2,poison-message=3.
    #[arg(long, value_name = "SPEC", default_value = "")]
    pub faults: FaultSpec,
    /// Seed for order contents and fault decisions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the JSON report.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Give up waiting for quiescence after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Partitions of each topic created.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub partitions: i32,
    /// Events per order between snapshots.
    #[arg(long = "snapshot-every", default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
    pub snapshot_every: i64,
    /// Seconds a saga waits for a step's reply before it compensates (the
    /// orchestrator's step deadline).
    #[arg(long = "step-timeout", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub step_timeout: u64,
    /// How the sagas run: orchestrated by commands, or choreographed by events.
    #[arg(long, value_enum, default_value_t = SagaArg::Orchestration)]
    pub saga: SagaArg,
    /// Orders per second (0.1 to 10000). Headless: the --orders are placed at
    /// this pace instead of as fast as the order service answers. In the window:
    /// traffic starts at this rate (within the top bar's 0.5 to 200).
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate: Option<f64>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.1..=10_000.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give orders per second from 0.1 to 10000, e.g. 50 or 0.5"
        )),
    }
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Loopback port to listen on (0: any free port).
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
    /// Partitions of topics created on first use.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub partitions: i32,
}

/// The key a malformed `--kafka-config` value becomes: refused by
/// [`Connection::client_properties`] without repeating it (clap would print a value its
/// parser refuses, and it may hold a password).
const MALFORMED_PROPERTY: &str = "\u{0}malformed";

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Ok((MALFORMED_PROPERTY.to_owned(), String::new())),
    }
}

impl Connection {
    /// The observed log's memory limit in bytes (`None`: no limit).
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        match self.memory_limit {
            Some(MemoryLimit::Off) => None,
            Some(MemoryLimit::Bytes(b)) => Some(b),
            None => Some(default_memory_limit()),
        }
    }

    /// Where the observed log reads evicted payloads back from: the user's Kafka, which keeps
    /// its log (`--brokers`); none on the embedded broker, which drops old batches.
    pub fn record_store(&self) -> crate::model::store::RecordStoreHandle {
        match self.user_kafka() {
            // Bad properties are refused where the tap connects: no store is needed then.
            Ok(Some(s)) => crate::model::store::RecordStoreHandle::new(
                crate::kafka::refetch::KafkaRecordStore::new(s),
            ),
            Ok(None) | Err(_) => crate::model::store::RecordStoreHandle::default(),
        }
    }

    /// The user's Kafka (`--brokers`) with the client properties; `None` for the embedded
    /// broker. An error for a malformed property or an unreadable config file.
    pub fn user_kafka(&self) -> anyhow::Result<Option<eventscope_demo::kafka::KafkaSettings>> {
        let Some(b) = &self.brokers else {
            return Ok(None);
        };
        let mut s = eventscope_demo::kafka::KafkaSettings::new(b.clone());
        s.extra = self.client_properties()?;
        Ok(Some(s))
    }

    /// Where to export spans, if anywhere.
    pub fn otlp(&self) -> Option<OtlpSettings> {
        self.otlp_endpoint
            .as_deref()
            .map(|e| OtlpSettings::new(e, self.otlp_protocol))
    }

    /// Client properties: the config file's, then `--kafka-config` pairs (the Schema
    /// Registry's own entries left out).
    pub fn client_properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = self.file_properties()?;
        if let Some(n) = self
            .kafka_config
            .iter()
            .position(|(k, _)| k == MALFORMED_PROPERTY)
        {
            anyhow::bail!(
                "--kafka-config value {} is not KEY=VALUE (not shown: it may hold a secret)",
                n + 1
            );
        }
        out.extend(self.kafka_config.iter().cloned());
        out.retain(|(k, _)| !is_registry_property(k));
        Ok(out)
    }

    fn file_properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        let Some(path) = &self.kafka_config_file else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read the Kafka config file {}: {e}", path.display())
        })?;
        parse_properties(&text)
            .map_err(|(line, why)| anyhow::anyhow!("{} line {line}: {why}", path.display()))
    }

    /// The Schema Registry client, if one is configured (flag, else config file).
    pub fn registry_client(&self) -> anyhow::Result<Option<crate::registry::RegistryClient>> {
        let file = self.file_properties()?;
        let from_file = |key: &str| {
            file.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let Some(url) = self
            .schema_registry
            .clone()
            .or_else(|| from_file("schema.registry.url"))
        else {
            return Ok(None);
        };
        let auth = match self
            .schema_registry_auth
            .clone()
            .or_else(|| from_file("basic.auth.user.info"))
            .or_else(|| from_file("schema.registry.basic.auth.user.info"))
        {
            Some(a) => Some(
                crate::registry::parse_auth(&a)
                    .map_err(|e| anyhow::anyhow!("--schema-registry-auth: {e}"))?,
            ),
            None => None,
        };
        // A list of URLs (Confluent clients accept one): the first.
        let first = url.split(',').next().unwrap_or_default().trim();
        crate::registry::RegistryClient::new(first, auth).map(Some)
    }
}

/// `key=value` (or Java-style `key: value`) lines; blank lines and lines starting with `#`
/// or `!` are skipped. An error names the line, never its text (it may hold a password).
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        match line.find(['=', ':']).map(|i| line.split_at(i)) {
            Some((k, v)) if !k.trim().is_empty() => {
                out.push((k.trim().to_owned(), v[1..].trim().to_owned()))
            }
            _ => return Err((n + 1, "expected key=value".to_owned())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_files() {
        let p = parse_properties(
            "# SASL\nsecurity.protocol=SASL_SSL\n\nsasl.mechanism = SCRAM-SHA-512\nsasl.password=a=b\n",
        );
        assert_eq!(
            p,
            Ok(vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
                ("sasl.password".into(), "a=b".into()),
            ])
        );
        assert_eq!(parse_properties("a=1\nnonsense\n").map_err(|e| e.0), Err(2));
        assert_eq!(
            parse_properties("sasl.password: hunter2\nbootstrap.servers=h:9092"),
            Ok(vec![
                ("sasl.password".into(), "hunter2".into()),
                ("bootstrap.servers".into(), "h:9092".into()),
            ])
        );
        let e = parse_properties("sasl.password hunter2").unwrap_err();
        assert!(e.0 == 1 && !e.1.contains("hunter2"), "{e:?}");
    }

    #[test]
    fn memory_limits() {
        let ok = |s: &str| parse_memory_limit(s).unwrap();
        assert_eq!(ok("512MiB"), MemoryLimit::Bytes(512 << 20));
        assert_eq!(ok("2GiB"), MemoryLimit::Bytes(2 << 30));
        assert_eq!(ok("2 gib"), MemoryLimit::Bytes(2 << 30));
        assert_eq!(ok("1.5G"), MemoryLimit::Bytes(3 << 29));
        assert_eq!(ok("1500MB"), MemoryLimit::Bytes(1_500_000_000));
        assert_eq!(ok("4096"), MemoryLimit::Bytes(4096));
        assert_eq!(ok("0"), MemoryLimit::Off);
        assert_eq!(ok("off"), MemoryLimit::Off);
        for bad in ["", "lots", "-1GiB", "12XB", "1e9", "GiB", "1.2.3MiB"] {
            let e = parse_memory_limit(bad).unwrap_err();
            assert!(
                e.contains("not a size") && e.contains("512MiB"),
                "{bad}: {e}"
            );
        }
        let cli = <Cli as clap::Parser>::try_parse_from(["eventscope", "--memory-limit", "1GiB"])
            .unwrap();
        assert_eq!(cli.conn.memory_limit_bytes(), Some(1 << 30));
        let cli =
            <Cli as clap::Parser>::try_parse_from(["eventscope", "--memory-limit", "off"]).unwrap();
        assert_eq!(cli.conn.memory_limit_bytes(), None);
        let cli = <Cli as clap::Parser>::try_parse_from(["eventscope"]).unwrap();
        assert!(cli.conn.memory_limit_bytes().is_some_and(|b| b >= 64 << 20));
    }
}
