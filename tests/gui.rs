//! The desktop GUI driven through egui_kittest: the real `EventscopeApp` on the real backend
//! (embedded librdkafka mock broker, SQLite in a temp dir, the demo), widgets found by role
//! and label and clicked like a user would.
//!
//! The backend is asynchronous, so the tests step frames and sleep until what they wait for
//! is shown (or fail after a deadline). egui_graphs repaints every frame, so frames are run
//! with `run_steps`, never `run`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use egui::accesskit::{Action, ActionData, ActionRequest, Role};
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use eventscope::backend::ConnectionStatus;
use eventscope::cli::Connection;
use eventscope::folds::fold_for;
use eventscope::gui::{BottomTab, EventscopeApp, Intent, Prefs};
use eventscope::model::detect::AnomalyKind;
use eventscope::model::log::LogIndex;
use eventscope_demo::faults::Fault;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

/// One GUI test at a time: each runs a broker, the demo and the tap on a 2-core machine.
static GUI_LOCK: Mutex<()> = Mutex::new(());

const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(60);
/// A wrong broker address must show as failed within this.
const FAIL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the log must stay the same length to count as settled.
const QUIET: Duration = Duration::from_secs(2);

/// The app in a kittest harness. Fields drop in order: the app (and so the backend) first.
struct Gui {
    h: Harness<'static, EventscopeApp>,
    _dir: tempfile::TempDir,
    _lock: MutexGuard<'static, ()>,
}

impl Gui {
    /// A live app on the embedded stack, connected.
    fn start(prefs: Prefs) -> Gui {
        Self::start_on(None, prefs)
    }

    /// A live app on `brokers` (None: the embedded stack) in its default mode, connected.
    fn start_on(brokers: Option<&str>, prefs: Prefs) -> Gui {
        let lock = GUI_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = Connection {
            data_dir: Some(dir.path().to_path_buf()),
            brokers: brokers.map(str::to_owned),
            ..Connection::default()
        };
        // The backend's repaint requests go to this context; the test steps frames itself.
        let ctx = egui::Context::default();
        let app = EventscopeApp::live(conn, &ctx, prefs).expect("the backend thread starts");
        let h = Harness::builder()
            .with_size([1600.0, 1000.0])
            .build_ui_state(|ui, app: &mut EventscopeApp| app.frame_ui(ui), app);
        let mut gui = Gui {
            h,
            _dir: dir,
            _lock: lock,
        };
        gui.wait_for(
            "the broker (and, on the embedded stack, SQLite and the demo) to connect",
            CONNECT_TIMEOUT,
            |g| matches!(g.app().status, ConnectionStatus::Connected { .. }),
        );
        gui
    }

    fn app(&self) -> &EventscopeApp {
        self.h.state()
    }

    /// Step frames (with real sleeps between them) until `cond` holds; panic after `timeout`.
    fn wait_for(&mut self, what: &str, timeout: Duration, mut cond: impl FnMut(&Gui) -> bool) {
        let start = Instant::now();
        loop {
            self.h.run_steps(1);
            if cond(self) {
                return;
            }
            if start.elapsed() > timeout {
                let app = self.app();
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n  status: {:?}\n  \
                     records: {}\n  anomalies: {:?}\n  notices: {:?}",
                    app.status,
                    app.model.log().len(),
                    app.model.anomaly_counts(),
                    app.notices.iter().map(|(n, _)| n).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until `cond` holds and then the log stops growing for a while (the demo is idle),
    /// so that rows and lists no longer move under the pointer.
    fn wait_settled(&mut self, what: &str, mut cond: impl FnMut(&Gui) -> bool) {
        self.wait_for(what, TIMEOUT, &mut cond);
        let mut len = self.app().model.log().len();
        let mut since = Instant::now();
        self.wait_for("the log to stop growing", TIMEOUT, |g| {
            let now = g.app().model.log().len();
            if now != len {
                len = now;
                since = Instant::now();
            }
            // The status bar says "ingesting N more" while records wait for the model.
            since.elapsed() >= QUIET && g.h.query_by_label_contains("ingesting").is_none()
        });
    }

    /// Scroll a widget into view, then click it (a pointer click at its centre).
    fn click(&mut self, role: Role, label: &str) {
        self.h.get_by_role_and_label(role, label).scroll_to_me();
        self.h.run_steps(2);
        self.h.get_by_role_and_label(role, label).click();
        // One frame per queued event (the click lands in the last); one more to show its effect
        // (intents are applied at the end of a frame, new windows appear in the next).
        self.h.run_steps(2);
    }

    /// Bring a widget of the left panel (failure injection, lints, anomaly list) into view.
    /// `scroll_to_me` only scrolls the innermost scroll area (the anomaly list), so the panel
    /// itself is scrolled like a user does: the mouse wheel over the fault list.
    fn scroll_left_panel_to(&mut self, role: Role, label: &str) {
        self.h.get_by_role_and_label(role, label).scroll_to_me();
        self.h.run_steps(2);
        // The panel's content starts below the top bar; the bottom panel (its tab row at the
        // top) covers everything below it.
        let top = self
            .h
            .get_by_role_and_label(Role::Button, "Place order")
            .rect()
            .max
            .y;
        let bottom = self.h.get_by_label("Chain graph").rect().min.y - 8.0;
        let over = egui::pos2(100.0, top + 40.0);
        for _ in 0..200 {
            let rect = self.h.get_by_role_and_label(role, label).rect();
            let dy = if rect.max.y > bottom {
                -40.0
            } else if rect.min.y < top + 20.0 {
                40.0
            } else {
                return;
            };
            self.h.event(egui::Event::PointerMoved(over));
            self.h.event(egui::Event::MouseWheel {
                unit: egui::MouseWheelUnit::Point,
                delta: egui::vec2(0.0, dy),
                phase: egui::TouchPhase::Move,
                modifiers: egui::Modifiers::NONE,
            });
            self.h.run_steps(2);
        }
        panic!("could not scroll '{label}' into view");
    }

    /// Set the drag value that sits in the same row as the fault checkbox `fault`
    /// (what a screen reader's "set value" does; the value stays off until the box is ticked).
    fn set_fault_value(&mut self, fault: Fault, value: f64) {
        // The failure-injection panel comes before the lints (`schema-drift` is both a fault
        // and a lint): its checkbox is the first.
        let checkbox = self
            .h
            .query_all_by_role_and_label(Role::CheckBox, fault.name())
            .next()
            .unwrap_or_else(|| panic!("no checkbox {}", fault.name()));
        let row = checkbox.parent().expect("the fault checkbox sits in a row");
        let spin = row
            .children()
            .find(|n| n.accesskit_node().role() == Role::SpinButton)
            .unwrap_or_else(|| panic!("no drag value next to {}", fault.name()));
        let (target_node, target_tree) = spin.accesskit_node().locate();
        self.h
            .event(egui::Event::AccessKitActionRequest(ActionRequest {
                action: Action::SetValue,
                target_node,
                target_tree,
                data: Some(ActionData::NumericValue(value)),
            }));
        self.h.run_steps(1);
        assert_eq!(
            self.app().fault_values.get(&fault).copied(),
            Some(value),
            "the {} drag value did not take {value}",
            fault.name()
        );
    }

    /// Tick a fault's checkbox and wait until the backend reports it on.
    fn turn_on(&mut self, fault: Fault) {
        let first = |g: &Gui| {
            g.h.query_all_by_role_and_label(Role::CheckBox, fault.name())
                .next()
                .unwrap_or_else(|| panic!("no checkbox {}", fault.name()))
                .accesskit_node()
                .id()
        };
        let id = first(self);
        self.h.get_by(move |n| n.id() == id).scroll_to_me();
        self.h.run_steps(2);
        // As a screen reader ticks it: the panel's scroll clip does not matter.
        let id = first(self);
        self.h.get_by(move |n| n.id() == id).click_accesskit();
        self.h.run_steps(2);
        self.wait_for(&format!("{} to be on", fault.name()), TIMEOUT, |g| {
            g.app().faults.iter().any(|s| s.fault == fault && s.enabled)
        });
    }

    /// Log indices of records of type `event_type`.
    fn indices_of(&self, event_type: &str) -> Vec<LogIndex> {
        let log = self.app().model.log();
        (0..log.len())
            .filter_map(|i| LogIndex::try_from(i).ok())
            .filter(|&i| {
                log.meta(i)
                    .and_then(|m| log.resolve_opt(m.event_type))
                    .is_some_and(|t| t == event_type)
            })
            .collect()
    }

    fn has_type(&self, event_type: &str) -> bool {
        !self.indices_of(event_type).is_empty()
    }

    /// Text of the first label whose text contains `needle`.
    fn label_containing(&self, needle: &str) -> Option<String> {
        self.h
            .query_all_by_label_contains(needle)
            .find(|n| n.accesskit_node().role() == Role::Label)
            .and_then(|n| n.value())
    }

    /// The aggregate inspector's "N events applied; ..." line and its state JSON.
    fn aggregate_shown(&self) -> (String, String) {
        (
            self.label_containing("events applied;")
                .expect("the aggregate inspector shows how many events it applied"),
            // Only the Order state has this key (payloads do not): the "State" block.
            self.label_containing("\"cancel_reason\"")
                .expect("the aggregate inspector shows the order state"),
        )
    }
}

fn prefs_with_tab(tab: BottomTab) -> Prefs {
    Prefs {
        bottom_tab: tab,
        ..Prefs::default()
    }
}

#[test]
fn place_order_fills_the_event_table() {
    let mut g = Gui::start(Prefs::default());
    assert_eq!(g.app().model.log().len(), 0, "no order placed yet");
    assert!(g.h.query_by_label("OrderCreated").is_none());

    g.click(Role::Button, "Place order");
    g.wait_for("an OrderCreated row in the event table", TIMEOUT, |g| {
        !g.app().model.log().is_empty()
            && g.h
                .query_all_by_label("OrderCreated")
                .any(|n| n.accesskit_node().role() == Role::Label)
    });
    let n = g.app().model.log().len();
    assert!(n > 0);
    assert!(g.has_type("OrderCreated"));
    let count = format!("{n} of {n} records");
    assert!(
        g.h.query_by_label(&count).is_some(),
        "the table says '{count}'"
    );
}

#[test]
fn duplicate_effect_is_listed_and_selects_its_record() {
    let mut g = Gui::start(Prefs::default());
    g.turn_on(Fault::NoIdempotency);
    g.set_fault_value(Fault::DuplicatePublish, 0.9);
    g.turn_on(Fault::DuplicatePublish);
    let dp = g
        .app()
        .faults
        .iter()
        .find(|s| s.fault == Fault::DuplicatePublish)
        .map(|s| s.value);
    assert_eq!(dp, Some(0.9), "duplicate-publish runs at the value set");

    for _ in 0..5 {
        g.click(Role::Button, "Place order");
    }
    g.wait_settled("a duplicate-effect anomaly in the lints panel", |g| {
        g.app()
            .model
            .anomaly_counts()
            .get(&AnomalyKind::DuplicateEffect)
            .is_some_and(|&n| n > 0)
            && g.h
                .query_all_by_label_contains("duplicate-effect  ")
                .any(|n| n.accesskit_node().role() == Role::Button)
    });

    // The entry as listed, and the anomaly it stands for.
    let entry =
        g.h.query_all_by_label_contains("duplicate-effect  ")
            .find(|n| n.accesskit_node().role() == Role::Button)
            .and_then(|n| n.accesskit_node().label())
            .expect("a duplicate-effect entry");
    let anomaly = g
        .app()
        .model
        .anomalies()
        .iter()
        .find(|a| {
            a.kind == AnomalyKind::DuplicateEffect
                && entry.contains(&format!("{}[{}]@{}", a.topic, a.partition, a.offset))
                && entry.contains(&a.detail)
        })
        .cloned()
        .unwrap_or_else(|| panic!("no anomaly matches the entry '{entry}'"));
    let idx = anomaly.log_indices[0];
    assert_ne!(g.app().selected, Some(idx));

    g.scroll_left_panel_to(Role::Button, &entry);
    // As a screen reader clicks it: the entry sits in the anomaly list's own
    // scroll area, whose clip the pointer simulation does not account for.
    g.h.get_by_role_and_label(Role::Button, &entry)
        .click_accesskit();
    g.h.run_steps(1);
    assert_eq!(
        g.app().selected,
        Some(idx),
        "the anomaly's record is selected"
    );
    assert_eq!(g.app().cursor.pos(), Some(idx), "the cursor moved there");
    assert!(
        !g.app().follow_live,
        "jumping to an anomaly stops following"
    );
    g.h.run_steps(2);
    assert!(
        g.label_containing(&format!("duplicate-effect: {}", anomaly.detail))
            .is_some(),
        "the record inspector names the anomaly"
    );
}

/// A drift run (`no-schema-check`, `schema-drift`): the Schemas tab lists OrderCreated's
/// versions, v1 as written by default and v3 as the drifting producer writes it, with the
/// breaking diff between them; clicking its drift finding selects that record. The record
/// inspector names each record's contract, and time travel reads v1 through the upcaster.
#[test]
fn schemas_tab_lists_the_versions_and_its_drift_finding_selects_the_record() {
    let mut g = Gui::start(prefs_with_tab(BottomTab::Schemas));
    g.turn_on(Fault::NoSchemaCheck);
    g.set_fault_value(Fault::SchemaDrift, 0.5);
    g.turn_on(Fault::SchemaDrift);
    for _ in 0..8 {
        g.click(Role::Button, "Place order");
    }
    g.wait_settled("a schema-drift anomaly", |g| {
        g.app()
            .model
            .anomaly_counts()
            .get(&AnomalyKind::SchemaDrift)
            .is_some_and(|&n| n > 0)
    });
    g.h.run_steps(3);
    let entry = g
        .label_containing("OrderCreated  2 versions")
        .or_else(|| {
            g.h.query_all_by_label_contains("OrderCreated  2 versions")
                .find_map(|n| n.accesskit_node().label())
        })
        .expect("the Schemas tab lists OrderCreated with two versions");
    assert!(entry.contains("records"), "{entry}");
    for v in ["v1", "v3"] {
        assert!(
            g.h.query_all_by_label(v).next().is_some(),
            "the versions table lists {v}"
        );
    }
    // The diff from v1 to v3 marks the renamed field as breaking.
    assert!(
        g.h.query_by_label_contains("removed (array)").is_some(),
        "the diff names the removed items field"
    );
    assert!(g.h.query_all_by_label("breaking").next().is_some());

    // The drift finding, as listed in the tab, and the anomaly it stands for.
    let drift =
        g.h.query_all_by_label_contains("drift at ")
            .find(|n| n.accesskit_node().role() == Role::Button)
            .and_then(|n| n.accesskit_node().label())
            .expect("the Schemas tab lists the drift finding");
    let anomaly = g
        .app()
        .model
        .anomalies()
        .iter()
        .find(|a| {
            a.kind == AnomalyKind::SchemaDrift
                && drift.contains(&format!("{}[{}]@{}", a.topic, a.partition, a.offset))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no anomaly matches '{drift}'"));
    assert!(anomaly.detail.contains("items"), "{}", anomaly.detail);
    let idx = anomaly.log_indices[0];
    assert_ne!(g.app().selected, Some(idx));
    g.h.get_by_role_and_label(Role::Button, &drift)
        .click_accesskit();
    g.h.run_steps(2);
    assert_eq!(
        g.app().selected,
        Some(idx),
        "the drift's record is selected"
    );
    assert_eq!(g.app().cursor.pos(), Some(idx), "the cursor moved there");
    g.h.run_steps(2);
    let line = g
        .label_containing("schema: OrderCreated v3")
        .expect("the inspector names the record's contract");
    assert!(
        line.contains("not registered (registered: v1, v2)"),
        "{line}"
    );

    // A v1 OrderCreated, at the cursor: the aggregate view reads it through the upcaster.
    let v1 = g
        .indices_of("OrderCreated")
        .into_iter()
        .find(|&i| {
            g.app()
                .model
                .log()
                .event(i)
                .and_then(|e| e.dataschema)
                .is_some_and(|d| d.ends_with("/OrderCreated/v1.json"))
        })
        .expect("an OrderCreated written as v1");
    g.h.state_mut().push(Intent::Select {
        index: v1,
        move_cursor: true,
    });
    g.h.run_steps(3);
    assert!(
        g.label_containing("schema: OrderCreated v1 (payload matches its contract)")
            .is_some(),
        "the inspector says the v1 record keeps its contract"
    );
    let applied = g
        .label_containing("last applied: OrderCreated")
        .expect("the aggregate view names the last applied event");
    assert!(applied.contains("read as v2 (upcast from v1)"), "{applied}");
}

/// The Flow tab draws the services and topics of a run; clicking an edge filters the table to
/// that edge's records (a publish edge: that service's records on that topic; a consume edge:
/// the consumer's records caused by records on that topic).
#[test]
fn flow_tab_draws_the_run_and_an_edge_filters_the_table() {
    let mut g = Gui::start(prefs_with_tab(BottomTab::Flow));
    for _ in 0..3 {
        g.click(Role::Button, "Place order");
    }
    g.wait_settled("three completed orders", |g| {
        g.indices_of("OrderCompleted").len() >= 3
    });
    g.h.run_steps(3);
    for label in [
        "service /eventscope-demo/order-service",
        "topic orders",
        "topic payments.commands",
        "edge /eventscope-demo/order-service -> orders",
    ] {
        assert!(
            g.h.query_all_by_label(label).next().is_some(),
            "the flow map shows {label}"
        );
    }
    let total = g.app().visible_rows().len();
    g.h.get_by_label("edge /eventscope-demo/order-service -> orders")
        .click_accesskit();
    g.h.run_steps(3);
    let log_rows: Vec<LogIndex> = {
        let rows = g.app().visible_rows();
        (0..rows.len()).filter_map(|i| rows.get(i)).collect()
    };
    assert!(
        !log_rows.is_empty() && log_rows.len() < total,
        "{} of {total}",
        log_rows.len()
    );
    let log = g.app().model.log();
    for &i in &log_rows {
        let row = log.row(i).unwrap();
        assert_eq!(log.resolve(row.topic), "orders");
        let source = log.meta(i).and_then(|m| log.resolve_opt(m.source));
        assert_eq!(source, Some("/eventscope-demo/order-service"));
    }

    // A consume edge: the consumer's records whose cause sat on the topic.
    let consumed =
        g.h.query_all_by_label_contains("(consumed)")
            .find_map(|n| n.accesskit_node().label())
            .expect("a consume edge");
    let from = consumed
        .strip_prefix("edge ")
        .and_then(|s| s.split(" -> ").next())
        .unwrap()
        .to_owned();
    g.h.get_by_label(&consumed).click_accesskit();
    g.h.run_steps(3);
    let rows = g.app().visible_rows();
    assert!(!rows.is_empty(), "{consumed} has records");
    let log = g.app().model.log();
    for i in (0..rows.len()).filter_map(|i| rows.get(i)) {
        let cause = log.meta(i).and_then(|m| m.causation_id).unwrap();
        let first = log.deliveries_of(cause)[0];
        assert_eq!(
            log.resolve(log.row(first).unwrap().topic),
            from,
            "{consumed}"
        );
    }
}

/// The demo's consumer groups are sampled without joining them and judged; a healthy run
/// shows every group OK in the Consumer groups tab.
#[test]
fn consumer_groups_tab_shows_the_demos_groups_ok() {
    let mut g = Gui::start(prefs_with_tab(BottomTab::Groups));
    g.click(Role::Button, "Place order");
    g.wait_settled("a completed order", |g| g.has_type("OrderCompleted"));
    g.wait_for("every group sampled and caught up", TIMEOUT, |g| {
        let lags = &g.app().group_lags;
        lags.len() >= 5
            && lags
                .iter()
                .all(|l| l.verdict == eventscope::model::groups::Verdict::Ok && l.lag == 0)
    });
    g.h.run_steps(2);
    assert!(
        g.label_containing("saga-orchestrator OK").is_some(),
        "the tab names the orchestrator's group and its verdict"
    );
    assert_eq!(
        g.app().model.anomaly_counts()[&AnomalyKind::ConsumerStall],
        0
    );
}

#[test]
fn stepping_changes_the_aggregate_inspector() {
    let mut g = Gui::start(Prefs::default());
    g.click(Role::Button, "Place order");
    g.wait_settled("the order to complete", |g| g.has_type("OrderCompleted"));

    // Select the order's first event in the table.
    let created = g.indices_of("OrderCreated");
    assert_eq!(created.len(), 1, "one order placed");
    let created = created[0];
    g.click(Role::Label, "OrderCreated");
    assert_eq!(
        g.app().selected,
        Some(created),
        "clicking the row selects it"
    );

    // Step back to it.
    let len = g.app().model.log().len();
    for _ in 0..len {
        if g.app().cursor.pos() == Some(created) {
            break;
        }
        g.click(Role::Button, "< Step");
    }
    assert_eq!(
        g.app().cursor.pos(),
        Some(created),
        "stepped back to OrderCreated"
    );
    let at_created = g.aggregate_shown();
    assert!(
        at_created.0.starts_with("1 events applied"),
        "{at_created:?}"
    );
    assert!(at_created.1.contains("\"pending\""), "{at_created:?}");

    // Step forward with the Right key until the inspector changes.
    let mut steps = 0;
    while g.aggregate_shown() == at_created {
        assert!(
            steps < len,
            "stepping forward never changed the aggregate inspector"
        );
        g.h.key_press(egui::Key::ArrowRight);
        g.h.run_steps(1);
        steps += 1;
    }
    let later = g.app().cursor.pos().expect("a cursor");
    assert_eq!(
        later,
        created + steps as LogIndex,
        "one record per key press"
    );
    let shown_later = g.aggregate_shown();
    assert_ne!(shown_later.1, at_created.1, "the shown state changed");

    // The model agrees: the state at the two cursor positions differs.
    let agg = {
        let log = g.app().model.log();
        log.meta(created)
            .and_then(|m| log.resolve_opt(m.aggregate_id))
            .expect("OrderCreated names its order")
            .to_owned()
    };
    let app = g.h.state_mut();
    let fold = fold_for(app.model.log(), &agg);
    let s1 = app.model.state_at(fold, &agg, created).expect("state");
    let s2 = app.model.state_at(fold, &agg, later).expect("state");
    assert_ne!(s1.state, s2.state);
    assert_eq!(s1.applied + 1, s2.applied);

    // And back with the button: the inspector shows the first state again.
    for _ in 0..steps {
        g.click(Role::Button, "< Step");
    }
    assert_eq!(g.app().cursor.pos(), Some(created));
    assert_eq!(g.aggregate_shown(), at_created);

    // Forward again with the other button: the later state again.
    for _ in 0..steps {
        g.click(Role::Button, "Step >");
    }
    assert_eq!(g.app().cursor.pos(), Some(later));
    assert_eq!(g.aggregate_shown(), shown_later);
}

#[test]
fn chain_graph_of_a_compensated_order_holds_its_compensations() {
    let mut g = Gui::start(prefs_with_tab(BottomTab::Sagas));
    g.set_fault_value(Fault::PaymentDecline, 1.0);
    g.turn_on(Fault::PaymentDecline);
    g.click(Role::Button, "Place order");
    g.wait_settled("the order to be declined and cancelled", |g| {
        g.has_type("PaymentDeclined") && g.has_type("OrderCancelled")
    });

    let declined = g.indices_of("PaymentDeclined")[0];
    g.click(Role::Label, "PaymentDeclined");
    assert_eq!(
        g.app().selected,
        Some(declined),
        "clicking the row selects it"
    );

    g.click(Role::Button, "Chain graph");
    assert_eq!(g.app().prefs.bottom_tab, BottomTab::Chain);
    g.h.run_steps(3);

    let chain = g.app().chain_graph().clone();
    let log = g.app().model.log();
    let corr = log
        .meta(declined)
        .and_then(|m| m.correlation_id)
        .expect("PaymentDeclined has a correlation id");
    for n in &chain.nodes {
        assert_eq!(
            log.meta(n.index).and_then(|m| m.correlation_id),
            Some(corr),
            "{} is not of the chain",
            n.event_type
        );
    }
    let compensations: Vec<&str> = chain
        .nodes
        .iter()
        .filter(|n| n.compensation)
        .map(|n| n.event_type.as_str())
        .collect();
    for t in ["PaymentDeclined", "OrderCancelled"] {
        assert!(
            compensations.contains(&t),
            "{t} is not flagged compensation: {compensations:?} of {:?}",
            chain
                .nodes
                .iter()
                .map(|n| &n.event_type)
                .collect::<Vec<_>>()
        );
    }
    assert!(chain
        .nodes
        .iter()
        .any(|n| !n.compensation && n.event_type == "OrderCreated"));
    assert!(!chain.edges.is_empty(), "causation links the chain");
    let header = format!("{} events up to the cursor", chain.nodes.len());
    assert!(
        g.label_containing(&header).is_some(),
        "the graph tab says '{header}'"
    );
}

#[test]
fn bad_broker_address_shows_the_failure() {
    let mut g = Gui::start(Prefs::default());
    g.click(Role::Button, "Connect...");
    g.click(Role::TextInput, "Brokers");
    g.h.get_by_role_and_label(Role::TextInput, "Brokers")
        .type_text("127.0.0.1:1");
    g.h.run_steps(1);
    assert_eq!(
        g.h.get_by_role_and_label(Role::TextInput, "Brokers")
            .value()
            .as_deref(),
        Some("127.0.0.1:1")
    );

    g.click(Role::Button, "Connect");
    // Shown means: the status is Failed and its reason is a label on screen (the top bar; the
    // dialog repeats it).
    g.wait_for("the failure to be shown", FAIL_TIMEOUT, |g| {
        let ConnectionStatus::Failed { reason } = &g.app().status else {
            return false;
        };
        g.h.query_all_by_label(reason)
            .any(|n| n.accesskit_node().role() == Role::Label)
    });
    let ConnectionStatus::Failed { reason } = g.app().status.clone() else {
        unreachable!("waited for Failed")
    };
    assert!(
        reason.contains("127.0.0.1:1"),
        "the reason names the broker: {reason}"
    );
    assert!(
        g.label_containing(&format!("connection failed: {reason}"))
            .is_some(),
        "the status bar has the notice"
    );
}

#[test]
fn the_inspector_shows_the_trace_id_and_filters_the_table_to_its_trace() {
    let mut g = Gui::start(Prefs::default());
    g.click(Role::Button, "Place order");
    g.click(Role::Button, "Place order");
    g.wait_settled("both orders to complete", |g| {
        g.indices_of("OrderCompleted").len() == 2
    });
    let created = g.indices_of("OrderCreated")[0];
    let (trace, in_trace, total) = {
        let log = g.app().model.log();
        let trace = log
            .meta(created)
            .and_then(|m| log.resolve_opt(m.trace_id))
            .expect("the demo's records carry trace context")
            .to_owned();
        let n = log.trace(&trace).len();
        (trace, n, log.len())
    };
    assert!(
        in_trace > 1 && in_trace < total,
        "one order's trace: {in_trace} of {total}"
    );
    g.h.state_mut().selected = Some(created);
    g.h.run_steps(2);
    assert!(
        g.h.query_all_by_label(&trace)
            .any(|n| n.accesskit_node().role() == Role::Label),
        "the inspector shows the trace id"
    );
    let link = format!("http://localhost:16686/trace/{trace}");
    // "open" opens the trace in the tracing UI (the default link template: Jaeger).
    g.h.get_by_label("open").click();
    g.h.run_steps(1);
    assert!(
        g.h.output()
            .platform_output
            .commands
            .iter()
            .any(|c| matches!(
                c,
                egui::OutputCommand::OpenUrl(u) if u.url == link
            )),
        "open goes to {link}: {:?}",
        g.h.output().platform_output.commands
    );
    assert_eq!(
        g.h.get_by_role_and_label(Role::TextInput, "trace link")
            .value()
            .as_deref(),
        Some("http://localhost:16686/trace/{trace_id}"),
        "the link template is editable"
    );

    g.h.get_by_role_and_label(Role::Button, "copy link")
        .scroll_to_me();
    g.h.run_steps(2);
    g.h.get_by_role_and_label(Role::Button, "copy link").click();
    g.h.run_steps(1);
    assert!(
        g.h.output()
            .platform_output
            .commands
            .contains(&egui::OutputCommand::CopyText(link)),
        "copy link puts the trace's link on the clipboard"
    );

    g.click(Role::Button, "Filter the table to this trace");
    assert_eq!(g.app().filter.trace, trace);
    g.h.run_steps(2);
    let shown = format!("{in_trace} of {total} records");
    assert!(
        g.h.query_by_label(&shown).is_some(),
        "the table says '{shown}'"
    );
}

/// A foreign recording: a transfer chain that never completes (no command topics), then a
/// completed one much later. Binary-mode CloudEvents.
fn foreign_recording() -> eventscope::model::Model {
    use eventscope::model::record::Record;
    let rec = |offset: i64, id: &str, ty: &str, corr: &str, ts: i64| {
        Record::new("bank.transfers", 0, offset)
            .with_key(corr)
            .with_timestamp(ts)
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", id)
            .with_header("ce_type", ty)
            .with_header("ce_source", "/bank")
            .with_header("ce_correlationid", corr)
            .with_header("content-type", "application/json")
            .with_value(br#"{"iban":"DE00 1234","amount":5}"#.to_vec())
    };
    let t0 = 1_790_000_000_000;
    let mut m = eventscope::model::Model::default();
    for r in [
        rec(0, "b-1", "TransferInitiated", "corr-b", t0),
        rec(1, "a-1", "TransferInitiated", "corr-a", t0 + 600_000),
        rec(2, "a-2", "TransferCompleted", "corr-a", t0 + 600_100),
    ] {
        m.ingest(&r, r.timestamp_ms.unwrap()).unwrap();
    }
    m.end_of_backlog(t0 + 600_100);
    m
}

/// The profile dialog shows the effective profile; applying one re-reads the records with
/// it (a flow ending with TransferCompleted makes the idle transfer stuck) and remembers it
/// for this connection; a profile that does not parse is refused with its reason.
#[test]
fn the_profile_dialog_applies_and_remembers_a_profile() {
    let _lock = GUI_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let mut app =
        EventscopeApp::offline(foreign_recording(), "bank.jsonl".into(), Prefs::default());
    app.connection_key = "bank.jsonl".into();
    let mut h = Harness::builder()
        .with_size([1600.0, 1000.0])
        .build_ui_state(|ui, app: &mut EventscopeApp| app.frame_ui(ui), app);
    h.run_steps(2);
    assert_eq!(h.state().model.anomaly_counts()[&AnomalyKind::StuckSaga], 0);

    h.get_by_role_and_label(Role::Button, "Profile...").click();
    h.run_steps(3);
    let text = h
        .get_by_role_and_label(Role::MultilineTextInput, "Profile (TOML)")
        .value()
        .unwrap_or_default();
    assert!(text.contains("command_topics = [\"*.commands\"]"), "{text}");

    h.state_mut().push(eventscope::gui::Intent::ApplyProfile(
        "stuck_saga_timeout_ms = 1000\npii_fields = [\"amount\"]\n[[flows]]\nname = \"transfer\"\nstart_types = [\"TransferInitiated\"]\nterminal_types = [\"TransferCompleted\"]\n".into(),
    ));
    h.run_steps(3);
    let app = h.state();
    assert_eq!(app.model.anomaly_counts()[&AnomalyKind::StuckSaga], 1);
    assert_eq!(app.model.log().len(), 3);
    assert_eq!(app.pii_fields, vec!["amount".to_owned()]);
    assert!(app.prefs.profiles["bank.jsonl"].contains("TransferCompleted"));
    assert!(
        h.query_by_label("Profile (TOML)").is_none(),
        "the dialog closes once applied"
    );

    h.get_by_role_and_label(Role::Button, "Profile...").click();
    h.run_steps(3);
    h.state_mut()
        .push(eventscope::gui::Intent::ApplyProfile("nonsense = 1".into()));
    h.run_steps(3);
    assert!(
        h.query_all_by_label_contains("unknown field").count() >= 1,
        "the reason is shown"
    );
    assert_eq!(h.state().model.anomaly_counts()[&AnomalyKind::StuckSaga], 1);
}

/// A window fed by the test instead of a backend: the harness, where to send the backend's
/// updates, and the backend's other ends (kept alive while the window runs).
fn fed_window() -> (
    Harness<'static, EventscopeApp>,
    tokio::sync::mpsc::Sender<eventscope::backend::Update>,
    Box<dyn std::any::Any>,
) {
    use eventscope::backend::BackendHandle;
    let (commands_tx, commands_rx) = tokio::sync::mpsc::unbounded_channel();
    let (updates_tx, updates_rx) = tokio::sync::mpsc::channel(16);
    let (status_tx, status_rx) = tokio::sync::watch::channel(ConnectionStatus::Connected {
        broker: "test".into(),
        embedded: false,
        demo: false,
        database: "-".into(),
        following: 1,
    });
    let handle = BackendHandle {
        commands_tx,
        updates_rx,
        status_rx,
        dropped: Default::default(),
    };
    let app = EventscopeApp::with_backend(handle, Prefs::default());
    let h = Harness::builder()
        .with_size([1600.0, 1000.0])
        .build_ui_state(|ui, app: &mut EventscopeApp| app.frame_ui(ui), app);
    (h, updates_tx, Box::new((commands_rx, status_tx)))
}

/// The window gives "never seen" verdicts once the backlog that existed at connect time is in
/// the model (the backend marks its end in the update stream): a causation id that points
/// nowhere is a broken-chain at once; one in the live tail waits for the 10 s grace.
#[test]
fn a_dangling_cause_in_the_backlog_is_reported_once_the_backlog_is_read() {
    use eventscope::backend::Update;
    use eventscope::model::record::Record;
    let _lock = GUI_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut h, updates_tx, _backend) = fed_window();
    let now = chrono::Utc::now().timestamp_millis();
    let rec = |offset: i64, id: &str, cause: &str| {
        Record::new("bank.payments", 0, offset)
            .with_key("acct-3")
            .with_timestamp(now - 3_600_000)
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", id)
            .with_header("ce_type", "RefundIssued")
            .with_header("ce_source", "/bank")
            .with_header("ce_correlationid", "corr-d")
            .with_header("ce_causationid", cause)
            .with_value(b"{}".to_vec())
    };
    let count = |h: &Harness<'_, EventscopeApp>| {
        h.state().model.anomaly_counts()[&AnomalyKind::BrokenChain]
    };
    updates_tx
        .try_send(Update::Records(vec![rec(0, "d-1", "ghost-0")]))
        .unwrap();
    h.run_steps(3);
    assert_eq!(h.state().model.log().len(), 1);
    assert_eq!(
        count(&h),
        0,
        "the backlog is not read yet: a late cause may come"
    );
    updates_tx
        .try_send(Update::Records(vec![rec(1, "d-2", "d-1")]))
        .unwrap();
    updates_tx
        .try_send(Update::BacklogEnd { as_of_ms: now })
        .unwrap();
    updates_tx
        .try_send(Update::Records(vec![rec(2, "d-3", "ghost-live")]))
        .unwrap();
    h.run_steps(3);
    assert_eq!(h.state().model.log().len(), 3);
    assert_eq!(count(&h), 1, "the backlog's dangling cause, at once");
    let a = h
        .state()
        .model
        .anomalies()
        .iter()
        .find(|a| a.kind == AnomalyKind::BrokenChain)
        .expect("the finding");
    assert_eq!(a.event_id.as_deref(), Some("d-1"));
    assert!(a.detail.contains("ghost-0"), "{}", a.detail);
}

/// Connected to another broker: the records the window had not read yet when the new
/// connection's store came are read back from the broker they came from, those after it from
/// the new one.
#[test]
fn records_of_the_last_connection_are_read_back_from_its_broker() {
    use eventscope::backend::Update;
    use eventscope::model::record::Record;
    use eventscope::model::store::{OffsetRange, RecordStore, RecordStoreHandle};
    let _lock = GUI_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    struct Elsewhere;
    impl RecordStore for Elsewhere {
        fn fetch(&self, _: &[OffsetRange]) -> Result<Vec<Record>, String> {
            Err("not in this test".into())
        }
        fn describe(&self) -> String {
            "the second broker".into()
        }
    }
    let (mut h, updates_tx, _backend) = fed_window();
    let rec = |offset: i64| {
        Record::new("orders", 0, offset)
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", &format!("e-{offset}"))
            .with_header("ce_type", "OrderCreated")
            .with_header("ce_source", "/orders")
            .with_value(b"{}".to_vec())
    };
    let first = h.state().model.config().record_store.clone();
    let second = RecordStoreHandle::new(Elsewhere);
    assert_ne!(first, second);
    // All queued before a frame reads them: the old connection's, the marker, the new one's.
    updates_tx
        .try_send(Update::Records((0..3).map(rec).collect()))
        .unwrap();
    updates_tx
        .try_send(Update::RecordStore(second.clone()))
        .unwrap();
    updates_tx
        .try_send(Update::Records((3..5).map(rec).collect()))
        .unwrap();
    h.run_steps(3);
    let log = h.state().model.log();
    assert_eq!(log.len(), 5);
    for idx in 0..3 {
        assert_eq!(log.record_store_of(idx), Some(&first), "{idx}");
    }
    for idx in 3..5 {
        assert_eq!(log.record_store_of(idx), Some(&second), "{idx}");
    }
    assert_eq!(h.state().model.config().record_store, second);
}

/// `eventscope broker` in a child process, killed on drop.
struct StandaloneBroker {
    child: std::process::Child,
    addr: String,
}

impl StandaloneBroker {
    fn start() -> StandaloneBroker {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eventscope"))
            .args(["broker", "--port", "0", "--partitions", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start eventscope broker");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("bootstrap address");
        StandaloneBroker {
            child,
            addr: line.trim().to_owned(),
        }
    }

    /// Topic names on the broker (metadata for all topics: creates none).
    fn topics(&self) -> Vec<String> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("metadata client");
        let md = c
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("metadata");
        let mut names: Vec<String> = md.topics().iter().map(|t| t.name().to_owned()).collect();
        names.sort();
        names
    }

    /// Write `n` CloudEvents (binary mode) to `topic`, numbered from `first`.
    fn produce(&self, topic: &str, first: usize, n: usize) {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("producer");
        for i in first..first + n {
            let id = format!("shop-{i}");
            let value = format!(r#"{{"customer":"c-{}","amount":{}}}"#, i % 3, 10 * i);
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "ce_specversion",
                    value: Some("1.0"),
                })
                .insert(Header {
                    key: "ce_id",
                    value: Some(id.as_str()),
                })
                .insert(Header {
                    key: "ce_type",
                    value: Some("PurchaseMade"),
                })
                .insert(Header {
                    key: "ce_source",
                    value: Some("/shop"),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                });
            p.send(
                BaseRecord::to(topic)
                    .key(&id)
                    .payload(&value)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .expect("queued");
        }
        p.flush(Duration::from_secs(10)).expect("flushed");
    }
}

impl Drop for StandaloneBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn brokers_opens_observe_only_and_creates_nothing() {
    let broker = StandaloneBroker::start();
    broker.produce("shop.purchases", 0, 6);
    broker.produce("shop.audit", 100, 2);
    let before = broker.topics();
    assert_eq!(before, vec!["shop.audit", "shop.purchases"]);

    let mut g = Gui::start_on(Some(&broker.addr), Prefs::default());
    let ConnectionStatus::Connected { demo, embedded, .. } = g.app().status.clone() else {
        unreachable!("started means connected")
    };
    assert!(!demo && !embedded, "observe only on a user's broker");
    g.wait_for("the foreign records", TIMEOUT, |g| {
        g.app().model.log().len() == 8
            && g.h
                .query_all_by_label("PurchaseMade")
                .any(|n| n.accesskit_node().role() == Role::Label)
    });
    // The failure-injection panel is replaced by the topics; no demo controls.
    assert!(g.h.query_by_label("Failure injection").is_none());
    assert!(g.h.query_by_label("Observed topics").is_some());
    assert!(g.h.query_by_label("Place order").is_none());
    g.wait_for("both topics listed", TIMEOUT, |g| {
        g.h.query_by_role_and_label(Role::CheckBox, "shop.audit")
            .is_some()
            && g.h
                .query_by_role_and_label(Role::CheckBox, "shop.purchases")
                .is_some()
    });
    assert!(
        g.label_containing("observe only: nothing is created or written")
            .is_some(),
        "the status bar says what the session does"
    );
    assert!(
        g.label_containing("5 MiB").is_none(),
        "no embedded-broker retention note on another broker"
    );

    // Unticked, a topic is no longer followed; ticked again, it resumes where it stopped.
    g.click(Role::CheckBox, "shop.audit");
    assert!(g.app().excluded_topics.contains("shop.audit"));
    g.wait_for("shop.audit to be dropped", TIMEOUT, |g| {
        matches!(
            g.app().status,
            ConnectionStatus::Connected { following: 2, .. }
        )
    });
    broker.produce("shop.audit", 102, 3);
    broker.produce("shop.purchases", 6, 1);
    g.wait_for("the new purchase", TIMEOUT, |g| {
        g.app().model.log().len() == 9
    });
    std::thread::sleep(Duration::from_secs(1));
    g.h.run_steps(1);
    assert_eq!(g.app().model.log().len(), 9, "shop.audit is not followed");
    g.click(Role::CheckBox, "shop.audit");
    g.wait_for("the audit records written meanwhile", TIMEOUT, |g| {
        g.app().model.log().len() == 12
    });
    std::thread::sleep(Duration::from_secs(1));
    g.h.run_steps(1);
    let stats = g.app().model.log().stats();
    assert_eq!(
        (stats.observed, stats.duplicate_deliveries),
        (12, 0),
        "each record once"
    );

    let data_dir = g._dir.path().to_path_buf();
    assert_eq!(
        std::fs::read_dir(&data_dir).expect("data dir").count(),
        0,
        "no database file written"
    );
    drop(g);
    assert_eq!(broker.topics(), before, "no topic created on the broker");
}

#[test]
fn query_filter_finds_records_by_payload_and_shows_a_bad_expression() {
    let broker = StandaloneBroker::start();
    // amounts 0, 10, ..., 50; customers c-0, c-1, c-2, c-0, c-1, c-2
    broker.produce("shop.purchases", 0, 6);
    let mut g = Gui::start_on(Some(&broker.addr), Prefs::default());
    g.wait_for("the records", TIMEOUT, |g| g.app().model.log().len() == 6);

    // Typed into the filter bar like a user does.
    g.click(Role::TextInput, "jq");
    g.h.get_by_role_and_label(Role::TextInput, "jq")
        .type_text(".amount > 30");
    g.h.run_steps(1);
    assert_eq!(g.app().filter.query, ".amount > 30");
    g.wait_for("the query's matches", TIMEOUT, |g| {
        g.h.query_by_label("2 of 6 records").is_some()
    });
    g.h.state_mut().filter.query = r#".customer == "c-1" and $key == "shop-4""#.into();
    g.wait_for("a query over payload and key", TIMEOUT, |g| {
        g.h.query_by_label("1 of 6 records").is_some()
    });
    // Combined with the other filters.
    g.h.state_mut().filter.query = r#"$headers.ce_type == "PurchaseMade""#.into();
    g.h.state_mut().filter.topic = "nope".into();
    g.wait_for("no row in another topic", TIMEOUT, |g| {
        g.h.query_by_label("0 of 6 records").is_some()
    });
    g.h.state_mut().filter.topic.clear();
    g.wait_for("every row of the type", TIMEOUT, |g| {
        g.h.query_by_label("6 of 6 records").is_some()
    });

    g.h.state_mut().filter.query = ".amount >".into();
    g.h.run_steps(2);
    let shown = g
        .label_containing("query: expected")
        .expect("the parser's message is shown inline");
    assert!(shown.contains("expected"), "{shown}");
    // New records are tested as they arrive.
    g.h.state_mut().filter.query = ".amount >= 50".into();
    g.wait_for("one match", TIMEOUT, |g| {
        g.h.query_by_label("1 of 6 records").is_some()
    });
    broker.produce("shop.purchases", 6, 2);
    g.wait_for("the new records tested", TIMEOUT, |g| {
        g.h.query_by_label("3 of 8 records").is_some()
    });
}

#[test]
fn run_the_demo_button_runs_it_on_the_observed_broker() {
    let broker = StandaloneBroker::start();
    let mut g = Gui::start_on(Some(&broker.addr), Prefs::default());
    assert!(broker.topics().is_empty(), "observing created nothing");
    assert!(
        g.label_containing("It creates topics orders, payments")
            .is_some(),
        "the button says what it will create"
    );
    g.click(Role::Button, "Run the demo on this broker");
    g.wait_for("the demo to start", CONNECT_TIMEOUT, |g| {
        matches!(
            g.app().status,
            ConnectionStatus::Connected { demo: true, .. }
        )
    });
    // Now the demo's controls replace the topic list.
    g.wait_for("the failure-injection panel", TIMEOUT, |g| {
        g.h.query_by_label("Failure injection").is_some()
    });
    g.click(Role::Button, "Place order");
    g.wait_for("the order's events", TIMEOUT, |g| {
        g.has_type("OrderCreated")
    });
    let topics = broker.topics();
    for t in eventscope_demo::topics::ALL {
        assert!(topics.iter().any(|x| x == t), "{t} created: {topics:?}");
    }
}

#[test]
fn kafka_python_writes_to_the_windows_embedded_broker() {
    assert!(
        std::process::Command::new("python3")
            .args(["-c", "import kafka"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "kafka-python is not installed (python3 -m pip install kafka-python; .ci/test does)"
    );
    let mut g = Gui::start(Prefs::default());
    let ConnectionStatus::Connected { broker, .. } = g.app().status.clone() else {
        unreachable!("started means connected")
    };
    let addr = broker
        .strip_prefix("embedded ")
        .expect("the status names the embedded broker's address")
        .to_owned();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/roundtrip.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args([addr.as_str(), "py.orders", "kafka-python"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka-python on the window's broker: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    g.wait_for("kafka-python's records in the window", TIMEOUT, |g| {
        g.indices_of("OrderPlaced").len() == 20
    });
}

/// The saga switch applies to new orders: a choreographed order runs without commands,
/// and the Sagas tab shows its mode.
#[test]
fn the_saga_switch_choreographs_new_orders_and_the_sagas_tab_shows_it() {
    let mut g = Gui::start(prefs_with_tab(BottomTab::Sagas));
    let id =
        g.h.get_by_role_and_label(Role::RadioButton, "choreography")
            .accesskit_node()
            .id();
    g.h.get_by(move |n| n.id() == id).click_accesskit();
    g.h.run_steps(2);
    assert_eq!(
        g.app().saga_mode,
        eventscope_demo::saga::SagaMode::Choreography
    );
    g.click(Role::Button, "Place order");
    g.wait_settled("the choreographed order to complete", |g| {
        g.has_type("OrderCompleted")
    });
    let log = g.app().model.log();
    for i in 0..log.len() {
        let r = log
            .record(LogIndex::try_from(i).expect("index"))
            .expect("record");
        assert!(!r.topic.ends_with(".commands"), "a command on {}", r.topic);
    }
    assert!(
        g.h.query_all_by_label("choreography")
            .any(|n| n.accesskit_node().role() == Role::Label),
        "the Sagas tab names the mode"
    );
}

/// Under `--memory-limit` the oldest records are dropped: the table lists the held ones, a
/// dropped record selected (from a lint, say) shows as dropped rather than as anything else,
/// and the status bar counts the drop.
#[test]
fn a_record_dropped_under_the_memory_limit_shows_as_dropped() {
    use eventscope::model::record::Record;
    use eventscope::model::{Model, ModelConfig};
    let _lock = GUI_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let mut model = Model::new(ModelConfig {
        memory_limit: Some(1 << 20),
        ..ModelConfig::default()
    });
    for i in 0..20_000i64 {
        let (id, key) = (format!("e-{i}"), format!("order-{}", i % 50));
        let rec = Record::new("orders", 0, i)
            .with_key(key.as_str())
            .with_timestamp(1_000 + i)
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", &id)
            .with_header("ce_type", "OrderNoted")
            .with_header("ce_source", "/notes")
            .with_header("ce_subject", &key)
            .with_value(format!(r#"{{"order_id":"{key}","n":{i}}}"#).into_bytes());
        model.ingest(&rec, 1_000 + i).unwrap();
    }
    let first = model.log().first_held();
    assert!(first > 1_000, "{first}");
    let mut app = EventscopeApp::offline(model, "big.jsonl".into(), Prefs::default());
    app.selected = Some(3);
    let mut h = Harness::builder()
        .with_size([1600.0, 1000.0])
        .build_ui_state(|ui, app: &mut EventscopeApp| app.frame_ui(ui), app);
    h.run_steps(3);
    assert!(
        h.query_all_by_label_contains("record 3 dropped: memory limit")
            .count()
            >= 1,
        "the inspector says the record is dropped"
    );
    assert!(
        h.query_all_by_label_contains(&format!("{first} oldest records dropped"))
            .count()
            >= 1,
        "the status bar counts the drop"
    );
    let caption = format!(
        "{} of 20000 records ({first} oldest dropped: memory limit)",
        20_000 - first
    );
    assert!(h.query_by_label(&caption).is_some(), "{caption}");
    let rows = h.state().visible_rows();
    assert_eq!(rows.get(0), Some(first));
    assert_eq!(rows.len(), 20_000 - first as usize);
}

/// On a user's Kafka the log can keep rows and indexes and leave the payloads to the broker
/// (the index-only mode): the inspector reads a record back from it, the status bar says how
/// many records' payloads live there, and once the broker is gone a record not read before
/// says why it cannot be shown.
/// A record store whose fetches wait until the test opens the gate (then read Kafka).
struct Gated {
    inner: eventscope::kafka::refetch::KafkaRecordStore,
    open: Arc<AtomicBool>,
}

impl eventscope::model::store::RecordStore for Gated {
    fn fetch(
        &self,
        ranges: &[eventscope::model::store::OffsetRange],
    ) -> Result<Vec<eventscope::model::record::Record>, String> {
        let deadline = Instant::now() + TIMEOUT;
        while !self.open.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                return Err("the test never opened the gate".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.inner.fetch(ranges)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Records read from `eventscope broker` into a model whose payloads all live in Kafka
/// (`payload_budget` 0), read back through a [`Gated`] store (closed at first): the broker,
/// the model, each record's partition and offset, and the gate.
#[allow(clippy::type_complexity)]
fn evicted_to_kafka(
    n: usize,
) -> (
    StandaloneBroker,
    eventscope::model::Model,
    std::collections::HashMap<LogIndex, (i32, i64)>,
    Arc<AtomicBool>,
) {
    use eventscope::kafka::refetch::KafkaRecordStore;
    use eventscope::model::store::RecordStoreHandle;
    use eventscope::model::{Model, ModelConfig};
    use rdkafka::Message;
    let broker = StandaloneBroker::start();
    broker.produce("shop.purchases", 0, n);
    let gate = Arc::new(AtomicBool::new(false));
    let store = Gated {
        inner: KafkaRecordStore::new(eventscope_demo::kafka::KafkaSettings::new(
            broker.addr.clone(),
        )),
        open: gate.clone(),
    };
    let mut model = Model::new(ModelConfig {
        record_store: RecordStoreHandle::new(store),
        payload_budget: Some(0),
        ..ModelConfig::default()
    });
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "gui-index-only")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    c.subscribe(&["shop.purchases"]).expect("subscribed");
    let deadline = Instant::now() + TIMEOUT;
    let mut at = std::collections::HashMap::new();
    while model.log().len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let rec = eventscope::kafka::tap::to_record(&m);
            let (idx, _) = model.ingest(&rec, 0).expect("ingested");
            at.insert(idx, (m.partition(), m.offset()));
        }
    }
    drop(c);
    (broker, model, at, gate)
}

/// Run frames (20 ms apart) until `done` holds or [`TIMEOUT`] passes; the caller asserts.
fn frames_until(
    h: &mut Harness<'_, EventscopeApp>,
    done: impl Fn(&Harness<'_, EventscopeApp>) -> bool,
) {
    let deadline = Instant::now() + TIMEOUT;
    while !done(h) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        h.run_steps(1);
    }
}

/// The window's "exported …" notice, once there is one.
fn export_notice(h: &Harness<'_, EventscopeApp>) -> Option<String> {
    h.state()
        .notices
        .iter()
        .find(|(n, _)| n.starts_with("exported "))
        .map(|(n, _)| n.clone())
}

#[test]
fn a_record_whose_payload_lives_in_kafka_is_read_back_in_the_inspector() {
    let _lock = GUI_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    const N: usize = 10_000;
    let (mut broker, model, at, gate) = evicted_to_kafka(N);
    let in_kafka = model.log().drop_stats().payloads_in_store;
    assert!(in_kafka > N as u64 * 9 / 10, "{in_kafka}");
    let mut app = EventscopeApp::offline(model, "shop".into(), Prefs::default());
    app.selected = Some(5);
    let mut h = Harness::builder()
        .with_size([1600.0, 1000.0])
        .build_ui_state(|ui, app: &mut EventscopeApp| app.frame_ui(ui), app);
    // The frame asks a thread of its own for the bytes and says so; frames go on while the
    // broker has not answered (the gate holds the fetch), and show the record once it has.
    h.run_steps(3);
    assert!(
        h.query_all_by_label_contains("reading record 5 back from Kafka")
            .count()
            >= 1,
        "the frame does not wait for the broker"
    );
    gate.store(true, Ordering::SeqCst);
    let (p, o) = at[&5];
    let shown = format!("shop.purchases / {p} / {o}");
    frames_until(&mut h, |h| h.query_by_label(&shown).is_some());
    assert!(
        h.query_by_label(&shown).is_some(),
        "the inspector shows record 5, read back from Kafka"
    );
    assert!(
        h.query_by_label("read back from Kafka by topic / partition / offset (memory limit)")
            .is_some(),
        "and says where its bytes came from"
    );
    assert!(
        h.query_all_by_label_contains(&format!(
            "payloads of {in_kafka} records read from Kafka on demand"
        ))
        .count()
            >= 1,
        "the status bar says where the payloads are"
    );
    let read = h.state().model.log().record(5).expect("read back");
    assert_eq!((read.partition, read.offset), (p, o));
    let id = read.header("ce_id").expect("ce_id").to_vec();
    assert!(id.starts_with(b"shop-"), "{id:?}");
    // The broker goes away: a record far from those read (not cached) cannot be shown.
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    gate.store(false, Ordering::SeqCst);
    h.state_mut().selected = Some(9_000);
    h.run_steps(3);
    assert!(
        h.query_all_by_label_contains("reading record 9000 back from Kafka")
            .count()
            >= 1,
        "an unreachable broker does not hold up the frame either"
    );
    gate.store(true, Ordering::SeqCst);
    let why = "record 9000: its bytes were evicted to Kafka";
    frames_until(&mut h, |h| h.query_all_by_label_contains(why).count() > 0);
    assert!(
        h.query_all_by_label_contains("record 9000: its bytes were evicted to Kafka")
            .count()
            >= 1,
        "the inspector says why the record cannot be shown"
    );
    // Saving the session now: the records whose bytes cannot be read back are left out of
    // the file, and the notice says how many and why (they used to vanish silently).
    let path = std::env::current_dir()
        .expect("cwd")
        .join("eventscope-session.jsonl");
    h.state_mut().push(Intent::Export);
    h.run_steps(2);
    h.get_by_role_and_label(Role::Button, "Export").click();
    frames_until(&mut h, |h| export_notice(h).is_some());
    let notice = export_notice(&h).expect("the export ends with a notice");
    let lines = std::fs::read_to_string(&path).map(|t| t.lines().count());
    let _ = std::fs::remove_file(&path);
    let lines = lines.expect("the file was written");
    assert!(lines < N, "{lines} lines");
    assert!(
        notice.starts_with(&format!("exported {lines} records to "))
            && notice.contains("could not be read back and are left out"),
        "{notice}"
    );
    // A query filter says how many records it could not test for the same reason.
    h.state_mut().filter.query = r#"$headers.ce_type == "PurchaseMade""#.into();
    let not_tested = "could not be read back and were not tested";
    frames_until(&mut h, |h| {
        h.query_all_by_label_contains(not_tested).count() > 0
    });
    assert!(
        h.query_all_by_label_contains(not_tested).count() >= 1,
        "the query panel counts what it could not read back"
    );
}

#[test]
fn saving_a_session_reads_evicted_records_back_off_the_frame() {
    let _lock = GUI_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    const N: usize = 10_000;
    let (_broker, model, _, gate) = evicted_to_kafka(N);
    let app = EventscopeApp::offline(model, "shop".into(), Prefs::default());
    let mut h = Harness::builder()
        .with_size([1600.0, 1000.0])
        .build_ui_state(|ui, app: &mut EventscopeApp| app.frame_ui(ui), app);
    // Saving the session reads the evicted records back off the frame too: while the fetch
    // waits, frames go on and nothing is written yet; then every record is in the file.
    let path = std::env::current_dir()
        .expect("cwd")
        .join("eventscope-session.jsonl");
    h.state_mut().push(Intent::Export);
    h.run_steps(2);
    h.get_by_role_and_label(Role::Button, "Export").click();
    frames_until(&mut h, |h| h.state().read_back.is_some());
    assert!(
        h.state().read_back.is_some(),
        "the export waits for a read back"
    );
    h.run_steps(3);
    assert!(
        export_notice(&h).is_none(),
        "nothing more is exported while the read back waits"
    );
    gate.store(true, Ordering::SeqCst);
    frames_until(&mut h, |h| export_notice(h).is_some());
    let notice = export_notice(&h).expect("the export ends with a notice");
    let lines = std::fs::read_to_string(&path).map(|t| t.lines().count());
    let _ = std::fs::remove_file(&path);
    assert_eq!(lines.expect("the file was written"), N, "{notice}");
    assert!(
        notice.starts_with(&format!("exported {N} records to ")),
        "{notice}"
    );
}
