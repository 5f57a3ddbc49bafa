//! Pairing with real `sdsync run` processes on loopback: by code, with and
//! without addresses, `peer-add`'s refusals, a peer added while the syncers
//! run, and a pairing that must not take over a paired device.

use std::process::{Command, Stdio};

use sdsync_tests::devices::{Device, cli, field, free_port, pair_of, sdsync};
use sdsync_tests::{temp_dir, wait_for};

/// The whole path a user takes: `pair generate` shows a code, `pair join` on a new
/// folder uses it, and the two syncers then sync with nothing else configured.
#[test]
fn devices_paired_by_code_sync() {
    let dir = temp_dir("pair-cli");
    let mut a = Device::init(&dir, "a", None);
    let b_dir = dir.join("b.sdlibrary");
    let b_addr = free_port();
    let (mut offer, lines, code, pair_addr) = offer_pairing(&a);
    let joined = cli(&[
        "pair",
        "join",
        b_dir.to_str().expect("utf-8"),
        &code,
        "--addr",
        &pair_addr.to_string(),
        "--advertise",
        &b_addr.to_string(),
    ]);
    assert!(
        joined.starts_with(&format!("paired with {}", a.id)),
        "{joined}"
    );
    assert!(offer.wait().expect("offer exits").success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let mut b = Device {
        id: field(&cli(&["info", b_dir.to_str().expect("utf-8")]), "device"),
        dir: b_dir,
        addr: b_addr,
        syncer: None,
    };
    assert!(
        rest.iter().any(|l| *l == format!("paired with {}", b.id)),
        "{rest:?}"
    );
    assert_eq!(b.library(), a.library());
    a.start();
    b.start();
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid(), 'paired')");
    let (app_a, app_b) = (a.app(), b.app());
    wait_for("convergence", 60, || {
        app_b.count("tags") == 1 && app_a.digest() == app_b.digest()
    });
}

/// Pairing without `--advertise` leaves the other side no address to dial
/// (issue 10): both sides say so instead of pairing into silence.
#[test]
fn pairing_without_an_address_warns_on_both_sides() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("pair-no-addr");
    let a = Device::init(&dir, "a", None);
    let pair_addr = free_port();
    let mut offer = Command::new(sdsync())
        .args(["pair", "generate", a.dir.to_str().expect("utf-8")])
        .args(["--listen", &pair_addr.to_string()])
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pair generate");
    let mut lines = BufReader::new(offer.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let code = first.strip_prefix("pairing code: ").expect("the code line");
    let joined = Command::new(sdsync())
        .args([
            "pair",
            "join",
            dir.join("b.sdlibrary").to_str().expect("utf-8"),
            code,
        ])
        .args(["--addr", &pair_addr.to_string()])
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .output()
        .expect("pair join");
    assert!(joined.status.success());
    let warned = String::from_utf8_lossy(&joined.stderr).into_owned();
    assert!(
        warned.contains("gave no address") && warned.contains("no --advertise"),
        "{warned}"
    );
    let offered = offer.wait_with_output().expect("offer exits");
    let warned = String::from_utf8_lossy(&offered.stderr).into_owned();
    assert!(
        warned.contains("gave no address") && warned.contains("no --advertise"),
        "{warned}"
    );
}

/// `peer-add` refuses what cannot be the peer, before writing anything, and
/// never erases a stored address (issue 10).
#[test]
fn peer_add_refuses_what_cannot_be_the_peer() {
    let (_dir, a, b) = pair_of("peer-add-checks");
    let run = |device: &str, cert: &std::path::Path| {
        Command::new(sdsync())
            .args([
                "peer-add",
                a.dir.to_str().expect("utf-8"),
                "--device",
                device,
                "--cert",
            ])
            .arg(cert)
            .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
            .output()
            .expect("peer-add")
    };
    let refused = |out: std::process::Output, what: &str| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success() && err.contains(what), "{err}");
    };
    refused(
        run(&a.id, &a.dir.join("device.crt")),
        "this device's own id",
    );
    refused(
        run("not-a-uuid", &b.dir.join("device.crt")),
        "a device id is a uuid",
    );
    refused(
        run(&b.id, &a.dir.join("device.crt")),
        "is not that device's certificate",
    );
    // B's own certificate again, without an address: B's address stays.
    let before = cli(&["info", a.dir.to_str().expect("utf-8")]);
    assert!(before.contains(&b.addr.to_string()), "{before}");
    assert!(run(&b.id, &b.dir.join("device.crt")).status.success());
    let after = cli(&["info", a.dir.to_str().expect("utf-8")]);
    assert!(
        after.contains(&b.addr.to_string()),
        "the address was erased: {after}"
    );
}

/// Devices paired while their syncers run sync without a restart (issue 10):
/// each syncer reads the pins `peer-add` wrote to `sync.db` within a redial
/// round, pins the certificate and dials the new address.
#[test]
fn a_peer_added_while_the_syncers_run_syncs_without_a_restart() {
    let dir = temp_dir("pair-live");
    let mut a = Device::init(&dir, "a", None);
    let mut b = Device::init(&dir, "b", Some(&a.library()));
    a.start();
    b.start();
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one'), ('t2', 'two')");
    a.pair(&b);
    b.pair(&a);
    wait_for("B to hold A's two tags", 30, || b.app().count("tags") == 2);
    b.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t3', 'three')");
    wait_for("A to hold B's tag", 30, || a.app().count("tags") == 3);
    assert_eq!(a.app().digest(), b.app().digest());
}

/// `sdsync pair generate` on `a`: the running offer, the rest of its output,
/// the code and where it listens.
fn offer_pairing(
    a: &Device,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    String,
    std::net::SocketAddr,
) {
    use std::io::BufRead;
    let pair_addr = free_port();
    let mut offer = Command::new(sdsync())
        .args(["pair", "generate", a.dir.to_str().expect("utf-8")])
        .args([
            "--listen",
            &pair_addr.to_string(),
            "--advertise",
            &a.addr.to_string(),
        ])
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("pair generate");
    let mut lines = std::io::BufReader::new(offer.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let code = first
        .strip_prefix("pairing code: ")
        .expect("the code line")
        .to_string();
    (offer, lines, code, pair_addr)
}

/// Pairing by code cannot take over a paired device's id (issue 10): a joiner
/// holding the code but claiming B's id with another certificate is refused,
/// with the reason, and A's pin of B is unchanged. A join that fails leaves
/// no half-made folder.
#[test]
fn pairing_cannot_take_over_a_paired_device() {
    let (dir, a, b) = pair_of("pair-takeover");
    let pins = |d: &Device| -> Vec<(String, Vec<u8>)> {
        let conn = rusqlite::Connection::open(d.dir.join("sync.db")).expect("sync.db");
        sdsync_tests::pairs(&conn, "SELECT device, cert FROM peers ORDER BY device")
    };
    let before = pins(&a);
    // An impostor folder: B's id, a certificate of its own naming B.
    let c_dir = dir.join("c.sdlibrary");
    cli(&["init", c_dir.to_str().expect("utf-8")]);
    sdsync_tests::Lib::open(&c_dir.join("database.db"))
        .exec(&format!("SELECT sdsync_reidentify('{}')", b.id));
    for f in ["device.crt", "device.key"] {
        std::fs::remove_file(c_dir.join(f)).expect("remove");
    }
    sdsync_syncer::net::identity::Identity::load_or_create(&c_dir, &b.id).expect("identity");
    let (mut offer, _out, code, pair_addr) = offer_pairing(&a);
    let joined = Command::new(sdsync())
        .args(["pair", "join", c_dir.to_str().expect("utf-8"), &code])
        .args(["--addr", &pair_addr.to_string()])
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .output()
        .expect("pair join");
    let stderr = String::from_utf8_lossy(&joined.stderr);
    assert!(!joined.status.success(), "the impostor paired");
    assert!(
        stderr.contains("pairing refused by the offering device")
            && stderr.contains("paired already"),
        "{stderr}"
    );
    assert!(!offer.wait().expect("offer exits").success());
    assert_eq!(pins(&a), before, "A still pins the real B");
    // A wrong code: the join fails and leaves no folder behind.
    let (mut offer, _out, _, pair_addr) = offer_pairing(&a);
    let d_dir = dir.join("d.sdlibrary");
    let failed = Command::new(sdsync())
        .args([
            "pair",
            "join",
            d_dir.to_str().expect("utf-8"),
            "0000-0000-0000",
        ])
        .args(["--addr", &pair_addr.to_string()])
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .output()
        .expect("pair join");
    assert!(!failed.status.success());
    assert!(!d_dir.exists(), "a half-made folder was left");
    let _ = offer.wait();
}
