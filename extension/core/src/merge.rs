//! The merge rules, as pure decisions over version metadata.
//!
//! ```
//! use sdsync_core::merge::{Group, RowState, Upsert, Version, plan_upsert};
//! let old = Version::new(10, "a", 1, 1);
//! let row = RowState::Alive(vec![Group { mask: 0b111, version: old }]);
//! // A newer change to column bit 0b010 wins that column only.
//! let plan = plan_upsert(&row, 0b010, &Version::new(20, "b", 2, 1));
//! assert_eq!(plan, Upsert::Write(0b010));
//! ```
//!
//! A row's state is a set of groups: columns (mask bits) sharing one version. Bit
//! [`ROW_BIT`] is the row's existence and travels with the change that created it.
//!
//! - Columns: last writer wins per column by `(hlc, origin)`; equal stamps are the
//!   same change (re-apply is a no-op, except a kept change re-applied for the
//!   columns it carries: see [`plan_reapply`]).
//! - Deletes (both classes) leave a tombstone. A delete wins over every change older
//!   than it and over concurrent *updates*; only a change that creates the row (an
//!   INSERT, carrying [`ROW_BIT`]) newer than the tombstone brings it back. Updates
//!   newer than the tombstone are parked (kept, and served to peers) and join the row
//!   if it is re-created, so every device ends with the same columns whatever the
//!   arrival order.
//! - A row that is not alive is assembled from its parked pieces once one of them
//!   creates it and all required columns are known.

use crate::schema::ROW_BIT;

/// A change's version. Ordered by `(hlc, origin)`, the same on every device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Packed HLC.
    pub hlc: u64,
    /// Origin device uuid (tie-break).
    pub origin: String,
    /// Local id of the origin in `sdsync_origins`.
    pub origin_id: i64,
    /// The origin's sequence number of the change.
    pub seq: i64,
}

impl Version {
    /// Shorthand constructor.
    pub fn new(hlc: u64, origin: &str, origin_id: i64, seq: i64) -> Self {
        Self {
            hlc,
            origin: origin.into(),
            origin_id,
            seq,
        }
    }

    /// The same change: same HLC and origin.
    pub fn same_as(&self, other: &Version) -> bool {
        self.hlc == other.hlc && self.origin == other.origin
    }

    /// Whether this version beats `other` (strictly newer by `(hlc, origin)`).
    pub fn beats(&self, other: &Version) -> bool {
        (self.hlc, self.origin.as_str()) > (other.hlc, other.origin.as_str())
    }
}

/// Columns sharing one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Mask bits: [`ROW_BIT`] and columns.
    pub mask: u64,
    /// Their version.
    pub version: Version,
}

/// What a database holds about one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowState {
    /// Nothing: never seen.
    Unknown,
    /// Deleted: the tombstone's version.
    Dead(Version),
    /// Present, with its version groups.
    Alive(Vec<Group>),
}

impl RowState {
    /// The device whose version stands for the row (the owner, for owned tables).
    pub fn owner(&self) -> Option<&str> {
        match self {
            Self::Unknown => None,
            Self::Dead(v) => Some(&v.origin),
            Self::Alive(groups) => groups
                .iter()
                .find(|g| g.mask & ROW_BIT != 0)
                .or(groups.first())
                .map(|g| g.version.origin.as_str()),
        }
    }
}

/// What to do with an incoming upsert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// Stale or already applied.
    Ignore,
    /// Write these bits (the ones the change wins) to the existing row.
    Write(u64),
    /// The row is not alive: keep the change as a piece and try to assemble the row.
    Park,
}

/// Decides an upsert of `mask` at `version`.
pub fn plan_upsert(row: &RowState, mask: u64, version: &Version) -> Upsert {
    plan(row, mask, version, 0)
}

/// Decides the upsert of a change applied before, in part, and now again
/// whole (a change kept for a column this database lacked, after a schema
/// change gave it the column): it also takes the bits of `carried` (the
/// columns its data names) that its own version holds already. Its first
/// apply may have given such a column the table's default with its version
/// (a creating change defines every column), where its sender wrote a value
/// under a name this database learned only later (a column renamed on the
/// sender first). Columns it does not carry keep what that apply gave them.
pub fn plan_reapply(row: &RowState, mask: u64, version: &Version, carried: u64) -> Upsert {
    plan(row, mask, version, carried)
}

/// `version` under the higher number at which `row` holds the same change,
/// if its origin renumbered it (after a restore) and the row took the new
/// number first (`adopt_number` in the apply engine); `None` otherwise. A
/// kept copy re-applied under its old number must plan and write under the
/// new one: under the old, [`plan_reapply`] finds none of its bits held
/// and leaves the defaults its first apply gave (simulation seed 5142),
/// and writing the old number back would hide the change from peers that
/// hold only the old one (seed 696).
pub fn renumbered(row: &RowState, version: &Version) -> Option<Version> {
    let RowState::Alive(groups) = row else {
        return None;
    };
    let seq = groups
        .iter()
        .filter(|g| g.version.same_as(version) && g.version.seq > version.seq)
        .map(|g| g.version.seq)
        .max()?;
    Some(Version {
        seq,
        ..version.clone()
    })
}

/// [`plan_upsert`], winning also the bits of `again` held at `version`.
fn plan(row: &RowState, mask: u64, version: &Version, again: u64) -> Upsert {
    match row {
        RowState::Unknown => Upsert::Park,
        RowState::Dead(tomb) if version.beats(tomb) => Upsert::Park,
        RowState::Dead(_) => Upsert::Ignore,
        RowState::Alive(groups) => {
            let won =
                winning_bits(groups, mask, version) | same_bits(groups, version) & mask & again;
            if won == 0 {
                Upsert::Ignore
            } else {
                Upsert::Write(won)
            }
        }
    }
}

/// The bits of `mask` whose current version `version` beats. A bit no group
/// holds has no version yet (a column the row's creator did not have: devices
/// on different schemas): a change wins it unless it is older than the row's
/// creation, i.e. it was written to an earlier incarnation of the row (the
/// creating change itself, kept and re-applied, still wins it).
pub fn winning_bits(groups: &[Group], mask: u64, version: &Version) -> u64 {
    let mut won = mask;
    let mut held = 0;
    for g in groups {
        held |= g.mask;
        if g.mask & mask != 0 && !version.beats(&g.version) {
            won &= !g.mask;
        }
    }
    let born = groups.iter().find(|g| g.mask & ROW_BIT != 0);
    if born.is_some_and(|b| b.version.beats(version)) {
        won &= held;
    }
    won
}

/// The bits held at `version` itself (the same change applied before, under
/// the same number: a renumbered copy of it is not taken over by its old
/// number, simulation seed 696) that no newer group holds: groups overlap
/// (see [`normalize`]), and a newer group holding a bit owns it.
fn same_bits(groups: &[Group], version: &Version) -> u64 {
    let (same, newer) = groups.iter().fold((0, 0), |(same, newer), g| {
        let v = &g.version;
        if v.beats(version) {
            (same, newer | g.mask)
        } else if v.hlc == version.hlc && v.origin == version.origin && v.seq == version.seq {
            (same | g.mask, newer)
        } else {
            (same, newer)
        }
    });
    same & !newer
}

/// Groups as capture leaves them may overlap (a local update adds a group for the
/// columns it changed without rewriting older groups); the newest group holding a
/// bit owns it. Returns each group's effective mask, dropping groups that own
/// nothing, newest first.
pub fn normalize(groups: Vec<Group>) -> Vec<Group> {
    let mut sorted = groups;
    sorted.sort_by(|a, b| {
        (b.version.hlc, b.version.origin.as_str()).cmp(&(a.version.hlc, a.version.origin.as_str()))
    });
    let mut seen = 0u64;
    let mut out = Vec::with_capacity(sorted.len());
    for mut g in sorted {
        let own = g.mask & !seen;
        seen |= g.mask;
        if own != 0 {
            g.mask = own;
            out.push(g);
        }
    }
    out
}

/// The effective mask of the group at `version` among a row's `(mask, version)`
/// pairs: its bits that no newer group holds.
pub fn effective_mask(mask: u64, version: &Version, others: &[(u64, Version)]) -> u64 {
    others
        .iter()
        .filter(|(_, v)| v.beats(version))
        .fold(mask, |m, (other, _)| m & !other)
}

/// The groups after `version` has won `bits`.
pub fn with_win(groups: &[Group], bits: u64, version: &Version) -> Vec<Group> {
    let mut out: Vec<Group> = groups
        .iter()
        .map(|g| Group {
            mask: g.mask & !bits,
            version: g.version.clone(),
        })
        .filter(|g| g.mask != 0)
        .collect();
    // A change already holding a group (a kept change re-applied for columns
    // this device lacked) widens it: one change, one group, as it is served.
    match out.iter_mut().find(|g| g.version.same_as(version)) {
        Some(g) => g.mask |= bits,
        None => out.push(Group {
            mask: bits,
            version: version.clone(),
        }),
    }
    out
}

/// What to do with an incoming delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delete {
    /// Stale: the row was (re-)created after it, or a newer tombstone exists.
    Ignore,
    /// Record (or raise) the tombstone; the row is not alive.
    Tombstone,
    /// Delete the live row. Groups newer than the delete (concurrent updates) are
    /// kept as parked pieces: their indexes into the row's groups.
    Kill(Vec<usize>),
}

/// Decides a delete at `version`.
pub fn plan_delete(row: &RowState, version: &Version) -> Delete {
    match row {
        RowState::Unknown => Delete::Tombstone,
        RowState::Dead(tomb) if version.beats(tomb) => Delete::Tombstone,
        RowState::Dead(_) => Delete::Ignore,
        RowState::Alive(groups) => {
            let created = groups.iter().find(|g| g.mask & ROW_BIT != 0);
            if created.is_some_and(|g| !version.beats(&g.version)) {
                return Delete::Ignore;
            }
            let newer = groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.version.beats(version))
                .map(|(i, _)| i)
                .collect();
            Delete::Kill(newer)
        }
    }
}

/// A parked change: what it carries and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Mask bits it carries.
    pub mask: u64,
    /// Its version.
    pub version: Version,
}

/// How a row is put together from parked pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembly {
    /// For each piece that contributes: its index and the bits it wins.
    pub winners: Vec<(usize, u64)>,
    /// Every bit some piece provides.
    pub covered: u64,
}

/// Assembles a row that is not alive from its pieces, if one of them creates it
/// after the tombstone. Pieces at or below the tombstone do not count.
pub fn assemble(tombstone: Option<&Version>, pieces: &[Piece]) -> Option<Assembly> {
    let live = |p: &&Piece| tombstone.is_none_or(|t| p.version.beats(t));
    pieces.iter().filter(live).find(|p| p.mask & ROW_BIT != 0)?;
    let mut owner: Vec<Option<usize>> = vec![None; 64];
    for (i, p) in pieces.iter().enumerate() {
        if !live(&p) {
            continue;
        }
        for (bit, slot) in owner.iter_mut().enumerate() {
            if p.mask & (1 << bit) == 0 {
                continue;
            }
            let better = slot.is_none_or(|j| p.version.beats(&pieces[j].version));
            if better {
                *slot = Some(i);
            }
        }
    }
    let mut winners: Vec<(usize, u64)> = Vec::new();
    let mut covered = 0u64;
    for (bit, slot) in owner.iter().enumerate() {
        let Some(i) = *slot else { continue };
        covered |= 1 << bit;
        match winners.iter_mut().find(|(j, _)| *j == i) {
            Some((_, bits)) => *bits |= 1 << bit,
            None => winners.push((i, 1 << bit)),
        }
    }
    Some(Assembly { winners, covered })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64, origin: &str) -> Version {
        Version::new(hlc, origin, 0, hlc as i64)
    }

    /// A kept change re-applied takes the carried bits its own version holds
    /// (a default its first apply left), but not those a newer group owns, nor
    /// those held by a renumbered copy of it (same HLC, another number).
    #[test]
    fn a_reapply_takes_only_its_own_bits_under_its_own_number() {
        let me = v(20, "b");
        let row = RowState::Alive(vec![
            Group {
                mask: 0b0111,
                version: me.clone(),
            },
            Group {
                mask: 0b0100,
                version: v(30, "c"),
            },
        ]);
        assert_eq!(plan_upsert(&row, 0b0110, &me), Upsert::Ignore);
        assert_eq!(
            plan_reapply(&row, 0b0110, &me, 0b0110),
            Upsert::Write(0b0010)
        );
        assert_eq!(plan_reapply(&row, 0b0110, &me, 0b0100), Upsert::Ignore);
        let renumbered_row = RowState::Alive(vec![Group {
            mask: 0b0111,
            version: Version::new(20, "b", 0, 1 << 20),
        }]);
        assert_eq!(
            plan_reapply(&renumbered_row, 0b0110, &me, 0b0110),
            Upsert::Ignore
        );
        let lifted = renumbered(&renumbered_row, &me).expect("held under a higher number");
        assert_eq!(lifted.seq, 1 << 20);
        assert_eq!(
            plan_reapply(&renumbered_row, 0b0110, &lifted, 0b0110),
            Upsert::Write(0b0110)
        );
        assert_eq!(renumbered(&row, &me), None);
    }

    fn alive(groups: &[(u64, u64, &str)]) -> RowState {
        RowState::Alive(
            groups
                .iter()
                .map(|(mask, hlc, o)| Group {
                    mask: *mask,
                    version: v(*hlc, o),
                })
                .collect(),
        )
    }

    #[test]
    fn per_column_lww_with_origin_tie_break() {
        let row = alive(&[(0b011, 10, "a"), (0b100, 30, "a")]);
        assert_eq!(plan_upsert(&row, 0b110, &v(20, "b")), Upsert::Write(0b010));
        assert_eq!(plan_upsert(&row, 0b100, &v(30, "b")), Upsert::Write(0b100));
        assert_eq!(
            plan_upsert(&row, 0b100, &v(30, "a")),
            Upsert::Ignore,
            "same stamp: re-apply"
        );
        assert_eq!(plan_upsert(&row, 0b100, &v(30, "0")), Upsert::Ignore);
    }

    #[test]
    fn a_column_no_group_holds_goes_to_changes_not_older_than_the_row() {
        // Created at 20 with bits 0b011 by a device without column 0b100.
        let row = alive(&[(0b011, 20, "a")]);
        assert_eq!(plan_upsert(&row, 0b100, &v(30, "b")), Upsert::Write(0b100));
        assert_eq!(
            plan_upsert(&row, 0b111, &v(20, "a")),
            Upsert::Write(0b100),
            "the creating change, kept"
        );
        assert_eq!(
            plan_upsert(&row, 0b100, &v(10, "b")),
            Upsert::Ignore,
            "written to an earlier incarnation"
        );
    }

    #[test]
    fn win_moves_bits_between_groups() {
        let groups = vec![Group {
            mask: 0b111,
            version: v(1, "a"),
        }];
        let out = with_win(&groups, 0b110, &v(2, "b"));
        assert_eq!(
            out,
            vec![
                Group {
                    mask: 0b001,
                    version: v(1, "a")
                },
                Group {
                    mask: 0b110,
                    version: v(2, "b")
                }
            ]
        );
        let out = with_win(&out, 0b001, &v(3, "c"));
        assert_eq!(out.len(), 2, "emptied groups disappear");
    }

    #[test]
    fn delete_wins_over_concurrent_update_but_not_over_recreate() {
        // Row created at 10; column updated at 30; delete at 20 kills it and parks the update.
        let row = alive(&[(0b101, 10, "a"), (0b010, 30, "b")]);
        assert_eq!(plan_delete(&row, &v(20, "c")), Delete::Kill(vec![1]));
        // Re-created at 25: a delete at 20 is stale.
        let row = alive(&[(0b111, 25, "a")]);
        assert_eq!(plan_delete(&row, &v(20, "c")), Delete::Ignore);
        assert_eq!(
            plan_delete(&RowState::Dead(v(20, "c")), &v(15, "x")),
            Delete::Ignore
        );
        assert_eq!(
            plan_delete(&RowState::Unknown, &v(15, "x")),
            Delete::Tombstone
        );
    }

    #[test]
    fn tombstone_stops_stale_upserts() {
        let dead = RowState::Dead(v(20, "c"));
        assert_eq!(plan_upsert(&dead, 0b111, &v(19, "z")), Upsert::Ignore);
        assert_eq!(plan_upsert(&dead, 0b111, &v(21, "a")), Upsert::Park);
    }

    #[test]
    fn assembly_needs_a_creator_after_the_tombstone() {
        let pieces = vec![
            Piece {
                mask: 0b010,
                version: v(30, "b"),
            },
            Piece {
                mask: 0b111,
                version: v(15, "a"),
            },
        ];
        assert_eq!(
            assemble(Some(&v(20, "c")), &pieces),
            None,
            "creator predates the delete"
        );
        let asm = assemble(None, &pieces).unwrap();
        assert_eq!(asm.covered, 0b111);
        assert_eq!(asm.winners, vec![(1, 0b101), (0, 0b010)]);
    }

    #[test]
    fn overlapping_groups_resolve_to_the_newest() {
        let groups = vec![
            Group {
                mask: 0b111,
                version: v(1, "a"),
            },
            Group {
                mask: 0b010,
                version: v(3, "a"),
            },
            Group {
                mask: 0b110,
                version: v(2, "b"),
            },
        ];
        let out = normalize(groups);
        let masks: Vec<(u64, u64)> = out.iter().map(|g| (g.mask, g.version.hlc)).collect();
        assert_eq!(masks, vec![(0b010, 3), (0b100, 2), (0b001, 1)]);
        let others = vec![(0b010, v(3, "a")), (0b110, v(2, "b"))];
        assert_eq!(effective_mask(0b111, &v(1, "a"), &others), 0b001);
        assert_eq!(effective_mask(0b010, &v(3, "a"), &others), 0b010);
    }

    #[test]
    fn owner_is_the_creator() {
        let row = alive(&[(0b010, 30, "b"), (0b101, 10, "a")]);
        assert_eq!(row.owner(), Some("a"));
        assert_eq!(RowState::Dead(v(1, "d")).owner(), Some("d"));
        assert_eq!(RowState::Unknown.owner(), None);
    }
}
