//! A loopback TCP proxy in front of the embedded broker, for `eventscope broker`.
//!
//! The mock cluster listens on a random port; the proxy gives it a fixed one and
//! the broker advertises the proxy's address, so every request passes here. The
//! proxy reads the topic names of Metadata requests and creates unknown topics
//! with the chosen partition count before the mock would auto-create them with
//! its fixed default of 4.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use eventscope_demo::kafka::BrokerControl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const METADATA: i16 = 3;
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
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
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
        frame.resize(len, 0);
        cr.read_exact(&mut frame).await?;
        if let Some(topics) = metadata_topics(&frame) {
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
        sw.write_all(&size).await?;
        sw.write_all(&frame).await?;
    }
    down.abort();
    Ok(())
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

    #[test]
    fn ignores_other_requests_and_garbage() {
        assert_eq!(metadata_topics(&[0, 0, 0, 1]), None);
        assert_eq!(metadata_topics(&[0, 3, 0]), None);
        let mut f = header(1);
        f.extend_from_slice(&5i32.to_be_bytes());
        assert_eq!(metadata_topics(&f), None, "truncated");
    }
}
