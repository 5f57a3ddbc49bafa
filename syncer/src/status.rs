//! `sdsync status`: what this device holds, what it set aside, and how each
//! paired device stands, in words first and as JSON (`--json`).
//!
//! ```no_run
//! # fn f(home: &sdsync_syncer::home::Home) -> Result<(), sdsync_syncer::home::HomeError> {
//! let status = home.status()?;
//! println!("{status}"); // or serde_json::to_string_pretty(&status)
//! for peer in &status.peers {
//!     assert!(peer.lacks_of_ours >= 0);
//! }
//! # Ok(()) }
//! ```
//!
//! The peers' part comes from the running syncer, which records what it knows
//! of them in `sync.db` when it changes (`Daemon::record_peers`): a status
//! taken while no syncer runs shows every peer disconnected, with its last
//! contact.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::home::{Home, HomeError};
use crate::library::{Library, LibraryError, changes_above, table_exists};
use crate::members::Member;
use crate::net::identity::Identity;
use crate::proto::message::QuarantineSummary;
use crate::runlock;
use crate::sqlstore::syncdb::{self, DeadLetter};
use crate::sqlstore::{marks, quarantine};

/// A device's sync state at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This device.
    pub device: String,
    /// The pid of the `sdsync run` syncing this folder (`None`: none runs).
    pub syncer_pid: Option<String>,
    /// Every device the library lists (its `devices` table), removed ones
    /// included.
    pub members: Vec<Member>,
    /// Devices this one refuses for good (removed from the library).
    pub removed: Vec<String>,
    /// Whether a new certificate waits for every peer to know it
    /// (`sdsync device rotate`).
    pub rotation_pending: bool,
    /// Every paired device, as the running syncer last recorded it.
    pub peers: Vec<PeerStatus>,
    /// Origins some peer holds further than this device: how far behind, in
    /// changes and in time.
    pub lag: Vec<Lag>,
    /// `(origin, seq)` held completely (the effective, verified watermarks).
    pub watermarks: Vec<(String, i64)>,
    /// `(origin, claimed, verified)`: watermarks the database claims beyond what
    /// the syncer verified (not believed; see `sqlstore::marks`).
    pub unverified: Vec<(String, i64, i64)>,
    /// Parked changes by reason.
    pub parked: Vec<(String, i64)>,
    /// Changes quarantined here, per origin.
    pub quarantined: Vec<QuarantineSummary>,
    /// What peers report holding in quarantine: `(peer, summary)`.
    pub quarantined_by_peers: Vec<(String, QuarantineSummary)>,
    /// The most recent dead letters (one per peer and cause, counted).
    pub dead_letters: Vec<DeadLetter>,
    /// Tracked tables whose capture is not in line with the table:
    /// `(table, state, detail)` from `sdsync_schema`.
    pub schema: Vec<(String, String, String)>,
    /// Changes kept for tables or columns this database lacks: `(reason, count)`.
    pub kept: Vec<(String, i64)>,
    /// How peers' tables differ from this device's: `(peer, detail)`.
    pub peer_schema: Vec<(String, String)>,
    /// After a restore: peers this device still takes its own changes back from.
    pub reclaiming: Vec<String>,
    /// Why a peer told this copy of the folder to stop, if one did.
    pub stopped: Option<String>,
    /// The last event of each kind the syncer recovered from by itself
    /// (a restore, a peer's restore, two copies): `(kind, detail, at)`.
    pub notices: Vec<(String, String, String)>,
    /// How long each app commit waits now per row it wrote (a live peer is
    /// behind; see `daemon/pace.rs`), in nanoseconds; 0 when not paced.
    pub paced_ns_per_row: u64,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(reason) = &self.stopped {
            writeln!(f, "STOPPED     {reason}")?;
        }
        match &self.syncer_pid {
            Some(pid) => writeln!(f, "syncer      running (pid {pid})")?,
            None => writeln!(
                f,
                "syncer      not running (start it with `sdsync run DIR`)"
            )?,
        }
        for m in &self.members {
            let state = m.state(&self.device);
            writeln!(f, "member      {} ({}): {state}", m.name, m.device)?;
        }
        if self.rotation_pending {
            writeln!(
                f,
                "certificate a new one waits until every peer knows it (`sdsync device rotate`)"
            )?;
        }
        for p in &self.peers {
            writeln!(f, "peer        {p}")?;
        }
        if self.paced_ns_per_row > 0 {
            writeln!(
                f,
                "paced       app commits wait {:.1} µs per row written: a peer is behind (backpressure)",
                self.paced_ns_per_row as f64 / 1000.0
            )?;
        }
        if !self.reclaiming.is_empty() {
            writeln!(
                f,
                "restored    taking this device's own changes back from: {}",
                self.reclaiming.join(", ")
            )?;
        }
        for l in &self.lag {
            let since = l.seconds.map_or(String::new(), |s| format!(" for {s} s"));
            writeln!(
                f,
                "behind      on {} by {} change(s){since} (holds {} of {})",
                l.origin,
                l.changes,
                l.held,
                l.held + l.changes
            )?;
        }
        for (_, detail, at) in &self.notices {
            writeln!(f, "notice      {detail} ({at})")?;
        }
        for (origin, seq) in &self.watermarks {
            writeln!(f, "holds       {origin} up to seq {seq}")?;
        }
        for (origin, claimed, verified) in &self.unverified {
            writeln!(
                f,
                "unverified  database claims {origin} up to seq {claimed}; verified up to {verified} (pulled from there)"
            )?;
        }
        for (reason, n) in &self.parked {
            writeln!(f, "parked      {n} change(s): {reason}")?;
        }
        for q in &self.quarantined {
            writeln!(
                f,
                "quarantined {} change(s) of {} (see `sdsync quarantine`): {}",
                q.count, q.origin, q.reason
            )?;
        }
        for (peer, q) in &self.quarantined_by_peers {
            if q.origin == self.device {
                writeln!(
                    f,
                    "quarantine  {} of your changes are quarantined on peer {peer}: {}",
                    q.count, q.reason
                )?;
            } else {
                writeln!(
                    f,
                    "quarantine  peer {peer} holds {} change(s) of {} in quarantine: {}",
                    q.count, q.origin, q.reason
                )?;
            }
        }
        for d in &self.dead_letters {
            writeln!(f, "dead letter {d}")?;
        }
        for (table, state, detail) in &self.schema {
            writeln!(f, "schema      {table} is {state}: {detail}")?;
        }
        for (reason, n) in &self.kept {
            writeln!(f, "kept        {n} change(s) for a newer schema: {reason}")?;
        }
        for (peer, detail) in &self.peer_schema {
            writeln!(f, "mismatch    peer {peer}: {detail}")?;
        }
        Ok(())
    }
}

/// How far this device is behind on one origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lag {
    /// The origin.
    pub origin: String,
    /// Changes of it the best-informed peer holds and this device lacks.
    pub changes: i64,
    /// How far this device holds it (backfill progress: `held` of `held +
    /// changes`).
    pub held: i64,
    /// For how long this device has lacked them, in seconds, as the running
    /// syncer saw it (`None`: no syncer has noticed yet).
    pub seconds: Option<u64>,
}

/// One paired device, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Its device id.
    pub device: String,
    /// Its name, as the library's `devices` table lists it.
    pub name: Option<String>,
    /// Where it was last known to listen.
    pub address: Option<String>,
    /// Whether a link to it is up now (never while no syncer runs).
    pub connected: bool,
    /// When a message last came from it, in ms since the epoch.
    pub last_contact_ms: Option<u64>,
    /// Why it refused this device, if it did.
    pub refused: Option<String>,
    /// How many of this device's own changes it does not hold yet (by what it
    /// last said).
    pub lacks_of_ours: i64,
    /// Origins it holds further than this device: `(origin, changes)`.
    pub ahead_of_us: Vec<(String, i64)>,
}

impl std::fmt::Display for PeerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let link = match (&self.refused, self.connected) {
            (Some(reason), _) => format!("REFUSES this device: {reason}"),
            (None, true) => "connected".to_string(),
            (None, false) => "not connected".to_string(),
        };
        match &self.name {
            Some(name) => write!(f, "{name} ({}) {link}", self.device)?,
            None => write!(f, "{} {link}", self.device)?,
        }
        match self.last_contact_ms {
            Some(ms) => {
                let ago = sdsync_core::hlc::wall_millis().saturating_sub(ms) / 1000;
                write!(f, ", last contact {ago} s ago")?;
            }
            None => write!(f, ", never heard from")?,
        }
        match &self.address {
            Some(addr) => write!(f, ", at {addr}")?,
            None => write!(
                f,
                ", no address (pair with --advertise, or `sdsync peer-add --addr`)"
            )?,
        }
        if self.lacks_of_ours > 0 {
            write!(f, "; lacks {} of this device's changes", self.lacks_of_ours)?;
        }
        for (origin, n) in &self.ahead_of_us {
            write!(f, "; holds {n} more of {origin}")?;
        }
        Ok(())
    }
}

impl Home {
    /// What this device holds and what it could not apply, for `sdsync status`:
    /// nothing the syncer set aside is invisible.
    pub fn status(&self) -> Result<Status, HomeError> {
        let lib = &self.reader()?;
        let device = lib.device()?;
        let err = |source| LibraryError::Sql {
            path: lib.path.clone(),
            source,
        };
        let watermarks = marks::effective(&lib.conn, &device).map_err(err)?;
        let unverified = marks::unverified(&lib.conn, &device).map_err(err)?;
        let parked: Vec<(String, i64)> = lib
            .conn
            .prepare("SELECT reason, count(*) FROM sdsync_parked GROUP BY reason ORDER BY 2 DESC")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(err)?;
        let quarantined = quarantine::summary(&lib.conn).map_err(err)?;
        let schema: Vec<(String, String, String)> = lib
            .conn
            .prepare(
                "SELECT tbl, state, detail FROM sdsync_schema WHERE state <> 'ok' ORDER BY tbl",
            )
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(err)?;
        let kept: Vec<(String, i64)> = lib
            .conn
            .prepare("SELECT reason, count(*) FROM sdsync_kept GROUP BY reason ORDER BY 2 DESC")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(err)?;
        let members = self.members()?;
        let syncer_pid = runlock::holder(self.dir());
        let running = syncer_pid.is_some();
        let peers = peer_statuses(self, lib, &device, &watermarks, &members, running)?;
        // How long a lag has lasted is what the running syncer saw; with
        // none running it would count from a moment that no longer means
        // anything (a user's trial read "for 0 s" on a stopped device).
        let behind = if running {
            self.sql(syncdb::behind(&self.sync))?
        } else {
            Vec::new()
        };
        let lag = lag(&peers, &watermarks, &behind);
        Ok(Status {
            lag,
            members,
            removed: self.sql(syncdb::revoked(&self.sync))?,
            rotation_pending: Identity::next(self.dir())?.is_some(),
            syncer_pid,
            peers,
            device,
            watermarks,
            unverified,
            parked,
            quarantined,
            quarantined_by_peers: self.sql(syncdb::peer_reports(&self.sync))?,
            dead_letters: self.sql(syncdb::dead_letters(&self.sync, 20))?,
            schema,
            kept,
            peer_schema: self.sql(syncdb::peer_schemas(&self.sync))?,
            reclaiming: self.sql(syncdb::reclaim_from(&self.sync))?,
            stopped: self.sql(syncdb::stopped(&self.sync))?,
            notices: self.sql(crate::sqlstore::notices::all(&self.sync))?,
            paced_ns_per_row: paced(&lib.path),
        })
    }
}

impl Home {
    /// The library to read status from without the write lock: in WAL mode
    /// a reader never waits for a writer, so `status` answers while an
    /// indexer's large transaction or the syncer's apply holds the lock (it
    /// opened the full store, whose set-up writes, and failed after the
    /// store's one-second busy timeout). A library no syncer has opened yet
    /// lacks the syncer's own tables status reads: the store makes them
    /// once.
    fn reader(&self) -> Result<Library, HomeError> {
        let lib = self.database()?;
        let err = |source| LibraryError::Sql {
            path: lib.path.clone(),
            source,
        };
        let made = ["sdsync_verified", "sdsync_quarantine"]
            .iter()
            .map(|t| table_exists(&lib.conn, t))
            .collect::<Result<Vec<bool>, _>>()
            .map_err(err)?;
        if made.iter().all(|m| *m) {
            return Ok(lib);
        }
        drop(lib);
        Ok(self.store()?.lib)
    }
}

/// How long app commits wait now per row, in nanoseconds, as the pace file
/// says (none: no wait).
fn paced(database: &std::path::Path) -> u64 {
    std::fs::read(sdsync_core::pace::path(database))
        .ok()
        .and_then(|bytes| bytes.get(..8)?.try_into().ok())
        .map_or(0, |word| {
            sdsync_core::pace::per_row_ns(word, sdsync_core::hlc::wall_millis())
        })
}

/// Per origin, the most any peer is ahead, with the time the syncer recorded
/// it has been behind.
fn lag(peers: &[PeerStatus], held: &[(String, i64)], behind: &[(String, u64)]) -> Vec<Lag> {
    let mut most: BTreeMap<&str, i64> = BTreeMap::new();
    for (origin, n) in peers.iter().flat_map(|p| &p.ahead_of_us) {
        let m = most.entry(origin.as_str()).or_default();
        *m = (*m).max(*n);
    }
    let now = sdsync_core::hlc::wall_millis();
    most.into_iter()
        .map(|(origin, changes)| Lag {
            origin: origin.to_string(),
            changes,
            held: held
                .iter()
                .find(|(o, _)| o == origin)
                .map_or(0, |(_, s)| *s),
            seconds: behind
                .iter()
                .find(|(o, _)| o == origin)
                .map(|(_, since)| now.saturating_sub(*since) / 1000),
        })
        .collect()
}

/// How many of this device's changes (it holds up to `mine`) lie above
/// `held`.
fn lacks(lib: &Library, me: &str, mine: i64, held: i64) -> Result<i64, HomeError> {
    if mine <= held {
        return Ok(0);
    }
    changes_above(&lib.conn, me, held).map_err(|source| {
        HomeError::from(LibraryError::Sql {
            path: lib.path.clone(),
            source,
        })
    })
}

/// Every paired device joined with what the syncer last recorded of it
/// (connected only while a syncer runs, `running`). What a peer lacks of
/// this device's changes is counted in `lib`: after a restore's
/// renumbering, the distance between two numbers read "lacks 1076083 of
/// this device's changes" of 30,000 (a user's trial).
fn peer_statuses(
    home: &Home,
    lib: &Library,
    me: &str,
    watermarks: &[(String, i64)],
    members: &[Member],
    running: bool,
) -> Result<Vec<PeerStatus>, HomeError> {
    let recorded: BTreeMap<String, _> = home
        .sql(syncdb::peer_states(&home.sync))?
        .into_iter()
        .map(|(state, _)| (state.device.clone(), state))
        .collect();

    let ours: BTreeMap<&str, i64> = watermarks.iter().map(|(o, s)| (o.as_str(), *s)).collect();
    let mine = ours.get(me).copied().unwrap_or(0);
    let mut out = Vec::new();
    for peer in home.peers()? {
        let state = recorded.get(&peer.device).cloned().unwrap_or_default();
        let ahead_of_us = state
            .holds
            .iter()
            .filter(|(o, _)| *o != me)
            .filter_map(|(o, &s)| {
                let behind = s - ours.get(o.as_str()).copied().unwrap_or(0);
                (behind > 0).then(|| (o.clone(), behind))
            })
            .collect();
        out.push(PeerStatus {
            address: peer.addr.map(|a| a.to_string()),
            connected: running && state.connected,
            last_contact_ms: (state.last_contact_ms > 0).then_some(state.last_contact_ms),
            refused: state.refused.clone(),
            lacks_of_ours: lacks(lib, me, mine, state.holds.get(me).copied().unwrap_or(0))?,
            ahead_of_us,
            name: members
                .iter()
                .find(|m| m.device == peer.device && !m.name.is_empty())
                .map(|m| m.name.clone()),
            device: peer.device,
        });
    }
    Ok(out)
}
