use super::super::log::tests::Ev;
use super::super::record::Record;
use super::*;

/// A clean saga: 9 records on 8 topics, chained by causation, order versions 1 and 2.
fn saga(n: usize, p: i32, t0: i64) -> Vec<Record> {
    let o = format!("order-{n}");
    let c = format!("corr-{n}");
    let id = |s: &str| format!("{n}-{s}");
    type Step<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<i64>);
    let steps: [Step; 9] = [
        ("orders", "created", "OrderCreated", None, Some(1)),
        (
            "payments.commands",
            "pay",
            "ProcessPayment",
            Some("created"),
            None,
        ),
        ("payments", "paid", "PaymentCompleted", Some("pay"), None),
        (
            "inventory.commands",
            "reserve",
            "ReserveStock",
            Some("paid"),
            None,
        ),
        (
            "inventory",
            "reserved",
            "StockReserved",
            Some("reserve"),
            None,
        ),
        (
            "shipping.commands",
            "ship",
            "ScheduleShipment",
            Some("reserved"),
            None,
        ),
        (
            "shipping",
            "shipped",
            "ShipmentScheduled",
            Some("ship"),
            None,
        ),
        (
            "orders.commands",
            "approve",
            "ApproveOrder",
            Some("shipped"),
            None,
        ),
        (
            "orders",
            "completed",
            "OrderCompleted",
            Some("approve"),
            Some(2),
        ),
    ];
    steps
        .iter()
        .enumerate()
        .map(|(i, (topic, s, ty, cause, v))| {
            let eid = id(s);
            let cid = cause.map(id);
            Ev {
                topic,
                partition: p,
                offset: (n * 10 + i) as i64,
                id: &eid,
                ty,
                agg: &o,
                corr: Some(&c),
                cause: cid.as_deref(),
                version: *v,
                ts: t0 + i as i64,
                ..Ev::default()
            }
            .rec()
        })
        .collect()
}

fn clean() -> Vec<Record> {
    (0..3)
        .flat_map(|n| saga(n, (n % 3) as i32, 1_000))
        .collect()
}

fn set(r: &mut Record, name: &str, value: Option<&str>) {
    r.headers.retain(|n, _| n != name);
    if let Some(v) = value {
        r.headers.push(name, Some(v.as_bytes()));
    }
}

/// Feed records at now = 1_000 + i, then tick at `tick`; return (kind, reported index) sorted.
fn run(records: &[Record], tick: i64) -> Vec<(AnomalyKind, LogIndex)> {
    let mut log = ObservedLog::default();
    let mut det = Detectors::new(DetectConfig::default());
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let now = 1_000 + i as i64;
        let idx = log.append(r, now).unwrap();
        out.extend(det.on_append(&log, idx, now));
    }
    out.extend(det.on_tick(&log, tick));
    let mut v: Vec<_> = out.iter().map(|a| (a.kind, a.log_indices[0])).collect();
    v.sort();
    v
}

const LATER: i64 = 1_000_000;

struct Case {
    name: &'static str,
    records: Vec<Record>,
    tick: i64,
    expect: Vec<(AnomalyKind, LogIndex)>,
}

fn cases() -> Vec<Case> {
    use AnomalyKind::*;
    let mut v = Vec::new();
    v.push(Case {
        name: "clean",
        records: clean(),
        tick: LATER,
        expect: vec![],
    });

    // duplicate-delivery: the same record read again (same offset) and republished (new offset)
    let mut r = clean();
    let again = r[2].clone();
    let mut republished = r[4].clone();
    republished.offset += 100;
    r.insert(5, again);
    r.push(republished);
    v.push(Case {
        name: "duplicate-delivery",
        records: r,
        tick: LATER,
        expect: vec![(DuplicateDelivery, 5), (DuplicateDelivery, 28)],
    });

    // duplicate-effect: StockReserved emitted twice for one ReserveStock (no idempotency)
    let mut r = clean();
    let mut twice = r[4].clone();
    set(&mut twice, "ce_id", Some("0-reserved-again"));
    twice.offset += 100;
    r.insert(5, twice);
    v.push(Case {
        name: "duplicate-effect",
        records: r,
        tick: LATER,
        expect: vec![(DuplicateEffect, 5)],
    });

    // out-of-order by version: OrderCompleted (v2) before OrderCreated (v1) of order-1
    let mut r = clean();
    r.swap(9, 17);
    v.push(Case {
        name: "out-of-order version",
        records: r,
        tick: LATER,
        expect: vec![(OutOfOrder, 17)],
    });

    // out-of-order by partition spread: order-2 on two partitions of `orders` and three of
    // `shipping`; reported once per aggregate and topic
    let mut r = clean();
    r[26].partition = 0;
    let mut extra = r[24].clone();
    set(&mut extra, "ce_id", Some("2-extra"));
    set(&mut extra, "ce_type", Some("ShipmentRescheduled"));
    extra.partition = 1;
    let mut extra2 = r[24].clone();
    set(&mut extra2, "ce_id", Some("2-extra2"));
    set(&mut extra2, "ce_type", Some("ShipmentDelayed"));
    extra2.partition = 0;
    r.insert(25, extra);
    r.insert(26, extra2);
    v.push(Case {
        name: "out-of-order partitions",
        records: r,
        tick: LATER,
        expect: vec![(OutOfOrder, 25), (OutOfOrder, 28)],
    });

    // broken-chain: a causation id never seen; a missing correlation id is another lint
    let mut r = clean();
    set(&mut r[3], "ce_correlationid", None);
    set(&mut r[12], "ce_causationid", Some("ghost"));
    v.push(Case {
        name: "broken-chain",
        records: r,
        tick: LATER,
        expect: vec![(BrokenChain, 12), (MissingCorrelation, 3)],
    });

    // missing-correlation: reported per (topic, type, source), at the group's first record;
    // each further record of the group updates that finding (reported again at the first)
    let mut r = clean();
    for i in [3, 12, 21, 4] {
        set(&mut r[i], "ce_correlationid", None);
    }
    v.push(Case {
        name: "missing-correlation",
        records: r,
        tick: LATER,
        expect: vec![
            (MissingCorrelation, 3),
            (MissingCorrelation, 3),
            (MissingCorrelation, 3),
            (MissingCorrelation, 4),
        ],
    });

    // broken-chain: parent arrives late but within grace → nothing
    let mut r = clean();
    let parent = r.remove(1);
    r.insert(5, parent);
    v.push(Case {
        name: "late parent within grace",
        records: r,
        tick: LATER,
        expect: vec![],
    });

    // stuck-saga: order-1's saga stops after StockReserved; a compensated saga is fine
    let mut r = clean();
    r.drain(14..18);
    let comp = saga(7, 0, 1_000);
    let mut comp: Vec<Record> = comp.into_iter().take(3).collect();
    let mut cancelled = comp[0].clone();
    set(&mut cancelled, "ce_id", Some("7-cancelled"));
    set(&mut cancelled, "ce_type", Some("OrderCancelled"));
    set(&mut cancelled, "ce_causationid", Some("7-paid"));
    set(&mut cancelled, "ce_aggregateversion", Some("2"));
    comp.push(cancelled);
    r.extend(comp);
    v.push(Case {
        name: "stuck-saga",
        records: r,
        tick: LATER,
        expect: vec![(StuckSaga, 13)],
    });

    // not stuck yet when the timeout has not passed
    let mut r = clean();
    r.truncate(5);
    v.push(Case {
        name: "stuck-saga not yet",
        records: r,
        tick: 1_010 + 59_000,
        expect: vec![],
    });

    // poison-message
    let mut r = clean();
    r.insert(
        4,
        Record::new("payments", 0, 999).with_value(vec![0xde, 0xad, 0xbe, 0xef]),
    );
    v.push(Case {
        name: "poison-message",
        records: r,
        tick: LATER,
        expect: vec![(PoisonMessage, 4)],
    });

    // lost-event: order-2 jumps from version 1 to 3; order-0 first seen at version 2
    let mut r = clean();
    set(&mut r[26], "ce_aggregateversion", Some("3"));
    set(&mut r[0], "ce_aggregateversion", Some("2"));
    set(&mut r[8], "ce_aggregateversion", Some("3"));
    v.push(Case {
        name: "lost-event",
        records: r,
        tick: LATER,
        expect: vec![(LostEvent, 0), (LostEvent, 26)],
    });

    // a gap filled late (out of order) is out-of-order, not lost
    let mut r = clean();
    let mut v3 = r[8].clone();
    set(&mut v3, "ce_id", Some("0-v3"));
    set(&mut v3, "ce_type", Some("OrderNoted"));
    set(&mut v3, "ce_aggregateversion", Some("3"));
    r.insert(8, v3); // v1, v3, v2: v2 fills the gap
    v.push(Case {
        name: "gap filled late",
        records: r,
        tick: LATER,
        expect: vec![(OutOfOrder, 9)],
    });
    v
}

#[test]
fn lint_table() {
    for c in cases() {
        assert_eq!(run(&c.records, c.tick), c.expect, "case {}", c.name);
    }
}

#[test]
fn gap_not_reported_before_grace() {
    let mut r = clean();
    set(&mut r[26], "ce_aggregateversion", Some("3"));
    // appended at now=1_026; grace 10 s → due at 11_026
    assert_eq!(run(&r, 11_025), vec![]);
    assert_eq!(run(&r, 11_026), vec![(AnomalyKind::LostEvent, 26)]);
}

#[test]
fn switch_off_and_describe() {
    let mut det = Detectors::new(DetectConfig::default());
    det.set_enabled(AnomalyKind::PoisonMessage, false);
    let mut log = ObservedLog::default();
    let i = log
        .append(&Record::new("t", 0, 0).with_value(b"\x00".to_vec()), 0)
        .unwrap();
    assert!(det.on_append(&log, i, 0).is_empty());
    det.set_enabled(AnomalyKind::PoisonMessage, true);
    assert_eq!(det.on_append(&log, i, 0).len(), 1);
    assert_eq!(det.lints().len(), AnomalyKind::ALL.len());
    assert_eq!(AnomalyKind::ALL.len(), 10);
    assert!(det.lints().iter().all(|l| !l.summary.is_empty()));
    assert_eq!(
        AnomalyKind::parse("stuck-saga"),
        Some(AnomalyKind::StuckSaga)
    );
    assert_eq!(
        serde_json::to_string(&AnomalyKind::LostEvent).unwrap(),
        "\"lost-event\""
    );
}

#[test]
fn anomaly_names_its_record() {
    let mut r = clean();
    let again = r[2].clone();
    r.push(again);
    let mut log = ObservedLog::default();
    let mut det = Detectors::new(DetectConfig::default());
    let mut out = Vec::new();
    for rec in &r {
        let i = log.append(rec, 0).unwrap();
        out.extend(det.on_append(&log, i, 0));
    }
    let a = &out[0];
    assert_eq!(a.kind, AnomalyKind::DuplicateDelivery);
    assert_eq!(a.event_id.as_deref(), Some("0-paid"));
    assert_eq!(a.correlation_id.as_deref(), Some("corr-0"));
    assert_eq!(
        (a.topic.as_str(), a.partition, a.offset),
        ("payments", 0, 2)
    );
    assert_eq!(a.log_indices, vec![27, 2]);
}

#[test]
fn missing_correlation_groups() {
    let mut r = clean();
    for i in [3, 12, 21] {
        set(&mut r[i], "ce_correlationid", None);
    }
    let mut log = ObservedLog::default();
    let mut det = Detectors::new(DetectConfig::default());
    let mut out = Vec::new();
    for rec in &r {
        let i = log.append(rec, 0).unwrap();
        out.extend(det.on_append(&log, i, 0));
    }
    let last = out.last().unwrap();
    assert_eq!(last.kind, AnomalyKind::MissingCorrelation);
    assert_eq!(last.log_indices, vec![3, 21]);
    let g = last.group.as_ref().unwrap();
    assert_eq!(g.key, "inventory.commands|ReserveStock|/test");
    assert_eq!(g.count, 3);
    assert_eq!((g.first_partition, g.first_offset), (0, 3));
    assert_eq!((g.last_partition, g.last_offset), (2, 23));
    assert!(
        last.detail.starts_with("3 ReserveStock records"),
        "{}",
        last.detail
    );
}

/// At the end of the backlog, causes never seen and open version gaps are reported at once,
/// whatever the grace periods; a stuck saga is judged by its records' times as of the cut.
#[test]
fn verdicts_at_the_end_of_the_backlog() {
    let mut r = clean();
    set(&mut r[12], "ce_causationid", Some("ghost"));
    set(&mut r[26], "ce_aggregateversion", Some("3"));
    r.drain(14..18); // order-1's saga stops after StockReserved (record time 1_004)
    let mut log = ObservedLog::default();
    let mut det = Detectors::new(DetectConfig::default());
    let mut out = Vec::new();
    for (i, rec) in r.iter().enumerate() {
        let idx = log.append(rec, 5_000 + i as i64).unwrap();
        out.extend(det.on_append(&log, idx, 5_000 + i as i64));
    }
    // no tick: nothing judged yet
    assert!(out.is_empty());
    // cut 30 s after the last record: causes and gaps now, the saga not yet (60 s)
    let found = det.on_backlog_end(&log, 31_000);
    let mut v: Vec<_> = found.iter().map(|a| (a.kind, a.log_indices[0])).collect();
    v.sort();
    assert_eq!(
        v,
        vec![(AnomalyKind::BrokenChain, 12), (AnomalyKind::LostEvent, 22)]
    );
    assert!(
        found[0].detail.contains("points to no event"),
        "{}",
        found[0].detail
    );
    // the live tail's clock then judges the saga: idle since 1_004 + 60 s
    assert!(det.on_tick(&log, 61_003).is_empty());
    let later = det.on_tick(&log, 61_004);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].kind, AnomalyKind::StuckSaga);
    // a cut long after the records: the saga is stuck at once
    let mut log = ObservedLog::default();
    let mut det = Detectors::new(DetectConfig::default());
    for (i, rec) in r.iter().enumerate() {
        let idx = log.append(rec, 5_000 + i as i64).unwrap();
        det.on_append(&log, idx, 5_000 + i as i64);
    }
    let kinds: Vec<_> = det
        .on_backlog_end(&log, 1_000_000)
        .iter()
        .map(|a| a.kind)
        .collect();
    assert!(kinds.contains(&AnomalyKind::StuckSaga), "{kinds:?}");
}

/// A flow of the profile makes chains without commands sagas: judged by its terminal types.
#[test]
fn flows_judge_chains_without_commands() {
    let cfg = DetectConfig {
        flows: vec![FlowConfig {
            name: "transfer".into(),
            start_types: vec!["TransferInitiated".into()],
            terminal_types: vec!["TransferCompleted".into()],
        }],
        stuck_saga_timeout_ms: 1_000,
        ..DetectConfig::default()
    };
    let ev = |offset: i64, id: &'static str, ty: &'static str, corr: &'static str, ts: i64| {
        Ev {
            topic: "bank",
            offset,
            id,
            ty,
            agg: corr,
            corr: Some(corr),
            ts,
            ..Ev::default()
        }
        .rec()
    };
    let records = [
        ev(0, "a1", "TransferInitiated", "a", 0),
        ev(1, "a2", "TransferCompleted", "a", 10),
        ev(2, "b1", "TransferInitiated", "b", 20),
        ev(3, "b2", "FundsReserved", "b", 30),
        ev(4, "c1", "LimitChanged", "c", 40),
    ];
    let mut log = ObservedLog::default();
    let mut det = Detectors::new(cfg);
    for r in &records {
        let i = log.append(r, 50).unwrap();
        det.on_append(&log, i, 50);
    }
    let found = det.on_backlog_end(&log, 5_000);
    let v: Vec<_> = found.iter().map(|a| (a.kind, a.log_indices[0])).collect();
    assert_eq!(v, vec![(AnomalyKind::StuckSaga, 3)]);
    assert!(
        found[0].detail.contains("TransferCompleted"),
        "{}",
        found[0].detail
    );
}

/// `stuck-saga` judges choreographed chains (events only) by the start and terminal types,
/// and never a chain without a known start type or command (a foreign stream).
#[test]
fn choreographed_chains_are_judged_by_start_and_terminal_types() {
    let ev = |offset: i64, ty: &'static str, corr: &'static str| {
        Ev {
            topic: "orders",
            offset,
            id: Box::leak(format!("{corr}-{offset}").into_boxed_str()),
            ty,
            agg: corr,
            corr: Some(corr),
            ts: offset * 10,
            ..Ev::default()
        }
        .rec()
    };
    // (case, chain's event types, stuck with the default config, stuck with the start types off)
    let cases: &[(&str, &[&'static str], bool, bool)] = &[
        (
            "completed choreography",
            &[
                "OrderCreated",
                "StockReserved",
                "PaymentCompleted",
                "ShipmentScheduled",
                "OrderCompleted",
            ],
            false,
            false,
        ),
        (
            "compensated choreography",
            &[
                "OrderCreated",
                "StockReserved",
                "PaymentDeclined",
                "StockRestored",
                "OrderCancelled",
            ],
            false,
            false,
        ),
        (
            "choreography that stops",
            &["OrderCreated", "StockReserved", "PaymentCompleted"],
            true,
            false,
        ),
        (
            "foreign stream",
            &["LimitChanged", "FundsReserved"],
            false,
            false,
        ),
        // joined after the start: nothing says it is a saga
        (
            "start not observed",
            &["StockReserved", "PaymentCompleted"],
            false,
            false,
        ),
    ];
    for (name, types, stuck, stuck_without_starts) in cases {
        for (cfg, want) in [
            (DetectConfig::default(), *stuck),
            (
                DetectConfig {
                    start_types: Vec::new(),
                    ..DetectConfig::default()
                },
                *stuck_without_starts,
            ),
        ] {
            let mut log = ObservedLog::default();
            let mut det = Detectors::new(cfg);
            for (i, ty) in types.iter().enumerate() {
                let idx = log.append(&ev(i as i64, ty, "c1"), 50).unwrap();
                det.on_append(&log, idx, 50);
            }
            let found: Vec<_> = det
                .on_backlog_end(&log, 1_000_000)
                .iter()
                .filter(|a| a.kind == AnomalyKind::StuckSaga)
                .map(|a| a.log_indices[0])
                .collect();
            let expect: Vec<LogIndex> = if want {
                vec![(types.len() - 1) as LogIndex]
            } else {
                vec![]
            };
            assert_eq!(found, expect, "{name}");
        }
    }
}
