//! `sdsync demo`: three devices edit one library and converge over QUIC.
//!
//! ```no_run
//! let ext = sdsync_syncer::library::extension_path(None).unwrap();
//! assert!(sdsync_syncer::demo::run("/tmp/demo".as_ref(), &ext, 300).unwrap());
//! ```
//!
//! Each device is a `<name>.sdlibrary` folder (database.db, sync.db, device
//! certificate and key) and, while it is online, a syncer ([`Background`]: the
//! protocol node on a QUIC endpoint on 127.0.0.1 with pinned mutual TLS). The
//! demo writes through its own connection to each database, as an app would;
//! the syncers notice the commits and push them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sdsync_syncer::daemon::{Background, DaemonError, Directory};
use sdsync_syncer::library::{Library, LibraryError, fingerprint};
use sdsync_syncer::net::identity::Identity;
use sdsync_syncer::net::tls::Pins;
use sdsync_syncer::proto::store::SqlStore;
use sdsync_syncer::sqlstore::syncdb;

/// How long the demo waits for devices to converge before calling it a failure.
const PATIENCE: Duration = Duration::from_secs(60);

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A library operation failed.
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// A syncer failed to start.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The device identity failed.
    #[error(transparent)]
    Net(#[from] sdsync_syncer::net::NetError),
    /// sync.db could not be opened.
    #[error("sync.db: {0}")]
    Sync(#[from] rusqlite::Error),
}

/// A named device: its folder, the app's connection, and its syncer when online.
struct Device {
    name: &'static str,
    home: PathBuf,
    id: String,
    app: Library,
    syncer: Option<Background>,
}

/// The demo's world: devices, pinned certificates, and who listens where.
struct World {
    ext: PathBuf,
    devices: Vec<Device>,
    pins: Pins,
    directory: Directory,
}

/// Runs the demonstration; returns whether every device ended identical.
pub fn run(dir: &Path, ext: &Path, entries: usize) -> Result<bool, DemoError> {
    let dir = &super::scratch::fresh(dir)?;
    let mut w = World::new(dir, ext)?;
    let (laptop, phone, nas) = (0, 1, 2);

    step("laptop indexes a location (device-owned rows with integer foreign keys)");
    w.devices[laptop].app.exec(&index_sql(entries))?;
    println!(
        "  laptop: {} entries under location Photos",
        w.devices[laptop].app.count("entries")?
    );

    step("phone and nas create tags offline; 'Vacation' gets the same uuid on both");
    w.devices[phone].app.exec(
        "INSERT INTO tags(uuid, canonical_name, color) VALUES (sdsync_uuid_v5('tag','Vacation'), 'Vacation', 'green');
         INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag','Family'), 'Family');
         INSERT INTO collections(uuid, name) VALUES (sdsync_uuid_v5('album','Best of 2026'), 'Best of 2026');",
    )?;
    w.devices[nas].app.exec("INSERT INTO tags(uuid, canonical_name, icon) VALUES (sdsync_uuid_v5('tag','Vacation'), 'Vacation', 'beach');")?;

    step("laptop and phone go online: QUIC + mutual TLS, Hello, Pulls, Pages");
    w.online(laptop)?;
    w.online(phone)?;
    w.converge(&[laptop, phone])?;
    w.table()?;

    step(
        "offline again, laptop and phone both recolour 'Vacation'; phone also sets its icon and fills the album",
    );
    w.offline(laptop);
    w.offline(phone);
    w.devices[laptop]
        .app
        .exec("UPDATE tags SET color = 'blue' WHERE canonical_name = 'Vacation'")?;
    w.devices[phone]
        .app
        .exec("UPDATE tags SET color = 'orange', icon = 'sun' WHERE canonical_name = 'Vacation'")?;
    w.devices[phone].app.exec(
        "INSERT INTO collection_entries(uuid, collection_id, entry_id)
         SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
         FROM collections c, entries e WHERE e.kind = 'file' ORDER BY e.uuid LIMIT 3;",
    )?;
    w.online(laptop)?;
    w.online(phone)?;
    w.converge(&[laptop, phone])?;

    step("nas was offline the whole time; it comes online and backfills everything");
    w.online(nas)?;
    w.converge(&[laptop, phone, nas])?;
    for d in &w.devices {
        let v: String = d.app.conn.query_row(
            "SELECT canonical_name || ': color=' || coalesce(color, '-') || ' icon=' || coalesce(icon, '-') FROM tags WHERE canonical_name = 'Vacation'",
            [],
            |r| r.get(0),
        )?;
        println!("  {:<7} {v}", d.name);
    }

    step("live: laptop renames a file; its syncer notices the commit and pushes it");
    w.devices[laptop]
        .app
        .exec("UPDATE entries SET name = 'IMG_1_edited.jpg' WHERE uuid = 'entry-1'")?;
    w.converge(&[laptop, phone, nas])?;

    step("ownership: phone tries to rename one of laptop's entries");
    match w.devices[phone]
        .app
        .exec("UPDATE entries SET name = 'mine.jpg' WHERE uuid = 'entry-1'")
    {
        Err(e) => println!("  refused: {e}"),
        Ok(()) => println!("  UNEXPECTED: the write went through"),
    }

    step("result");
    w.table()?;
    let prints: Vec<String> = w
        .devices
        .iter()
        .map(|d| d.app.digest().map(|g| fingerprint(&g)))
        .collect::<Result<_, _>>()?;
    let same = prints.windows(2).all(|p| p[0] == p[1]);
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

impl World {
    /// Creates the three device folders and pairs every device with every other.
    fn new(dir: &Path, ext: &Path) -> Result<Self, DemoError> {
        println!("sdsync demo: 3 devices, libraries in {}\n", dir.display());
        let pins = Pins::default();
        let mut devices = Vec::new();
        for name in ["laptop", "phone", "nas"] {
            let home = dir.join(format!("{name}.sdlibrary"));
            std::fs::create_dir_all(&home).map_err(|source| LibraryError::Io {
                path: home.clone(),
                source,
            })?;
            let app = Library::create(&home.join("database.db"), ext)?;
            let id = app.device()?;
            pins.pin(&id, Identity::load_or_create(&home, &id)?.cert);
            println!("  {name:<7} device {id}");
            devices.push(Device {
                name,
                home,
                id,
                app,
                syncer: None,
            });
        }
        Ok(Self {
            ext: ext.to_path_buf(),
            devices,
            pins,
            directory: Directory::default(),
        })
    }

    /// Starts a device's syncer on its own connection to the library.
    fn online(&mut self, i: usize) -> Result<(), DemoError> {
        let d = &mut self.devices[i];
        let lib = Library::open(&d.home.join("database.db"), &self.ext)?;
        let store = SqlStore::new(lib, syncdb::open(&d.home.join("sync.db"))?)
            .map_err(DaemonError::from)?;
        let me = Identity::load_or_create(&d.home, &d.id)?;
        let syncer = Background::start(store, "demo-library", me, &self.pins, &self.directory)?;
        println!("  {:<7} online at quic://{}", d.name, syncer.addr);
        d.syncer = Some(syncer);
        Ok(())
    }

    fn offline(&mut self, i: usize) {
        self.devices[i].syncer = None;
        println!("  {:<7} offline", self.devices[i].name);
    }

    /// Waits until the devices hold identical tables, and says how long it took.
    fn converge(&self, which: &[usize]) -> Result<(), DemoError> {
        let start = Instant::now();
        loop {
            let prints: Vec<String> = which
                .iter()
                .map(|&i| self.devices[i].app.digest().map(|g| fingerprint(&g)))
                .collect::<Result<_, _>>()?;
            let same = prints.windows(2).all(|p| p[0] == p[1]);
            if same || start.elapsed() > PATIENCE {
                let names: Vec<&str> = which.iter().map(|&i| self.devices[i].name).collect();
                println!(
                    "  {} {} after {} ms",
                    names.join(", "),
                    if same { "identical" } else { "STILL DIFFERENT" },
                    start.elapsed().as_millis()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn table(&self) -> Result<(), DemoError> {
        println!(
            "\n  {:<7} {:>8} {:>5} {:>7} {:>8}  digest",
            "device", "entries", "tags", "albums", "members"
        );
        for d in &self.devices {
            let lib = &d.app;
            println!(
                "  {:<7} {:>8} {:>5} {:>7} {:>8}  {}",
                d.name,
                lib.count("entries")?,
                lib.count("tags")?,
                lib.count("collections")?,
                lib.count("collection_entries")?,
                fingerprint(&lib.digest()?)
            );
        }
        Ok(())
    }
}

fn step(title: &str) {
    println!("\n== {title}");
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
