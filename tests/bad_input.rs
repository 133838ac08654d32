//! Bad input wherever a user can give it, and what must never leak: a corrupted recording
//! imports every good line and names the bad ones; out-of-range `--faults` say which and
//! why; a 50 MB value and binary headers in the inspector; secrets (database and SASL
//! passwords) never in logs, reports or exports; personal data masked in exports.
//!
//! The CLI tests run the real binary; the GUI tests drive the real `EventscopeApp` through
//! egui_kittest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use egui::accesskit::Role;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use eventscope::gui::{EventscopeApp, Intent, Prefs};
use eventscope::model::record::Record;
use eventscope::model::{jsonl, Model};

const BIN: &str = env!("CARGO_BIN_EXE_eventscope");

/// One GUI test at a time.
static GUI_LOCK: Mutex<()> = Mutex::new(());

fn gui_lock() -> MutexGuard<'static, ()> {
    GUI_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CloudEvents binary-mode record with a JSON value.
fn event(offset: i64, id: &str, value: &str) -> Record {
    Record::new("orders", 0, offset)
        .with_key(format!("order-{offset}"))
        .with_timestamp(1_790_000_000_000 + offset)
        .with_header("ce_specversion", "1.0")
        .with_header("ce_id", id)
        .with_header("ce_type", "OrderCreated")
        .with_header("ce_source", "/shop")
        .with_header("ce_correlationid", &format!("corr-{offset}"))
        .with_header("content-type", "application/json")
        .with_value(value.as_bytes().to_vec())
}

fn line(r: &Record) -> String {
    jsonl::to_line(r).expect("line")
}

#[test]
fn a_corrupted_recording_imports_every_good_line_and_names_the_bad_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let good = |i: i64| line(&event(i, &format!("e-{i}"), r#"{"total":1}"#));
    let mut file = Vec::new();
    file.extend_from_slice(format!("{}\n", good(0)).as_bytes()); // 1
    file.extend_from_slice(b"this is not json\n"); // 2
    file.extend_from_slice(b"{\"topic\":\"orders\xff\xfe\",\"partition\":0}\n"); // 3
    file.extend_from_slice(format!("{}\r\n", good(1)).as_bytes()); // 4
    file.extend_from_slice(b"\n"); // 5 (blank: skipped, not bad)
    file.extend_from_slice(
        b"{\"topic\":\"orders\",\"partition\":0,\"offset\":9,\"value\":{\"base64\":\"%%\"}}\n",
    ); // 6
    file.extend_from_slice(b"{\"topic\":\"orders\",\"partition\":0}\n"); // 7
    file.extend_from_slice(format!("{}\n", good(2)).as_bytes()); // 8
    let cut = good(3);
    file.extend_from_slice(&cut.as_bytes()[..cut.len() - 25]); // 9: cut short, no newline
    let path = dir.path().join("broken.jsonl");
    std::fs::write(&path, &file).expect("write");
    let report = dir.path().join("report.json");

    let out = Command::new(BIN)
        .arg("import")
        .arg(&path)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run");
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(r["events"]["observed"], 3, "every good line: {r}");
    assert_eq!(r["bad_lines"]["count"], 5, "{r}");
    let lines: Vec<u64> = r["bad_lines"]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|b| b["line"].as_u64().expect("line number"))
        .collect();
    assert_eq!(lines, [2, 3, 6, 7, 9]);
    let reason = |n: usize| r["bad_lines"]["lines"][n]["reason"].as_str().unwrap_or("");
    assert!(reason(0).starts_with("line 2: malformed record"), "{r}");
    assert!(reason(1).contains("not UTF-8"), "{r}");
    assert!(reason(2).contains("invalid base64"), "{r}");
    assert!(reason(3).contains("missing field `offset`"), "{r}");
    assert!(reason(4).contains("EOF"), "{r}");
    assert!(
        err.contains("5 line(s) could not be read"),
        "stderr names them: {err}"
    );
    for n in [2, 3, 6, 7, 9] {
        assert!(err.contains(&format!("line {n}:")), "line {n} named: {err}");
    }
    assert!(err.contains("3 records"), "{err}");
}

#[test]
fn out_of_range_faults_say_which_fault_and_why() {
    for (spec, fault, why) in [
        (
            "duplicate-publish=1.5",
            "duplicate-publish",
            "1.5 is out of range",
        ),
        (
            "consumer-crash=-1",
            "consumer-crash",
            "must be a non-negative number",
        ),
        ("schema-drift=abc", "schema-drift", "'abc' is not a number"),
        ("poison-message=2.5", "poison-message", "give a whole count"),
        ("no-idempotency=3", "no-idempotency", "is a switch"),
        (
            "relay-crash=inf",
            "relay-crash",
            "must be a non-negative number",
        ),
        (
            "payment-decline=0.2,payment-decline=0.3",
            "payment-decline",
            "named twice",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["demo", "--headless", "--orders", "1", "--faults", spec])
            .output()
            .expect("run");
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(
            err.contains(&format!("fault '{fault}'")) && err.contains(why),
            "{spec}: {err}"
        );
    }
}

/// An `eventscope broker` child, killed on drop.
struct Broker(std::process::Child, String);

impl Broker {
    fn start() -> Broker {
        let mut child = Command::new(BIN)
            .args(["broker", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn broker");
        let mut addr = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut addr)
            .expect("address line");
        Broker(child, addr.trim().to_owned())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_no_secret(secrets: &[&str], what: &str, text: &str) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows the secret {s:?}:\n{text}");
    }
}

/// Database, SASL and schema registry passwords given on the command line and in a
/// properties file appear nowhere: not in the debug log (RUST_LOG=debug, librdkafka's
/// included), the report, the export, nor in the errors of a failed connection.
#[test]
fn secrets_never_reach_logs_reports_or_exports() {
    const SASL: &str = "Sasl-Pw-0x5ecret";
    const FILE_SASL: &str = "File-Pw-0x5ecret";
    const DB: &str = "Db-Pw-0x5ecret";
    const DB_TAIL: &str = "Tail-0x5ecret";
    const REGISTRY: &str = "Reg-Pw-0x5ecret";
    let secrets = [SASL, FILE_SASL, DB, DB_TAIL, REGISTRY];
    let (_env, dir) = common::temp_dir();
    let broker = Broker::start();
    let props = dir.join("client.properties");
    std::fs::write(
        &props,
        format!(
            "# SASL for the inspected cluster\nsasl.username=alice\nsasl.password={FILE_SASL}\n"
        ),
    )
    .expect("props");
    // On PostgreSQL (trust auth ignores the password) when the environment asks for it
    // (EVENTSCOPE_TEST_DB=postgres), a URL with a password; SQLite has none.
    let database = common::conn(dir.clone())
        .database
        .map(|url| url.replacen("://postgres@", &format!("://postgres:{DB}@"), 1));
    let report = dir.join("demo-report.json");
    let mut demo = Command::new(BIN);
    if let Some(url) = &database {
        demo.args(["--database", url]);
    }
    let out = demo
        .env("RUST_LOG", "debug,librdkafka=debug")
        .args(["demo", "--headless", "--orders", "3", "--timeout", "120"])
        .args(["--brokers", &broker.1])
        .args(["--kafka-config", "sasl.username=alice"])
        .args(["--kafka-config", &format!("sasl.password={SASL}")])
        .arg("--kafka-config-file")
        .arg(&props)
        .arg("--data-dir")
        .arg(&dir)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run demo");
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert!(e.contains("DEBUG"), "the debug log was on: {e}");
    assert_no_secret(&secrets, "demo stdout", &o);
    assert_no_secret(&secrets, "demo stderr", &e);
    let report_text = std::fs::read_to_string(&report).expect("report");
    assert!(report_text.contains("\"database\""), "{report_text}");
    assert_no_secret(&secrets, "demo report", &report_text);

    let export = dir.join("export.jsonl");
    let report = dir.join("inspect-report.json");
    let out = Command::new(BIN)
        .env("RUST_LOG", "debug,librdkafka=debug")
        .args(["inspect", "--brokers", &broker.1, "--topics", "orders"])
        .args(["--kafka-config", &format!("sasl.password={SASL}")])
        .args(["--schema-registry", "http://127.0.0.1:1"])
        .args(["--schema-registry-auth", &format!("alice:{REGISTRY}")])
        .arg("--kafka-config-file")
        .arg(&props)
        .arg("--export")
        .arg(&export)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run inspect");
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert_no_secret(&secrets, "inspect stdout", &o);
    assert_no_secret(&secrets, "inspect stderr", &e);
    let exported = std::fs::read_to_string(&export).expect("export");
    assert!(exported.lines().count() >= 3, "{exported}");
    assert_no_secret(&secrets, "export", &exported);
    assert_no_secret(
        &secrets,
        "inspect report",
        &std::fs::read_to_string(&report).expect("report"),
    );

    // Failures name the database and the file, never the password.
    for url in [
        format!("postgres://alice:{DB}@127.0.0.1:1/shop"),
        format!("postgres://alice:{DB}@{DB_TAIL}@127.0.0.1:1/shop"),
        format!("postgres://alice@127.0.0.1:1/shop?password={DB}"),
        format!("mysql://alice:{DB}@127.0.0.1/shop"),
    ] {
        let out = Command::new(BIN)
            .env("RUST_LOG", "debug")
            .args(["demo", "--headless", "--orders", "1", "--database", &url])
            .args(["--brokers", &broker.1, "--timeout", "20"])
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .expect("run");
        let (o, e) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{url}: {e}");
        assert_no_secret(&secrets, "stdout of a failed connection", &o);
        assert_no_secret(&secrets, "stderr of a failed connection", &e);
    }
    std::fs::write(&props, format!("sasl.password {FILE_SASL}\n")).expect("props");
    let out = Command::new(BIN)
        .args(["inspect", "--brokers", &broker.1, "--kafka-config-file"])
        .arg(&props)
        .output()
        .expect("run");
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("line 1"), "{e}");
    assert_no_secret(&secrets, "a bad properties file's error", &e);
}

const ALICE: &str = "alice@example.com";
const STREET: &str = "1 Harbour Street";

fn pii_records() -> Vec<Record> {
    (0..3)
        .map(|i| {
            event(
                i,
                &format!("p-{i}"),
                &format!(
                    r#"{{"orderId":"o-{i}","customer":{{"email":"{ALICE}","shipping_address":"{STREET}"}},"total":{i}}}"#
                ),
            )
        })
        .collect()
}

/// `inspect --export --redact` writes the PII values masked, as the inspector shows them;
/// without `--redact` the records are written as observed.
#[test]
fn export_with_redact_masks_personal_data() {
    let dir = tempfile::tempdir().expect("dir");
    let broker = Broker::start();
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.1)
        .create()
        .expect("producer");
    for r in pii_records() {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(rdkafka::message::Header { key: k, value: v });
        }
        producer
            .send(
                rdkafka::producer::BaseRecord::to("shop")
                    .key(r.key.as_deref().unwrap_or_default())
                    .payload(r.value.as_deref().unwrap_or_default())
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .expect("send");
    }
    rdkafka::producer::Producer::flush(&producer, std::time::Duration::from_secs(10))
        .expect("flush");
    let export = |redact: bool| -> (String, serde_json::Value) {
        let file = dir.path().join(format!("export-{redact}.jsonl"));
        let report = dir.path().join(format!("report-{redact}.json"));
        let mut cmd = Command::new(BIN);
        cmd.args(["inspect", "--brokers", &broker.1, "--topics", "shop"])
            .args(["--filter", ".total >= 0", "--export"])
            .arg(&file)
            .arg("--report")
            .arg(&report);
        if redact {
            cmd.arg("--redact");
        }
        let out = cmd.output().expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).expect("report")).expect("json");
        (std::fs::read_to_string(file).expect("export"), report)
    };
    let (plain, plain_report) = export(false);
    assert_eq!(plain.lines().count(), 3);
    assert_eq!(plain.matches(ALICE).count(), 3, "{plain}");
    assert!(plain_report.to_string().contains(ALICE));
    let (masked, masked_report) = export(true);
    assert_eq!(masked.lines().count(), 3);
    for secret in [ALICE, STREET] {
        assert!(!masked.contains(secret), "{secret} exported: {masked}");
        assert!(
            !masked_report.to_string().contains(secret),
            "{secret} in the report's filter records: {masked_report}"
        );
    }
    assert_eq!(
        masked.matches("\"email\":\"••••••\"").count(),
        3,
        "{masked}"
    );
    assert!(
        masked.contains("\"orderId\":\"o-1\""),
        "the rest is kept: {masked}"
    );
    assert_eq!(masked_report["filter"]["matched"], 3);
    // A redacted export is still a recording.
    let back = eventscope::inspect::load(&dir.path().join("export-true.jsonl")).expect("import");
    assert_eq!(back.log().len(), 3);
}

fn offline_app(model: Model) -> Harness<'static, EventscopeApp> {
    let app = EventscopeApp::offline(model, "test.jsonl".into(), Prefs::default());
    Harness::builder()
        .with_size([1600.0, 1000.0])
        .build_ui_state(|ui, app: &mut EventscopeApp| app.frame_ui(ui), app)
}

fn labels_containing(h: &Harness<'_, EventscopeApp>, needle: &str) -> Vec<String> {
    h.query_all_by_label_contains(needle)
        .filter_map(|n| {
            let a = n.accesskit_node();
            a.label().or_else(|| a.value())
        })
        .collect()
}

/// The GUI's export window: "Mask personal data" is on by default and masks; turned off,
/// the records are written as observed.
#[test]
fn the_export_window_masks_personal_data_by_default() {
    let _lock = gui_lock();
    let dir = tempfile::tempdir().expect("dir");
    let mut model = Model::default();
    for r in pii_records() {
        model
            .ingest(&r, r.timestamp_ms.unwrap_or(0))
            .expect("ingest");
    }
    let mut h = offline_app(model);
    h.run_steps(2);
    for redact in [true, false] {
        let path = dir.path().join(format!("gui-{redact}.jsonl"));
        h.state_mut().push(Intent::Export);
        h.run_steps(3);
        let check = h.get_by_role_and_label(Role::CheckBox, "Mask personal data");
        assert_eq!(
            check.accesskit_node().toggled(),
            Some(egui::accesskit::Toggled::True),
            "on by default"
        );
        if !redact {
            check.click();
            h.run_steps(2);
        }
        let field = h.get_by_role_and_label(Role::TextInput, "path");
        field.focus();
        h.run_steps(1);
        h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
        h.run_steps(1);
        h.get_by_role_and_label(Role::TextInput, "path")
            .type_text(&path.display().to_string());
        h.run_steps(1);
        h.get_by_role_and_label(Role::Button, "Export").click();
        h.run_steps(5);
        let written = std::fs::read_to_string(&path).expect("exported");
        assert_eq!(written.lines().count(), 3, "{written}");
        if redact {
            assert!(
                !written.contains(ALICE) && !written.contains(STREET),
                "{written}"
            );
            assert_eq!(written.matches("\"email\":\"••••••\"").count(), 3);
            assert!(!labels_containing(&h, "personal data masked").is_empty());
        } else {
            assert_eq!(written.matches(ALICE).count(), 3, "{written}");
        }
    }
}

/// A 50 MB value is shown cut, with its size, never whole; a header and a key that are not
/// UTF-8 are shown as escaped bytes; personal data in the cut text stays masked.
#[test]
fn the_inspector_shows_a_huge_value_cut_and_binary_headers_as_bytes() {
    let _lock = gui_lock();
    const BIG: usize = 50 * 1024 * 1024;
    let mut value = format!(r#"{{"email":"{ALICE}","blob":""#).into_bytes();
    value.resize(BIG - 2, b'x');
    value.extend_from_slice(b"\"}");
    let mut rec = event(0, "big-1", "");
    rec.value = Some(value);
    rec.key = Some(vec![b'k', 0xff, 0x00]);
    rec.headers.push("x-bin", Some(&[0xff, 0x00, 0x80, b'a']));
    let mut model = Model::default();
    model.ingest(&rec, 1).expect("ingest");
    let mut h = offline_app(model);
    h.state_mut().selected = Some(0);
    let started = std::time::Instant::now();
    h.run_steps(3);
    let per_frame = started.elapsed() / 3;

    assert!(
        !labels_containing(&h, "50.0 MiB (52428800 bytes)").is_empty(),
        "the size is shown"
    );
    let header = labels_containing(&h, "(binary, 4 bytes)");
    assert_eq!(
        header,
        [r"(binary, 4 bytes) \xff\x00\x80a"],
        "header as bytes"
    );
    assert_eq!(
        labels_containing(&h, "(binary, 3 bytes)"),
        [r"(binary, 3 bytes) k\xff\x00"],
        "key as bytes"
    );
    let payload = labels_containing(&h, "\"blob\"");
    assert_eq!(payload.len(), 1, "{:?}", payload.len());
    assert!(
        payload[0].len() < 70 * 1024,
        "at most 64 KiB shown, not {} bytes",
        payload[0].len()
    );
    assert!(
        payload[0].contains("50.0 MiB in all, first 64.0 KiB shown"),
        "the cut is said"
    );
    assert!(
        labels_containing(&h, ALICE).is_empty(),
        "personal data masked in the cut text"
    );
    assert!(
        per_frame < std::time::Duration::from_secs(2),
        "a frame took {per_frame:?}"
    );
}
