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

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use eventscope_demo::kafka::BrokerControl;

use crate::kafka::broker::EmbeddedBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const METADATA: i16 = 3;
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

/// Correlation ids of ApiVersions requests whose replies the proxy rewrites,
/// with whether the request was downgraded (its reply becomes UNSUPPORTED_VERSION).
type Marked = Arc<Mutex<HashMap<i32, bool>>>;

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
    let marked: Marked = Arc::default();
    let down = tokio::spawn(replies(BufReader::new(sr), cw, marked.clone()));
    let mut cr = BufReader::new(cr);
    let mut frame = Vec::new();
    loop {
        let mut size = [0u8; 4];
        if cr.read_exact(&mut size).await.is_err() {
            break;
        }
        let len = usize::try_from(i32::from_be_bytes(size)).unwrap_or(0);
        if len > MAX_FRAME {
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
        if let Some(correlation) = api_versions_correlation(body) {
            let v0 = downgrade_api_versions(body);
            if let Ok(mut m) = marked.lock() {
                m.insert(correlation, v0.is_some());
            }
            if let Some((_, v0)) = v0 {
                let v0_len = i32::try_from(v0.len()).unwrap_or(0);
                frame.clear();
                frame.extend_from_slice(&v0_len.to_be_bytes());
                frame.extend_from_slice(&v0);
            }
        } else if let Some(topics) = metadata_topics(body) {
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
        sw.write_all(&frame).await?;
    }
    down.abort();
    Ok(())
}

/// Replies from the mock to the client, frame by frame, in order; ApiVersions
/// replies rewritten by [`rewrite_api_versions`].
async fn replies(
    mut sr: BufReader<OwnedReadHalf>,
    mut cw: OwnedWriteHalf,
    marked: Marked,
) -> std::io::Result<()> {
    let mut frame = Vec::new();
    loop {
        let mut size = [0u8; 4];
        sr.read_exact(&mut size).await?;
        let len = usize::try_from(i32::from_be_bytes(size)).unwrap_or(0);
        if len > MAX_FRAME {
            cw.write_all(&size).await?;
            let mut rest = (&mut sr).take(len as u64);
            tokio::io::copy(&mut rest, &mut cw).await?;
            continue;
        }
        frame.clear();
        frame.extend_from_slice(&size);
        frame.resize(4 + len, 0);
        sr.read_exact(&mut frame[4..]).await?;
        let correlation = frame
            .get(4..8)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let rewrite = match (correlation, marked.lock()) {
            (Some(c), Ok(mut m)) if !m.is_empty() => m.remove(&c),
            _ => None,
        };
        if let Some(unsupported) = rewrite {
            rewrite_api_versions(&mut frame[4..], unsupported);
        }
        cw.write_all(&frame).await?;
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

    #[test]
    fn ignores_other_requests_and_garbage() {
        assert_eq!(metadata_topics(&[0, 0, 0, 1]), None);
        assert_eq!(metadata_topics(&[0, 3, 0]), None);
        let mut f = header(1);
        f.extend_from_slice(&5i32.to_be_bytes());
        assert_eq!(metadata_topics(&f), None, "truncated");
    }
}
