//! What `SDSYNC_SIM_SENDS=1` prints of each message sent: its kind, and for
//! the messages a trace of a divergence needs, what they carry (pages by
//! change `seq:hlc%1e8:uuid`, positions, watermarks and the points of the
//! receiver's history a Hello sends back). Origins are shortened to their
//! last two characters, which tell the simulated devices apart.
//!
//! ```text
//! t=4616 d2->d1: Page d2 after 18 to 21 more true [19:92359168:d2-e0,20:93407744:9f0adebe]
//! ```

use sdsync_syncer::library::{Change, Pk};
use sdsync_syncer::proto::message::Payload;

/// One line for a message sent at `now` from device `from` to device `to`.
pub fn sent(now: u64, from: usize, to: usize, payload: &Payload) -> String {
    format!("t={now} d{from}->d{to}: {}", describe(payload))
}

fn describe(payload: &Payload) -> String {
    match payload {
        Payload::Page {
            origin,
            after,
            complete_to,
            changes,
            more,
            restores,
            ..
        } => format!(
            "Page {} after {after} to {complete_to} more {more} [{}]{}",
            short(origin),
            changes.iter().map(change).collect::<Vec<_>>().join(","),
            if restores.is_empty() {
                String::new()
            } else {
                format!(" restores {restores:?}")
            }
        ),
        Payload::Pull { origin, after } => format!("Pull {} after {after}", short(origin)),
        Payload::Ack { origin, to } => format!("Ack {} to {to}", short(origin)),
        Payload::Hello {
            watermarks,
            yours,
            your_clock,
            relayed,
            restores,
            ..
        } => format!(
            "Hello marks {:?} yours {yours:?} your_clock {your_clock:?} relayed {relayed:?} restores {:?}",
            watermarks
                .iter()
                .map(|(o, s)| (short(o), *s))
                .collect::<Vec<_>>(),
            restores
                .iter()
                .map(|(d, b)| (short(d), *b))
                .collect::<Vec<_>>()
        ),
        other => other.kind(),
    }
}

fn change(c: &Change) -> String {
    let pk = match &c.pk {
        Pk::Text(t) => t.chars().take(8).collect(),
        _ => "?".to_string(),
    };
    format!("{}:{}:{pk}", c.seq, c.hlc % 100_000_000)
}

fn short(origin: &str) -> &str {
    origin
        .get(origin.len().saturating_sub(2)..)
        .unwrap_or(origin)
}
