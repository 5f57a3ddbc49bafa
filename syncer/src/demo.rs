//! `sdsync demo`: three devices edit one library and converge.
//!
//! ```no_run
//! let ext = sdsync_syncer::library::extension_path(None).unwrap();
//! assert!(sdsync_syncer::demo::run("/tmp/demo".as_ref(), &ext, 300).unwrap());
//! ```
//!
//! Changes move between the devices' database files through the extension's SQL
//! contract (`sdsync_changes` out, `INSERT INTO sdsync_changes` in, watermarks
//! recorded in the same transaction) — the same operations the network syncer
//! performs, without the network.

use std::path::Path;

use crate::library::{Library, LibraryError, fingerprint};

/// A named device.
struct Device {
    name: &'static str,
    lib: Library,
}

/// Runs the demonstration; returns whether every device ended identical.
pub fn run(dir: &Path, ext: &Path, entries: usize) -> Result<bool, LibraryError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|source| LibraryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    println!("sdsync demo: 3 devices, databases in {}\n", dir.display());
    let make = |name: &'static str| -> Result<Device, LibraryError> {
        let lib = Library::create(&dir.join(format!("{name}.db")), ext)?;
        println!("  {name:<7} device {}", lib.device()?);
        Ok(Device { name, lib })
    };
    let laptop = make("laptop")?;
    let phone = make("phone")?;
    let nas = make("nas")?;

    step("laptop indexes a location (device-owned rows with integer foreign keys)");
    laptop.lib.exec(&index_sql(entries))?;
    println!(
        "  laptop: {} entries under location Photos",
        laptop.lib.count("entries")?
    );

    step("phone and nas create tags offline; 'Vacation' gets the same uuid on both");
    phone.lib.exec(
        "INSERT INTO tags(uuid, canonical_name, color) VALUES (sdsync_uuid_v5('tag','Vacation'), 'Vacation', 'green');
         INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag','Family'), 'Family');
         INSERT INTO collections(uuid, name) VALUES (sdsync_uuid_v5('album','Best of 2026'), 'Best of 2026');",
    )?;
    nas.lib.exec("INSERT INTO tags(uuid, canonical_name, icon) VALUES (sdsync_uuid_v5('tag','Vacation'), 'Vacation', 'beach');")?;

    step("laptop <-> phone sync");
    sync(&laptop, &phone)?;
    sync(&phone, &laptop)?;
    table(&[&laptop, &phone, &nas])?;

    step("concurrent edits: laptop and phone both recolour 'Vacation'; phone also sets its icon");
    laptop
        .lib
        .exec("UPDATE tags SET color = 'blue' WHERE canonical_name = 'Vacation'")?;
    phone
        .lib
        .exec("UPDATE tags SET color = 'orange', icon = 'sun' WHERE canonical_name = 'Vacation'")?;
    phone.lib.exec(
        "INSERT INTO collection_entries(uuid, collection_id, entry_id)
         SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
         FROM collections c, entries e WHERE e.kind = 'file' ORDER BY e.uuid LIMIT 3;",
    )?;
    sync(&laptop, &phone)?;
    sync(&phone, &laptop)?;

    step("nas was offline the whole time; it joins and backfills everything from phone alone");
    sync(&phone, &nas)?;
    sync(&nas, &phone)?;
    sync(&phone, &laptop)?;
    for d in [&laptop, &phone, &nas] {
        let v: String = d.lib.conn.query_row(
            "SELECT canonical_name || ': color=' || coalesce(color, '-') || ' icon=' || coalesce(icon, '-') FROM tags WHERE canonical_name = 'Vacation'",
            [],
            |r| r.get(0),
        ).map_err(|e| sql(d, e))?;
        println!("  {:<7} {v}", d.name);
    }

    step("ownership: phone tries to rename one of laptop's entries");
    match phone
        .lib
        .exec("UPDATE entries SET name = 'mine.jpg' WHERE uuid = 'entry-1'")
    {
        Err(e) => println!("  refused: {e}"),
        Ok(()) => println!("  UNEXPECTED: the write went through"),
    }

    step("result");
    table(&[&laptop, &phone, &nas])?;
    let prints: Vec<String> = [&laptop, &phone, &nas]
        .iter()
        .map(|d| d.lib.digest().map(|g| fingerprint(&g)))
        .collect::<Result<_, _>>()?;
    let same = prints.windows(2).all(|w| w[0] == w[1]);
    println!(
        "\n{}",
        if same {
            "all devices converged: identical table digests"
        } else {
            "DIVERGED"
        }
    );
    Ok(same)
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn sql(d: &Device, e: rusqlite::Error) -> LibraryError {
    LibraryError::Sql {
        path: d.lib.path.clone(),
        source: e,
    }
}

/// Sends everything `from` holds to `to`, with `from`'s watermarks.
fn sync(from: &Device, to: &Device) -> Result<(), LibraryError> {
    let changes = from.lib.changes()?;
    to.lib.apply(&changes, &from.lib.watermarks()?)?;
    println!("  {} -> {}: {} changes", from.name, to.name, changes.len());
    Ok(())
}

fn table(devices: &[&Device]) -> Result<(), LibraryError> {
    println!(
        "\n  {:<7} {:>8} {:>5} {:>7} {:>8}  digest",
        "device", "entries", "tags", "albums", "members"
    );
    for d in devices {
        println!(
            "  {:<7} {:>8} {:>5} {:>7} {:>8}  {}",
            d.name,
            d.lib.count("entries")?,
            d.lib.count("tags")?,
            d.lib.count("collections")?,
            d.lib.count("collection_entries")?,
            fingerprint(&d.lib.digest()?)
        );
    }
    Ok(())
}

fn index_sql(entries: usize) -> String {
    format!(
        "BEGIN;
         INSERT INTO locations(uuid, name, path) VALUES (sdsync_uuid(), 'Photos', '/home/me/Photos');
         INSERT INTO entries(uuid, name, kind, location_id) VALUES ('entry-root', 'Photos', 'dir', (SELECT id FROM locations));
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {entries})
         INSERT INTO entries(uuid, name, kind, size, location_id, parent_id)
         SELECT 'entry-' || i, 'IMG_' || i || '.jpg', 'file', 1000 + i, (SELECT id FROM locations),
                (SELECT id FROM entries WHERE uuid = 'entry-root') FROM n;
         COMMIT;"
    )
}
