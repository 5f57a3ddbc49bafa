//! Lag in time: since when this device has lacked changes of an origin that
//! some peer holds, for `sdsync status` ("behind on X by 12 s").
//!
//! ```
//! use std::collections::BTreeMap;
//! use sdsync_syncer::lag::Behind;
//! let mut b = Behind::default();
//! let claims = BTreeMap::from([("o".to_string(), 10)]);
//! assert!(b.update(1_000, &[("o".into(), 4)], &claims)); // behind from now on
//! assert!(!b.update(3_000, &[("o".into(), 8)], &claims)); // still behind, since 1 000
//! assert_eq!(b.since().get("o"), Some(&1_000));
//! assert!(b.update(4_000, &[("o".into(), 10)], &claims)); // caught up
//! ```
//!
//! Counting in changes needs only what peers said they hold; counting in
//! seconds needs a start, which only the running syncer sees: the moment it
//! first noticed a peer holding more of the origin than this device. The
//! syncer records the set in `sync.db` when it changes (rarely: when a lag
//! starts or ends), and `status` subtracts.

use std::collections::BTreeMap;

use crate::proto::node::PeerState;

/// The most any peer said it holds of each origin.
pub fn claims(peers: &[PeerState]) -> BTreeMap<String, i64> {
    let mut claims: BTreeMap<String, i64> = BTreeMap::new();
    for peer in peers {
        for (origin, seq) in &peer.holds {
            let best = claims.entry(origin.clone()).or_default();
            *best = (*best).max(*seq);
        }
    }
    claims
}

/// Whether this device is catching up on some origin, as a backfill does:
/// pulling it (`pulling`; a live peer's commits come pushed, without a
/// pull, so two devices writing in bulk at once do not stop pacing each
/// other) and behind on it by at least [`crate::bars::SHOWN_FROM`] changes
/// (where a progress bar shows). `claims` should come from connected peers:
/// an offline one's claim may stand for days.
pub fn catching_up(
    held: &[(String, i64)],
    claims: &BTreeMap<String, i64>,
    pulling: impl Fn(&str) -> bool,
) -> bool {
    claims
        .iter()
        .filter(|(origin, _)| pulling(origin))
        .any(|(origin, claim)| {
            let have = held
                .iter()
                .find(|(o, _)| o == origin)
                .map_or(0, |(_, s)| *s);
            claim - have >= crate::bars::SHOWN_FROM
        })
}

/// The origins this device is behind on, and since when (ms since the epoch).
#[derive(Clone, Debug, Default)]
pub struct Behind {
    since: BTreeMap<String, u64>,
}

impl Behind {
    /// Takes what this device holds (`held`) and the most any peer holds of
    /// each origin (`claims`) at `now_ms`. Whether the set of lagging
    /// origins changed (then it is worth recording).
    pub fn update(
        &mut self,
        now_ms: u64,
        held: &[(String, i64)],
        claims: &BTreeMap<String, i64>,
    ) -> bool {
        let held: BTreeMap<&str, i64> = held.iter().map(|(o, s)| (o.as_str(), *s)).collect();
        let lagging: Vec<&String> = claims
            .iter()
            .filter(|(o, claim)| **claim > held.get(o.as_str()).copied().unwrap_or(0))
            .map(|(o, _)| o)
            .collect();
        let before = self.since.len();
        self.since.retain(|o, _| lagging.contains(&o));
        let mut changed = self.since.len() != before;
        for origin in lagging {
            if !self.since.contains_key(origin) {
                self.since.insert(origin.clone(), now_ms);
                changed = true;
            }
        }
        changed
    }

    /// Each lagging origin and since when.
    pub fn since(&self) -> &BTreeMap<String, u64> {
        &self.since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_lags_from_the_first_round_a_peer_holds_more_until_caught_up() {
        let mut b = Behind::default();
        let claims = |n: i64| BTreeMap::from([("a".to_string(), n), ("b".to_string(), 5)]);
        let held = |a: i64| vec![("a".to_string(), a), ("b".to_string(), 5)];
        assert!(
            !b.update(0, &held(3), &claims(3)),
            "in line: nothing to record"
        );
        assert!(b.update(100, &held(3), &claims(9)));
        assert!(!b.update(600, &held(7), &claims(12)));
        assert_eq!(b.since(), &BTreeMap::from([("a".to_string(), 100)]));
        assert!(b.update(900, &held(12), &claims(12)));
        assert!(b.since().is_empty());
        // An origin this device has never held counts from zero.
        let only_peer = BTreeMap::from([("c".to_string(), 1)]);
        assert!(b.update(1_000, &[], &only_peer));
        assert_eq!(b.since().get("c"), Some(&1_000));
    }

    #[test]
    fn catching_up_takes_a_pull_and_a_progress_bars_worth_of_changes() {
        let claims = |n: i64| BTreeMap::from([("a".to_string(), n)]);
        let held = [("a".to_string(), 12)];
        let pulling = |_: &str| true;
        assert!(!catching_up(&held, &claims(5_011), pulling));
        assert!(catching_up(&held, &claims(5_012), pulling));
        assert!(catching_up(&[], &claims(5_000), pulling));
        // Pushed, not pulled: a live peer's burst.
        assert!(!catching_up(&held, &claims(50_000), |_| false));
    }
}
