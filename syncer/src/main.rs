//! `sdsync`: the per-device syncer's command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use sdsync_syncer::library::{Library, extension_path};
use sdsync_syncer::{bench, demo};

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
    /// Give a copied database.db its own device identity.
    Reidentify {
        /// The database file.
        db: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ext = extension_path(cli.extension.as_deref())?;
    match cli.command {
        Command::Demo { dir, entries } => {
            let dir = dir.unwrap_or_else(|| temp("demo"));
            let ok = demo::run(&dir, &ext, entries)?;
            anyhow::ensure!(ok, "devices did not converge");
        }
        Command::Bench { rows, runs, dir } => {
            let dir = dir.unwrap_or_else(|| temp("bench"));
            let report = bench::run(&dir, &ext, rows, runs.max(1))?;
            println!("{report}");
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

fn temp(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sdsync-{what}-{}", std::process::id()))
}
