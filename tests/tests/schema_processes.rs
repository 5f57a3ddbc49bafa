//! Schema changes and restores with real `sdsync run` processes on 127.0.0.1:
//! one device on a newer schema for a while, a 12-step rebuild while both
//! syncers run, a database restored from a `.backup` copy and a whole
//! folder restored from a copy.

use std::process::Command;

use sdsync_tests::devices::{Device, cli, free_tcp_port, http_get, metric, pair_of};
use sdsync_tests::wait_for;

const SECS: u64 = 60;

fn status(d: &Device) -> String {
    cli(&["status", d.dir.to_str().expect("utf-8")])
}

/// `cp -r FROM TO`, as a user copies a library folder.
fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    let out = Command::new("cp")
        .args(["-r"])
        .arg(from)
        .arg(to)
        .output()
        .expect("cp -r");
    assert!(out.status.success(), "{out:?}");
}

fn same(a: &Device, b: &Device) -> bool {
    a.app().digest() == b.app().digest()
}

#[test]
fn a_column_added_on_one_device_for_a_while_syncs_and_both_say_so() {
    let (_dir, mut a, mut b) = pair_of("schema-one-side");
    let port = free_tcp_port();
    a.start();
    b.start_with(&["--metrics", &format!("127.0.0.1:{port}")]);
    let mismatches = format!("sync_schema_mismatches{{peer=\"{}\"}}", a.id);
    let (app_a, app_b) = (a.app(), b.app());
    app_a.exec(
        "ALTER TABLE tags ADD COLUMN emoji TEXT;
         INSERT INTO tags(uuid, canonical_name, emoji) VALUES ('t1', 'one', '🎉')",
    );
    wait_for("t1 on B without its new column", SECS, || {
        app_b.int("SELECT count(*) FROM tags WHERE uuid = 't1'") == 1
    });
    wait_for("both devices naming the mismatch", SECS, || {
        status(&a).contains("table tags: this device syncs column emoji")
            && status(&b).contains("table tags: the peer syncs column emoji")
    });
    assert!(
        status(&b).contains("kept        1 change(s)"),
        "{}",
        status(&b)
    );
    // And B's metrics (refreshed at each redial round).
    wait_for("B's metrics naming the mismatch", SECS, || {
        let m = http_get(port, "/metrics");
        metric(&m, &mismatches).is_some_and(|n| n >= 1)
            && metric(&m, "sync_kept_changes") == Some(1)
    });
    // B's own writes still reach A meanwhile.
    app_b.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'two')");
    wait_for("t2 on A", SECS, || {
        app_a.int("SELECT count(*) FROM tags WHERE uuid = 't2'") == 1
    });
    app_b.exec("ALTER TABLE tags ADD COLUMN emoji TEXT");
    wait_for("the same library on both", SECS, || same(&a, &b));
    assert_eq!(app_b.text("SELECT emoji FROM tags WHERE uuid = 't1'"), "🎉");
    wait_for("the mismatch gone from both", SECS, || {
        !status(&a).contains("mismatch") && !status(&b).contains("mismatch")
    });
    assert!(!status(&b).contains("kept"), "{}", status(&b));
    wait_for("B's metrics back to none", SECS, || {
        let m = http_get(port, "/metrics");
        metric(&m, &mismatches) == Some(0) && metric(&m, "sync_kept_changes") == Some(0)
    });
}

#[test]
fn a_rebuild_while_both_syncers_run_keeps_syncing() {
    let (_dir, mut a, mut b) = pair_of("schema-rebuild");
    a.start();
    b.start();
    let (app_a, app_b) = (a.app(), b.app());
    app_a.exec("INSERT INTO collections(uuid, name) VALUES ('c1', 'One')");
    wait_for("c1 on B", SECS, || app_b.count("collections") == 1);
    app_a.exec(
        "PRAGMA foreign_keys = OFF; BEGIN;
         CREATE TABLE new__collections(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE,
           description TEXT, created_at TEXT, updated_at TEXT, name TEXT NOT NULL DEFAULT '');
         INSERT INTO new__collections(id, uuid, description, created_at, updated_at, name)
           SELECT id, uuid, description, created_at, updated_at, name FROM collections;
         DROP TABLE collections;
         ALTER TABLE new__collections RENAME TO collections;
         COMMIT; PRAGMA foreign_keys = ON;
         INSERT INTO collections(uuid, name) VALUES ('c2', 'Two');
         UPDATE collections SET description = 'd' WHERE uuid = 'c1'",
    );
    wait_for("the rebuilt table's writes on B", SECS, || {
        app_b.count("collections") == 2 && same(&a, &b)
    });
    assert!(!status(&a).contains("schema "), "{}", status(&a));
}

/// `DROP TABLE` and `ALTER TABLE … RENAME TO` of tracked tables on A while
/// both syncers run: every other table keeps syncing both ways, status names
/// the dropped table, B's rows for it wait kept on A, and B's writes under a
/// renamed table's former name apply to it on A; once B renames and drops
/// too, both end identical.
#[test]
fn dropping_and_renaming_tables_while_both_syncers_run_keeps_the_rest_syncing() {
    let (_dir, mut a, mut b) = pair_of("schema-drop-rename");
    a.start();
    b.start();
    let (app_a, app_b) = (a.app(), b.app());
    app_a.exec("INSERT INTO audit_log(uuid, action) VALUES ('l0', 'scan')");
    wait_for("l0 on B", SECS, || app_b.count("audit_log") == 1);
    app_a.exec(
        "DROP TABLE audit_log;
         ALTER TABLE collections RENAME TO albums;
         INSERT INTO albums(uuid, name) VALUES ('c1', 'One');
         INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'One')",
    );
    app_b.exec(
        "INSERT INTO audit_log(uuid, action) VALUES ('l1', 'scan');
         INSERT INTO collections(uuid, name) VALUES ('c2', 'Two');
         INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'Two')",
    );
    wait_for("tags both ways, and B's album on A", SECS, || {
        app_a.int("SELECT count(*) FROM tags WHERE uuid = 't2'") == 1
            && app_b.int("SELECT count(*) FROM tags WHERE uuid = 't1'") == 1
            && app_a.int("SELECT count(*) FROM albums WHERE uuid = 'c2'") == 1
    });
    wait_for("A's status naming the dropped table", SECS, || {
        status(&a).contains("schema      audit_log is missing")
    });
    app_b.exec("ALTER TABLE collections RENAME TO albums; DROP TABLE audit_log");
    wait_for("the same library on both", SECS, || {
        app_b.int("SELECT count(*) FROM albums WHERE uuid = 'c1'") == 1 && same(&a, &b)
    });
}

#[test]
fn a_database_restored_from_a_backup_gets_its_changes_back() {
    let (dir, mut a, mut b) = pair_of("restore-backup");
    a.start();
    b.start();
    let (app_a, app_b) = (a.app(), b.app());
    app_a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    let backup = dir.join("a-backup.db");
    let out = Command::new("sqlite3")
        .arg(a.database())
        .arg(format!(".backup {}", backup.display()))
        .output()
        .expect("sqlite3 .backup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app_a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'two'), ('t3', 'three')");
    wait_for("three tags on B", SECS, || app_b.count("tags") == 3);
    // Stop A's syncer, restore the backup, and write before it runs again.
    a.kill();
    drop(app_a);
    let out = Command::new("sqlite3")
        .arg(a.database())
        .arg(format!(".restore {}", backup.display()))
        .output()
        .expect("sqlite3 .restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app_a = a.app();
    assert_eq!(app_a.count("tags"), 1);
    app_a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t4', 'four')");
    a.start();
    wait_for("four tags on both", SECS, || {
        app_a.count("tags") == 4 && app_b.count("tags") == 4 && same(&a, &b)
    });
    let log = std::fs::read_to_string(a.dir.join("syncer.log")).unwrap_or_default();
    assert!(log.contains("Restored") && log.contains("WARN"), "{log}");
    // Both statuses keep saying so once it is over.
    assert!(
        status(&a).contains("notice      this device's library went back to an older copy"),
        "{}",
        status(&a)
    );
    wait_for("B's status naming A's restore", SECS, || {
        status(&b).contains(&format!("notice      peer {} went back", a.id))
    });
}

/// The whole folder (`sync.db` with it, so the record inside it goes back
/// too) restored from a copy, then written more than it lost before the
/// syncer runs again. On the same machine the syncer's record outside the
/// folder tells it.
#[test]
fn a_whole_folder_restored_then_written_more_than_it_lost_gets_its_changes_back() {
    whole_folder_restored("restore-folder", true, false);
}

/// The same restored on another machine (no record outside the folder): the
/// device reuses numbers its peer holds for the lost changes, and only the
/// peer can tell. Its Hello carries the newest changes of A it holds; A finds
/// they are not its history, renumbers its own changes above them and takes
/// the lost ones back.
#[test]
fn a_whole_folder_restored_elsewhere_is_told_by_its_peer() {
    whole_folder_restored("restore-elsewhere", false, false);
}

/// The same, but the app rewrites one column of one row after the restore,
/// eight times, so none of the changes it wrote under the reused numbers is
/// current anywhere but the last: the peer's newest changes of A agree with
/// what A holds. A's record of issued numbers (`sdsync_issued`: its first
/// write after the restore, in a later second than any lost change) and the
/// clock A announced before (`your_clock`) still tell. Failed before
/// session 13: the lost tags stayed on B only.
#[test]
fn a_whole_folder_restored_elsewhere_then_one_row_rewritten_is_told_too() {
    whole_folder_restored("restore-rewrite", false, true);
}

fn whole_folder_restored(name: &str, same_machine: bool, rewrite: bool) {
    let (dir, mut a, mut b) = pair_of(name);
    a.start();
    b.start();
    let tag = |n: u32| format!("INSERT INTO tags(uuid, canonical_name) VALUES ('t{n}', 'tag {n}')");
    let app_b = b.app();
    a.app().exec(&tag(1));
    wait_for("the first tag on B", SECS, || app_b.count("tags") == 1);
    // Stopped, not killed: B hears the link close (a connection it still
    // counts as alive would make the restored folder, a new file, look like
    // a second copy running at once; README, "Backup and restore").
    a.stop();
    let backup = dir.join("a-backup.sdlibrary");
    copy_folder(&a.dir, &backup);
    a.start();
    a.app().exec(&tag(2));
    a.app().exec(&tag(3));
    wait_for("three tags on B", SECS, || app_b.count("tags") == 3);
    // Stop A's syncer, put the old folder back, and write more than was lost.
    a.stop();
    std::fs::remove_dir_all(&a.dir).expect("remove A's folder");
    copy_folder(&backup, &a.dir);
    if !same_machine {
        let _ = std::fs::remove_dir_all(a.state_dir());
    }
    let app_a = a.app();
    assert_eq!(app_a.count("tags"), 1);
    // A restore comes after its backup: the app's first write falls in a
    // later second than the backup's clock (what the record keys on).
    let restored = app_a.int("SELECT hlc FROM sdsync_clock");
    wait_for("a second after the backup's clock", SECS, || {
        sdsync_tests::now_ms() >> 10 > restored >> 26
    });
    let written = if rewrite {
        // One column group of one row, rewritten: each version replaces the
        // one before, so only the last number stays current.
        for n in 1..=8 {
            app_a.exec(&format!("UPDATE tags SET color = 'c{n}' WHERE uuid = 't1'"));
        }
        3
    } else {
        for n in 4..=7 {
            app_a.exec(&tag(n));
        }
        7
    };
    a.start();
    wait_for("every tag on both", SECS, || {
        app_a.count("tags") == written && app_b.count("tags") == written && same(&a, &b)
    });
    let log = |d: &Device| std::fs::read_to_string(d.dir.join("syncer.log")).unwrap_or_default();
    let (log_a, log_b) = (log(&a), log(&b));
    let told_by_peer = log_a.contains("reused: Some");
    assert!(
        log_a.contains("WARN") && log_a.contains("Restored") && told_by_peer != same_machine,
        "{log_a}"
    );
    assert!(
        log_b.contains("WARN") && log_b.contains("PeerRestored"),
        "{log_b}"
    );
}

/// The same restored elsewhere within the clock skew between the two
/// devices: B's app writes with a clock three minutes ahead (peers accept
/// five), which pushes A's clock ahead of its wall clock, so every change A
/// issues gets the clock + 1. Restored from a copy seconds old, A issued,
/// under the very numbers its lost changes had, the very same `(seq, HLC)`
/// pairs: B took the new changes for ones it held and nothing could tell
/// (without the step: t4 and t5 on A only, t2 and t3 on B only, no
/// `Restored`). Here the database is restored into the app's open
/// connection, as the shell's `.restore` does: that connection issued
/// before, so only the syncer's step at its start (`with_clock_stepped`)
/// keeps the two histories apart.
#[test]
fn a_whole_folder_restored_elsewhere_within_its_clock_skew_is_told_too() {
    restored_within_skew("restore-skew", true);
}

/// The same with the app writing before the syncer starts, after the
/// backup and after the restore, each time on a new connection: each
/// connection's first change on a clock ahead of the wall clock takes a
/// step of its own (`sdsync_next_hlc`). Without it the two histories were
/// the same pairs again. The steps are drawn from the real wall clock: the
/// two draw the same one once in 2,048 runs, and the test then fails.
#[test]
fn a_whole_folder_restored_within_its_clock_skew_and_written_at_once_is_told_too() {
    restored_within_skew("restore-skew-app", false);
}

fn restored_within_skew(name: &str, syncer_first: bool) {
    let (dir, mut a, mut b) = pair_of(name);
    a.start();
    b.start();
    let tag = |n: u32| format!("INSERT INTO tags(uuid, canonical_name) VALUES ('t{n}', 'tag {n}')");
    let (mut app_a, app_b) = (a.app(), b.app());
    // A's app connection has issued a change before (on a clock behind the
    // wall clock: no step), so it takes no step of its own later.
    app_a.exec(&tag(1));
    app_b.exec(&format!(
        "SELECT sdsync_test_clock({})",
        sdsync_tests::now_ms() + 180_000
    ));
    app_b.exec(&tag(0));
    wait_for("t0 on A", SECS, || app_a.count("tags") == 2);
    assert!(app_a.int("SELECT hlc FROM sdsync_clock") >> 16 > sdsync_tests::now_ms() + 60_000);
    a.stop();
    let backup = dir.join("a-backup.sdlibrary");
    copy_folder(&a.dir, &backup);
    let log = |d: &Device| std::fs::read_to_string(d.dir.join("syncer.log")).unwrap_or_default();
    // The lost changes, from the same clock (no start of the syncer in
    // between when the app writes first, as after a backup taken while the
    // syncer ran).
    if syncer_first {
        let before = log(&a).matches("link up").count();
        a.start();
        wait_for("A's syncer up", SECS, || {
            log(&a).matches("link up").count() > before
        });
    }
    app_a.exec(&tag(2));
    app_a.exec(&tag(3));
    a.start();
    wait_for("t2 and t3 on B", SECS, || app_b.count("tags") == 4);
    // Restored while B is away, and written more than was lost.
    a.stop();
    b.stop();
    if syncer_first {
        restore_into(&mut app_a.conn, &backup.join("database.db"));
        for file in ["sync.db", "sync.db-wal", "sync.db-shm"] {
            let _ = std::fs::remove_file(a.dir.join(file));
            if backup.join(file).exists() {
                std::fs::copy(backup.join(file), a.dir.join(file)).expect("copy sync.db back");
            }
        }
    } else {
        drop(app_a);
        std::fs::remove_dir_all(&a.dir).expect("remove A's folder");
        copy_folder(&backup, &a.dir);
        app_a = a.app();
    }
    let _ = std::fs::remove_dir_all(a.state_dir());
    assert_eq!(app_a.count("tags"), 2);
    let restored = app_a.int("SELECT hlc FROM sdsync_clock");
    if syncer_first {
        a.start();
        wait_for("A's syncer started, its clock stepped", SECS, || {
            app_a.int("SELECT hlc FROM sdsync_clock") > restored
        });
    }
    for n in 4..=7 {
        app_a.exec(&tag(n));
    }
    a.start();
    b.start();
    wait_for("every tag on both", SECS, || {
        app_a.count("tags") == 8 && app_b.count("tags") == 8 && same(&a, &b)
    });
    assert!(log(&a).contains("reused: Some"), "{}", log(&a));
}

/// `.restore FILE` as the sqlite3 shell does it: SQLite's online backup from
/// the file into the open connection.
fn restore_into(conn: &mut rusqlite::Connection, from: &std::path::Path) {
    let src = rusqlite::Connection::open(from).expect("open the backup");
    rusqlite::backup::Backup::new(&src, conn)
        .and_then(|b| b.run_to_completion(1000, std::time::Duration::ZERO, None))
        .expect(".restore");
}

/// A copied library folder made a device of its own: `sdsync reidentify DIR`
/// gives it a new device id and certificate and forgets the original's
/// pairings; paired again, it syncs as a third device, and the rows it had
/// from before the copy keep their origin.
#[test]
fn a_copied_folder_reidentified_is_a_device_of_its_own() {
    let (dir, mut a, mut b) = pair_of("copy-reidentify");
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    let copy_dir = dir.join("copy.sdlibrary");
    copy_folder(&a.dir, &copy_dir);
    let said = cli(&["reidentify", copy_dir.to_str().expect("utf-8")]);
    assert!(said.contains("new certificate"), "{said}");
    let mut c = Device {
        id: sdsync_tests::devices::field(
            &cli(&["info", copy_dir.to_str().expect("utf-8")]),
            "device",
        ),
        dir: copy_dir,
        addr: sdsync_tests::devices::free_port(),
        syncer: None,
    };
    assert_ne!(c.id, a.id);
    let cert = |d: &Device| std::fs::read(d.dir.join("device.crt")).expect("certificate");
    assert_ne!(cert(&c), cert(&a));
    assert!(!cli(&["info", c.dir.to_str().expect("utf-8")]).contains(&b.id));
    c.pair(&b);
    b.pair(&c);
    a.start();
    b.start();
    c.start();
    c.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'two')");
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t3', 'three')");
    let app_b = b.app();
    wait_for("all three tags on B", SECS, || app_b.count("tags") == 3);
    assert_eq!(
        app_b.text("SELECT origin FROM sdsync_changes WHERE pk = 't2'"),
        c.id
    );
}

/// A copied folder started beside the original (`cp -r`, then `sdsync run` on
/// both): B hears two copies of A at once and tells the newer one (the copy:
/// its database file is another) to stop. Its `sdsync run` exits with an error
/// naming `sdsync reidentify`, its status says so, and it refuses to start
/// again; A and B never stop syncing.
#[test]
fn a_copied_folder_running_beside_the_original_is_stopped() {
    let (dir, mut a, mut b) = pair_of("copy-running");
    a.start();
    b.start();
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    let app_b = b.app();
    wait_for("t1 on B", SECS, || app_b.count("tags") == 1);
    a.kill();
    let copy_dir = dir.join("copy.sdlibrary");
    copy_folder(&a.dir, &copy_dir);
    std::fs::remove_file(copy_dir.join("syncer.log")).expect("a log of its own");
    a.start();
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'two')");
    wait_for("t2 on B", SECS, || app_b.count("tags") == 2);
    let mut c = Device {
        id: a.id.clone(),
        dir: copy_dir,
        addr: sdsync_tests::devices::free_port(),
        syncer: None,
    };
    c.start();
    let exited = |c: &mut Device| {
        c.syncer
            .as_mut()
            .and_then(|s| s.try_wait().expect("wait"))
            .is_some_and(|status| !status.success())
    };
    wait_for("the copy's syncer exits with an error", SECS, || {
        exited(&mut c)
    });
    let log = |d: &Device| std::fs::read_to_string(d.dir.join("syncer.log")).unwrap_or_default();
    assert!(log(&c).contains("sdsync reidentify"), "{}", log(&c));
    assert!(status(&c).contains("STOPPED"), "{}", status(&c));
    assert!(log(&b).contains("TwoCopies"), "{}", log(&b));
    // A and B go on.
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t3', 'three')");
    wait_for("t3 on B", SECS, || app_b.count("tags") == 3);
    // The copy does not start again unawares.
    c.syncer = None;
    c.start();
    wait_for("the copy refuses to start", SECS, || exited(&mut c));
    assert!(
        log(&c).contains("a peer told this library folder to stop"),
        "{}",
        log(&c)
    );
    assert!(same(&a, &b));
}
