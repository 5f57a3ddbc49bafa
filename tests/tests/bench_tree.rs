//! Real-tree benchmark (issue 9), not a test: an indexer walks a directory
//! tree of this machine (`/usr` by default, about 134,000 entries) into device
//! A in transactions of 5,000 rows, then writes every directory's size and the
//! location's totals, as Spacedrive's indexer does. B syncs it live; then a
//! new device C backfills it from A. Ignored by `cargo test`; run with
//!
//! ```text
//! cargo build --release --workspace
//! cargo test --release -p sdsync-tests --test bench_tree -- --ignored --nocapture
//! ```
//!
//! `SDSYNC_BENCH_TREE=/some/dir` walks another tree. Reports the time from
//! the indexer's last commit until B is complete (watermark) with identical
//! digests, C's backfill time, and each syncer's CPU time and peak RSS.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::params;
use sdsync_tests::devices::{Device, pair_of, usage};
use sdsync_tests::{Lib, watermarks};

/// Rows per indexer transaction.
const BATCH: usize = 5_000;

#[test]
#[ignore = "benchmark: run with --ignored"]
fn real_tree_live_and_backfilled() {
    let root = PathBuf::from(std::env::var("SDSYNC_BENCH_TREE").unwrap_or("/usr".into()));
    let tree = walk(&root);
    let (dir, mut a, mut b) = pair_of("bench-tree");
    let app_a = a.app();
    let app_b = b.app();
    app_a.exec(&format!(
        "INSERT INTO locations(uuid, name, path) VALUES (sdsync_uuid(), 'Tree', '{}')",
        root.display()
    ));
    a.start();
    b.start();

    let start = Instant::now();
    index(&app_a, &tree);
    let indexed = start.elapsed().as_secs_f64();
    let issued = held(&app_a, &a.id);
    let live = until_complete(&app_b, &a.id, issued);
    let live_same = app_b.digest() == app_a.digest();
    println!(
        "\nreal tree {}: {} entries ({} directories), indexed in {indexed:.1} s\n\
         live: B complete {} after the indexer's last commit; digests {}\n\
         syncer A: {}\nsyncer B: {}",
        root.display(),
        tree.len(),
        tree.iter().filter(|e| e.dir).count(),
        live.map_or("NOT within the patience".into(), |s| format!("{s:.2} s")),
        if live_same { "identical" } else { "DIFFER" },
        usage(&a),
        usage(&b),
    );
    b.kill();

    let mut c = Device::init(&dir, "c", Some(&a.library()));
    a.pair(&c);
    c.pair(&a);
    let app_c = c.app();
    c.start();
    let backfill = until_complete(&app_c, &a.id, issued);
    let backfill_same = app_c.digest() == app_a.digest();
    println!(
        "backfill: C complete in {} from its start; digests {}\nsyncer A: {}\nsyncer C: {}",
        backfill.map_or("NOT within the patience".into(), |s| format!("{s:.2} s")),
        if backfill_same { "identical" } else { "DIFFER" },
        usage(&a),
        usage(&c),
    );
    a.kill();
    c.kill();
    assert!(live.is_some() && live_same, "B took the tree live");
    assert!(backfill.is_some() && backfill_same, "C backfilled the tree");
}

/// One walked entry; `parent` indexes the walk (parents come first).
struct Walked {
    name: String,
    parent: Option<usize>,
    dir: bool,
    size: i64,
    inode: i64,
}

/// The tree under `root`, depth first, without following links or leaving
/// its file system; unreadable directories are skipped.
fn walk(root: &Path) -> Vec<Walked> {
    let mut out = Vec::new();
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return out;
    };
    let device = meta.dev();
    let mut stack: Vec<(PathBuf, Option<usize>)> = vec![(root.to_path_buf(), None)];
    while let Some((path, parent)) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let dir = meta.is_dir() && meta.dev() == device;
        out.push(Walked {
            name: path
                .file_name()
                .map_or("/".into(), |n| n.to_string_lossy().into_owned()),
            parent,
            dir,
            size: if dir { 0 } else { meta.len() as i64 },
            inode: meta.ino() as i64,
        });
        if dir {
            let me = out.len() - 1;
            if let Ok(read) = std::fs::read_dir(&path) {
                for child in read.flatten() {
                    stack.push((child.path(), Some(me)));
                }
            }
        }
    }
    out
}

/// Writes the walk as an indexer does: entries in transactions of
/// [`BATCH`], then each directory's total size, then the location's totals.
fn index(app: &Lib, tree: &[Walked]) {
    let location: i64 = app
        .conn
        .query_row("SELECT id FROM locations", [], |r| r.get(0))
        .expect("location");
    let first: i64 = app
        .conn
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM entries", [], |r| {
            r.get(0)
        })
        .expect("ids");
    let id = |i: usize| first + i as i64;
    for (n, batch) in tree.chunks(BATCH).enumerate() {
        app.exec("BEGIN");
        {
            let mut insert = app
                .conn
                .prepare_cached(
                    "INSERT INTO entries(id, uuid, location_id, parent_id, name, kind, size, inode)
                     VALUES (?1, sdsync_uuid(), ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .expect("prepare");
            for (k, e) in batch.iter().enumerate() {
                let i = n * BATCH + k;
                insert
                    .execute(params![
                        id(i),
                        location,
                        e.parent.map(id),
                        e.name,
                        if e.dir { "dir" } else { "file" },
                        e.size,
                        e.inode
                    ])
                    .expect("insert entry");
            }
        }
        app.exec("COMMIT");
    }
    // Sizes bottom up: children come after their parent in the walk.
    let mut sizes: HashMap<usize, i64> = HashMap::new();
    for (i, e) in tree.iter().enumerate().rev() {
        let own = if e.dir {
            sizes.get(&i).copied().unwrap_or(0)
        } else {
            e.size
        };
        if let Some(p) = e.parent {
            *sizes.entry(p).or_default() += own;
        }
    }
    app.exec("BEGIN");
    {
        let mut update = app
            .conn
            .prepare_cached("UPDATE entries SET size = ?2 WHERE id = ?1")
            .expect("prepare");
        for i in (0..tree.len()).filter(|i| tree[*i].dir) {
            update
                .execute(params![id(i), sizes.get(&i).copied().unwrap_or(0)])
                .expect("directory size");
        }
    }
    app.exec("COMMIT");
    app.exec(
        "UPDATE locations SET total_file_count = (SELECT count(*) FROM entries WHERE kind = 'file'),
                              total_byte_size = (SELECT sum(size) FROM entries WHERE kind = 'file'),
                              scan_state = 'done'",
    );
}

/// Seconds until `lib` holds `origin` up to `issued`, or `None` after the
/// patience (`SDSYNC_BENCH_PATIENCE`, default 300 s).
fn until_complete(lib: &Lib, origin: &str, issued: i64) -> Option<f64> {
    let patience: u64 = std::env::var("SDSYNC_BENCH_PATIENCE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(patience) {
        if held(lib, origin) >= issued {
            return Some(start.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn held(lib: &Lib, origin: &str) -> i64 {
    watermarks(&lib.conn)
        .into_iter()
        .find(|(o, _)| o == origin)
        .map_or(0, |(_, s)| s)
}
