//! The extension in other hosts: Debian's `sqlite3` shell and Debian's python3.

use std::path::Path;
use std::process::Command;

use sdsync_tests::{Lib, extension_path, root, temp_dir};

/// The extension path without the `.so` suffix, as `.load` takes it.
fn load_arg() -> String {
    extension_path().with_extension("").display().to_string()
}

fn shell(db: &Path, script: &str) -> (String, String) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(format!(".load {}", load_arg()))
        .args(script.split(";;").map(str::trim).filter(|s| !s.is_empty()))
        .output()
        .expect("run the sqlite3 shell (apt-get install sqlite3)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sqlite3_shell_captures_and_applies() {
    let dir = temp_dir("shell");
    let a = dir.join("a.db");
    let schema = root().join("sql/library.sql");
    let (_, err) = shell(&a, &format!(".read {}", schema.display()));
    assert_eq!(err, "");
    let (out, err) = shell(
        &a,
        "INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag','Shell'), 'Shell');;
         UPDATE tags SET color = 'green';;
         INSERT INTO locations(uuid, name) VALUES ('l1', 'Shell loc');;
         SELECT count(*) FROM sdsync_changes;;
         SELECT sdsync_version();;
         PRAGMA foreign_keys;",
    );
    assert_eq!(err, "");
    assert_eq!(
        out,
        format!("3\n{}\n1\n", env!("CARGO_PKG_VERSION")),
        "loading turns foreign keys on"
    );
    // A Rust host applies what the shell captured.
    let lib_a = Lib::open(&a);
    let b = Lib::create(&dir.join("b.db"));
    sdsync_tests::copy_all(&lib_a, &b);
    assert_eq!(lib_a.digest(), b.digest());
    // And the shell without `.load` is refused.
    let out = Command::new("sqlite3")
        .arg(&a)
        .arg("INSERT INTO tags(uuid) VALUES ('x')")
        .output()
        .expect("sqlite3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such function: sdsync_capturing"), "{err}");
    assert_eq!(lib_a.count("tags"), 1);
}

#[test]
fn debian_python_plain_sql_app() {
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "Debian's /usr/bin/python3 is required (apt-get install python3)"
    );
    let dir = temp_dir("python");
    let (a, b) = (dir.join("a.db"), dir.join("b.db"));
    let out = Command::new(python)
        .arg(root().join("tests/hosts/plain_sql_app.py"))
        .arg(extension_path())
        .arg(&a)
        .arg(&b)
        .output()
        .expect("run python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(
        report["changes"], 53,
        "location + 50 entries + tag insert group + tag color group"
    );
    assert_eq!(report["entries_b"], 50);
    assert_eq!(report["tag_b"], "Python/yellow");
    assert_eq!(
        report["max_seq"], 53,
        "the rolled back insert used no sequence number"
    );
    assert!(
        report["refused"]
            .as_str()
            .unwrap_or("")
            .contains("no such function: sdsync_capturing"),
        "{report}"
    );
    assert_eq!(Lib::open(&a).digest(), Lib::open(&b).digest());
}
