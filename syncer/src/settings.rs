//! The syncer's settings: built-in defaults, then `DIR/config.toml`, then
//! `SDSYNC_<KEY>` environment variables, then `sdsync run` flags (`--listen`,
//! `--metrics`, `--log-format`, or `--set key=value` for any key), each
//! overriding the one before. `sdsync config DIR` prints the result.
//!
//! ```
//! use sdsync_syncer::settings::Settings;
//! let dir = std::env::temp_dir().join("sdsync-settings-doc");
//! std::fs::create_dir_all(&dir).unwrap();
//! std::fs::write(dir.join("config.toml"), "window = 8\n").unwrap();
//! let s = Settings::load(&dir, &[], &|_| None).unwrap();
//! assert_eq!(s.value("window").as_str(), "8");
//! assert_eq!(s.source("window"), "config.toml");
//! assert_eq!(s.source("page_rows"), "default");
//! ```
//!
//! Keys are flat (no tables). A key the syncer does not know, or a value of
//! the wrong type, is an error naming the key and where it came from: a typo
//! in a config file must not silently run on the default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::proto::node::Config;

/// The settings file in a library folder.
pub const FILE: &str = "config.toml";

/// Every setting, with its default (`Settings::default`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Values {
    /// Where the syncer listens (QUIC, UDP).
    pub listen: String,
    /// Where other devices dial this one (`host:port`, comma-separated),
    /// published in the library's `devices` row; empty: `listen`, unless it
    /// is a wildcard address (then nothing is published).
    pub advertise: String,
    /// Whether to announce this device and find the library's others on the
    /// local network (mDNS).
    pub discovery: bool,
    /// Where `/metrics` and `/health` are served; empty: not served.
    pub metrics: String,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Rows per page.
    pub page_rows: u64,
    /// Approximate bytes per page.
    pub page_bytes: u64,
    /// Pages a stream may have sent but not had acknowledged.
    pub window: u64,
    /// Interval between anti-entropy Hellos, ms.
    pub anti_entropy_ms: u64,
    /// How long a pull may go unanswered before it is retried, ms.
    pub pull_timeout_ms: u64,
    /// Base of the retry backoff, ms.
    pub backoff_ms: u64,
    /// Attempts before a pull becomes a dead letter.
    pub max_attempts: u64,
    /// A peer unseen this long no longer holds back the log, ms.
    pub horizon_ms: u64,
}

impl Default for Values {
    fn default() -> Self {
        let c = Config::default();
        Self {
            listen: "0.0.0.0:7373".into(),
            advertise: String::new(),
            discovery: true,
            metrics: String::new(),
            log_format: "text".into(),
            page_rows: c.page_rows as u64,
            page_bytes: c.page_bytes as u64,
            window: c.window as u64,
            anti_entropy_ms: c.anti_entropy_ms,
            pull_timeout_ms: c.pull_timeout_ms,
            backoff_ms: c.backoff_ms,
            max_attempts: u64::from(c.max_attempts),
            horizon_ms: c.horizon_ms,
        }
    }
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key or value is wrong.
    #[error("setting {key} (from {from}): {reason}")]
    Bad {
        /// The key.
        key: String,
        /// Where the value came from.
        from: String,
        /// Why.
        reason: String,
    },
}

/// The effective settings and where each value came from.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The values.
    pub values: Values,
    table: toml::Table,
    sources: BTreeMap<String, String>,
}

impl Settings {
    /// Defaults, then `dir/config.toml`, then `env(SDSYNC_<KEY>)`, then
    /// `flags` (`key=value`).
    pub fn load(
        dir: &Path,
        flags: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let mut table =
            toml::Table::try_from(Values::default()).map_err(|e| bad("?", "default", e))?;
        let mut sources: BTreeMap<String, String> = table
            .keys()
            .map(|k| (k.clone(), "default".to_string()))
            .collect();
        let path = dir.join(FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
                path: path.clone(),
                source,
            })?;
            let file: toml::Table = text.parse().map_err(|e| bad("?", FILE, e))?;
            for (k, v) in file {
                set(&mut table, &mut sources, &k, v, FILE)?;
            }
        }
        let keys: Vec<String> = table.keys().cloned().collect();
        for k in keys {
            let var = format!("SDSYNC_{}", k.to_uppercase());
            if let Some(text) = env(&var) {
                set(
                    &mut table,
                    &mut sources,
                    &k,
                    parse_value(&text),
                    &format!("env {var}"),
                )?;
            }
        }
        for flag in flags {
            let (k, text) = flag
                .split_once('=')
                .ok_or_else(|| bad(flag, "--set", "expected key=value"))?;
            set(
                &mut table,
                &mut sources,
                k.trim(),
                parse_value(text.trim()),
                "flag",
            )?;
        }
        let values: Values = table
            .clone()
            .try_into()
            .map_err(|e| bad("?", "merged", e))?;
        Ok(Self {
            values,
            table,
            sources,
        })
    }

    /// A value as TOML text (`"0.0.0.0:7373"`, `8`).
    pub fn value(&self, key: &str) -> String {
        self.table
            .get(key)
            .map_or_else(String::new, ToString::to_string)
    }

    /// Where `key`'s value came from: `default`, `config.toml`, `env …` or `flag`.
    pub fn source(&self, key: &str) -> &str {
        self.sources.get(key).map_or("", String::as_str)
    }

    /// The protocol's tunables.
    pub fn config(&self) -> Config {
        let v = &self.values;
        Config {
            page_rows: v.page_rows as usize,
            page_bytes: v.page_bytes as usize,
            anti_entropy_ms: v.anti_entropy_ms,
            pull_timeout_ms: v.pull_timeout_ms,
            backoff_ms: v.backoff_ms,
            max_attempts: v.max_attempts.min(u64::from(u32::MAX)) as u32,
            horizon_ms: v.horizon_ms,
            window: v.window.max(1) as usize,
            // Not a setting: the extension checks each change against the
            // library's own `sdsync_meta.max_drift_ms`, and the two must agree.
            ..Config::default()
        }
    }

    /// Where to listen.
    pub fn listen(&self) -> Result<SocketAddr, SettingsError> {
        self.address("listen")?
            .ok_or_else(|| bad("listen", self.source("listen"), "an address is needed"))
    }

    /// Where to serve metrics, if anywhere.
    pub fn metrics(&self) -> Result<Option<SocketAddr>, SettingsError> {
        self.address("metrics")
    }

    /// Where other devices dial this one: `advertise`, else `listen` when it
    /// names an address.
    pub fn advertise(&self) -> Result<Vec<SocketAddr>, SettingsError> {
        if self.values.advertise.is_empty() {
            let listen = self.listen()?;
            return Ok(if listen.ip().is_unspecified() {
                Vec::new()
            } else {
                vec![listen]
            });
        }
        self.values
            .advertise
            .split(',')
            .map(|a| {
                a.trim()
                    .parse()
                    .map_err(|e| bad("advertise", self.source("advertise"), e))
            })
            .collect()
    }

    fn address(&self, key: &str) -> Result<Option<SocketAddr>, SettingsError> {
        let text = match key {
            "listen" => &self.values.listen,
            _ => &self.values.metrics,
        };
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|e| bad(key, self.source(key), e))
    }
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in &self.table {
            writeln!(f, "{k} = {v}  # {}", self.source(k))?;
        }
        Ok(())
    }
}

/// Sets `key` to `value` if the key exists and the value has the default's
/// type.
fn set(
    table: &mut toml::Table,
    sources: &mut BTreeMap<String, String>,
    key: &str,
    value: toml::Value,
    from: &str,
) -> Result<(), SettingsError> {
    let Some(old) = table.get(key) else {
        let known: Vec<&str> = table.keys().map(String::as_str).collect();
        return Err(bad(
            key,
            from,
            format!("no such setting (known: {})", known.join(", ")),
        ));
    };
    let value = match (old, value) {
        (toml::Value::String(_), toml::Value::Integer(i)) => toml::Value::String(i.to_string()),
        (toml::Value::Integer(_), toml::Value::Integer(i)) if i < 0 => {
            return Err(bad(key, from, "must not be negative"));
        }
        (old, v) if old.type_str() != v.type_str() => {
            return Err(bad(
                key,
                from,
                format!("expected {}, got {v}", old.type_str()),
            ));
        }
        (_, v) => v,
    };
    table.insert(key.to_string(), value);
    sources.insert(key.to_string(), from.to_string());
    Ok(())
}

/// An environment or flag value: a TOML value if it reads as one (`8`,
/// `true`), else the text itself (`0.0.0.0:7373`).
fn parse_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn bad(key: &str, from: &str, reason: impl std::fmt::Display) -> SettingsError {
    SettingsError::Bad {
        key: key.to_string(),
        from: from.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str, file: Option<&str>) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sdsync-settings-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let _ = std::fs::remove_file(d.join(FILE));
        if let Some(text) = file {
            std::fs::write(d.join(FILE), text).unwrap();
        }
        d
    }

    #[test]
    fn flags_beat_env_beat_the_file_beat_defaults() {
        let d = dir(
            "order",
            Some("window = 8\npage_rows = 100\nlisten = \"127.0.0.1:1\"\n"),
        );
        let env = |k: &str| (k == "SDSYNC_PAGE_ROWS").then(|| "200".to_string());
        let s = Settings::load(&d, &["page_rows=300".into()], &env).unwrap();
        assert_eq!(s.config().window, 8);
        assert_eq!(s.config().page_rows, 300);
        assert_eq!(s.source("page_rows"), "flag");
        let s = Settings::load(&d, &[], &env).unwrap();
        assert_eq!(
            (s.config().page_rows, s.source("page_rows")),
            (200, "env SDSYNC_PAGE_ROWS")
        );
        assert_eq!(s.listen().unwrap().to_string(), "127.0.0.1:1");
        assert_eq!(s.metrics().unwrap(), None);
        assert_eq!(s.source("horizon_ms"), "default");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors_naming_them() {
        let d = dir("bad", Some("windwo = 8\n"));
        let e = Settings::load(&d, &[], &|_| None).unwrap_err().to_string();
        assert!(
            e.contains("setting windwo (from config.toml): no such setting"),
            "{e}"
        );
        let d = dir("type", Some("window = \"eight\"\n"));
        let e = Settings::load(&d, &[], &|_| None).unwrap_err().to_string();
        assert!(
            e.contains("setting window (from config.toml): expected integer"),
            "{e}"
        );
        let d = dir("addr", None);
        let s = Settings::load(&d, &["listen=nowhere".into()], &|_| None).unwrap();
        assert!(
            s.listen()
                .unwrap_err()
                .to_string()
                .contains("setting listen (from flag)")
        );
    }
}
