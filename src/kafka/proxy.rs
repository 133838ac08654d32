//! A loopback TCP proxy in front of the embedded broker, for `eventscope broker`.
//!
//! The mock cluster listens on a random port; the proxy gives it a fixed one and
//! the broker advertises the proxy's address, so every request passes here. The
//! proxy reads the topic names of Metadata requests and creates unknown topics
//! with the chosen partition count before the mock would auto-create them with
//! its fixed default of 4.
//!
//! It also makes the mock answer ApiVersions like a real broker. The mock serves
//! ApiVersions v0–2 only, and its reply to a newer request (v3+, which clients
//! other than librdkafka send first) is malformed: kafka-python cannot decode it.
//! A real broker answers a version it does not support with UNSUPPORTED_VERSION
//! in a v0 reply that lists the versions it does support, and the client retries
//! with the highest of those. The proxy sends such a request on to the mock as
//! v0 (same correlation id and client id) and marks the mock's v0 reply with
//! UNSUPPORTED_VERSION on its way back: the client sees exactly what a real
//! broker would send.
//!
//! In every ApiVersions reply the proxy also lowers the newest version of the
//! group APIs to what librdkafka itself sends to the mock: the mock advertises
//! newer (flexible) versions that librdkafka never exercises, and some of their
//! parsers are broken (JoinGroup v6 reads its compact protocol array as an
//! int32 and the mock drops the connection), so a client that takes the
//! advertised maximum, like kafka-python, could not join a group.
//!
//! The mock has no CreateTopics: an AdminClient (the demo's, kafka-python's
//! admin) waited for it until its timeout. The proxy answers CreateTopics
//! v0–4 itself, creating the topics through the mock's own control, and lists
//! it in ApiVersions replies. The mock also names a controller that does not
//! exist (id 0; its brokers count from 1), so admin requests never found one:
//! Metadata replies name the first broker instead. Replies leave in request order: a reply the proxy
//! writes waits for the mock's replies to earlier requests.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use eventscope_demo::kafka::BrokerControl;

use crate::kafka::broker::EmbeddedBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const PRODUCE: i16 = 0;
const METADATA: i16 = 3;
const CREATE_TOPICS: i16 = 19;
/// Newest CreateTopics version the proxy answers (all non-flexible).
const CREATE_TOPICS_MAX: i16 = 4;
const API_VERSIONS: i16 = 18;
/// The newest ApiVersions version librdkafka's mock cluster answers.
const MOCK_API_VERSIONS_MAX: i16 = 2;
/// Kafka error code UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;
/// (API key, newest version librdkafka 2.12 sends) where the mock advertises more.
const VERSION_CAPS: [(i16, i16); 5] = [
    (10, 2), // FindCoordinator
    (11, 5), // JoinGroup
    (12, 3), // Heartbeat
    (13, 1), // LeaveGroup
    (14, 3), // SyncGroup
];
/// Largest request frame we read whole; bigger frames are forwarded unread.
const MAX_FRAME: usize = 100 * 1024 * 1024;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.take(1)?.first()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// A (nullable) string with an i16 length; `None` inside for null.
    fn string(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        self.take(usize::try_from(len).ok()?).map(Some)
    }
    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let len = usize::try_from(self.uvarint()?).ok()?;
            self.take(len)?;
        }
        Some(())
    }
}

/// Topic names asked for by a Metadata request (`frame` without the size prefix).
/// `None` for other requests or anything unparsable.
pub fn metadata_topics(frame: &[u8]) -> Option<Vec<String>> {
    let mut c = Cursor { buf: frame, pos: 0 };
    if c.i16()? != METADATA {
        return None;
    }
    let version = c.i16()?;
    c.i32()?; // correlation id
    let client_id = c.i16()?;
    if client_id > 0 {
        c.take(usize::try_from(client_id).ok()?)?;
    }
    let flexible = version >= 9;
    if flexible {
        c.skip_tags()?;
    }
    let mut out = Vec::new();
    if flexible {
        let n = c.uvarint()?;
        for _ in 0..n.saturating_sub(1) {
            if version >= 10 {
                c.take(16)?;
            }
            let len = c.uvarint()?;
            if len > 0 {
                let name = c.take(usize::try_from(len - 1).ok()?)?;
                out.push(String::from_utf8(name.to_vec()).ok()?);
            }
            c.skip_tags()?;
        }
    } else {
        let n = c.i32()?;
        for _ in 0..n.max(0) {
            let len = c.i16()?;
            let name = c.take(usize::try_from(len).ok()?)?;
            out.push(String::from_utf8(name.to_vec()).ok()?);
        }
    }
    Some(out)
}

/// The correlation id of an ApiVersions request (`frame` without the size prefix).
pub fn api_versions_correlation(frame: &[u8]) -> Option<i32> {
    let mut c = Cursor { buf: frame, pos: 0 };
    if c.i16()? != API_VERSIONS {
        return None;
    }
    c.i16()?;
    c.i32()
}

/// An ApiVersions request (`frame` without the size prefix) of a version the
/// mock does not answer, rewritten as v0 with the same correlation id and
/// client id: `(correlation id, new frame)`. `None` for anything else.
pub fn downgrade_api_versions(frame: &[u8]) -> Option<(i32, Vec<u8>)> {
    let mut c = Cursor { buf: frame, pos: 0 };
    if c.i16()? != API_VERSIONS {
        return None;
    }
    if c.i16()? <= MOCK_API_VERSIONS_MAX {
        return None;
    }
    let correlation = c.i32()?;
    let client_id_at = c.pos;
    let len = c.i16()?;
    if len > 0 {
        c.take(usize::try_from(len).ok()?)?;
    }
    let client_id = frame.get(client_id_at..c.pos)?;
    // Request header v1 (api key, version, correlation id, client id); a v0 body is empty.
    let mut out = Vec::with_capacity(8 + client_id.len());
    out.extend_from_slice(&API_VERSIONS.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(client_id);
    Some((correlation, out))
}

/// Rewrite the mock's ApiVersions v0–2 reply (`frame` without the size prefix:
/// correlation id, error code, `[api key, min, max]`, v1+: throttle time) in place:
/// newest versions capped per [`VERSION_CAPS`]; with `unsupported`, the error
/// code becomes UNSUPPORTED_VERSION, the reply a real broker gives to a request
/// version it does not know. Anything unparsable is left as it is.
pub fn rewrite_api_versions(frame: &mut [u8], unsupported: bool) {
    if unsupported {
        if let Some(code) = frame.get_mut(4..6) {
            if code == [0, 0] {
                code.copy_from_slice(&UNSUPPORTED_VERSION.to_be_bytes());
            }
        }
    }
    let Some(n) = frame
        .get(6..10)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return;
    };
    for i in 0..usize::try_from(n).unwrap_or(0) {
        let at = 10 + i * 6;
        let Some(entry) = frame.get_mut(at..at + 6) else {
            return;
        };
        let key = i16::from_be_bytes([entry[0], entry[1]]);
        let max = i16::from_be_bytes([entry[4], entry[5]]);
        if let Some(&(_, cap)) = VERSION_CAPS.iter().find(|(k, _)| *k == key) {
            if max > cap {
                entry[4..6].copy_from_slice(&cap.to_be_bytes());
            }
        }
    }
}

/// An ApiVersions reply (`frame` without the size prefix, v0–2) with
/// CreateTopics v0–[`CREATE_TOPICS_MAX`] added to its list, unless listed.
pub fn with_create_topics(frame: &[u8]) -> Option<Vec<u8>> {
    let n = frame
        .get(6..10)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))?;
    let n = usize::try_from(n).ok()?;
    let end = 10usize.checked_add(n.checked_mul(6)?)?;
    let entries = frame.get(10..end)?;
    if entries
        .chunks_exact(6)
        .any(|e| i16::from_be_bytes([e[0], e[1]]) == CREATE_TOPICS)
    {
        return None;
    }
    let mut out = Vec::with_capacity(frame.len() + 6);
    out.extend_from_slice(frame.get(..6)?);
    out.extend_from_slice(&i32::try_from(n + 1).ok()?.to_be_bytes());
    out.extend_from_slice(entries);
    for x in [CREATE_TOPICS, 0, CREATE_TOPICS_MAX] {
        out.extend_from_slice(&x.to_be_bytes());
    }
    out.extend_from_slice(frame.get(end..)?);
    Some(out)
}

/// In a Metadata reply (`frame` without the size prefix) of request version
/// `version`, name the first broker as controller if the named one is not
/// among the brokers. Anything unparsable is left as it is.
pub fn fix_controller(frame: &mut [u8], version: i16) {
    fn controller_at(frame: &[u8], version: i16) -> Option<(usize, Vec<i32>)> {
        let flexible = version >= 9;
        let mut c = Cursor { buf: frame, pos: 0 };
        c.i32()?; // correlation id
        if flexible {
            c.skip_tags()?;
        }
        if version >= 3 {
            c.i32()?; // throttle time
        }
        let n = if flexible {
            usize::try_from(c.uvarint()?.checked_sub(1)?).ok()?
        } else {
            usize::try_from(c.i32()?).ok()?
        };
        let mut ids = Vec::new();
        let string = |c: &mut Cursor<'_>| -> Option<()> {
            if flexible {
                let len = c.uvarint()?;
                if len > 0 {
                    c.take(usize::try_from(len - 1).ok()?)?;
                }
            } else {
                c.string()?;
            }
            Some(())
        };
        for _ in 0..n {
            ids.push(c.i32()?);
            string(&mut c)?; // host
            c.i32()?; // port
            if version >= 1 {
                string(&mut c)?; // rack
            }
            if flexible {
                c.skip_tags()?;
            }
        }
        if version >= 2 {
            string(&mut c)?; // cluster id
        }
        Some((c.pos, ids))
    }
    if version < 1 {
        return;
    }
    let Some((at, ids)) = controller_at(frame, version) else {
        return;
    };
    let (Some(&first), Some(slot)) = (ids.first(), frame.get_mut(at..at + 4)) else {
        return;
    };
    let named = i32::from_be_bytes([slot[0], slot[1], slot[2], slot[3]]);
    if !ids.contains(&named) {
        slot.copy_from_slice(&first.to_be_bytes());
    }
}

/// The version of a Metadata request (`frame` without the size prefix).
fn metadata_version(frame: &[u8]) -> Option<i16> {
    let mut c = Cursor { buf: frame, pos: 0 };
    (c.i16()? == METADATA).then_some(())?;
    c.i16()
}

/// A Produce request with acks=0: the broker sends no reply.
pub fn produce_without_reply(frame: &[u8]) -> bool {
    fn acks_zero(c: &mut Cursor<'_>) -> Option<bool> {
        if c.i16()? != PRODUCE {
            return Some(false);
        }
        let version = c.i16()?;
        c.i32()?;
        c.string()?; // client id
        if version >= 9 {
            c.skip_tags()?;
            // compact nullable transactional id
            let len = c.uvarint()?;
            if len > 0 {
                c.take(usize::try_from(len - 1).ok()?)?;
            }
        } else if version >= 3 {
            c.string()?; // transactional id
        }
        Some(c.i16()? == 0)
    }
    acks_zero(&mut Cursor { buf: frame, pos: 0 }).unwrap_or(false)
}

/// One topic of a CreateTopics request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's default.
    pub partitions: i32,
}

/// A CreateTopics request v0–4 the proxy answers itself.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTopicsRequest {
    pub version: i16,
    pub correlation: i32,
    pub topics: Vec<NewTopic>,
    pub validate_only: bool,
}

/// The CreateTopics request in `frame` (without the size prefix), if it is one
/// of a version the proxy answers.
pub fn create_topics_request(frame: &[u8]) -> Option<CreateTopicsRequest> {
    let mut c = Cursor { buf: frame, pos: 0 };
    if c.i16()? != CREATE_TOPICS {
        return None;
    }
    let version = c.i16()?;
    if !(0..=CREATE_TOPICS_MAX).contains(&version) {
        return None;
    }
    let correlation = c.i32()?;
    c.string()?; // client id
    let mut topics = Vec::new();
    for _ in 0..c.i32()?.max(0) {
        let name = String::from_utf8(c.string()??.to_vec()).ok()?;
        let partitions = c.i32()?;
        c.i16()?; // replication factor
        for _ in 0..c.i32()?.max(0) {
            c.i32()?;
            let brokers = c.i32()?.max(0);
            c.take(usize::try_from(brokers).ok()?.checked_mul(4)?)?;
        }
        for _ in 0..c.i32()?.max(0) {
            c.string()?;
            c.string()?;
        }
        topics.push(NewTopic { name, partitions });
    }
    c.i32()?; // timeout
    let validate_only = version >= 1 && c.take(1)?.first().is_some_and(|b| *b != 0);
    Some(CreateTopicsRequest {
        version,
        correlation,
        topics,
        validate_only,
    })
}

/// The CreateTopics reply (without the size prefix): per topic its error
/// code and, v1+, message.
pub fn create_topics_reply(
    version: i16,
    correlation: i32,
    results: &[(String, i16, Option<String>)],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&correlation.to_be_bytes());
    if version >= 2 {
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle time
    }
    out.extend_from_slice(&i32::try_from(results.len()).unwrap_or(0).to_be_bytes());
    fn string(out: &mut Vec<u8>, s: &str) {
        let b = s.as_bytes();
        let b = b.get(..usize::from(i16::MAX.unsigned_abs())).unwrap_or(b);
        out.extend_from_slice(&i16::try_from(b.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(b);
    }
    for (name, code, message) in results {
        string(&mut out, name);
        out.extend_from_slice(&code.to_be_bytes());
        if version >= 1 {
            match message {
                Some(m) => string(&mut out, m),
                None => out.extend_from_slice(&(-1i16).to_be_bytes()),
            }
        }
    }
    out
}

/// Kafka error codes of CreateTopics results.
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;

/// Create the topics of `req` through the mock's control; the reply.
fn answer_create_topics(
    req: &CreateTopicsRequest,
    control: &dyn BrokerControl,
    created: &Mutex<HashSet<String>>,
    default_partitions: i32,
) -> Vec<u8> {
    let results: Vec<(String, i16, Option<String>)> = req
        .topics
        .iter()
        .map(|t| {
            let partitions = if t.partitions < 0 {
                default_partitions
            } else {
                t.partitions
            };
            if partitions == 0 {
                return (
                    t.name.clone(),
                    INVALID_PARTITIONS,
                    Some("partitions must be at least 1".into()),
                );
            }
            if req.validate_only {
                return (t.name.clone(), 0, None);
            }
            match control.create_topic(&t.name, partitions) {
                Ok(()) => {
                    if let Ok(mut c) = created.lock() {
                        c.insert(t.name.clone());
                    }
                    tracing::info!(topic = %t.name, partitions, "created topic (CreateTopics)");
                    (t.name.clone(), 0, None)
                }
                Err(e) if e.to_lowercase().contains("exist") => {
                    (t.name.clone(), TOPIC_ALREADY_EXISTS, Some(e))
                }
                Err(e) => (t.name.clone(), -1, Some(e)),
            }
        })
        .collect();
    create_topics_reply(req.version, req.correlation, &results)
}

/// How the proxy rewrites a reply of the mock.
#[derive(Debug, Clone, Copy)]
enum Rewrite {
    None,
    /// ApiVersions (the request was downgraded: UNSUPPORTED_VERSION).
    ApiVersions {
        downgraded: bool,
    },
    /// Metadata of this request version: a controller that exists.
    Metadata {
        version: i16,
    },
}

/// A reply the client waits for, in request order.
enum Awaited {
    /// From the mock.
    Mock { correlation: i32, rewrite: Rewrite },
    /// Written by the proxy (a whole frame with its size prefix).
    Own(Vec<u8>),
}

/// The client's write half and the replies it still waits for, under one lock
/// so that replies leave in request order.
struct Outgoing {
    cw: OwnedWriteHalf,
    awaited: VecDeque<Awaited>,
}

impl Outgoing {
    /// Write the proxy's own replies now at the front.
    async fn flush_own(&mut self) -> std::io::Result<()> {
        while let Some(Awaited::Own(_)) = self.awaited.front() {
            if let Some(Awaited::Own(frame)) = self.awaited.pop_front() {
                self.cw.write_all(&frame).await?;
            }
        }
        Ok(())
    }
}

type Shared = Arc<tokio::sync::Mutex<Outgoing>>;

/// A proxy serving in front of an embedded broker.
pub struct Fronted {
    /// Where clients connect (the broker advertises it).
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Listen on loopback `port` (0: any free port) in front of `broker`, which
/// from then on advertises the proxy's address, so every client connection
/// passes the proxy. Topics unknown on first use get `partitions` partitions.
pub async fn front(
    broker: Arc<EmbeddedBroker>,
    port: u16,
    partitions: i32,
) -> std::io::Result<Fronted> {
    let upstream: SocketAddr = broker
        .bootstrap()
        .split(',')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| std::io::Error::other("the embedded broker has no usable address"))?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    broker.advertise("127.0.0.1", addr.port());
    let control: Arc<dyn BrokerControl> = broker;
    let task = tokio::spawn(serve(listener, upstream, control, partitions));
    Ok(Fronted { addr, task })
}

/// Serve on `listen` forever, forwarding to `upstream`.
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    control: Arc<dyn BrokerControl>,
    partitions: i32,
) -> std::io::Result<()> {
    let created: Arc<Mutex<HashSet<String>>> = Arc::default();
    loop {
        let (client, peer) = listener.accept().await?;
        let control = control.clone();
        let created = created.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(client, upstream, control, created, partitions).await {
                tracing::debug!(%peer, error = %e, "proxy connection closed");
            }
        });
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    control: Arc<dyn BrokerControl>,
    created: Arc<Mutex<HashSet<String>>>,
    partitions: i32,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    // Requests and replies are small and latency-bound: no Nagle delay on either hop.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (cr, cw) = client.into_split();
    let (sr, mut sw) = server.into_split();
    let out: Shared = Arc::new(tokio::sync::Mutex::new(Outgoing {
        cw,
        awaited: Default::default(),
    }));
    let down = tokio::spawn(replies(BufReader::new(sr), out.clone()));
    let mut cr = BufReader::new(cr);
    let mut frame = Vec::new();
    loop {
        let mut size = [0u8; 4];
        if cr.read_exact(&mut size).await.is_err() {
            break;
        }
        let len = usize::try_from(i32::from_be_bytes(size)).unwrap_or(0);
        if len > MAX_FRAME {
            // Only produce batches get this big; their replies are not rewritten.
            sw.write_all(&size).await?;
            let mut rest = (&mut cr).take(len as u64);
            tokio::io::copy(&mut rest, &mut sw).await?;
            continue;
        }
        frame.clear();
        frame.extend_from_slice(&size);
        frame.resize(4 + len, 0);
        cr.read_exact(&mut frame[4..]).await?;
        let body = &frame[4..];
        let correlation = body
            .get(4..8)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if let Some(req) = create_topics_request(body) {
            let reply = answer_create_topics(&req, control.as_ref(), &created, partitions);
            let mut own = Vec::with_capacity(4 + reply.len());
            own.extend_from_slice(&i32::try_from(reply.len()).unwrap_or(0).to_be_bytes());
            own.extend_from_slice(&reply);
            let mut o = out.lock().await;
            o.awaited.push_back(Awaited::Own(own));
            o.flush_own().await?;
            continue;
        }
        let mut rewrite = Rewrite::None;
        if api_versions_correlation(body).is_some() {
            let v0 = downgrade_api_versions(body);
            rewrite = Rewrite::ApiVersions {
                downgraded: v0.is_some(),
            };
            if let Some((_, v0)) = v0 {
                let v0_len = i32::try_from(v0.len()).unwrap_or(0);
                frame.clear();
                frame.extend_from_slice(&v0_len.to_be_bytes());
                frame.extend_from_slice(&v0);
            }
        } else if let Some(topics) = metadata_topics(body) {
            if let Some(version) = metadata_version(body) {
                rewrite = Rewrite::Metadata { version };
            }
            for t in topics {
                let new = created
                    .lock()
                    .map(|mut s| s.insert(t.clone()))
                    .unwrap_or(false);
                if new && !t.starts_with("__") {
                    match control.create_topic(&t, partitions) {
                        Ok(()) => {
                            tracing::info!(topic = %t, partitions, "created topic on first use")
                        }
                        Err(e) => tracing::debug!(topic = %t, error = %e, "not created"),
                    }
                }
            }
        }
        if let (Some(correlation), false) = (correlation, produce_without_reply(&frame[4..])) {
            out.lock().await.awaited.push_back(Awaited::Mock {
                correlation,
                rewrite,
            });
        }
        sw.write_all(&frame).await?;
    }
    down.abort();
    Ok(())
}

/// Replies from the mock to the client, frame by frame, in request order with
/// the proxy's own; ApiVersions replies rewritten.
async fn replies(mut sr: BufReader<OwnedReadHalf>, out: Shared) -> std::io::Result<()> {
    let mut frame = Vec::new();
    loop {
        let mut size = [0u8; 4];
        sr.read_exact(&mut size).await?;
        let len = usize::try_from(i32::from_be_bytes(size)).unwrap_or(0);
        let big = len > MAX_FRAME;
        // A reply this big is passed through unread past its correlation id.
        let head = if big { 4 } else { len };
        frame.clear();
        frame.extend_from_slice(&size);
        frame.resize(4 + head, 0);
        sr.read_exact(&mut frame[4..]).await?;
        let correlation = frame
            .get(4..8)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let mut o = out.lock().await;
        let mut rewrite = Rewrite::None;
        let known = o
            .awaited
            .iter()
            .any(|a| matches!(a, Awaited::Mock { correlation: c, .. } if Some(*c) == correlation));
        // Replies owed before this one: the proxy's own are written; a request
        // to the mock still without its reply got none (acks=0 not recognised).
        while let Some(front) = known.then(|| o.awaited.pop_front()).flatten() {
            match front {
                Awaited::Own(own) => o.cw.write_all(&own).await?,
                Awaited::Mock {
                    correlation: c,
                    rewrite: r,
                } => {
                    if Some(c) == correlation {
                        rewrite = r;
                        break;
                    }
                }
            }
        }
        if big {
            o.cw.write_all(&frame).await?;
            let mut rest = (&mut sr).take((len - 4) as u64);
            tokio::io::copy(&mut rest, &mut o.cw).await?;
            o.flush_own().await?;
            continue;
        }
        match rewrite {
            Rewrite::ApiVersions { downgraded } => {
                rewrite_api_versions(&mut frame[4..], downgraded);
                match with_create_topics(&frame[4..]) {
                    Some(body) => {
                        let n = i32::try_from(body.len()).unwrap_or(0);
                        o.cw.write_all(&n.to_be_bytes()).await?;
                        o.cw.write_all(&body).await?;
                    }
                    None => o.cw.write_all(&frame).await?,
                }
            }
            Rewrite::Metadata { version } => {
                fix_controller(&mut frame[4..], version);
                o.cw.write_all(&frame).await?;
            }
            Rewrite::None => o.cw.write_all(&frame).await?,
        }
        o.flush_own().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: i16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&METADATA.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&7i32.to_be_bytes());
        f.extend_from_slice(&4i16.to_be_bytes());
        f.extend_from_slice(b"kcat");
        f
    }

    #[test]
    fn parses_classic_metadata() {
        let mut f = header(1);
        f.extend_from_slice(&2i32.to_be_bytes());
        for t in ["orders", "x"] {
            f.extend_from_slice(&(t.len() as i16).to_be_bytes());
            f.extend_from_slice(t.as_bytes());
        }
        assert_eq!(metadata_topics(&f), Some(vec!["orders".into(), "x".into()]));
    }

    #[test]
    fn parses_flexible_metadata_with_topic_ids() {
        let mut f = header(12);
        f.push(0); // header tags
        f.push(2); // one topic
        f.extend_from_slice(&[0u8; 16]);
        f.push(7);
        f.extend_from_slice(b"orders");
        f.push(0); // topic tags
        assert_eq!(metadata_topics(&f), Some(vec!["orders".into()]));
    }

    /// An ApiVersions v3 request as kafka-python sends it: header v2, compact body.
    fn api_versions_v3() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&API_VERSIONS.to_be_bytes());
        f.extend_from_slice(&4i16.to_be_bytes());
        f.extend_from_slice(&42i32.to_be_bytes());
        f.extend_from_slice(&5i16.to_be_bytes());
        f.extend_from_slice(b"kafka");
        f.push(0); // header tags
        f.push(13);
        f.extend_from_slice(b"kafka-python");
        f.push(7);
        f.extend_from_slice(b"3.0.12");
        f.push(0); // body tags
        f
    }

    #[test]
    fn new_api_versions_requests_go_to_the_mock_as_v0() {
        let (correlation, v0) = downgrade_api_versions(&api_versions_v3()).unwrap();
        assert_eq!(correlation, 42);
        let mut want = Vec::new();
        want.extend_from_slice(&[0, 18, 0, 0]);
        want.extend_from_slice(&42i32.to_be_bytes());
        want.extend_from_slice(&5i16.to_be_bytes());
        want.extend_from_slice(b"kafka");
        assert_eq!(v0, want);
        // A null client id stays null.
        let mut null_id = vec![0, 18, 0, 3, 0, 0, 0, 9, 0xff, 0xff, 0];
        null_id.extend_from_slice(&[1, 1, 0]);
        let (_, v0) = downgrade_api_versions(&null_id).unwrap();
        assert_eq!(v0, vec![0, 18, 0, 0, 0, 0, 0, 9, 0xff, 0xff]);
    }

    #[test]
    fn versions_the_mock_answers_pass_unchanged() {
        for version in 0..=MOCK_API_VERSIONS_MAX {
            let mut f = api_versions_v3();
            f[2..4].copy_from_slice(&version.to_be_bytes());
            assert_eq!(downgrade_api_versions(&f), None, "v{version}");
        }
        assert_eq!(downgrade_api_versions(&header(12)), None, "metadata");
        assert_eq!(downgrade_api_versions(&[0, 18, 0, 3, 0]), None, "truncated");
    }

    /// A v0 ApiVersions reply: correlation 42, error 0, the given (key, min, max).
    fn reply(apis: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut r = vec![0, 0, 0, 42, 0, 0];
        r.extend_from_slice(&(apis.len() as i32).to_be_bytes());
        for (k, min, max) in apis {
            for x in [k, min, max] {
                r.extend_from_slice(&x.to_be_bytes());
            }
        }
        r
    }

    #[test]
    fn the_v0_reply_becomes_unsupported_version() {
        let mut r = reply(&[(18, 0, 2), (0, 0, 10)]);
        rewrite_api_versions(&mut r, true);
        assert_eq!(&r[4..6], &35i16.to_be_bytes());
        assert_eq!(&r[6..], &reply(&[(18, 0, 2), (0, 0, 10)])[6..]);
        let mut short = vec![0, 0, 0];
        rewrite_api_versions(&mut short, true);
        assert_eq!(short, vec![0, 0, 0]);
    }

    #[test]
    fn group_apis_are_capped_at_what_librdkafka_sends() {
        let mut r = reply(&[(11, 0, 6), (14, 0, 4), (12, 0, 5), (13, 0, 4), (10, 0, 3)]);
        r.extend_from_slice(&0i32.to_be_bytes()); // v1+: throttle time
        rewrite_api_versions(&mut r, false);
        let mut want = reply(&[(11, 0, 5), (14, 0, 3), (12, 0, 3), (13, 0, 1), (10, 0, 2)]);
        want.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(r, want);
        // Others, and versions already below the cap, stay.
        let mut r = reply(&[(1, 0, 16), (11, 0, 2)]);
        rewrite_api_versions(&mut r, false);
        assert_eq!(r, reply(&[(1, 0, 16), (11, 0, 2)]));
        // A count beyond the frame stops at the end.
        let mut r = reply(&[(11, 0, 6)]);
        r[9] = 9;
        rewrite_api_versions(&mut r, false);
        assert_eq!(&r[14..16], &5i16.to_be_bytes());
    }

    /// A CreateTopics request as librdkafka's AdminClient sends it (v`version`).
    fn create_topics(version: i16, topics: &[(&str, i32)]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&CREATE_TOPICS.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&9i32.to_be_bytes());
        f.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
        f.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            f.extend_from_slice(&(name.len() as i16).to_be_bytes());
            f.extend_from_slice(name.as_bytes());
            f.extend_from_slice(&partitions.to_be_bytes());
            f.extend_from_slice(&1i16.to_be_bytes());
            f.extend_from_slice(&0i32.to_be_bytes()); // no assignments
            f.extend_from_slice(&1i32.to_be_bytes()); // one config
            f.extend_from_slice(&(9i16).to_be_bytes());
            f.extend_from_slice(b"retention");
            f.extend_from_slice(&(-1i16).to_be_bytes());
        }
        f.extend_from_slice(&10_000i32.to_be_bytes());
        if version >= 1 {
            f.push(0);
        }
        f
    }

    #[test]
    fn create_topics_requests_are_read() {
        let req = create_topics_request(&create_topics(4, &[("orders", 3), ("dlq", -1)])).unwrap();
        assert_eq!(
            req,
            CreateTopicsRequest {
                version: 4,
                correlation: 9,
                topics: vec![
                    NewTopic {
                        name: "orders".into(),
                        partitions: 3
                    },
                    NewTopic {
                        name: "dlq".into(),
                        partitions: -1
                    },
                ],
                validate_only: false,
            }
        );
        assert!(create_topics_request(&create_topics(0, &[("a", 1)])).is_some());
        assert_eq!(create_topics_request(&create_topics(5, &[("a", 1)])), None);
        let mut truncated = create_topics(2, &[("a", 1)]);
        truncated.truncate(20);
        assert_eq!(create_topics_request(&truncated), None);
        assert_eq!(create_topics_request(&header(1)), None);
    }

    #[test]
    fn create_topics_replies_per_version() {
        let results = [
            ("a".to_owned(), 0, None),
            ("b".to_owned(), 36, Some("exists".to_owned())),
        ];
        assert_eq!(
            create_topics_reply(0, 9, &results),
            vec![0, 0, 0, 9, 0, 0, 0, 2, 0, 1, b'a', 0, 0, 0, 1, b'b', 0, 36]
        );
        let v2 = create_topics_reply(2, 9, &results);
        let mut want = vec![0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2];
        want.extend_from_slice(&[0, 1, b'a', 0, 0, 0xff, 0xff]);
        want.extend_from_slice(&[0, 1, b'b', 0, 36, 0, 6]);
        want.extend_from_slice(b"exists");
        assert_eq!(v2, want);
    }

    #[test]
    fn api_versions_replies_list_create_topics() {
        let mut r = reply(&[(18, 0, 2)]);
        r.extend_from_slice(&0i32.to_be_bytes());
        let mut want = reply(&[(18, 0, 2), (19, 0, 4)]);
        want.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(with_create_topics(&r), Some(want.clone()));
        assert_eq!(with_create_topics(&want), None, "listed already");
        assert_eq!(with_create_topics(&[0, 0, 0, 1, 0]), None);
    }

    #[test]
    fn produce_with_acks_zero_gets_no_reply() {
        let produce = |version: i16, acks: i16| {
            let mut f = Vec::new();
            f.extend_from_slice(&PRODUCE.to_be_bytes());
            f.extend_from_slice(&version.to_be_bytes());
            f.extend_from_slice(&1i32.to_be_bytes());
            f.extend_from_slice(&2i16.to_be_bytes());
            f.extend_from_slice(b"me");
            if version >= 9 {
                f.push(0); // header tags
                f.push(0); // null transactional id
            } else if version >= 3 {
                f.extend_from_slice(&(-1i16).to_be_bytes());
            }
            f.extend_from_slice(&acks.to_be_bytes());
            f.extend_from_slice(&[0; 8]);
            f
        };
        for v in [0, 2, 3, 7, 9, 10] {
            assert!(produce_without_reply(&produce(v, 0)), "v{v} acks=0");
            assert!(!produce_without_reply(&produce(v, -1)), "v{v} acks=all");
            assert!(!produce_without_reply(&produce(v, 1)), "v{v} acks=1");
        }
        assert!(!produce_without_reply(&header(1)), "metadata");
        assert!(!produce_without_reply(&[0, 0, 0]), "truncated");
    }

    #[test]
    fn metadata_replies_name_a_broker_as_controller() {
        // v1: correlation, brokers [1 @ h:9092, rack null], controller 0, no topics.
        let v1 = |controller: i32| {
            let mut r = vec![0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, b'h'];
            r.extend_from_slice(&9092i32.to_be_bytes());
            r.extend_from_slice(&(-1i16).to_be_bytes());
            r.extend_from_slice(&controller.to_be_bytes());
            r.extend_from_slice(&0i32.to_be_bytes());
            r
        };
        let mut r = v1(0);
        fix_controller(&mut r, 1);
        assert_eq!(r, v1(1));
        let mut r = v1(1);
        fix_controller(&mut r, 1);
        assert_eq!(r, v1(1), "an existing controller stays");
        // v12 (flexible): header tags, throttle, compact brokers, cluster id, controller.
        let v12 = |controller: i32| {
            let mut r = vec![0, 0, 0, 5, 0, 0, 0, 0, 0, 2];
            r.extend_from_slice(&3i32.to_be_bytes());
            r.extend_from_slice(&[2, b'h']);
            r.extend_from_slice(&9092i32.to_be_bytes());
            r.extend_from_slice(&[0, 0]); // null rack, tags
            r.extend_from_slice(&[3, b'c', b'l']);
            r.extend_from_slice(&controller.to_be_bytes());
            r.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
            r
        };
        let mut r = v12(0);
        fix_controller(&mut r, 12);
        assert_eq!(r, v12(3));
        let mut short = v12(0);
        short.truncate(20);
        let before = short.clone();
        fix_controller(&mut short, 12);
        assert_eq!(short, before, "unparsable: unchanged");
    }

    #[test]
    fn ignores_other_requests_and_garbage() {
        assert_eq!(metadata_topics(&[0, 0, 0, 1]), None);
        assert_eq!(metadata_topics(&[0, 3, 0]), None);
        let mut f = header(1);
        f.extend_from_slice(&5i32.to_be_bytes());
        assert_eq!(metadata_topics(&f), None, "truncated");
    }
}
