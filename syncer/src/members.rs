//! Membership through the library itself: every device of a library has a
//! row in its (shared, synced) `devices` table naming how to authenticate it
//! (`cert_sha256`) and reach it (`addresses`), and whether it was removed
//! (`revoked_at`).
//!
//! ```no_run
//! # fn f(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
//! for m in sdsync_syncer::members::read(conn)?.unwrap_or_default() {
//!     println!("{} ({}) removed: {}", m.name, m.device, m.revoked);
//! }
//! # Ok(()) }
//! ```
//!
//! Why the library and not `sync.db`: the row syncs like any shared row, so
//! a device paired with *any* member reaches every member, which then accepts
//! it by its certificate's fingerprint (introduction) — n devices need n − 1
//! pairings, not n(n − 1)/2. Who may introduce: any member, because any member
//! may write any shared row; what a member can forge is exactly that (it can
//! list a device, or a new fingerprint for one, and every member will accept
//! it). Removal is stronger than any write: each syncer keeps the devices it
//! saw removed in `sync.db` and never accepts them again, whatever a later
//! write to the row says (revocation cannot be undone; a removed device comes
//! back only under a new identity, by pairing a fresh folder).
//!
//! A library whose `devices` table lacks these columns (made before them)
//! still syncs; membership then is pairing only ([`read`] returns `None`).

use std::net::SocketAddr;

use rusqlite::{Connection, params};

/// A device as the library's `devices` table lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// Its device id (the row's uuid).
    pub device: String,
    /// Its name (the folder's name, or what the user set).
    pub name: String,
    /// Its certificate's SHA-256 in lowercase hex, once it published it.
    pub cert_sha256: Option<String>,
    /// Where it said it listens, most preferred first.
    pub addresses: Vec<SocketAddr>,
    /// Whether it was removed from the library.
    pub revoked: bool,
}

impl Member {
    /// Where it stands, in words, as seen from device `me`.
    pub fn state(&self, me: &str) -> &'static str {
        match (self.revoked, self.device == me) {
            (true, _) => "removed",
            (false, true) => "this device",
            (false, false) if self.cert_sha256.is_some() => "member",
            (false, false) => "listed, no certificate yet",
        }
    }
}

/// The columns membership needs in `devices`.
const COLUMNS: &str = "('cert_sha256', 'addresses', 'revoked_at')";

/// Whether the library's `devices` table has the membership columns.
pub fn supported(conn: &Connection) -> rusqlite::Result<bool> {
    let n: i64 = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM pragma_table_info('devices') WHERE name IN {COLUMNS}"
        ))?
        .query_row([], |r| r.get(0))?;
    Ok(n == 3)
}

/// Every device the library lists, or `None` if it cannot list them.
pub fn read(conn: &Connection) -> rusqlite::Result<Option<Vec<Member>>> {
    if !supported(conn)? {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT uuid, name, cert_sha256, addresses, revoked_at IS NOT NULL FROM devices ORDER BY uuid",
    )?;
    let rows = stmt.query_map([], |r| {
        let addresses: Option<String> = r.get(3)?;
        Ok(Member {
            device: r.get(0)?,
            name: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            cert_sha256: r.get(2)?,
            addresses: parse_addresses(addresses.as_deref().unwrap_or("")),
            revoked: r.get(4)?,
        })
    })?;
    rows.collect::<rusqlite::Result<_>>().map(Some)
}

/// Writes this device's fingerprint and addresses into its row where they
/// differ (no addresses: keep those listed). Whether anything was written.
pub fn publish(
    conn: &Connection,
    device: &str,
    fingerprint: &str,
    addresses: &[SocketAddr],
) -> rusqlite::Result<bool> {
    if !supported(conn)? {
        return Ok(false);
    }
    let mut wrote = conn.execute(
        "UPDATE devices SET cert_sha256 = ?2 WHERE uuid = ?1 AND cert_sha256 IS NOT ?2",
        params![device, fingerprint],
    )?;
    if !addresses.is_empty() {
        let text = format_addresses(addresses);
        wrote += conn.execute(
            "UPDATE devices SET addresses = ?2 WHERE uuid = ?1 AND addresses IS NOT ?2",
            params![device, text],
        )?;
    }
    Ok(wrote > 0)
}

/// Marks `device` removed in the library (its row is created if the library
/// never listed it, so the removal still reaches every member).
pub fn revoke(conn: &Connection, device: &str) -> rusqlite::Result<()> {
    let marked = conn.execute(
        "UPDATE devices SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE uuid = ?1 AND revoked_at IS NULL",
        [device],
    )?;
    if marked == 0 {
        conn.execute(
            "INSERT INTO devices(uuid, revoked_at) \
             SELECT ?1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             WHERE NOT EXISTS (SELECT 1 FROM devices WHERE uuid = ?1)",
            [device],
        )?;
    }
    Ok(())
}

/// Addresses as the row keeps them: comma-separated `host:port`.
pub fn format_addresses(addresses: &[SocketAddr]) -> String {
    let text: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    text.join(",")
}

/// The addresses in a row's text; anything that does not parse is skipped
/// (the row is written by other devices, possibly by a newer version).
pub fn parse_addresses(text: &str) -> Vec<SocketAddr> {
    text.split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_junk_is_skipped() {
        let a: Vec<SocketAddr> = vec![
            "127.0.0.1:7401".parse().unwrap(),
            "[::1]:9".parse().unwrap(),
        ];
        assert_eq!(parse_addresses(&format_addresses(&a)), a);
        assert_eq!(
            parse_addresses("x, 10.0.0.1:1,"),
            vec!["10.0.0.1:1".parse().unwrap()]
        );
        assert!(parse_addresses("").is_empty());
    }

    #[test]
    fn a_library_without_the_columns_lists_nobody() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE devices(id INTEGER PRIMARY KEY, uuid TEXT, name TEXT)")
            .unwrap();
        assert_eq!(read(&conn).unwrap(), None);
        conn.execute_batch(
            "ALTER TABLE devices ADD COLUMN cert_sha256 TEXT; ALTER TABLE devices ADD COLUMN addresses TEXT;
             ALTER TABLE devices ADD COLUMN revoked_at TEXT;
             INSERT INTO devices(uuid, name) VALUES ('a', 'laptop');",
        )
        .unwrap();
        assert!(publish(&conn, "a", "ff", &["127.0.0.1:1".parse().unwrap()]).unwrap());
        assert!(!publish(&conn, "a", "ff", &[]).unwrap());
        revoke(&conn, "b").unwrap();
        let all = read(&conn).unwrap().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].cert_sha256.as_deref(), Some("ff"));
        assert_eq!(all[0].addresses, vec!["127.0.0.1:1".parse().unwrap()]);
        assert!(!all[0].revoked && all[1].revoked);
    }
}
