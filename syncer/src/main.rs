//! `sdsync`: the per-device syncer's command line.

mod cli_pair;
mod cli_sql;
mod showcase;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use sdsync_syncer::daemon::Daemon;
use sdsync_syncer::home::Home;
use sdsync_syncer::library::{Library, extension_path};
use sdsync_syncer::settings::Settings;

/// jemalloc for every allocation in the process, not only Rust's: with
/// unprefixed symbols it replaces `malloc` and `free` for the bundled SQLite
/// and the loaded extension too. glibc's malloc took about a sixth of a
/// backfill's receiver CPU (freeing the statement journal's chunks, values and
/// strings of each change); under jemalloc the receiver of a 1M-entry backfill
/// used 8 % less CPU (README, "Performance").
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "sdsync",
    version,
    about = "Leaderless multi-device sync for SQLite libraries"
)]
struct Cli {
    /// Path of libsdsync.so (default: next to this binary, or $SDSYNC_EXTENSION).
    #[arg(long, global = true)]
    extension: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Several devices on this machine making changes and converging.
    Demo {
        /// Where to put the device databases (default: a fresh temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Entries the laptop indexes.
        #[arg(long, default_value_t = 300)]
        entries: usize,
    },
    /// Capture and apply cost against plain SQLite, measured in one run.
    Bench {
        /// Rows per measurement.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Runs per measurement (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where to put the benchmark databases (default: a fresh temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Create a library folder for this device (database, identity, sync.db).
    Init {
        /// The folder, e.g. Photos.sdlibrary.
        dir: PathBuf,
        /// Join this existing library (its id, as `sdsync info` prints it) instead of
        /// starting a new one.
        #[arg(long)]
        library: Option<String>,
    },
    /// The seeds' spelling of `init`.
    Library {
        #[command(subcommand)]
        action: LibraryCommand,
    },
    /// The library's devices: list them, remove one everywhere, or give this
    /// one a new certificate.
    Device {
        #[command(subcommand)]
        action: DeviceCommand,
    },
    /// Print a library folder's device, library id, certificate and peers.
    Info {
        /// The library folder.
        dir: PathBuf,
    },
    /// Print whether the syncer runs, each paired device (connected, last
    /// contact, how far behind), what this device holds of each origin, and
    /// what it set aside (parked, quarantined, dead letters, schema).
    Status {
        /// The library folder.
        dir: PathBuf,
        /// Print it as one JSON object (field names in the README).
        #[arg(long)]
        json: bool,
    },
    /// Run SQL on the library with the extension loaded (writes sync):
    /// a query prints its rows, tab-separated or as JSON.
    Sql {
        /// The library folder.
        dir: PathBuf,
        /// The SQL (one query, or statements run as a batch).
        sql: String,
        /// Print rows as a JSON array of objects.
        #[arg(long)]
        json: bool,
    },
    /// List, retry or discard the changes this device could not apply.
    Quarantine {
        /// The library folder.
        dir: PathBuf,
        #[command(subcommand)]
        action: Option<QuarantineCommand>,
    },
    /// Pair two devices with a short code (see `sdsync pair generate --help`).
    Pair {
        #[command(subcommand)]
        action: cli_pair::PairCommand,
    },
    /// Pair with a device: pin its certificate and record its address.
    PeerAdd {
        /// The library folder.
        dir: PathBuf,
        /// The other device's id.
        #[arg(long)]
        device: String,
        /// The other device's certificate (its device.crt).
        #[arg(long)]
        cert: PathBuf,
        /// Where the other device listens (host:port).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Run this device's syncer until interrupted.
    Run {
        /// The library folder.
        dir: PathBuf,
        /// Address to listen on (setting `listen`, default 0.0.0.0:7373).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Start although a peer told this folder to stop (another copy ran
        /// as the same device): only when that other copy is gone for good.
        #[arg(long)]
        take_over: bool,
        /// Serve Prometheus metrics on http://ADDR/metrics and /health
        /// (setting `metrics`).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Log lines as text or one JSON object per line (setting `log_format`).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// Any setting, as KEY=VALUE (repeatable; see `sdsync config`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Print the syncer's effective settings (defaults, config.toml,
    /// SDSYNC_<KEY> variables) and where each comes from.
    Config {
        /// The library folder.
        dir: PathBuf,
    },
    /// Give a copied library folder (or a copied database.db) its own device
    /// identity; a folder also gets a new certificate and forgets its pairings.
    Reidentify {
        /// The library folder, or a database file.
        db: PathBuf,
    },
}

/// How `sdsync run` writes its log (stderr).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }

    fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => {
                anyhow::bail!("setting log_format: {other:?} is neither \"text\" nor \"json\"")
            }
        }
    }
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Every quarantined change, with its reason (the default).
    List,
    /// Try to apply quarantined changes again now.
    Retry {
        /// Only this one (its id from `list`).
        id: Option<i64>,
        /// All of them (the default when no id is given).
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Drop quarantined changes for good: this device will never hold them.
    Discard {
        /// The change's id from `list`.
        #[arg(required_unless_present = "all")]
        id: Option<i64>,
        /// All of them.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum LibraryCommand {
    /// Create a library folder for this device (as `sdsync init`).
    Create {
        /// The folder, e.g. Photos.sdlibrary.
        dir: PathBuf,
        /// Join this existing library instead of starting a new one.
        #[arg(long)]
        library: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Every device the library lists: name, id, state, addresses.
    List {
        /// The library folder.
        dir: PathBuf,
    },
    /// Remove a device from the library on every member, for good (a stolen
    /// phone): each member refuses its certificate once it hears of it.
    Remove {
        /// The library folder (of any member).
        dir: PathBuf,
        /// The device's id (`sdsync device list`).
        id: String,
    },
    /// Give this device a new certificate without pairing again; the
    /// syncer switches once every peer knows the new one.
    Rotate {
        /// The library folder.
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    // Before any connection: SQLite's memory statistics take a global mutex
    // around every allocation, about 4 % of a syncer's apply (perf), and
    // nothing here reads them.
    // SAFETY: called once, before SQLite is initialized, with an int argument
    // as SQLITE_CONFIG_MEMSTATUS expects; an error leaves the default on.
    unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0) };
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // `sdsync status DIR | head -1`: a reader closing the pipe ends a
        // command that prints quietly, as any Unix tool (Rust ignores
        // SIGPIPE, and `println!` then panicked: a user's trial). Not the
        // syncer, which must outlive whatever reads its log.
        // SAFETY: called once at start, before any thread, with a valid
        // signal number and handler.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let ext = extension_path(cli.extension.as_deref())?;
    match cli.command {
        Command::Demo { dir, entries } => {
            let dir = dir.unwrap_or_else(|| temp("demo"));
            let ok = showcase::demo::run(&dir, &ext, entries)?;
            anyhow::ensure!(ok, "devices did not converge");
        }
        Command::Bench { rows, runs, dir } => {
            let dir = dir.unwrap_or_else(|| temp("bench"));
            let report = showcase::bench::run(&dir, &ext, rows, runs.max(1))?;
            println!("{report}");
        }
        Command::Init { dir, library }
        | Command::Library {
            action: LibraryCommand::Create { dir, library },
        } => {
            let home = Home::init(&dir, &ext, library.as_deref())?;
            home.register_device(&[])?;
            info(&home)?;
        }
        Command::Device { action } => device(action, &ext)?,
        Command::Info { dir } => info(&Home::open(&dir, &ext)?)?,
        Command::Sql { dir, sql, json } => {
            let lib = Home::open(&dir, &ext)?.database()?;
            print!("{}", cli_sql::run(&lib, &sql, json)?);
        }
        Command::Pair { action } => cli_pair::run(action, &ext)?,
        Command::Quarantine { dir, action } => quarantine(
            &Home::open(&dir, &ext)?,
            action.unwrap_or(QuarantineCommand::List),
        )?,
        Command::Status { dir, json: true } => {
            let home = Home::open(&dir, &ext)?;
            println!("{}", serde_json::to_string_pretty(&home.status()?)?);
        }
        Command::Status { dir, json: false } => {
            let home = Home::open(&dir, &ext)?;
            header(&home)?;
            print!("{}", home.status()?);
        }
        Command::PeerAdd {
            dir,
            device,
            cert,
            addr,
        } => {
            Home::open(&dir, &ext)?.add_peer(&device, &cert, addr)?;
            println!("paired with {device}");
        }
        Command::Run {
            dir,
            listen,
            take_over,
            metrics,
            log_format,
            mut set,
        } => {
            set.extend(listen.map(|a| format!("listen={a}")));
            set.extend(metrics.map(|a| format!("metrics={a}")));
            set.extend(log_format.map(|f| format!("log_format={}", f.name())));
            let settings = Settings::load(&dir, &set, &|k| std::env::var(k).ok())?;
            init_log(LogFormat::parse(&settings.values.log_format)?);
            run(&Home::open(&dir, &ext)?, &settings, take_over)?
        }
        Command::Config { dir } => {
            Home::open(&dir, &ext)?;
            print!("{}", Settings::load(&dir, &[], &|k| std::env::var(k).ok())?);
        }
        Command::Reidentify { db } if db.is_dir() => {
            let id = Home::open(&db, &ext)?.reidentify()?;
            println!(
                "{}: new device id {id}, new certificate, no peers: pair it again (`sdsync pair generate` / `pair join`)",
                db.display()
            );
        }
        Command::Reidentify { db } => {
            let lib = Library::open(&db, &ext)?;
            let id: String = lib
                .conn
                .query_row("SELECT sdsync_reidentify()", [], |r| r.get(0))
                .with_context(|| format!("re-identifying {}", db.display()))?;
            println!("{}: new device id {id}", db.display());
        }
    }
    Ok(())
}

/// What `info` and `status` both open with (`status` lists the peers in
/// its own lines, with their state).
fn header(home: &Home) -> anyhow::Result<()> {
    println!("device      {}", home.device()?);
    println!("library     {}", home.library()?);
    println!("certificate {}", home.certificate_path().display());
    Ok(())
}

fn info(home: &Home) -> anyhow::Result<()> {
    header(home)?;
    for p in home.peers()? {
        let addr = p.addr.map_or("-".to_string(), |a| a.to_string());
        println!("peer        {} at {addr}", p.device);
    }
    Ok(())
}

fn device(action: DeviceCommand, ext: &std::path::Path) -> anyhow::Result<()> {
    match action {
        DeviceCommand::List { dir } => {
            let home = Home::open(&dir, ext)?;
            let me = home.device()?;
            for m in home.members()? {
                let state = m.state(&me);
                let addresses = sdsync_syncer::members::format_addresses(&m.addresses);
                let addresses = if addresses.is_empty() {
                    "-".into()
                } else {
                    addresses
                };
                println!("{:<16} {}  {state:<12} at {addresses}", m.name, m.device);
            }
        }
        DeviceCommand::Remove { dir, id } => {
            let id = Home::open(&dir, ext)?.remove_device(&id)?;
            println!(
                "removed {id} from the library: every member refuses it once this change reaches it (a running syncer at once)"
            );
        }
        DeviceCommand::Rotate { dir } => {
            let fingerprint = Home::open(&dir, ext)?.rotate_certificate()?;
            println!(
                "new certificate {fingerprint} prepared; the syncer switches to it once every peer knows it (no pairing needed)"
            );
        }
    }
    Ok(())
}

fn quarantine(home: &Home, action: QuarantineCommand) -> anyhow::Result<()> {
    match action {
        QuarantineCommand::List => {
            let entries = home.quarantined()?;
            for e in &entries {
                println!("{e}");
            }
            println!("{} change(s) quarantined", entries.len());
        }
        QuarantineCommand::Retry { id, all: _ } => {
            let r = home.retry_quarantined(id)?;
            println!("{} applied, {} still quarantined", r.applied, r.kept);
        }
        QuarantineCommand::Discard { id, all } => {
            let gone = home.discard_quarantined(if all { None } else { id })?;
            for e in &gone {
                println!("discarded {e}");
            }
            println!("{} change(s) discarded", gone.len());
        }
    }
    Ok(())
}

/// The syncer's log on stderr: `RUST_LOG` filters (default
/// `sdsync_syncer=info`), text or JSON lines.
fn init_log(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "sdsync_syncer=info".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => log.json().init(),
    }
}

/// Runs the syncer until SIGINT or SIGTERM. Every state it needs is in the
/// library folder, so a killed syncer restarts where it stopped.
fn run(home: &Home, settings: &Settings, take_over: bool) -> anyhow::Result<()> {
    let (listen, metrics) = (settings.listen()?, settings.metrics()?);
    // Before anything is opened: a second syncer on the folder changes nothing.
    let _lock = sdsync_syncer::runlock::lock(home.dir())?;
    let advertise = settings.advertise()?;
    let (store, pins, directory) = home.patiently(|| {
        home.register_device(&advertise)?;
        home.running_parts(sdsync_syncer::sqlstore::state_dir())
    })?;
    if take_over {
        store.set_stopped(None)?;
    } else if let Some(reason) = store.stopped()? {
        anyhow::ensure!(
            !reason.contains("removed from the library"),
            "{reason}. Its data stays in {}; to sync again it must join as a new device (`sdsync reidentify` it, then pair it)",
            home.dir().display()
        );
        anyhow::bail!(
            "a peer told this library folder to stop: {reason}. Run `sdsync reidentify {}` if this folder is the copy, or `sdsync run --take-over` if the other copy is gone for good",
            home.dir().display()
        );
    }
    let (library, me) = (home.library()?, home.identity()?);
    // The daemon (the protocol and every database statement) runs on this
    // thread, inside `block_on`; QUIC (the endpoint, the connections, their
    // readers and writers) runs on the runtime's worker. A long apply never
    // starves keep-alives and acknowledgements, and the network reads ahead
    // while a page is applied.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut daemon = Daemon::start(store, &library, &me, &pins, &directory, listen)?
            .with_config(settings.config())
            .with_folder(home.dir());
        if let Some(addr) = metrics {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let served = std::sync::Arc::new(sdsync_syncer::metrics::Metrics::default());
            println!(
                "sdsync: metrics on http://{}/metrics",
                listener.local_addr()?
            );
            tokio::spawn(sdsync_syncer::metrics::serve(listener, served.clone()));
            daemon = daemon.with_metrics(served);
        }
        // Bars share stderr with the log: only for a person reading text.
        let text = settings.values.log_format == "text";
        if text && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            daemon = daemon.with_progress_bars();
        }
        let device = home.device()?;
        println!(
            "sdsync: device {device} of library {library} listening on quic://{}",
            daemon.local_addr()?
        );
        let _discovery = if settings.values.discovery {
            let listen = daemon.local_addr()?;
            sdsync_syncer::daemon::discover(&library, &device, listen, &pins, directory)
        } else {
            None
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let _ = stop.send(true);
            Ok::<(), std::io::Error>(())
        });
        match daemon.run(stopped).await {
            Some(reason) => {
                anyhow::bail!("stopped: {reason} (this folder: {})", home.dir().display())
            }
            None => Ok(()),
        }
    })
}

fn temp(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sdsync-{what}-{}", std::process::id()))
}
