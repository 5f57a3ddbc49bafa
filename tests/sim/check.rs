//! The invariants a finished simulation run must hold.
//!
//! ```ignore
//! sim.settle()?;
//! sim.check()?; // identical digests, nothing lost, no echo, empty log and quarantine
//! ```

use std::collections::BTreeMap;

use rusqlite::params;
use sdsync_syncer::library::digest;
use sdsync_syncer::proto::store::Store;

use super::{Device, Sim};

/// What a device holds of rows, for failure reports.
const HELD: &str = "SELECT tbl || ' ' || pk || ' seq ' || seq || ' wait ' || wait_pk || ' ' || reason || ' ' || json_extract(data, '$.parent_id') FROM sdsync_parked \
     UNION ALL SELECT 'tomb ' || tbl || ' ' || pk || ' seq ' || seq || ' hlc ' || hlc FROM sdsync_tombstones WHERE pk LIKE 'd%'";

/// The changes a device holds of one row (by primary key), for failure reports.
const HISTORY: &str = "SELECT tbl || ' ' || substr(origin, 34) || ' seq ' || seq || ' hlc ' || hlc || ' ' || op || ' ' || coalesce(data, '') FROM sdsync_changes WHERE pk = ?1 \
     UNION ALL SELECT 'quarantined ' || tbl || ' ' || substr(origin, 34) || ' seq ' || seq || ': ' || reason FROM sdsync_quarantine WHERE pk = ?1 \
     UNION ALL SELECT 'kept ' || tbl || ' origin ' || origin || ' seq ' || seq || ' hlc ' || hlc || ' creates ' || creates || ': ' || reason FROM sdsync_kept WHERE pk = ?1";

impl Sim {
    /// The invariants of a finished run.
    pub(super) fn check(&self) -> Result<(), String> {
        if let Some(p) = self.problems.first() {
            return Err(format!("protocol problem: {p}"));
        }
        self.check_schema()?;
        let first = digest(&self.devices[0].store.lib.conn).map_err(|e| e.to_string())?;
        for (i, d) in self.devices.iter().enumerate() {
            let mine = digest(&d.store.lib.conn).map_err(|e| e.to_string())?;
            if mine != first {
                return Err(format!(
                    "device {i} diverged from device 0:\n{}",
                    diff(&first, &mine)
                ));
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            let seq: i64 = d
                .store
                .lib
                .conn
                .query_row("SELECT seq FROM sdsync_clock", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            for (j, other) in self.devices.iter().enumerate() {
                let held = other.store.watermarks().map_err(|e| e.to_string())?;
                let have = held.iter().find(|(o, _)| *o == d.id).map_or(0, |(_, s)| *s);
                if have < seq {
                    return Err(format!(
                        "device {j} holds device {i}'s changes only up to {have} of {seq} (lost?)"
                    ));
                }
            }
            // A restored device re-issues what its lost self did when it takes
            // its lost deletes back (clearing children's references), outside
            // any write of its own: the check does not apply to it.
            if !d.restored {
                self.check_no_echo(i, d)?;
                check_never_took_back(i, d)?;
            }
            let held: i64 = d
                .store
                .lib
                .conn
                .query_row("SELECT count(*) FROM sdsync_quarantine", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            if held != 0 {
                let conn = &d.store.lib.conn;
                let what = rows_of(
                    conn,
                    "SELECT origin || ' seq ' || seq || ': ' || reason || ' ' || change FROM sdsync_quarantine",
                    None,
                );
                let pks = rows_of(conn, "SELECT DISTINCT pk FROM sdsync_quarantine", None);
                let histories: Vec<String> = pks
                    .iter()
                    .flat_map(|pk| {
                        self.devices.iter().enumerate().map(move |(j, o)| {
                            let held = rows_of(&o.store.lib.conn, HISTORY, Some(pk));
                            format!("row {pk} on device {j}: {held:?}")
                        })
                    })
                    .collect();
                return Err(format!(
                    "device {i}: {held} changes still quarantined: {what:?}\n{}",
                    histories.join("\n")
                ));
            }
            let log = d
                .node
                .log_size(self.wall(i), &d.store)
                .map_err(|e| e.to_string())?;
            if log != 0 {
                return Err(format!(
                    "device {i}: shared log holds {log} changes at rest"
                ));
            }
        }
        Ok(())
    }

    /// Every change a device holds under its own origin was issued by one of its
    /// own write transactions (cascades included), never by applying a peer's.
    /// By HLC, which renumbering after a restore keeps.
    fn check_no_echo(&self, i: usize, d: &Device) -> Result<(), String> {
        let mut stmt = d
            .store
            .lib
            .conn
            .prepare("SELECT tbl, pk, seq, hlc FROM sdsync_changes WHERE origin = ?1")
            .map_err(|e| e.to_string())?;
        let rows: Vec<(String, String, i64, i64)> = stmt
            .query_map(params![d.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(|r| r.collect())
            .map_err(|e| e.to_string())?;
        for (tbl, pk, seq, hlc) in rows {
            if !d.written.iter().any(|(lo, hi)| *lo < hlc && hlc <= *hi) {
                return Err(format!(
                    "device {i} holds {tbl} {pk} seq {seq} hlc {hlc} under its own origin, issued by none of its writes (echo)\nits writes:\n{}",
                    d.log.join("\n")
                ));
            }
        }
        Ok(())
    }

    /// Why a run did not settle: each device's watermarks, parked rows and
    /// tombstones, how its rows differ from device 0's, and every device's
    /// changes of the rows that differ.
    pub(super) fn unsettled(&self) -> String {
        let first = digest(&self.devices[0].store.lib.conn).unwrap_or_default();
        let mut pks = std::collections::BTreeSet::new();
        let mut out = String::new();
        for (i, d) in self.devices.iter().enumerate() {
            let conn = &d.store.lib.conn;
            let mine = digest(conn).unwrap_or_default();
            for rows in mine.values().chain(first.values()) {
                for row in rows {
                    let in_both = mine.values().any(|r| r.contains(row))
                        && first.values().any(|r| r.contains(row));
                    if !in_both {
                        let pk = serde_json::from_str::<Vec<serde_json::Value>>(row)
                            .ok()
                            .and_then(|v| v.first().and_then(|p| p.as_str().map(String::from)));
                        pks.extend(pk);
                    }
                }
            }
            let recent = d.log.len().saturating_sub(30);
            out += &format!(
                "device {i} ({}): {:?}\nparked/tombstones: {:?}\n{}  its last writes:\n    {}\n",
                d.id,
                d.store.watermarks().unwrap_or_default(),
                rows_of(conn, HELD, None),
                diff(&first, &mine),
                d.log[recent..].join("\n    ")
            );
        }
        for pk in pks {
            for (i, d) in self.devices.iter().enumerate() {
                let held = rows_of(&d.store.lib.conn, HISTORY, Some(&pk));
                out += &format!("row {pk} on device {i}: {held:?}\n");
            }
        }
        out
    }
}

/// A device never restored never takes one of its own changes back from a
/// peer (which re-issues it under a new number, `store::mark_monotone_from`):
/// it holds every change it wrote or one that supersedes it, so taking one
/// back means apply thought it lacked what it had (the class of the
/// `convergence_prop` case where a peer's newer parked piece went unseen).
fn check_never_took_back(i: usize, d: &Device) -> Result<(), String> {
    // The syncer marks a fresh database at its sequence then, 0 here.
    let from: i64 = d
        .store
        .lib
        .conn
        .query_row(
            "SELECT coalesce((SELECT value FROM sdsync_meta WHERE key = 'monotone_from'), 0)",
            [],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    if from > 0 {
        return Err(format!(
            "device {i}, never restored, took its own changes back and re-issued them from seq {from}"
        ));
    }
    Ok(())
}

fn rows_of(conn: &rusqlite::Connection, sql: &str, pk: Option<&str>) -> Vec<String> {
    conn.prepare(sql)
        .and_then(|mut st| match pk {
            Some(pk) => st.query_map([pk], |r| r.get(0))?.collect(),
            None => st.query_map([], |r| r.get(0))?.collect(),
        })
        .unwrap_or_default()
}

fn diff(a: &BTreeMap<String, Vec<String>>, b: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = String::new();
    for (t, rows) in a {
        let other = b.get(t).cloned().unwrap_or_default();
        for r in rows.iter().filter(|r| !other.contains(r)) {
            out += &format!("  only in 0: {t} {r}\n");
        }
        for r in other.iter().filter(|r| !rows.contains(r)) {
            out += &format!("  only in i: {t} {r}\n");
        }
    }
    out
}
