//! The conformance suite: real SQLite clients write a library with their normal
//! APIs while two real `sdsync run` syncers sync it over QUIC on 127.0.0.1.
//!
//! Every client (`tests/conformance/`) plays the same scenario in its own idiom,
//! `CLIENT DB EXTENSION SIDE PHASE`:
//!
//! - phase 1, both sides at once: A creates locations `A photos` (directory `DCIM`
//!   and files `IMG_0001.jpg`..`IMG_0040.jpg`, size i·100) and `A old` (5 files),
//!   upserts tag `Vacation` three times, inserts `Work` (grey) then inserts it again
//!   ignoring the conflict, rolls back a savepoint that created `Ghost`, fills
//!   collection `Best of` with IMG 1–10 and deletes IMG_0040; B creates location
//!   `B music` (10 tracks), tags `Vacation` and `B only`;
//! - phase 2, both sides at once, after convergence: A upserts `Vacation` color
//!   twice (ends `purple`), is refused changing B's location (the refused
//!   transaction also inserted tag `Rolled back`, which must not survive), adds
//!   1000 to every remaining IMG size, deletes `A old` with its entries; B sets
//!   `Vacation`'s icon to `beach`, marks IMG_0001 favorite with a note and the tag,
//!   adds IMG_0011 to `Best of`, is refused changing A's entry, deletes `B only`.
//!
//! Clients add their own idioms on top (RETURNING, `OR` clauses, CSV imports,
//! bulk APIs) and exit non-zero on any unexpected outcome, refusals included:
//! a refused write must fail with sdsync's error naming the owner. After each
//! phase both devices must show identical digests of every synced table with
//! nothing parked or quarantined and no dead letter; then [`check_outcome`]
//! asserts the scenario's result on both.
//!
//! The clients' toolchains come from `bash .ci/setup` (a venv `.venv-clients/`,
//! `tests/conformance/node_modules`). Missing ones fail the test with that hint,
//! unless `SDSYNC_SKIP_CLIENTS=1`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sdsync_tests::devices::{Device, cli, pair_of};
use sdsync_tests::{Lib, extension_path, root};

/// How long a client phase may run, and how long convergence may take.
const CLIENT_SECS: u64 = 60;
const CONVERGE_SECS: u64 = 30;

/// How a client is started: the program, then its script.
struct Client {
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
}

/// The client, or `None` when its toolchain is missing and skipping is allowed.
fn client(name: &'static str, program: PathBuf, needs: &[PathBuf], script: &str) -> Option<Client> {
    let missing: Vec<String> = needs
        .iter()
        .chain(std::iter::once(&program))
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        if std::env::var("SDSYNC_SKIP_CLIENTS").as_deref() == Ok("1") {
            eprintln!("skipping client {name}: missing {missing:?} (SDSYNC_SKIP_CLIENTS=1)");
            return None;
        }
        panic!(
            "client {name} is not installed (missing {missing:?}): run `bash .ci/setup`, \
             or set SDSYNC_SKIP_CLIENTS=1 to skip the conformance suite"
        );
    }
    Some(Client {
        name,
        program,
        script: root().join("tests/conformance").join(script),
    })
}

/// A Python client from the venv `.ci/setup` makes from Debian's python3.
fn python_client(name: &'static str, script: &str) -> Option<Client> {
    let venv = root().join(".venv-clients");
    client(
        name,
        venv.join("bin/python"),
        &[venv.join(".sdsync-requirements")],
        script,
    )
}

impl Client {
    /// Runs the client once on `dev`'s database (with `args` after the
    /// extension's path); it must succeed and print `done`.
    fn run_once(&self, dev: &Device, args: &[&str], done: &str) {
        let out = Command::new(&self.program)
            .arg(&self.script)
            .arg(dev.database())
            .arg(extension_path())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.name));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == done,
            "{}: {stdout}{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts one side of one phase; output goes to files in the library folder.
    fn spawn(&self, dev: &Device, side: &str, phase: u8) -> (Child, PathBuf) {
        let log = dev.dir.join(format!("{}-{side}{phase}.log", self.name));
        let out = File::create(&log).expect("client log");
        let child = Command::new(&self.program)
            .arg(&self.script)
            .arg(dev.database())
            .arg(extension_path())
            .arg(side)
            .arg(phase.to_string())
            .current_dir(&dev.dir)
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({}): {e}", self.name, self.program.display()));
        (child, log)
    }

    /// Runs a phase on both devices at once; fails with the client's output.
    fn phase(&self, a: &Device, b: &Device, phase: u8) {
        let runs = [self.spawn(a, "a", phase), self.spawn(b, "b", phase)];
        let deadline = Instant::now() + Duration::from_secs(CLIENT_SECS);
        for (mut child, log) in runs {
            let status = loop {
                if let Some(s) = child.try_wait().expect("wait for client") {
                    break Some(s);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            match status {
                Some(s) if s.success() => {}
                Some(s) => panic!(
                    "{} phase {phase} ({}) failed ({s}):\n{output}",
                    self.name,
                    log.display()
                ),
                None => panic!(
                    "{} phase {phase} ({}) did not finish in {CLIENT_SECS} s:\n{output}",
                    self.name,
                    log.display()
                ),
            }
        }
    }

    /// A migration run by this client on A (`SIDE` a) while both syncers
    /// run, then on B once A's `rows` rows of `collections` and its kept
    /// change whose data is `LIKE kept` are there (values for columns B
    /// lacks yet); returns the devices once they converged.
    fn migrate_a_then_b(&self, rows: i64, kept: &str) -> (Device, Device) {
        let (_dir, mut a, mut b) = pair_of(&format!("client-{}", self.name));
        a.start();
        b.start();
        self.run_once(&a, &["a"], "migrated");
        let app_b = b.app();
        sdsync_tests::wait_for("A's writes on B before B migrates", CONVERGE_SECS, || {
            app_b.int("SELECT count(*) FROM collections WHERE uuid LIKE 'a-%'") == rows
                && app_b.int(&format!(
                    "SELECT count(*) FROM sdsync_kept WHERE data LIKE '{kept}'"
                )) == 1
        });
        self.run_once(&b, &["b"], "migrated");
        converge(&a, &b, "after both migrated");
        (a, b)
    }

    /// The whole scenario: two syncing devices, both phases, the checks.
    fn run(&self) {
        let (_dir, mut a, mut b) = pair_of(&format!("client-{}", self.name));
        a.start();
        b.start();
        self.phase(&a, &b, 1);
        converge(&a, &b, &format!("{} phase 1", self.name));
        self.phase(&a, &b, 2);
        converge(&a, &b, &format!("{} phase 2", self.name));
        for dev in [&a, &b] {
            check_outcome(&dev.app(), &a.id, &b.id);
        }
    }
}

/// Changes a device holds aside: parked, plus quarantined when that table exists.
fn held_aside(lib: &Lib) -> i64 {
    let parked = lib.int("SELECT count(*) FROM sdsync_parked");
    let quarantine = lib.int(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sdsync_quarantine'",
    );
    if quarantine == 0 {
        parked
    } else {
        parked + lib.int("SELECT count(*) FROM sdsync_quarantine")
    }
}

/// Waits (with a deadline) for identical digests, nothing held aside and no dead
/// letter on both devices; fails with what differs.
fn converge(a: &Device, b: &Device, what: &str) {
    let (la, lb) = (a.app(), b.app());
    let status = |d: &Device| cli(&["status", d.dir.to_str().expect("utf-8")]);
    let deadline = Instant::now() + Duration::from_secs(CONVERGE_SECS);
    loop {
        let (da, db) = (la.digest(), lb.digest());
        let settled = da == db && held_aside(&la) == 0 && held_aside(&lb) == 0;
        if settled {
            let (sa, sb) = (status(a), status(b));
            let clean = |s: &str| !s.contains("dead letter") && !s.contains("quarantin");
            assert!(
                clean(&sa) && clean(&sb),
                "{what}: converged, but with dead letters or quarantine:\nA:\n{sa}\nB:\n{sb}"
            );
            return;
        }
        if Instant::now() > deadline {
            let mut diff = String::new();
            for (table, rows_a) in &da {
                let rows_b = db.get(table).cloned().unwrap_or_default();
                let only_a: Vec<&String> = rows_a.iter().filter(|r| !rows_b.contains(r)).collect();
                let only_b: Vec<&String> = rows_b.iter().filter(|r| !rows_a.contains(r)).collect();
                if !only_a.is_empty() || !only_b.is_empty() {
                    diff += &format!(
                        "table {table}: {} row(s) only on A {:?}, {} only on B {:?}\n",
                        only_a.len(),
                        only_a.iter().take(3).collect::<Vec<_>>(),
                        only_b.len(),
                        only_b.iter().take(3).collect::<Vec<_>>()
                    );
                }
            }
            let parked = |l: &Lib| {
                l.text(
                    "SELECT coalesce(group_concat(reason || ' ×' || n, ' | '), '') FROM \
                     (SELECT reason, count(*) AS n FROM sdsync_parked GROUP BY reason)",
                )
            };
            panic!(
                "{what}: no convergence in {CONVERGE_SECS} s\n{diff}parked on A: {}\nparked on B: {}\n\
                 status A ({}):\n{}status B ({}):\n{}",
                parked(&la),
                parked(&lb),
                a.dir.display(),
                status(a),
                b.dir.display(),
                status(b)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The scenario's result, the same whatever the client (see the module docs).
fn check_outcome(lib: &Lib, a_id: &str, b_id: &str) {
    let who = lib.device();
    let on = if who == a_id { "A" } else { "B" };
    assert!(who == a_id || who == b_id);
    let q = |sql: &str| lib.text(&format!("SELECT coalesce(CAST(({sql}) AS TEXT), 'NULL')"));
    let tag = |name: &str, col: &str| {
        q(&format!(
            "SELECT {col} FROM tags WHERE uuid = sdsync_uuid_v5('tag', '{name}')"
        ))
    };
    let expect = [
        ("Vacation color", tag("Vacation", "color"), "purple"),
        ("Vacation icon", tag("Vacation", "icon"), "beach"),
        ("Work color", tag("Work", "color"), "grey"),
        (
            "tags left",
            q(
                "SELECT group_concat(canonical_name, ',') FROM (SELECT canonical_name FROM tags \
               WHERE canonical_name IN ('Vacation', 'Work', 'Ghost', 'Rolled back', 'B only') \
               ORDER BY 1)",
            ),
            "Vacation,Work",
        ),
        (
            "locations",
            q(
                "SELECT group_concat(name, ',') FROM (SELECT name FROM locations \
               WHERE name IN ('A photos', 'A old', 'B music') ORDER BY 1)",
            ),
            "A photos,B music",
        ),
        (
            "A photos entries",
            q(
                "SELECT count(*) FROM entries e JOIN locations l ON l.id = e.location_id \
               WHERE l.name = 'A photos'",
            ),
            "40",
        ),
        (
            "IMG sizes",
            q(
                "SELECT group_concat(size, ',') FROM (SELECT size FROM entries \
               WHERE name IN ('IMG_0001.jpg', 'IMG_0039.jpg', 'IMG_0040.jpg') ORDER BY name)",
            ),
            "1100,4900",
        ),
        (
            "entries of A old",
            q("SELECT count(*) FROM entries WHERE name LIKE 'old_%'"),
            "0",
        ),
        (
            "B music tracks",
            q(
                "SELECT count(*) FROM entries e JOIN locations l ON l.id = e.location_id \
               WHERE l.name = 'B music' AND e.name LIKE 'track_%'",
            ),
            "10",
        ),
        (
            "Best of",
            q(
                "SELECT group_concat(e.name, ',') FROM (SELECT e.name FROM collection_entries ce \
               JOIN collections c ON c.id = ce.collection_id JOIN entries e ON e.id = ce.entry_id \
               WHERE c.name = 'Best of' ORDER BY e.name) e",
            ),
            "IMG_0001.jpg,IMG_0002.jpg,IMG_0003.jpg,IMG_0004.jpg,IMG_0005.jpg,IMG_0006.jpg,\
             IMG_0007.jpg,IMG_0008.jpg,IMG_0009.jpg,IMG_0010.jpg,IMG_0011.jpg",
        ),
        (
            "IMG_0001 metadata",
            q(
                "SELECT m.favorite || ':' || m.notes || ':' || (SELECT group_concat(t.canonical_name) \
               FROM user_metadata_tags mt JOIN tags t ON t.id = mt.tag_id \
               WHERE mt.user_metadata_id = m.id) FROM user_metadata m \
               JOIN entries e ON e.id = m.entry_id WHERE e.name = 'IMG_0001.jpg'",
            ),
            "1:from B:Vacation",
        ),
    ];
    for (what, got, want) in expect {
        assert_eq!(got, want, "{what} on device {on}");
    }
    // Attribution: every owned row is served under the device that wrote it, and
    // each column of the shared tag under the device that wrote it last.
    let owner = format!("CASE WHEN l.name LIKE 'A %' THEN '{a_id}' ELSE '{b_id}' END");
    let misattributed = lib.int(&format!(
        "SELECT (SELECT count(*) FROM locations l LEFT JOIN sdsync_changes c \
           ON c.tbl = 'locations' AND c.pk = l.uuid WHERE c.origin IS NOT {owner}) \
         + (SELECT count(*) FROM entries e JOIN locations l ON l.id = e.location_id \
           LEFT JOIN sdsync_changes c ON c.tbl = 'entries' AND c.pk = e.uuid \
           WHERE c.origin IS NOT {owner})"
    ));
    assert_eq!(
        misattributed, 0,
        "owned rows served under the wrong origin on {on}"
    );
    let vacation_column = |col: &str| {
        q(&format!(
            "SELECT group_concat(origin) FROM sdsync_changes WHERE tbl = 'tags' \
             AND pk = sdsync_uuid_v5('tag', 'Vacation') AND json_type(data, '$.{col}') IS NOT NULL"
        ))
    };
    assert_eq!(
        vacation_column("color"),
        a_id,
        "Vacation color's origin on {on}"
    );
    assert_eq!(
        vacation_column("icon"),
        b_id,
        "Vacation icon's origin on {on}"
    );
}

#[test]
fn sqlite_utils_cli_and_library() {
    if let Some(c) = python_client("sqlite_utils", "sqlite_utils_client.py") {
        c.run();
    }
}

#[test]
fn sqlalchemy_orm() {
    if let Some(c) = python_client("sqlalchemy", "sqlalchemy_client.py") {
        c.run();
    }
}

#[test]
fn django_orm() {
    if let Some(c) = python_client("django", "django_client.py") {
        c.run();
    }
}

#[test]
fn node_better_sqlite3() {
    let dir = root().join("tests/conformance/node_modules/better-sqlite3");
    let node = which("node").unwrap_or_else(|| PathBuf::from("/usr/bin/node"));
    let addon = dir.join("build/Release/better_sqlite3.node");
    if let Some(c) = client("better_sqlite3", node, &[addon], "better_sqlite3_client.js") {
        c.run();
    }
}

#[test]
fn sqlite3_shell() {
    let shell = which("sqlite3").unwrap_or_else(|| PathBuf::from("/usr/bin/sqlite3"));
    if let Some(c) = client(
        "sqlite3_shell",
        PathBuf::from("/usr/bin/python3"),
        &[shell],
        "shell_client.py",
    ) {
        c.run();
    }
}

/// A program on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// A table rebuild by a client's schema API (sqlite-utils `transform`; Django's
/// `AlterField` does the same: create, copy, drop, rename) keeps capture: the
/// WAL hook re-tracks the table in place after the rebuild commits, so the
/// insert that follows syncs (`migrate::watch`).
#[test]
fn sqlite_utils_transform_keeps_capture() {
    let Some(c) = python_client("sqlite_utils_transform", "sqlite_utils_transform.py") else {
        return;
    };
    let (_dir, mut a, mut b) = pair_of("client-transform");
    a.start();
    b.start();
    c.run_once(&a, &[], "transformed");
    let app_b = b.app();
    sdsync_tests::wait_for("the insert after the rebuild on B", CONVERGE_SECS, || {
        app_b.int("SELECT count(*) FROM collections WHERE uuid = 'after-transform'") == 1
    });
    converge(&a, &b, "after transform");
}

/// Django's schema editor migrates `collections` as a migration's AddField,
/// AlterField (the 12-step remake, which moves the column to the end) and
/// RenameField (`RENAME COLUMN`) do, each followed by ORM writes: first on A
/// while both syncers run, later on B. A's writes reach B before B migrates
/// (values for columns B lacks wait kept), and both end identical, with every
/// value under the migrated names: A's edit of the renamed column made after
/// its rename survives B's rename (a rename taken for a column dropped and
/// one added made B's rename stamp its older value anew: A's edit was lost).
#[test]
fn django_migrations_keep_syncing() {
    let Some(c) = python_client("django_migrate", "django_migrate.py") else {
        return;
    };
    let (_a, b) = c.migrate_a_then_b(3, "%s3%");
    let app_b = b.app();
    assert_eq!(
        app_b.text(
            "SELECT group_concat(uuid || ':' || ifnull(summary, '-') || ':' || ifnull(emoji, '-'), ' ') \
             FROM (SELECT * FROM collections ORDER BY uuid)"
        ),
        "a-added:s2:🎉 a-before:s3:- a-renamed:s1:- b-added:s2:🎉 b-before:s3:- b-renamed:s1:-"
    );
}

/// Alembic's batch mode rebuilds `collections` twice (`recreate="always"`:
/// create `_alembic_tmp_collections`, copy, drop, rename; the first adds a
/// column). Tried first with `foreign_keys` on, the rebuild is refused (its
/// `DROP` would cascade into the collection's membership on every device);
/// with it off, as Alembic documents, each rebuild runs (the second renames
/// a column in its copy step) and is followed by SQLAlchemy Core writes:
/// first on A while both syncers run, later on B. Capture follows each
/// rebuild (`migrate::watch`), A's writes reach B before B migrates (the
/// new column's values wait kept), and both end identical with every value:
/// A's edit of the renamed column made after its rebuild survives B's.
#[test]
fn alembic_batch_migrations_keep_syncing() {
    let Some(c) = python_client("alembic_batch", "alembic_batch.py") else {
        return;
    };
    let (_a, b) = c.migrate_a_then_b(2, "%✓%s3%");
    let app_b = b.app();
    assert_eq!(
        app_b.text(
            "SELECT group_concat(uuid || ':' || ifnull(summary, '-') || ':' || ifnull(emoji, '-'), ' ') \
             FROM (SELECT * FROM collections ORDER BY uuid)"
        ),
        "a-added:s2:🎉 a-before:s3:✓ b-added:s2:🎉 b-before:s3:✓"
    );
    assert_eq!(
        app_b.text("SELECT group_concat(uuid, ' ') FROM (SELECT uuid FROM collection_entries ORDER BY uuid)"),
        "a-member b-member"
    );
}

/// sqlite-utils renames a column by a rebuild (`transform(rename=…)`), on A
/// and later on B, both syncers running. A edits the renamed column after
/// its rename; B, renaming later, keeps that edit: the rename is read from
/// the rebuild's copy step, so B's rebuild does not stamp its older value
/// anew (`migrate::copies`).
#[test]
fn sqlite_utils_transform_rename_keeps_a_later_edit() {
    let Some(c) = python_client("sqlite_utils_rename", "sqlite_utils_rename.py") else {
        return;
    };
    let (_dir, mut a, mut b) = pair_of("client-transform-rename");
    a.start();
    b.start();
    a.app().exec(
        "INSERT INTO collections(uuid, name, description) VALUES ('c1', 'One', 'd1'), ('c2', 'Two', 'd2')",
    );
    let app_b = b.app();
    sdsync_tests::wait_for("the rows on B", CONVERGE_SECS, || {
        app_b.int("SELECT count(*) FROM collections WHERE uuid IN ('c1', 'c2')") == 2
    });
    c.run_once(&a, &["a"], "renamed");
    sdsync_tests::wait_for("A's edit kept on B", CONVERGE_SECS, || {
        app_b.int("SELECT count(*) FROM sdsync_kept WHERE data LIKE '%s3%'") == 1
    });
    c.run_once(&b, &["b"], "renamed");
    converge(&a, &b, "after both renamed");
    for app in [a.app(), b.app()] {
        assert_eq!(
            app.text("SELECT group_concat(uuid || ':' || summary, ' ') FROM (SELECT * FROM collections ORDER BY uuid)"),
            "c1:d1 c2:s3"
        );
    }
}
