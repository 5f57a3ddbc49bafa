//! Real devices for process-level tests: a library folder made by `sdsync init`,
//! pinned to its peers with `sdsync peer-add`, and its `sdsync run` syncer as a
//! child process on loopback.
//!
//! Shared by `tests/tests/processes.rs` (SIGKILL) and `tests/tests/clients.rs`
//! (real client libraries writing while the syncers run).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Lib, extension_path, root, temp_dir};

/// The built `sdsync` binary (`cargo build --release` builds it).
pub fn sdsync() -> PathBuf {
    let p = root().join("target/release/sdsync");
    assert!(
        p.exists(),
        "{} not built: run `cargo build --release` first",
        p.display()
    );
    p
}

/// Runs an `sdsync` command that must succeed; returns its stdout.
pub fn cli(args: &[&str]) -> String {
    let out = Command::new(sdsync())
        .args(args)
        .env("SDSYNC_EXTENSION", extension_path())
        .output()
        .expect("run sdsync");
    assert!(
        out.status.success(),
        "sdsync {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of a `name  value` line of `sdsync init` / `sdsync info` output.
pub fn field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .expect("field in sdsync info")
}

/// A loopback TCP port free right now (for `sdsync run --metrics`).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The whole HTTP answer of `GET path` from a syncer's `--metrics` port (empty
/// while it does not listen yet).
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of metric `name` (with its labels, if any) in a Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map(|v| v as i64)
}

/// A loopback UDP address free right now.
pub fn free_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr")
}

/// A device: its library folder and where its syncer listens.
pub struct Device {
    /// The library folder.
    pub dir: PathBuf,
    /// The device uuid.
    pub id: String,
    /// Where its syncer listens.
    pub addr: SocketAddr,
    /// The running `sdsync run`, if started.
    pub syncer: Option<Child>,
}

impl Device {
    /// `sdsync init` a folder `<name>.sdlibrary` under `parent` (joining `library`).
    pub fn init(parent: &Path, name: &str, library: Option<&str>) -> Self {
        let dir = parent.join(format!("{name}.sdlibrary"));
        let d = dir.to_str().expect("utf-8 path");
        let info = match library {
            Some(lib) => cli(&["init", d, "--library", lib]),
            None => cli(&["init", d]),
        };
        Self {
            id: field(&info, "device"),
            dir,
            addr: free_port(),
            syncer: None,
        }
    }

    /// The library id.
    pub fn library(&self) -> String {
        field(
            &cli(&["info", self.dir.to_str().expect("utf-8")]),
            "library",
        )
    }

    /// Pins `other`'s certificate and address.
    pub fn pair(&self, other: &Device) {
        let cert = other.dir.join("device.crt");
        let addr = other.addr.to_string();
        cli(&[
            "peer-add",
            self.dir.to_str().expect("utf-8"),
            "--device",
            &other.id,
            "--cert",
            cert.to_str().expect("utf-8"),
            "--addr",
            &addr,
        ]);
    }

    /// Starts `sdsync run` unless it runs.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts `sdsync run` with `extra` arguments unless it runs. Discovery
    /// on the local network is off unless `extra` turns it on (`--set
    /// discovery=true`): tests find their peers at the addresses they were
    /// given, and dozens of test libraries do not announce themselves to
    /// each other.
    pub fn start_with(&mut self, extra: &[&str]) {
        if self.syncer.is_some() {
            return;
        }
        // Every run appends to syncer.log in the library folder, for post-mortems.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("syncer.log"))
            .expect("syncer.log");
        let child = Command::new(sdsync())
            .args([
                "run",
                self.dir.to_str().expect("utf-8"),
                "--listen",
                &self.addr.to_string(),
                "--set",
                "discovery=false",
            ])
            .args(extra)
            .env("SDSYNC_EXTENSION", extension_path())
            .env("SDSYNC_STATE_DIR", self.state_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sdsync run");
        self.syncer = Some(child);
    }

    /// Where its syncer keeps the record of its clock outside the library
    /// folder (shared by the devices of one test, each in its own file; the
    /// user's own state directory stays out of the tests).
    pub fn state_dir(&self) -> PathBuf {
        self.dir
            .parent()
            .map_or_else(|| self.dir.join("state"), |p| p.join("state"))
    }

    /// SIGTERM, and waits until it exited: the syncer stops as a user
    /// stops it (it records its clock and closes its connections).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.syncer.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            c.wait().expect("reap");
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.syncer.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    /// The library database file.
    pub fn database(&self) -> PathBuf {
        self.dir.join("database.db")
    }

    /// A connection to the library database, as an app has.
    pub fn app(&self) -> Lib {
        Lib::open(&self.database())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `sdsync run` settings: Hellos only when a link comes up (anti-entropy
/// every ten minutes), so a test sees what pages alone do.
pub const QUIET: [&str; 2] = ["--set", "anti_entropy_ms=600000"];

/// [`QUIET`], serving pages of 2 changes one at a time: a backfill of
/// thousands of changes takes seconds.
pub const QUIET_AND_SLOW: [&str; 6] = [
    "--set",
    "anti_entropy_ms=600000",
    "--set",
    "page_rows=2",
    "--set",
    "window=1",
];

/// Two devices of one library in a fresh directory, pinned to each other
/// (syncers not started).
pub fn pair_of(name: &str) -> (PathBuf, Device, Device) {
    let dir = temp_dir(name);
    let a = Device::init(&dir, "a", None);
    let b = Device::init(&dir, "b", Some(&a.library()));
    a.pair(&b);
    b.pair(&a);
    (dir, a, b)
}

/// CPU seconds and peak RSS of a running syncer, from /proc.
pub fn usage(d: &Device) -> String {
    let Some(child) = &d.syncer else {
        return "not running".into();
    };
    let pid = child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_string();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is 14th, stime 15th overall.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        rest.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    format!(
        "CPU {cpu:.1} s, peak RSS {:.1} MB",
        hwm.parse::<f64>().unwrap_or(0.0) / 1024.0
    )
}
