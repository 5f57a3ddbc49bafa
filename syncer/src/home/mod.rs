//! A device's library folder on disk (`<Name>.sdlibrary/`): the replicated
//! database, the syncer's own `sync.db`, and the device identity.
//!
//! ```no_run
//! # use sdsync_syncer::home::Home;
//! let ext = sdsync_syncer::library::extension_path(None).unwrap();
//! let home = Home::init("Photos.sdlibrary".as_ref(), &ext, None).unwrap();
//! println!("device {} in library {}", home.device().unwrap(), home.library().unwrap());
//! ```
//!
//! `sync.db` holds what only this device's syncer needs: the library id (all
//! devices of a library share it; messages of another library are refused),
//! the paired peers (device id, pinned certificate, address), the dead
//! letters and what peers report holding in quarantine. Nothing in it is
//! replicated.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::daemon::Directory;
use crate::library::{Library, LibraryError};
use crate::net::identity::Identity;
use crate::net::tls::Pins;
use crate::proto::store::{Retried, StoreError};
use crate::sqlstore::SqlStore;
use crate::sqlstore::quarantine::{self, Entry};
use crate::sqlstore::syncdb;

mod devices;

/// What can go wrong with a library folder.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The library database failed.
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// sync.db failed.
    #[error("{path}: {source}")]
    Sync {
        /// The sync.db file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The folder is not an initialized library.
    #[error("{0} is not a library folder (run `sdsync init` first)")]
    NotALibrary(PathBuf),
    /// The device identity failed.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// A peer's certificate file is not a PEM certificate.
    #[error("certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Pairing would move a device that already belongs to a library into another.
    #[error("{dir} belongs to library {current}, not {offered}; pair a fresh folder instead")]
    OtherLibrary {
        /// The folder.
        dir: PathBuf,
        /// Its library.
        current: String,
        /// The library of the pairing offer.
        offered: String,
    },
    /// `peer-add` was given something that cannot be that peer; nothing was pinned.
    #[error("not pairing with {device}: {reason}")]
    NotAPeer {
        /// The device id given.
        device: String,
        /// Why, naming what to give instead.
        reason: String,
    },
    /// `sdsync device` was given a device it cannot act on; nothing changed.
    #[error("device {device}: {reason}")]
    Device {
        /// The device id given.
        device: String,
        /// Why, naming what to do instead.
        reason: String,
    },
    /// A peer address in sync.db does not parse.
    #[error("peer {device}: address {addr:?} is not host:port ({reason})")]
    Address {
        /// The device.
        device: String,
        /// The stored text.
        addr: String,
        /// Why.
        reason: String,
    },
}

impl HomeError {
    /// Another connection holds a database's write lock (an app writing):
    /// worth waiting for, not a reason to give up.
    pub fn is_busy(&self) -> bool {
        let source = match self {
            HomeError::Library(LibraryError::Sql { source, .. })
            | HomeError::Sync { source, .. } => source,
            _ => return false,
        };
        matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

/// A paired device as `sync.db` records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its device id.
    pub device: String,
    /// Where it listens, when known.
    pub addr: Option<SocketAddr>,
}

/// A library folder.
pub struct Home {
    dir: PathBuf,
    ext: PathBuf,
    pub(crate) sync: Connection,
}

impl Home {
    /// The library folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `start` until the library lets it write. An app writing back to
    /// back (an indexer's large transactions) can hold SQLite's write lock
    /// past any busy timeout; a syncer starting then used to exit with
    /// "database is locked". It waits instead, saying so at WARN (again every
    /// 10 s while it waits).
    pub fn patiently<T>(
        &self,
        mut start: impl FnMut() -> Result<T, HomeError>,
    ) -> Result<T, HomeError> {
        let mut said: Option<std::time::Instant> = None;
        loop {
            match start() {
                Err(e) if e.is_busy() => {
                    if said.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(10)) {
                        tracing::warn!(
                            library = %self.dir.display(),
                            error = %e,
                            "the library is busy (an app holds its write lock); waiting to start"
                        );
                        said = Some(std::time::Instant::now());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }
}

/// The folder's settings; the syncer's own tables (`peers` among them) are
/// `sqlstore::syncdb`'s.
const SYNC_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

impl Home {
    /// Creates a library folder: the default schema, a device identity, and the
    /// library id (`library`, to join an existing library, or a new one).
    pub fn init(dir: &Path, ext: &Path, library: Option<&str>) -> Result<Self, HomeError> {
        std::fs::create_dir_all(dir).map_err(|source| LibraryError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let lib = Library::create(&dir.join("database.db"), ext)?;
        let home = Self::connect(dir, ext)?;
        let id = match library {
            Some(id) => id.to_string(),
            None => lib
                .conn
                .query_row("SELECT sdsync_uuid()", [], |r| r.get(0))
                .map_err(|source| LibraryError::Sql {
                    path: lib.path.clone(),
                    source,
                })?,
        };
        home.sql(home.sync.execute(
            "INSERT OR IGNORE INTO settings(key, value) VALUES ('library', ?1)",
            [&id],
        ))?;
        Identity::load_or_create(dir, &lib.device()?)?;
        Ok(home)
    }

    /// Opens an initialized library folder.
    pub fn open(dir: &Path, ext: &Path) -> Result<Self, HomeError> {
        if !dir.join("database.db").exists() || !dir.join("sync.db").exists() {
            return Err(HomeError::NotALibrary(dir.to_path_buf()));
        }
        Self::connect(dir, ext)
    }

    fn connect(dir: &Path, ext: &Path) -> Result<Self, HomeError> {
        let path = dir.join("sync.db");
        let sync = syncdb::open(&path).map_err(|source| HomeError::Sync {
            path: path.clone(),
            source,
        })?;
        let home = Self {
            dir: dir.to_path_buf(),
            ext: ext.to_path_buf(),
            sync,
        };
        home.sql(home.sync.execute_batch(SYNC_SCHEMA))?;
        home.sql(syncdb::ensure(&home.sync))?;
        Ok(home)
    }

    pub(crate) fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, HomeError> {
        r.map_err(|source| HomeError::Sync {
            path: self.dir.join("sync.db"),
            source,
        })
    }

    /// The library database, opened with the extension.
    pub fn database(&self) -> Result<Library, HomeError> {
        Ok(Library::open(&self.dir.join("database.db"), &self.ext)?)
    }

    /// This device's id.
    pub fn device(&self) -> Result<String, HomeError> {
        Ok(self.database()?.device()?)
    }

    /// The library id all its devices share.
    pub fn library(&self) -> Result<String, HomeError> {
        let id: Option<String> = self.sql(
            self.sync
                .query_row(
                    "SELECT value FROM settings WHERE key = 'library'",
                    [],
                    |r| r.get(0),
                )
                .optional(),
        )?;
        id.ok_or_else(|| HomeError::NotALibrary(self.dir.clone()))
    }

    /// This device's certificate and key.
    pub fn identity(&self) -> Result<Identity, HomeError> {
        Ok(Identity::load_or_create(&self.dir, &self.device()?)?)
    }

    /// The certificate file other devices pin.
    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join("device.crt")
    }

    /// Makes a copied library folder a device of its own: a new device id in
    /// the database, a new certificate and key, and no pairing (peers pinned
    /// the original's certificate; pair the copy again). Returns the new id.
    /// Run with no syncer on the folder.
    pub fn reidentify(&self) -> Result<String, HomeError> {
        let lib = self.database()?;
        let id: String = lib
            .conn
            .query_row("SELECT sdsync_reidentify()", [], |r| r.get(0))
            .map_err(|source| LibraryError::Sql {
                path: lib.path.clone(),
                source,
            })?;
        for file in ["device.crt", "device.key"] {
            let path = self.dir.join(file);
            std::fs::remove_file(&path).map_err(|source| LibraryError::Io { path, source })?;
        }
        // A rotation the original prepared is not the copy's.
        let _ = std::fs::remove_file(self.dir.join("device.next.pem"));
        Identity::load_or_create(&self.dir, &id)?;
        self.sql(crate::sqlstore::syncdb::ensure(&self.sync))?;
        self.sql(self.sync.execute_batch(
            "DELETE FROM peers; DELETE FROM own_clock; DELETE FROM peer_schema; DELETE FROM peer_quarantine; \
             DELETE FROM reclaim; DELETE FROM incarnation; DELETE FROM stopped; DELETE FROM behind; \
             DELETE FROM notices;",
        ))?;
        Ok(id)
    }

    /// Pairs a device: pins its certificate (from a PEM file) and records where
    /// it listens. Pairing again replaces both.
    pub fn add_peer(
        &self,
        device: &str,
        cert: &Path,
        addr: Option<SocketAddr>,
    ) -> Result<(), HomeError> {
        let der = CertificateDer::from_pem_file(cert).map_err(|e| HomeError::Certificate {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
        let device = self.check_peer(device, &der, true).map_err(|e| match e {
            HomeError::NotAPeer { device, reason } if reason.starts_with("that certificate") => {
                HomeError::NotAPeer {
                    device,
                    reason: format!(
                        "{} is not that device's certificate (take device.crt from its library folder)",
                        cert.display()
                    ),
                }
            }
            other => other,
        })?;
        self.pin(&device, &der, addr)
    }

    /// Whether `device` presenting `cert` may be pinned: a uuid, not this
    /// device, a certificate that names it (device certificates do, see
    /// `net::identity`), and, unless `replace`, no other certificate pinned
    /// for it already: pairing by code must not let whoever holds the code
    /// take over a paired device's id (`peer-add`, run by someone with the
    /// files, may replace). Returns the id in canonical form.
    pub fn check_peer(
        &self,
        device: &str,
        cert: &CertificateDer<'_>,
        replace: bool,
    ) -> Result<String, HomeError> {
        let refuse = |reason: String| HomeError::NotAPeer {
            device: device.to_string(),
            reason,
        };
        let Some(id) = sdsync_core::ids::parse_device(device) else {
            return Err(refuse(
                "a device id is a uuid (`sdsync info` on that device prints it)".into(),
            ));
        };
        if id == self.device()? {
            return Err(refuse(
                "that is this device's own id; give the other device's".into(),
            ));
        }
        let print = crate::net::identity::fingerprint(cert);
        if self.sql(syncdb::revoked(&self.sync))?.contains(&id)
            || self
                .sql(syncdb::revoked_certs(&self.sync))?
                .contains(&print)
        {
            return Err(refuse(
                "it was removed from the library, for good; a device comes back under a new id (pair a fresh folder, or `sdsync reidentify` it)".into(),
            ));
        }
        let name = format!("{id}.sdsync.invalid");
        if !cert.windows(name.len()).any(|w| w == name.as_bytes()) {
            return Err(refuse("that certificate does not name the device".into()));
        }
        let pinned = self
            .pinned()?
            .into_iter()
            .any(|(peer, der)| peer.device == id && der != cert.as_ref());
        if pinned && !replace {
            return Err(refuse(
                "it is paired already, with another certificate: pairing cannot take over a paired device's id (if that device really has a new certificate, pin it with `sdsync peer-add`)".into(),
            ));
        }
        Ok(id)
    }

    /// Pins `cert` as `device` (reachable at `addr`, when known: no address
    /// keeps the one stored).
    pub fn pin(
        &self,
        device: &str,
        cert: &CertificateDer<'_>,
        addr: Option<SocketAddr>,
    ) -> Result<(), HomeError> {
        self.sql(self.sync.execute(
            "INSERT INTO peers(device, cert, addr) VALUES (?1, ?2, ?3) \
             ON CONFLICT(device) DO UPDATE SET cert = excluded.cert, addr = coalesce(excluded.addr, addr)",
            params![device, cert.as_ref(), addr.map(|a| a.to_string())],
        ))?;
        Ok(())
    }

    /// Makes this folder part of `library` (a pairing invitation). Only a device
    /// that has not written or paired yet may switch libraries.
    pub fn adopt_library(&self, library: &str) -> Result<(), HomeError> {
        let current = self.library()?;
        if current == library {
            return Ok(());
        }
        let lib = self.database()?;
        let me = lib.device()?;
        // Its own `devices` row (written at init) goes along to the new library.
        let wrote: i64 = lib
            .conn
            .query_row(
                "SELECT count(*) FROM sdsync_changes WHERE origin = ?1 AND tbl <> 'devices'",
                [&me],
                |r| r.get(0),
            )
            .map_err(|source| LibraryError::Sql {
                path: lib.path.clone(),
                source,
            })?;
        let wrote = wrote > 0;
        if wrote || !self.peers()?.is_empty() {
            return Err(HomeError::OtherLibrary {
                dir: self.dir.clone(),
                current,
                offered: library.to_string(),
            });
        }
        self.sql(self.sync.execute(
            "UPDATE settings SET value = ?1 WHERE key = 'library'",
            [library],
        ))?;
        Ok(())
    }

    /// The paired devices.
    pub fn peers(&self) -> Result<Vec<Peer>, HomeError> {
        Ok(self.pinned()?.into_iter().map(|(peer, _)| peer).collect())
    }

    /// The certificate pinned for `device`, if it is paired.
    fn pinned_cert(&self, device: &str) -> Result<Option<Vec<u8>>, HomeError> {
        Ok(self
            .pinned()?
            .into_iter()
            .find(|(peer, _)| peer.device == device)
            .map(|(_, cert)| cert))
    }

    fn pinned(&self) -> Result<Vec<(Peer, Vec<u8>)>, HomeError> {
        let rows = self.sql(syncdb::pinned(&self.sync))?;
        rows.into_iter()
            .map(|(device, cert, addr)| {
                let addr = match addr {
                    None => None,
                    Some(text) => Some(text.parse().map_err(|e: std::net::AddrParseError| {
                        HomeError::Address {
                            device: device.clone(),
                            addr: text.clone(),
                            reason: e.to_string(),
                        }
                    })?),
                };
                Ok((Peer { device, addr }, cert))
            })
            .collect()
    }

    /// Every change quarantined on this device.
    pub fn quarantined(&self) -> Result<Vec<Entry>, HomeError> {
        let store = self.store()?;
        Ok(
            quarantine::list(&store.lib.conn).map_err(|source| LibraryError::Sql {
                path: store.lib.path.clone(),
                source,
            })?,
        )
    }

    /// Retries quarantined changes now (all, or the one with `id`).
    pub fn retry_quarantined(&self, id: Option<i64>) -> Result<Retried, HomeError> {
        let store = self.store()?;
        let conn = &store.lib.conn;
        let err = |source| LibraryError::Sql {
            path: store.lib.path.clone(),
            source,
        };
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(err)?;
        let retried = quarantine::retry_in(&tx, id, usize::MAX / 2).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(retried)
    }

    /// Discards quarantined changes (all, or the one with `id`); returns them.
    pub fn discard_quarantined(&self, id: Option<i64>) -> Result<Vec<Entry>, HomeError> {
        let store = self.store()?;
        let err = |source| LibraryError::Sql {
            path: store.lib.path.clone(),
            source,
        };
        let tx = store.lib.conn.unchecked_transaction().map_err(err)?;
        let gone = quarantine::discard(&tx, id).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(gone)
    }

    /// The store over this folder (its tables created if missing).
    /// [`Home::syncer_parts`] for `sdsync run`: its store also keeps the
    /// record of its clock outside the folder, in `state` (see
    /// [`SqlStore::with_clock_outside`]).
    pub fn running_parts(
        &self,
        state: Option<std::path::PathBuf>,
    ) -> Result<(SqlStore, Pins, Directory), HomeError> {
        let (store, pins, directory) = self.syncer_parts()?;
        let store = store
            .with_clock_outside(state)
            .and_then(SqlStore::with_clock_stepped)
            .map_err(|e| self.store_error(e))?;
        Ok((store, pins, directory))
    }

    pub(crate) fn store(&self) -> Result<SqlStore, HomeError> {
        let path = self.dir.join("sync.db");
        let sync = syncdb::open(&path).map_err(|source| HomeError::Sync { path, source })?;
        SqlStore::new(self.database()?, sync).map_err(|e| self.store_error(e))
    }

    fn store_error(&self, e: StoreError) -> HomeError {
        match e {
            StoreError::Library(l) => HomeError::Library(l),
            StoreError::Sync(source) => HomeError::Sync {
                path: self.dir.join("sync.db"),
                source,
            },
            StoreError::Busy { path, source } | StoreError::RolledBack { path, source } => {
                HomeError::Library(LibraryError::Sql { path, source })
            }
        }
    }

    /// What the daemon needs: the store, the pins and the peers' addresses.
    pub fn syncer_parts(&self) -> Result<(SqlStore, Pins, Directory), HomeError> {
        let pins = Pins::default();
        let directory = Directory::default();
        // Removed devices first: pinning skips them.
        for device in self.sql(syncdb::revoked(&self.sync))? {
            pins.revoke(&device);
        }
        for print in self.sql(syncdb::revoked_certs(&self.sync))? {
            pins.revoke_cert(&print);
        }
        for (peer, cert) in self.pinned()? {
            pins.pin(&peer.device, CertificateDer::from(cert));
            if let Some(addr) = peer.addr {
                directory.give(&peer.device, addr);
            }
        }
        Ok((self.store()?, pins, directory))
    }
}
