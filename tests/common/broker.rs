//! `eventscope broker` in a child process, and kcat writing to it: the
//! foreign-client tests' shared pieces.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_eventscope");

/// The standalone broker on a free loopback port, killed on drop.
pub struct Broker {
    child: Child,
    pub addr: String,
}

impl Broker {
    pub fn start() -> Broker {
        let mut child = Command::new(BIN)
            .args(["broker", "--port", "0", "--partitions", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start eventscope broker");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("bootstrap address");
        let addr = line.trim().to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "printed {addr:?}");
        Broker { child, addr }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn kcat_available() -> bool {
    Command::new("kcat").arg("-V").output().is_ok()
}

/// Produce one record with kcat: key, headers, value.
pub fn kcat_produce(addr: &str, topic: &str, key: &str, headers: &[(&str, &str)], value: &str) {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", addr, "-t", topic, "-P", "-k", key]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}={v}")]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs (Debian package kcat)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{value}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("kcat");
    assert!(
        out.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
