//! Records in the Confluent wire format, decoded through a Schema Registry
//! (Confluent, Karapace, Apicurio's ccompat API, Redpanda: one REST API).
//!
//! A framed value (or key) is magic byte `0`, a 4-byte big-endian schema id,
//! then the payload: Avro binary, Protobuf (after a list of message indexes:
//! zigzag varints, a count then the indexes, the single `0` standing for the
//! first message), or JSON (JSON Schema). The schema for an id is fetched once
//! (`GET /schemas/ids/{id}?format=serialized`, its references too, and
//! `/schemas/ids/{id}/versions` for subject and version) by the
//! [`RegistryClient`] on the backend's runtime, never on the GUI thread and
//! never per record; the decoders read the [`SchemaCache`] synchronously.
//!
//! A decoded payload is JSON for everything downstream: envelopes, JSON paths,
//! folds, lints. What cannot be decoded says why: an unknown id ("schema 999
//! not found in the registry"), a registry that does not answer (decoded later,
//! when it does: see [`RegistryClient::prepare`]), a payload that does not match
//! its schema (the decoder's reason), magic byte `1` (GUID framing) or schema ids
//! in headers (reported as unsupported).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use prost::Message as _;
use serde::Serialize;
use serde_json::Value;

use crate::model::record::Record;

mod skim;

/// How long one registry request may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// A registry that did not answer is asked again for an id at most this often.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Nested references followed at most this deep.
const MAX_REFERENCE_DEPTH: usize = 16;
/// The most apache-avro allocates for one length read from a payload (the observer's
/// largest value, `DecodeConfig::max_value_bytes`' default).
const MAX_AVRO_ALLOCATION: usize = 16 * 1024 * 1024;

/// What framing the bytes carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Magic byte 0, schema id, payload.
    Confluent { id: u32, payload: &'a [u8] },
    /// Magic byte 0 but shorter than the 5-byte header.
    Truncated(usize),
    /// Magic byte 1: a 16-byte schema GUID (newer clients); not supported.
    Guid,
}

/// The framing of `bytes`, if any. JSON never starts with a 0 or 1 byte.
pub fn frame(bytes: &[u8]) -> Option<Frame<'_>> {
    match bytes {
        [0, a, b, c, d, payload @ ..] => Some(Frame::Confluent {
            id: u32::from_be_bytes([*a, *b, *c, *d]),
            payload,
        }),
        [0, ..] => Some(Frame::Truncated(bytes.len())),
        [1, ..] if bytes.len() >= 17 => Some(Frame::Guid),
        _ => None,
    }
}

/// Header names that carry a schema id instead of the value's framing.
pub const SCHEMA_ID_HEADERS: [&str; 4] = [
    "__value_schema_id",
    "__key_schema_id",
    "apicurio.value.globalId",
    "apicurio.value.contentId",
];

/// The schema format a registry entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum SchemaFormat {
    Avro,
    Protobuf,
    JsonSchema,
}

impl SchemaFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaFormat::Avro => "AVRO",
            SchemaFormat::Protobuf => "PROTOBUF",
            SchemaFormat::JsonSchema => "JSON",
        }
    }
}

/// What the inspector shows about how a record was decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaRef {
    pub id: u32,
    pub format: SchemaFormat,
    /// Subject and version, where the registry tells them.
    pub subject: Option<String>,
    pub version: Option<i64>,
    /// Avro record or Protobuf message full name.
    pub name: Option<String>,
}

impl std::fmt::Display for SchemaRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "schema {} ({}", self.id, self.format.as_str())?;
        if let Some(n) = &self.name {
            write!(f, " {n}")?;
        }
        match (&self.subject, self.version) {
            (Some(s), Some(v)) => write!(f, ", subject {s} v{v}")?,
            (Some(s), None) => write!(f, ", subject {s}")?,
            _ => {}
        }
        f.write_str(")")
    }
}

/// A schema from the registry, ready to decode with.
pub struct RegisteredSchema {
    pub id: u32,
    pub format: SchemaFormat,
    pub subject: Option<String>,
    pub version: Option<i64>,
    parsed: Parsed,
}

enum Parsed {
    Avro {
        schema: apache_avro::Schema,
        /// Named types of referenced schemas.
        references: Vec<apache_avro::Schema>,
        /// The schema compiled for ingest's skim (None: always the full decode).
        plan: Option<Box<skim::AvroPlan>>,
    },
    Protobuf {
        /// The registered file's top-level messages (message index 0 is the first).
        file: prost_reflect::FileDescriptor,
    },
    Json {
        validator: Box<jsonschema::Validator>,
    },
}

impl Parsed {
    fn avro(schema: apache_avro::Schema, references: Vec<apache_avro::Schema>) -> Parsed {
        let plan = skim::AvroPlan::new(&schema, &references).map(Box::new);
        Parsed::Avro {
            schema,
            references,
            plan,
        }
    }
}

impl RegisteredSchema {
    /// Check an Avro payload without decoding it and take its structural fingerprint (see
    /// [`skim`]); None when the skim does not apply or refuses (then decode it to know).
    fn skim(&self, payload: &[u8], depth: u8) -> Option<u64> {
        use std::hash::Hasher;
        let Parsed::Avro {
            plan: Some(plan), ..
        } = &self.parsed
        else {
            return None;
        };
        let mut h = crate::model::log::FxHasher::default();
        h.write_u32(self.id);
        plan.skim(payload, depth, &mut h).ok()?;
        Some(h.finish())
    }

    fn reference(&self, name: Option<String>) -> SchemaRef {
        SchemaRef {
            id: self.id,
            format: self.format,
            subject: self.subject.clone(),
            version: self.version,
            name,
        }
    }

    /// Decode a framed payload (what follows the 5-byte header) to JSON.
    pub fn decode(&self, payload: &[u8]) -> Result<(Value, SchemaRef), String> {
        match &self.parsed {
            Parsed::Avro {
                schema, references, ..
            } => {
                let mut reader = payload;
                let value = if references.is_empty() {
                    apache_avro::from_avro_datum(schema, &mut reader, None)
                } else {
                    apache_avro::from_avro_datum_schemata(
                        schema,
                        references.iter().collect(),
                        &mut reader,
                        None,
                    )
                }
                .map_err(|e| format!("not Avro of this schema: {e}"))?;
                if !reader.is_empty() {
                    return Err(format!(
                        "not Avro of this schema: {} bytes left over after the datum",
                        reader.len()
                    ));
                }
                let name = match schema {
                    apache_avro::Schema::Record(r) => Some(r.name.fullname(None)),
                    _ => None,
                };
                Ok((avro_to_json(value), self.reference(name)))
            }
            Parsed::Protobuf { file } => {
                let mut buf = payload;
                let indexes = message_indexes(&mut buf)?;
                let desc = message_at(file, &indexes)?;
                let msg = prost_reflect::DynamicMessage::decode(desc.clone(), buf)
                    .map_err(|e| format!("not Protobuf {}: {e}", desc.full_name()))?;
                let opts = prost_reflect::SerializeOptions::new()
                    .use_proto_field_name(true)
                    .skip_default_fields(false);
                let json = msg
                    .serialize_with_options(serde_json::value::Serializer, &opts)
                    .map_err(|e| format!("Protobuf {} as JSON: {e}", desc.full_name()))?;
                Ok((json, self.reference(Some(desc.full_name().to_owned()))))
            }
            Parsed::Json { validator } => {
                let json: Value = serde_json::from_slice(payload)
                    .map_err(|e| format!("value is not valid JSON: {e}"))?;
                if let Err(e) = validator.validate(&json) {
                    let at = e.instance_path().to_string();
                    return Err(if at.is_empty() {
                        format!("does not match its JSON Schema: {e}")
                    } else {
                        format!("does not match its JSON Schema at {at}: {e}")
                    });
                }
                Ok((json, self.reference(None)))
            }
        }
    }
}

/// Protobuf framing: the message indexes after the schema id.
fn message_indexes(buf: &mut &[u8]) -> Result<Vec<i64>, String> {
    let zigzag = |n: u64| ((n >> 1) as i64) ^ -((n & 1) as i64);
    let mut read = || {
        prost::encoding::decode_varint(buf)
            .map(zigzag)
            .map_err(|_| "truncated Protobuf message index list".to_owned())
    };
    let count = read()?;
    if count == 0 {
        return Ok(vec![0]);
    }
    if !(0..=64).contains(&count) {
        return Err(format!("bad Protobuf message index count {count}"));
    }
    (0..count).map(|_| read()).collect()
}

fn message_at(
    file: &prost_reflect::FileDescriptor,
    indexes: &[i64],
) -> Result<prost_reflect::MessageDescriptor, String> {
    let nth = |it: &mut dyn Iterator<Item = prost_reflect::MessageDescriptor>, i: i64| {
        usize::try_from(i).ok().and_then(|i| it.nth(i))
    };
    let missing = || {
        format!(
            "message index {indexes:?} is not in {} (its messages: {})",
            file.name(),
            file.messages()
                .map(|m| m.name().to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let (first, rest) = indexes.split_first().ok_or_else(missing)?;
    let mut desc = nth(&mut file.messages(), *first).ok_or_else(missing)?;
    for i in rest {
        let child = nth(&mut desc.child_messages(), *i).ok_or_else(missing)?;
        desc = child;
    }
    Ok(desc)
}

/// Avro values as JSON: records as objects, unions as their branch, enums as
/// their symbol, bytes and fixed as arrays of numbers, logical types as their
/// underlying number (decimals and UUIDs as strings).
pub fn avro_to_json(v: apache_avro::types::Value) -> Value {
    use apache_avro::types::Value as A;
    match v {
        A::Null => Value::Null,
        A::Boolean(b) => Value::Bool(b),
        A::Int(n) | A::Date(n) | A::TimeMillis(n) => Value::from(n),
        A::Long(n)
        | A::TimeMicros(n)
        | A::TimestampMillis(n)
        | A::TimestampMicros(n)
        | A::TimestampNanos(n)
        | A::LocalTimestampMillis(n)
        | A::LocalTimestampMicros(n)
        | A::LocalTimestampNanos(n) => Value::from(n),
        A::Float(x) => Value::from(f64::from(x)),
        A::Double(x) => Value::from(x),
        A::Bytes(b) | A::Fixed(_, b) => Value::from(b),
        A::String(s) | A::Enum(_, s) => Value::String(s),
        A::Union(_, inner) => avro_to_json(*inner),
        A::Array(items) => Value::Array(items.into_iter().map(avro_to_json).collect()),
        A::Map(m) => Value::Object(m.into_iter().map(|(k, v)| (k, avro_to_json(v))).collect()),
        A::Record(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, avro_to_json(v)))
                .collect(),
        ),
        A::Uuid(u) => Value::String(u.to_string()),
        A::BigDecimal(d) => Value::String(d.to_string()),
        other => Value::String(format!("{other:?}")),
    }
}

/// What the cache knows about a schema id.
#[derive(Clone)]
pub enum Entry {
    Ready(Arc<RegisteredSchema>),
    /// The registry said 404.
    NotFound,
    /// The registry answered with a schema eventscope cannot use.
    Invalid(String),
    /// The registry did not answer (or not as a registry): asked again later.
    Unavailable(String),
}

/// Schemas by id, shared by the fetcher (writes) and the decoders (reads).
pub struct SchemaCache {
    url: String,
    entries: RwLock<HashMap<u32, Entry>>,
}

impl std::fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache")
            .field("url", &self.url)
            .finish()
    }
}

impl SchemaCache {
    pub fn new(url: &str) -> SchemaCache {
        // A length in an Avro payload is allocated before it is read: never more than the
        // largest value the observer keeps (a 40-byte record must not cost 512 MiB).
        apache_avro::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        SchemaCache {
            url: url.to_owned(),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The registry's URL (credentials removed).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn get(&self, id: u32) -> Option<Entry> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn put(&self, id: u32, entry: Entry) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, entry);
    }

    /// Put a schema in the cache as the registry would answer `GET /schemas/ids/{id}`
    /// (`schema_type`: None or `AVRO`, `PROTOBUF` with a base64 serialized descriptor,
    /// `JSON`), without references. For tests and fuzzing, and schemas known offline.
    pub fn insert(&self, id: u32, schema_type: Option<&str>, schema: &str) -> Result<(), String> {
        let mut body = serde_json::json!({ "schema": schema });
        if let Some(t) = schema_type {
            body["schemaType"] = Value::String(t.to_owned());
        }
        let why = |f: Failure| match f {
            Failure::NotFound => "not found".to_owned(),
            Failure::Invalid(w) | Failure::Unavailable(w) => w,
        };
        let format = schema_format(&body).map_err(why)?;
        let parsed = parse_schema(format, &body, Vec::new()).map_err(why)?;
        self.put(
            id,
            Entry::Ready(Arc::new(RegisteredSchema {
                id,
                format,
                subject: None,
                version: None,
                parsed,
            })),
        );
        Ok(())
    }

    /// Ids known so far, and how many of them decode.
    pub fn counts(&self) -> (usize, usize) {
        let e = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let ready = e.values().filter(|e| matches!(e, Entry::Ready(_))).count();
        (e.len(), ready)
    }

    /// Check a framed Avro payload of a schema at hand without decoding it: its structural
    /// fingerprint (`depth` levels) and the schema. None: decode it to know.
    pub fn skim(&self, id: u32, payload: &[u8], depth: u8) -> Option<(u64, SchemaRef)> {
        let Some(Entry::Ready(s)) = self.get(id) else {
            return None;
        };
        let shape = s.skim(payload, depth)?;
        let name = match &s.parsed {
            Parsed::Avro {
                schema: apache_avro::Schema::Record(r),
                ..
            } => Some(r.name.fullname(None)),
            _ => None,
        };
        Some((shape, s.reference(name)))
    }

    /// Decode a framed value or key; the error says why it could not be.
    pub fn decode(&self, id: u32, payload: &[u8]) -> Result<(Value, SchemaRef), String> {
        match self.get(id) {
            Some(Entry::Ready(s)) => s
                .decode(payload)
                .map_err(|e| format!("schema {id} ({}): {e}", s.format.as_str())),
            Some(Entry::NotFound) => Err(format!("schema {id} not found in the registry")),
            Some(Entry::Invalid(why)) => Err(format!("schema {id} cannot be used: {why}")),
            Some(Entry::Unavailable(why)) => Err(format!(
                "schema {id}: the registry at {} does not answer ({why}); decoded when it does",
                self.url
            )),
            None => Err(format!(
                "schema {id} not fetched yet from the registry at {}",
                self.url
            )),
        }
    }
}

/// The decode configuration's handle on a registry (none by default). Two
/// handles are equal when they share the cache.
#[derive(Clone, Default)]
pub struct RegistryHandle(pub Option<Arc<SchemaCache>>);

impl RegistryHandle {
    /// Decode bytes that carry a framing (see [`frame`]) through the registry; `None` when they
    /// carry none. The error says why they cannot be decoded: no registry given, unknown or
    /// unusable schema, truncated or unsupported framing.
    pub fn unframe(&self, bytes: &[u8]) -> Option<Result<(Value, SchemaRef), String>> {
        Some(match frame(bytes)? {
            Frame::Confluent { id, payload } => match &self.0 {
                Some(cache) => cache.decode(id, payload),
                None => Err(format!(
                    "Confluent wire format (schema id {id}): give --schema-registry URL to decode it"
                )),
            },
            Frame::Truncated(n) => Err(format!(
                "truncated Confluent wire format: {n} bytes, the header alone is 5"
            )),
            Frame::Guid => Err(
                "magic byte 1 (schema GUID framing) is not supported; only magic byte 0 with a schema id"
                    .into(),
            ),
        })
    }
}

impl RegistryHandle {
    /// For ingest: a Confluent-framed Avro value checked without being decoded, with its
    /// structural fingerprint and schema (see [`SchemaCache::skim`]). None: not framed, not
    /// Avro at hand, or refused by the skim; decode it with [`RegistryHandle::unframe`].
    pub fn skim(&self, bytes: &[u8], depth: u8) -> Option<(u64, SchemaRef)> {
        match (frame(bytes)?, &self.0) {
            (Frame::Confluent { id, payload }, Some(cache)) => cache.skim(id, payload, depth),
            _ => None,
        }
    }
}

impl std::fmt::Debug for RegistryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(c) => write!(f, "RegistryHandle({})", c.url),
            None => f.write_str("RegistryHandle(none)"),
        }
    }
}

impl PartialEq for RegistryHandle {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for RegistryHandle {}

/// Why a request did not give the schema.
enum Failure {
    NotFound,
    Invalid(String),
    Unavailable(String),
}

/// Fetches schemas by id, once each, into a [`SchemaCache`].
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
    cache: Arc<SchemaCache>,
    /// When an id whose fetch failed may be asked again.
    retry: Mutex<HashMap<u32, Instant>>,
}

/// `user:password` for basic auth.
pub fn parse_auth(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok((u.to_owned(), p.to_owned())),
        _ => Err("expected USER:PASSWORD".into()),
    }
}

impl RegistryClient {
    /// A client for the registry at `url` (http or https, system roots).
    pub fn new(url: &str, auth: Option<(String, String)>) -> anyhow::Result<RegistryClient> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("--schema-registry {url}: not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("--schema-registry {url}: use an http:// or https:// URL");
        }
        // Credentials in the URL become basic auth; the URL shown never has them.
        let mut shown = parsed.clone();
        let url_auth = (!parsed.username().is_empty()).then(|| {
            (
                parsed.username().to_owned(),
                parsed.password().unwrap_or_default().to_owned(),
            )
        });
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let base = shown.as_str().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("schema registry client: {e}"))?;
        Ok(RegistryClient {
            http,
            cache: Arc::new(SchemaCache::new(&base)),
            base,
            auth: auth.or(url_auth),
            retry: Mutex::new(HashMap::new()),
        })
    }

    pub fn cache(&self) -> Arc<SchemaCache> {
        self.cache.clone()
    }

    pub fn handle(&self) -> RegistryHandle {
        RegistryHandle(Some(self.cache.clone()))
    }

    /// Make sure the schemas a record's value and key name are in the cache.
    /// Returns true when a schema that could not be fetched before (the
    /// registry did not answer) has been fetched now: records read meanwhile
    /// should be decoded again.
    pub async fn prepare(&self, rec: &Record) -> bool {
        let mut recovered = false;
        for bytes in [rec.value.as_deref(), rec.key.as_deref()]
            .into_iter()
            .flatten()
        {
            if let Some(Frame::Confluent { id, .. }) = frame(bytes) {
                recovered |= self.ensure(id).await;
            }
        }
        recovered
    }

    /// Fetch schema `id` unless known (an unanswered fetch is retried at most
    /// every few seconds). True when it was unavailable before and is ready now.
    pub async fn ensure(&self, id: u32) -> bool {
        let before = self.cache.get(id);
        match &before {
            Some(Entry::Ready(_) | Entry::NotFound | Entry::Invalid(_)) => return false,
            Some(Entry::Unavailable(_)) => {
                let due = self
                    .retry
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&id)
                    .is_none_or(|t| Instant::now() >= *t);
                if !due {
                    return false;
                }
            }
            None => {}
        }
        let entry = match self.fetch(id).await {
            Ok(s) => Entry::Ready(Arc::new(s)),
            Err(Failure::NotFound) => Entry::NotFound,
            Err(Failure::Invalid(why)) => Entry::Invalid(why),
            Err(Failure::Unavailable(why)) => {
                tracing::warn!("schema registry {}: {why}", self.base);
                self.retry
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, Instant::now() + RETRY_EVERY);
                Entry::Unavailable(why)
            }
        };
        let recovered = matches!(before, Some(Entry::Unavailable(_)))
            && !matches!(entry, Entry::Unavailable(_));
        self.cache.put(id, entry);
        recovered
    }

    /// Ask again now for every id the registry did not answer for; true when
    /// one of them is ready now.
    pub async fn retry_unavailable(&self) -> bool {
        let ids: Vec<u32> = {
            let e = self
                .cache
                .entries
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            e.iter()
                .filter(|(_, e)| matches!(e, Entry::Unavailable(_)))
                .map(|(id, _)| *id)
                .collect()
        };
        let mut recovered = false;
        for id in ids {
            recovered |= self.ensure(id).await;
        }
        recovered
    }

    /// Register a schema under `subject` (`POST /subjects/{subject}/versions`); its id.
    /// The registry checks it against the subject's earlier versions.
    pub async fn register(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<u32, String> {
        let url = format!("{}/subjects/{}/versions", self.base, encode_path(subject));
        let mut req = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/vnd.schemaregistry.v1+json",
            )
            .body(serde_json::json!({"schemaType": schema_type, "schema": schema}).to_string());
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("registering {subject}: {}", error_chain(&e)))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| error_chain(&e))?;
        let snippet: String = body.chars().take(200).collect();
        if !status.is_success() {
            return Err(format!("registering {subject}: HTTP {status}: {snippet}"));
        }
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("id")?.as_u64())
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| format!("registering {subject}: no id in the answer: {snippet}"))
    }

    async fn get_json(&self, path: &str) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url).header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| {
            Failure::Unavailable(if e.is_timeout() {
                format!("no answer within {} s", TIMEOUT.as_secs())
            } else {
                error_chain(&e)
            })
        })?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = resp
            .text()
            .await
            .map_err(|e| Failure::Unavailable(error_chain(&e)))?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Failure::NotFound);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(Failure::Unavailable(format!(
                "HTTP {status}: check --schema-registry-auth"
            )));
        }
        let snippet: String = body.chars().take(80).collect();
        if !status.is_success() {
            return Err(Failure::Unavailable(format!("HTTP {status}: {snippet}")));
        }
        serde_json::from_str(&body).map_err(|_| {
            Failure::Unavailable(format!(
                "answered with {} that is not the registry's JSON: {snippet:?}",
                if content_type.is_empty() {
                    "a body"
                } else {
                    content_type.as_str()
                }
            ))
        })
    }

    async fn fetch(&self, id: u32) -> Result<RegisteredSchema, Failure> {
        let body = self
            .get_json(&format!("/schemas/ids/{id}?format=serialized"))
            .await?;
        let format = schema_format(&body)?;
        // Subject and version: optional (older registries do not serve this).
        let (subject, version) = match self.get_json(&format!("/schemas/ids/{id}/versions")).await {
            Ok(Value::Array(list)) => list
                .first()
                .map(|sv| {
                    (
                        sv.get("subject").and_then(Value::as_str).map(str::to_owned),
                        sv.get("version").and_then(Value::as_i64),
                    )
                })
                .unwrap_or_default(),
            _ => (None, None),
        };
        let mut refs = Vec::new();
        self.collect_references(&body, format, 0, &mut refs).await?;
        let parsed = parse_schema(format, &body, refs)?;
        Ok(RegisteredSchema {
            id,
            format,
            subject,
            version,
            parsed,
        })
    }

    /// Referenced schemas, dependencies first (`references`: name, subject, version).
    fn collect_references<'a>(
        &'a self,
        body: &'a Value,
        format: SchemaFormat,
        depth: usize,
        out: &'a mut Vec<Value>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Failure>> + Send + 'a>> {
        Box::pin(async move {
            let Some(refs) = body.get("references").and_then(Value::as_array) else {
                return Ok(());
            };
            if depth > MAX_REFERENCE_DEPTH {
                return Err(Failure::Invalid("references nest too deep".into()));
            }
            for r in refs {
                let (Some(subject), Some(version)) = (
                    r.get("subject").and_then(Value::as_str),
                    r.get("version").and_then(Value::as_i64),
                ) else {
                    return Err(Failure::Invalid(format!("bad reference {r}")));
                };
                let fmt = if format == SchemaFormat::Protobuf {
                    "?format=serialized"
                } else {
                    ""
                };
                let dep = self
                    .get_json(&format!(
                        "/subjects/{}/versions/{version}{fmt}",
                        encode_path(subject)
                    ))
                    .await
                    .map_err(|f| match f {
                        Failure::NotFound => Failure::Invalid(format!(
                            "referenced schema {subject} v{version} not found"
                        )),
                        other => other,
                    })?;
                self.collect_references(&dep, format, depth + 1, out)
                    .await?;
                out.push(dep);
            }
            Ok(())
        })
    }
}

fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

fn schema_format(body: &Value) -> Result<SchemaFormat, Failure> {
    match body.get("schemaType").and_then(Value::as_str) {
        None | Some("AVRO") => Ok(SchemaFormat::Avro),
        Some("PROTOBUF") => Ok(SchemaFormat::Protobuf),
        Some("JSON") => Ok(SchemaFormat::JsonSchema),
        Some(other) => Err(Failure::Invalid(format!("unknown schemaType {other}"))),
    }
}

fn schema_text(body: &Value) -> Result<&str, Failure> {
    body.get("schema")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::Invalid("the answer has no `schema` string".into()))
}

fn parse_schema(format: SchemaFormat, body: &Value, refs: Vec<Value>) -> Result<Parsed, Failure> {
    let text = schema_text(body)?;
    match format {
        SchemaFormat::Avro => {
            let deps: Vec<&str> = refs.iter().map(schema_text).collect::<Result<_, _>>()?;
            let (schema, references) = if deps.is_empty() {
                apache_avro::Schema::parse_str(text).map(|s| (s, Vec::new()))
            } else {
                apache_avro::Schema::parse_str_with_list(text, deps)
            }
            .map_err(|e| Failure::Invalid(format!("not an Avro schema: {e}")))?;
            Ok(Parsed::avro(schema, references))
        }
        SchemaFormat::Protobuf => {
            let decode = |b: &Value| -> Result<prost_types::FileDescriptorProto, Failure> {
                let t = schema_text(b)?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(t.trim())
                    .map_err(|_| {
                        Failure::Invalid(
                            "the registry sent .proto text, not a serialized descriptor \
                             (eventscope asks for ?format=serialized)"
                                .into(),
                        )
                    })?;
                prost_types::FileDescriptorProto::decode(bytes.as_slice())
                    .map_err(|e| Failure::Invalid(format!("not a FileDescriptorProto: {e}")))
            };
            let main = decode(body)?;
            let name = main.name().to_owned();
            let mut pool = prost_reflect::DescriptorPool::global();
            for dep in &refs {
                let d = decode(dep)?;
                if pool.get_file_by_name(d.name()).is_none() {
                    pool.add_file_descriptor_proto(d)
                        .map_err(|e| Failure::Invalid(format!("referenced descriptor: {e}")))?;
                }
            }
            pool.add_file_descriptor_proto(main)
                .map_err(|e| Failure::Invalid(format!("descriptor: {e}")))?;
            let file = pool
                .get_file_by_name(&name)
                .ok_or_else(|| Failure::Invalid(format!("descriptor {name} not in its pool")))?;
            Ok(Parsed::Protobuf { file })
        }
        SchemaFormat::JsonSchema => {
            let schema: Value = serde_json::from_str(text)
                .map_err(|e| Failure::Invalid(format!("JSON Schema is not JSON: {e}")))?;
            let validator = jsonschema::validator_for(&schema)
                .map_err(|e| Failure::Invalid(format!("not a usable JSON Schema: {e}")))?;
            Ok(Parsed::Json {
                validator: Box::new(validator),
            })
        }
    }
}

/// What the registry stage tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryNews {
    /// The registry stopped answering (the first failure of an episode): framed records
    /// pass on undecoded, saying why.
    Unavailable(String),
    /// It answers again and fetched what it could not: records read meanwhile can be
    /// decoded now (re-read them).
    Recovered,
}

impl SchemaCache {
    /// Why the registry did not answer, if it did not for some id.
    pub fn unavailable(&self) -> Option<String> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find_map(|e| match e {
                Entry::Unavailable(why) => Some(why.clone()),
                _ => None,
            })
    }
}

/// Between the tap and the model: fetch the schemas records name (once per
/// id) before passing them on, in order. `news` hears when the registry stops
/// answering and when it answers again.
pub fn stage(
    client: Arc<RegistryClient>,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Record>>,
    capacity: usize,
    news: impl Fn(RegistryNews) + Send + Sync + 'static,
) -> tokio::sync::mpsc::Receiver<Vec<Record>> {
    let (tx, out) = tokio::sync::mpsc::channel(capacity);
    tokio::spawn(async move {
        let mut last_retry = Instant::now();
        let mut down = false;
        let report = |recovered: bool, down: &mut bool| {
            if recovered {
                news(RegistryNews::Recovered);
            }
            match client.cache.unavailable() {
                Some(why) if !*down => {
                    *down = true;
                    news(RegistryNews::Unavailable(why));
                }
                None => *down = false,
                Some(_) => {}
            }
        };
        loop {
            let rec = tokio::select! {
                r = rx.recv() => r,
                // Idle: ask again for what did not answer.
                () = tokio::time::sleep(RETRY_EVERY) => {
                    let recovered = client.retry_unavailable().await;
                    report(recovered, &mut down);
                    continue;
                }
            };
            let Some(rec) = rec else { break };
            let mut recovered = false;
            for r in &rec {
                recovered |= client.prepare(r).await;
            }
            if last_retry.elapsed() >= RETRY_EVERY {
                last_retry = Instant::now();
                recovered |= client.retry_unavailable().await;
            }
            report(recovered, &mut down);
            if tx.send(rec).await.is_err() {
                break;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_recognised() {
        assert_eq!(
            frame(&[0, 0, 0, 1, 2, 9, 9]),
            Some(Frame::Confluent {
                id: 258,
                payload: &[9, 9]
            })
        );
        assert_eq!(frame(&[0, 0, 1]), Some(Frame::Truncated(3)));
        assert_eq!(frame(&[1; 20]), Some(Frame::Guid));
        assert_eq!(frame(b"{\"a\":1}"), None);
        assert_eq!(frame(&[]), None);
    }

    #[test]
    fn protobuf_message_indexes() {
        let mut b: &[u8] = &[0, 7];
        assert_eq!(message_indexes(&mut b).unwrap(), vec![0]);
        assert_eq!(b, &[7]);
        // Count 2 (zigzag 4), indexes 1 (2) and 0 (0).
        let mut b: &[u8] = &[4, 2, 0, 7];
        assert_eq!(message_indexes(&mut b).unwrap(), vec![1, 0]);
        let mut b: &[u8] = &[4, 2];
        assert!(message_indexes(&mut b).is_err());
        let mut b: &[u8] = &[0xff];
        assert!(message_indexes(&mut b).is_err());
    }

    #[test]
    fn avro_decodes_to_json() {
        let schema = apache_avro::Schema::parse_str(
            r#"{"type":"record","name":"Paid","namespace":"acme","fields":[
                {"name":"id","type":"string"},
                {"name":"amount","type":"long"},
                {"name":"note","type":["null","string"],"default":null},
                {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}}]}"#,
        )
        .unwrap();
        let mut rec = apache_avro::types::Record::new(&schema).unwrap();
        rec.put("id", "p-1");
        rec.put("amount", 12i64);
        rec.put(
            "note",
            apache_avro::types::Value::Union(1, Box::new("hi".into())),
        );
        rec.put("kind", apache_avro::types::Value::Enum(1, "B".into()));
        let bytes = apache_avro::to_avro_datum(&schema, rec).unwrap();
        let s = RegisteredSchema {
            id: 7,
            format: SchemaFormat::Avro,
            subject: Some("paid-value".into()),
            version: Some(2),
            parsed: Parsed::avro(schema, Vec::new()),
        };
        let (json, r) = s.decode(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "p-1", "amount": 12, "note": "hi", "kind": "B"})
        );
        assert_eq!(r.name.as_deref(), Some("acme.Paid"));
        assert_eq!(
            r.to_string(),
            "schema 7 (AVRO acme.Paid, subject paid-value v2)"
        );
        let err = s.decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("not Avro"), "{err}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(s.decode(&longer).unwrap_err().contains("left over"));
    }

    fn avro(id: u32, text: &str) -> (apache_avro::Schema, Entry) {
        let schema = apache_avro::Schema::parse_str(text).unwrap();
        let entry = Entry::Ready(Arc::new(RegisteredSchema {
            id,
            format: SchemaFormat::Avro,
            subject: None,
            version: None,
            parsed: Parsed::avro(schema.clone(), Vec::new()),
        }));
        (schema, entry)
    }

    /// A binary-mode CloudEvent whose data and key are Avro in the Confluent framing: the
    /// payload and the aggregate (from the key) come out decoded; unknown ids say so.
    #[test]
    fn framed_values_and_keys_decode_in_the_envelopes() {
        use crate::model::envelope::{decode, DecodeConfig};
        let cache = Arc::new(SchemaCache::new("http://registry"));
        let (value_schema, e) = avro(
            1,
            r#"{"type":"record","name":"Paid","fields":[{"name":"amount","type":"long"}]}"#,
        );
        cache.put(1, e);
        let (key_schema, e) = avro(2, r#""string""#);
        cache.put(2, e);
        cache.put(3, Entry::NotFound);
        let mut value = apache_avro::types::Record::new(&value_schema).unwrap();
        value.put("amount", 12i64);
        let framed = |id: u32, b: Vec<u8>| {
            let mut v = vec![0, 0, 0, 0, 0];
            v[1..5].copy_from_slice(&id.to_be_bytes());
            v.extend(b);
            v
        };
        let mut rec = Record::new("payments", 0, 0)
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", "e1")
            .with_header("ce_type", "Paid")
            .with_header("ce_source", "/billing")
            .with_header("content-type", "application/avro")
            .with_value(framed(
                1,
                apache_avro::to_avro_datum(&value_schema, value).unwrap(),
            ));
        rec.key = Some(framed(
            2,
            apache_avro::to_avro_datum(
                &key_schema,
                apache_avro::types::Value::String("pay-7".into()),
            )
            .unwrap(),
        ));
        let mut cfg = DecodeConfig::default();
        let without = decode(&rec, &cfg).unwrap();
        assert_eq!(without.payload, None, "no registry: the data is not read");
        cfg.registry = RegistryHandle(Some(cache));
        let ev = decode(&rec, &cfg).unwrap();
        assert_eq!(ev.payload, Some(serde_json::json!({"amount": 12})));
        assert_eq!(ev.aggregate_id.as_deref(), Some("pay-7"));
        assert_eq!(ev.value_schema.map(|s| s.id), Some(1));
        rec.value = Some(framed(3, vec![2]));
        let err = decode(&rec, &cfg).unwrap_err().to_string();
        assert_eq!(err, "schema 3 not found in the registry");
    }

    #[test]
    fn auth_and_urls() {
        assert_eq!(parse_auth("u:p:q").unwrap(), ("u".into(), "p:q".into()));
        assert!(parse_auth("nocolon").is_err());
        assert!(parse_auth(":p").is_err());
        let c = RegistryClient::new("http://bob:s3cret@127.0.0.1:8081/", None).unwrap();
        assert_eq!(c.base, "http://127.0.0.1:8081");
        assert_eq!(c.auth, Some(("bob".into(), "s3cret".into())));
        assert!(!format!("{:?}", c.handle()).contains("s3cret"));
        assert!(RegistryClient::new("ftp://x", None).is_err());
        assert!(RegistryClient::new("not a url", None).is_err());
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
    }
}
