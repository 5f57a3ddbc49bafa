//! The protocol state machine, message by message, on real databases.

use sdsync_syncer::proto::message::{Envelope, PROTOCOL_VERSION, Payload, encode};
use sdsync_syncer::proto::node::{Config, Event, Node};
use sdsync_syncer::proto::store::Store;
use sdsync_tests::wire::{NOW, Wire, events, node, sends, store, two};

#[test]
fn bad_envelopes_are_refused_with_a_reason() {
    let a = store("env-a");
    let b = store("env-b");
    let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
    let mut na = node(&a, &idb, Config::default());
    let cases = [
        (
            Envelope {
                version: PROTOCOL_VERSION + 1,
                ..Envelope::new(
                    "lib",
                    &idb,
                    Payload::Pull {
                        origin: ida.clone(),
                        after: 0,
                    },
                )
            },
            "unsupported protocol version",
        ),
        (
            Envelope::new(
                "other-lib",
                &idb,
                Payload::Pull {
                    origin: ida.clone(),
                    after: 0,
                },
            ),
            "wrong library",
        ),
        (
            Envelope::new(
                "lib",
                "stranger",
                Payload::Pull {
                    origin: ida.clone(),
                    after: 0,
                },
            ),
            "is not paired",
        ),
    ];
    for (env, expected) in cases {
        let out = na.receive(&encode(&env), NOW, &a).expect("receive");
        let ev = events(&out);
        assert!(
            matches!(&ev[..], [Event::Refused { reason, .. }] if reason.contains(expected)),
            "{ev:?}"
        );
    }
    let out = na.receive(&[1, 2, 3], NOW, &a).expect("receive");
    assert!(matches!(&events(&out)[..], [Event::Malformed { .. }]));
}

/// Two devices of different libraries pinned to each other by mistake: each
/// refuses the other's Hello once, with a reason naming the library, and a
/// refusal is never answered with another (they once did so forever).
#[test]
fn two_libraries_pinned_by_mistake_refuse_once_each() {
    let a = store("twolib-a");
    let b = store("twolib-b");
    let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
    let mut na = node(&a, &idb, Config::default());
    let mut nb = Node::new(&idb, "other-lib", Config::default());
    nb.add_peer(&ida);
    let mut to_b = sends(&na.connect(&idb, NOW, &a).unwrap());
    let mut to_a = sends(&nb.connect(&ida, NOW, &b).unwrap());
    let (mut ev_a, mut ev_b) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let (mut next_a, mut next_b) = (Vec::new(), Vec::new());
        for m in to_b.drain(..) {
            let out = nb.receive(&encode(&m), NOW, &b).unwrap();
            ev_b.extend(events(&out));
            next_a.extend(sends(&out));
        }
        for m in to_a.drain(..) {
            let out = na.receive(&encode(&m), NOW, &a).unwrap();
            ev_a.extend(events(&out));
            next_b.extend(sends(&out));
        }
        (to_a, to_b) = (next_a, next_b);
    }
    assert!(to_a.is_empty() && to_b.is_empty(), "{to_a:?} {to_b:?}");
    for ev in [&ev_a, &ev_b] {
        let refused = ev
            .iter()
            .filter(
                |e| matches!(e, Event::Refused { reason, .. } if reason.contains("wrong library")),
            )
            .count();
        let refused_by = ev
            .iter()
            .filter(|e| matches!(e, Event::RefusedBy { .. }))
            .count();
        assert_eq!((refused, refused_by, ev.len()), (1, 1, 2), "{ev:?}");
    }
    // Anti-entropy sends nothing more to a peer that refused.
    assert!(sends(&na.tick(NOW + 60_000, &a).unwrap()).is_empty());
    assert!(sends(&nb.tick(NOW + 60_000, &b).unwrap()).is_empty());
}

#[test]
fn a_peer_clock_beyond_the_drift_is_refused() {
    let a = store("drift-a");
    let b = store("drift-b");
    let idb = b.device().unwrap();
    let mut na = node(&a, &idb, Config::default());
    let ahead = ((NOW + 10 * 60 * 1000) << 16) as i64;
    let hello = Envelope::new(
        "lib",
        &idb,
        Payload::Hello {
            watermarks: vec![],
            hlc: ahead,
            reply: true,
            quarantined: vec![],
            schema: vec![],
            incarnation: Default::default(),
            yours: vec![],
            your_clock: (0, 0),
            relayed: None,
            restores: Vec::new(),
        },
    );
    let out = na.receive(&encode(&hello), NOW, &a).expect("receive");
    assert!(
        matches!(&events(&out)[..], [Event::Refused { reason, .. }] if reason.contains("ms ahead")),
        "{out:?}"
    );
    assert!(matches!(
        &sends(&out)[..],
        [Envelope {
            payload: Payload::Refused { .. },
            ..
        }]
    ));
}

#[test]
fn backfill_pages_resume_from_the_watermark_after_a_crash() {
    let a = store("page-a");
    let b = store("page-b");
    let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
    a.lib.exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25) INSERT INTO tags(uuid, canonical_name) SELECT 't' || i, 'n' || i FROM n").unwrap();
    let cfg = Config {
        page_rows: 10,
        window: 2,
        ..Config::default()
    };
    let mut na = node(&a, &idb, cfg.clone());
    let mut nb = node(&b, &ida, cfg.clone());
    // A says hello; B pulls; A answers with a window of two pages of 10.
    let hello = sends(&na.connect(&idb, NOW, &a).unwrap()).remove(0);
    let pulls = sends(&nb.receive(&encode(&hello), NOW, &b).unwrap());
    let pull = pulls
        .iter()
        .find(|e| matches!(e.payload, Payload::Pull { .. }))
        .expect("pull")
        .clone();
    assert_eq!(
        pull.payload,
        Payload::Pull {
            origin: ida.clone(),
            after: 0
        }
    );
    let pages = sends(&na.receive(&encode(&pull), NOW, &a).unwrap());
    assert_eq!(pages.len(), 2, "the window");
    let page = pages[0].clone();
    assert!(
        matches!(&page.payload, Payload::Page { changes, more: true, complete_to: 10, .. } if changes.len() == 10)
    );
    assert!(matches!(
        &pages[1].payload,
        Payload::Page {
            after: 10,
            complete_to: 20,
            ..
        }
    ));
    // B applies the first page and acknowledges it; no new pull (the stream goes on).
    let answer = sends(&nb.receive(&encode(&page), NOW, &b).unwrap());
    assert!(
        matches!(
            &answer[..],
            [Envelope {
                payload: Payload::Ack { to: 10, .. },
                ..
            }]
        ),
        "{answer:?}"
    );
    assert_eq!(
        b.watermarks()
            .unwrap()
            .iter()
            .find(|(o, _)| *o == ida)
            .map(|m| m.1),
        Some(10)
    );
    // B crashes before the next page; a fresh node resumes after seq 10, not 0.
    let mut nb = node(&b, &ida, cfg);
    let pulls = sends(&nb.receive(&encode(&hello), NOW, &b).unwrap());
    let pull = pulls
        .iter()
        .find(|e| matches!(e.payload, Payload::Pull { .. }))
        .expect("pull");
    assert_eq!(
        pull.payload,
        Payload::Pull {
            origin: ida.clone(),
            after: 10
        }
    );
    // The stream resumes there: two pages, then one more for B's first Ack.
    let mut to_b: std::collections::VecDeque<Envelope> =
        sends(&na.receive(&encode(pull), NOW, &a).unwrap()).into();
    let mut pages = 0;
    while let Some(page) = to_b.pop_front() {
        pages += 1;
        for answer in sends(&nb.receive(&encode(&page), NOW, &b).unwrap()) {
            to_b.extend(sends(&na.receive(&encode(&answer), NOW, &a).unwrap()));
        }
    }
    assert_eq!(pages, 2, "pages 11–20 and 21–25, each sent once");
    assert_eq!(a.lib.digest().unwrap(), b.lib.digest().unwrap());
}

#[test]
fn unanswered_pulls_back_off_then_become_dead_letters() {
    let a = store("retry-a");
    let b = store("retry-b");
    let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
    a.lib.exec("INSERT INTO tags(uuid) VALUES ('t')").unwrap();
    let cfg = Config {
        max_attempts: 3,
        pull_timeout_ms: 100,
        backoff_ms: 50,
        anti_entropy_ms: 1_000_000,
        ..Config::default()
    };
    let mut na = node(&a, &idb, cfg.clone());
    let mut nb = node(&b, &ida, cfg);
    nb.connect(&ida, NOW, &b).unwrap();
    let hello = sends(&na.connect(&idb, NOW, &a).unwrap()).remove(0);
    nb.receive(&encode(&hello), NOW, &b).unwrap();
    // Every pull is lost. Retries come later and later, then a dead letter.
    let mut now = NOW;
    let mut resent = Vec::new();
    let mut dead = Vec::new();
    for _ in 0..50 {
        now = nb.next_timer().max(now + 1);
        let out = nb.tick(now, &b).unwrap();
        resent.extend(
            sends(&out)
                .into_iter()
                .filter(|e| matches!(e.payload, Payload::Pull { .. }))
                .map(|_| now),
        );
        dead.extend(
            events(&out)
                .into_iter()
                .filter(|e| matches!(e, Event::DeadLetter { .. })),
        );
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(resent.len(), 2, "attempts 2 and 3");
    assert!(resent[1] - resent[0] > 100, "backoff grows: {resent:?}");
    assert_eq!(dead.len(), 1);
    let kept: i64 = b
        .sync
        .query_row(
            "SELECT count(*) FROM dead_letters WHERE reason LIKE 'no answer after 3 attempts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 1, "recorded durably");
}

/// A change that cannot apply here is quarantined (issue 7, defect 3): the page
/// applies, the watermark advances, no dead letter.
#[test]
fn a_change_that_does_not_apply_is_quarantined_and_the_page_completes() {
    let a = store("poison-a");
    let b = store("poison-b");
    let ida = a.device().unwrap();
    let mut nb = node(&b, &ida, Config::default());
    // A value that is no SQLite value (a table this device lacks would be
    // kept, not quarantined: see `schema_changes.rs`).
    let bad = sdsync_syncer::library::Change {
        tbl: "tags".into(),
        pk: "x".into(),
        op: "upsert".into(),
        data: Some(r#"{"canonical_name":true}"#.into()),
        origin: ida.clone(),
        seq: 1,
        hlc: 1,
        creates: 1,
    };
    let page = Envelope::new(
        "lib",
        &ida,
        Payload::Page {
            origin: ida.clone(),
            after: 0,
            complete_to: 1,
            changes: vec![bad],
            more: false,
            restores: Vec::new(),
            clock: (0, 0),
        },
    );
    let out = nb.receive(&encode(&page), NOW, &b).unwrap();
    assert!(
        matches!(&events(&out)[..], [Event::Quarantined { reason, .. }, Event::Applied { .. }] if reason.contains("tags.canonical_name got")),
        "{out:?}"
    );
    assert_eq!(
        b.watermarks()
            .unwrap()
            .iter()
            .find(|(o, _)| *o == ida)
            .map(|m| m.1)
            .unwrap_or(0),
        1,
        "the page completes"
    );
    let kept: i64 = b
        .sync
        .query_row("SELECT count(*) FROM dead_letters", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 0);
    assert_eq!(b.quarantine_summary().unwrap().len(), 1);
}

#[test]
fn pushes_carry_only_the_devices_own_changes() {
    let a = store("push-a");
    let b = store("push-b");
    let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
    let mut na = node(&a, &idb, Config::default());
    let mut nb = node(&b, &ida, Config::default());
    let ha = sends(&na.connect(&idb, NOW, &a).unwrap()).remove(0);
    let hb = sends(&nb.connect(&ida, NOW, &b).unwrap()).remove(0);
    na.receive(&encode(&hb), NOW, &a).unwrap();
    nb.receive(&encode(&ha), NOW, &b).unwrap();
    b.lib
        .exec("INSERT INTO tags(uuid) VALUES ('from-b')")
        .unwrap();
    let push = sends(&nb.committed(&b).unwrap()).remove(0);
    na.receive(&encode(&push), NOW, &a).unwrap();
    assert_eq!(a.lib.count("tags").unwrap(), 1);
    // A commits its own change: its push holds A's change only, never B's back.
    a.lib
        .exec("INSERT INTO tags(uuid) VALUES ('from-a')")
        .unwrap();
    let pushed = sends(&na.committed(&a).unwrap());
    for env in &pushed {
        if let Payload::Page {
            origin, changes, ..
        } = &env.payload
        {
            assert_eq!(origin, &ida);
            assert!(changes.iter().all(|c| c.origin == ida), "{changes:?}");
        }
    }
    assert_eq!(pushed.len(), 1);
    assert_eq!(
        na.log_size(NOW, &a).unwrap(),
        1,
        "B has not acknowledged A's change yet"
    );
    nb.receive(&encode(&pushed[0]), NOW, &b).unwrap();
    let hello = sends(&nb.tick(NOW + 10_000, &b).unwrap())
        .into_iter()
        .find(|e| matches!(e.payload, Payload::Hello { .. }))
        .unwrap();
    na.receive(&encode(&hello), NOW, &a).unwrap();
    assert_eq!(
        na.log_size(NOW, &a).unwrap(),
        0,
        "acknowledged: the log is empty"
    );
}

/// Over an authenticated link, a paired device cannot speak for another one:
/// the envelope's sender must be the device the link authenticated.
#[test]
fn a_message_claiming_another_sender_is_refused() {
    let a = store("spoof-a");
    let b = store("spoof-b");
    let c = store("spoof-c");
    let (ida, idb, idc) = (
        a.device().unwrap(),
        b.device().unwrap(),
        c.device().unwrap(),
    );
    let mut na = node(&a, &idb, Config::default());
    na.add_peer(&idc);
    let forged = Envelope::new(
        "lib",
        &idc,
        Payload::Pull {
            origin: ida.clone(),
            after: 0,
        },
    );
    let out = na
        .receive_from(&idb, &encode(&forged), NOW, &a)
        .expect("receive");
    let ev = events(&out);
    assert!(
        matches!(&ev[..], [Event::Refused { peer, reason }] if *peer == idb && reason.contains("sent a message as device")),
        "{ev:?}"
    );
    assert!(matches!(
        &sends(&out)[..],
        [Envelope {
            payload: Payload::Refused { .. },
            ..
        }]
    ));
    let honest = Envelope::new(
        "lib",
        &idb,
        Payload::Pull {
            origin: ida,
            after: 0,
        },
    );
    let out = na
        .receive_from(&idb, &encode(&honest), NOW, &a)
        .expect("receive");
    assert!(matches!(
        &sends(&out)[..],
        [Envelope {
            payload: Payload::Page { .. },
            ..
        }]
    ));
}

/// Issue 9: a writer committing while a peer backfills and then follows live.
/// Over an ordered link (QUIC streams in order, as `net::link` delivers them),
/// every change crosses once: pushes continue the stream the pull started,
/// acknowledgements pace it, and nothing is pulled again. No time passes, so
/// no retry can hide a stall.
#[test]
fn commits_during_a_backfill_cross_the_link_once() {
    let (a, b, mut na, mut nb) = two("once", 100, 3);
    let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
    let insert = |from: i64, n: i64| {
        a.lib
            .exec(&format!(
                "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {from} + {n} - 1)
                 INSERT INTO tags(uuid, canonical_name) SELECT 't' || i, 'n' || i FROM n"
            ))
            .unwrap();
    };
    insert(0, 1000);
    let mut wire = Wire::default();
    wire.to_b.extend(sends(&na.connect(&idb, NOW, &a).unwrap()));
    wire.to_a.extend(sends(&nb.connect(&ida, NOW, &b).unwrap()));
    let mut applied = 0;
    let mut written = 1000;
    // Ten commits of 250 rows, each followed by a few deliveries each way.
    for round in 0..10 {
        insert(written, 250);
        written += 250;
        wire.to_b.extend(sends(&na.committed(&a).unwrap()));
        for _ in 0..(round % 3 + 1) {
            applied += wire.step((&mut na, &a), (&mut nb, &b));
        }
    }
    applied += wire.settle((&mut na, &a), (&mut nb, &b));
    assert_eq!(b.lib.count("tags").unwrap(), written);
    assert_eq!(a.lib.digest().unwrap(), b.lib.digest().unwrap());
    assert_eq!(applied, written as usize, "each change applied once");
}

/// Issue 9: a pull goes on past a gap its sender has. S holds O's changes
/// 1–5 and 8–12 (a page beyond a gap reached it) with its watermark at 5, so
/// its first page to R completes only to 5 although it carries 8; the next
/// page continues after 8, and R applies it and goes on (it used to drop it as
/// "beyond a gap a pull fetches", and the pull waited for a page that would
/// never come until it became a dead letter). No time passes here.
#[test]
fn a_pull_goes_on_past_a_gap_its_sender_has() {
    let (o, s, r) = (store("gap-o"), store("gap-s"), store("gap-r"));
    let (ido, ids, idr) = (
        o.device().unwrap(),
        s.device().unwrap(),
        r.device().unwrap(),
    );
    o.lib
        .exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12) INSERT INTO tags(uuid, canonical_name) SELECT 't' || i, 'n' || i FROM n")
        .unwrap();
    let all = o.slice(&ido, 0, 100, 1 << 20).unwrap().changes;
    assert_eq!(all.len(), 12);
    s.apply(&ido, &all[..5], Some((&ido, 5))).unwrap();
    s.apply(&ido, &all[7..], None).unwrap();
    let cfg = Config {
        page_rows: 6,
        ..Config::default()
    };
    let mut ns = node(&s, &idr, cfg.clone());
    let mut nr = node(&r, &ids, cfg);
    let mut wire = Wire::default();
    wire.to_b.extend(sends(&ns.connect(&idr, NOW, &s).unwrap()));
    wire.to_a.extend(sends(&nr.connect(&ids, NOW, &r).unwrap()));
    let applied = wire.settle((&mut ns, &s), (&mut nr, &r));
    assert_eq!(r.lib.count("tags").unwrap(), 10, "1–5 and 8–12");
    assert_eq!(applied, 10);
    let mark = r.watermarks().unwrap().into_iter().find(|(w, _)| *w == ido);
    assert_eq!(mark.map(|m| m.1), Some(5), "complete only to where S is");
}

/// Issue 9: a writer faster than the peer gets backpressure, not a queue in
/// the syncer. Without acknowledgements a push stream sends at most `window`
/// pages however many commits follow; each acknowledgement lets exactly one
/// more (full) page go, and what waits stays in the database.
#[test]
fn pushes_wait_for_acknowledgements_beyond_the_window() {
    let (a, b, mut na, mut nb) = two("window", 10, 2);
    let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
    let ha = sends(&na.connect(&idb, NOW, &a).unwrap()).remove(0);
    let hb = sends(&nb.connect(&ida, NOW, &b).unwrap()).remove(0);
    na.receive(&encode(&hb), NOW, &a).unwrap();
    nb.receive(&encode(&ha), NOW, &b).unwrap();
    let mut pages = Vec::new();
    for i in 0..20 {
        a.lib
            .exec(&format!(
                "INSERT INTO tags(uuid, canonical_name) VALUES ('w{i}a', 'a{i}'), ('w{i}b', 'b{i}'), ('w{i}c', 'c{i}')"
            ))
            .unwrap();
        pages.extend(sends(&na.committed(&a).unwrap()));
    }
    assert_eq!(pages.len(), 2, "the window, whatever the commits");
    // One acknowledgement, one more page, and it is full (commits coalesced).
    let ack = sends(&nb.receive(&encode(&pages[0]), NOW, &b).unwrap());
    assert!(
        matches!(
            &ack[..],
            [Envelope {
                payload: Payload::Ack { .. },
                ..
            }]
        ),
        "{ack:?}"
    );
    let next = sends(&na.receive(&encode(&ack[0]), NOW, &a).unwrap());
    assert!(
        matches!(&next[..], [Envelope { payload: Payload::Page { changes, more: true, .. }, .. }] if changes.len() == 10),
        "{next:?}"
    );
}
