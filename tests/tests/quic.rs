//! Devices syncing over real QUIC on 127.0.0.1, with pinned mutual TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use sdsync_syncer::daemon::{Background, Directory};
use sdsync_syncer::library::Library;
use sdsync_syncer::net::identity::Identity;
use sdsync_syncer::net::link::{Inbound, Link};
use sdsync_syncer::net::tls::Pins;
use sdsync_syncer::proto::store::SqlStore;
use sdsync_tests::{Lib, extension_path, temp_dir, wait_for};

const LIBRARY: &str = "quic-test-library";

/// One device: its library (through an app's connection) and a folder for its
/// identity and sync.db.
struct Device {
    app: Lib,
    id: String,
    home: PathBuf,
}

impl Device {
    fn new(dir: &Path, name: &str, pins: &Pins) -> Self {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).expect("device folder");
        let app = Lib::create(&home.join("database.db"));
        let id = app.device();
        pins.pin(&id, Self::identity(&home, &id).cert);
        Self { app, id, home }
    }

    fn identity(home: &Path, id: &str) -> Identity {
        Identity::load_or_create(home, id).expect("identity")
    }

    /// Starts (or restarts) its syncer.
    fn run(&self, pins: &Pins, directory: &Directory) -> Background {
        let lib = Library::open(&self.app.path, &extension_path()).expect("open library");
        let sync = Connection::open(self.home.join("sync.db")).expect("sync.db");
        let store = SqlStore::new(lib, sync).expect("store");
        let me = Self::identity(&self.home, &self.id);
        Background::start(store, LIBRARY, me, pins, directory).expect("daemon")
    }
}

/// Waits (with a deadline) until every device has the same digest.
fn converge(devices: &[&Device], what: &str) {
    wait_for(what, 30, || {
        let first = devices[0].app.digest();
        devices.iter().all(|d| d.app.digest() == first)
    });
}

#[test]
fn devices_converge_over_quic_and_a_late_device_backfills() {
    let dir = temp_dir("quic-converge");
    let (pins, directory) = (Pins::default(), Directory::default());
    let [a, b, c] = ["a", "b", "c"].map(|n| Device::new(&dir, n, &pins));
    a.app.exec(
        "INSERT INTO locations(uuid, name, path) VALUES ('loc', 'Photos', '/p');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
           INSERT INTO entries(uuid, name, location_id) SELECT 'e' || i, 'f' || i, 1 FROM n;",
    );
    let run_a = a.run(&pins, &directory);
    let run_b = b.run(&pins, &directory);
    converge(&[&a, &b], "a and b after start");
    assert_eq!(b.app.count("entries"), 500);
    // Writes on both sides while connected, to one shared row.
    a.app.exec(
        "INSERT INTO tags(uuid, canonical_name, color) VALUES (sdsync_uuid_v5('tag', 'x'), 'x', 'red')",
    );
    b.app.exec(
        "INSERT OR IGNORE INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'x'), 'x');
         UPDATE tags SET icon = 'star' WHERE canonical_name = 'x'",
    );
    converge(&[&a, &b], "a and b after tag edits");
    assert_eq!(a.app.count("tags"), 1);
    // A third device joins late and backfills everything, b's changes too.
    let run_c = c.run(&pins, &directory);
    converge(&[&a, &b, &c], "c joined");
    assert_eq!(c.app.count("entries"), 500);
    // a goes away; b and c go on; a catches up when it is back.
    drop(run_a);
    c.app
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('c-tag', 'from c')");
    b.app.exec("DELETE FROM tags WHERE canonical_name = 'x'");
    converge(&[&b, &c], "b and c while a is down");
    assert_ne!(a.app.digest(), b.app.digest(), "a was down");
    let _run_a = a.run(&pins, &directory);
    converge(&[&a, &b, &c], "a back");
    assert_eq!(
        a.app.text("SELECT group_concat(canonical_name) FROM tags"),
        "from c"
    );
    drop((run_b, run_c));
}

/// A device whose certificate is not pinned cannot connect, even if it knows
/// (and pins) ours; a paired device's frames arrive tagged with its identity.
#[tokio::test]
async fn only_paired_devices_get_a_link() {
    let [me, friend, stranger] =
        ["me", "friend", "stranger"].map(|n| Identity::generate(n).expect("identity"));
    let my_pins = Pins::default();
    my_pins.pin("friend", friend.cert.clone());
    let their_pins = Pins::default();
    their_pins.pin("me", me.cert.clone());
    let any = "127.0.0.1:0".parse().expect("addr");
    let (mine, mut my_events) = Link::bind(any, &me, &my_pins).expect("bind");
    let addr = mine.local_addr().expect("addr");

    let (theirs, mut stranger_events) = Link::bind(any, &stranger, &their_pins).expect("bind");
    theirs.dial(addr);
    // TLS 1.3: the client finishes its side before the server has judged the
    // client certificate, so the stranger may see its link come up, then closed.
    let reason = match next(&mut stranger_events).await {
        Inbound::Failed { reason, .. } => reason,
        Inbound::Up { .. } => match next(&mut stranger_events).await {
            Inbound::Down { reason, .. } => reason,
            other => panic!("stranger got {other:?}"),
        },
        other => panic!("stranger got {other:?}"),
    };
    assert!(reason.contains("certificate"), "{reason}");
    let Inbound::Failed { reason, .. } = next(&mut my_events).await else {
        panic!("the stranger got through");
    };
    assert!(reason.contains("certificate"), "{reason}");

    let (friends, mut friend_events) = Link::bind(any, &friend, &their_pins).expect("bind");
    friends.dial(addr);
    let Inbound::Up { peer, conn, .. } = next(&mut friend_events).await else {
        panic!("friend has no link");
    };
    assert_eq!(peer, "me");
    conn.send(b"hello".to_vec());
    let mut got = Vec::new();
    while got.len() < 2 {
        match next(&mut my_events).await {
            Inbound::Up { peer, .. } => got.push(format!("up {peer}")),
            Inbound::Message { peer, bytes } => {
                got.push(format!("{peer}: {}", String::from_utf8_lossy(&bytes)))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, ["up friend", "friend: hello"]);

    // Frames arrive in the order sent, a large one before small ones behind it
    // (pages arriving second-first would be fetched twice).
    let sizes: Vec<usize> = (0..20)
        .map(|i| if i % 3 == 0 { 2 << 20 } else { 10 + i })
        .collect();
    for (i, &n) in sizes.iter().enumerate() {
        let mut frame = vec![b'x'; n];
        frame[0] = i as u8;
        conn.send(frame);
    }
    for (i, &n) in sizes.iter().enumerate() {
        let Inbound::Message { bytes, .. } = next(&mut my_events).await else {
            panic!("frame {i} missing");
        };
        assert_eq!(
            (bytes[0] as usize, bytes.len()),
            (i, n),
            "frame {i} in order"
        );
    }
}

async fn next(events: &mut tokio::sync::mpsc::UnboundedReceiver<Inbound>) -> Inbound {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("link open")
}

/// The README's main command: three devices, online and offline, over QUIC.
#[test]
fn the_demo_converges() {
    let dir = temp_dir("quic-demo").join("demo");
    let out = std::process::Command::new(sdsync_tests::root().join("target/release/sdsync"))
        .args(["demo", "--entries", "50", "--dir"])
        .arg(&dir)
        .output()
        .expect("run sdsync demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo's devices diverged or it failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pairing by code: the same code pins each side's real certificate; a wrong
/// code pins nothing on either side and ends the offer (one attempt per code).
#[tokio::test]
async fn pairing_with_the_right_code_pins_both_sides_and_a_wrong_code_nothing() {
    use sdsync_syncer::net::pair::{Offer, PairError, code, join, offer};
    let [laptop, phone] = ["laptop", "phone"].map(|n| Identity::generate(n).expect("identity"));
    let addr: std::net::SocketAddr = free_udp();
    let offering = Offer {
        device: "laptop".into(),
        library: "lib-1".into(),
        advertise: Some("127.0.0.1:7401".parse().expect("addr")),
    };
    let secret = code();
    // The joiner may start first: QUIC resends its first packet until the
    // offer's endpoint answers.
    let (offered, joined) = tokio::join!(
        offer(&laptop, &offering, addr, &secret, &|_, _| Ok(())),
        join(&phone, "phone", None, addr, &secret)
    );
    let (offered, joined) = (offered.expect("offer"), joined.expect("join"));
    assert_eq!(
        (offered.device.as_str(), &offered.cert),
        ("phone", &phone.cert)
    );
    assert_eq!(
        (joined.device.as_str(), &joined.cert),
        ("laptop", &laptop.cert)
    );
    assert_eq!(joined.library, "lib-1");
    assert_eq!(joined.addr, offering.advertise);

    let addr = free_udp();
    let wrong = if secret == "0000-0000-0000" {
        "1111-1111-1111"
    } else {
        "0000-0000-0000"
    };
    let (offered, joined) = tokio::join!(
        offer(&laptop, &offering, addr, &secret, &|_, _| Ok(())),
        join(&phone, "phone", None, addr, wrong)
    );
    assert!(
        matches!(offered, Err(PairError::Mismatch { .. })),
        "{offered:?}"
    );
    assert!(
        matches!(joined, Err(PairError::Mismatch { .. })),
        "{joined:?}"
    );
}

fn free_udp() -> std::net::SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr")
}
