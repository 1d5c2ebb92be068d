//! `PrivatePostgres`: a PostgreSQL server of the test's own, in a scratch
//! directory on a free port, so a test can stop and restart it without
//! disturbing anything else on the machine: plain, preloading TimescaleDB
//! (where the extension is installed), or a streaming replica of another.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, wait_for};

pub struct PrivatePostgres {
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
    /// Extra `-c name=value` server settings.
    settings: Vec<String>,
}

/// Whether TimescaleDB is installed for the local PostgreSQL server
/// (`deploy/tools/ensure-timescaledb.sh` installs it where it can).
pub fn timescaledb_installed() -> bool {
    Command::new("pg_config")
        .arg("--sharedir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| {
            let share = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Path::new(&share)
                .join("extension/timescaledb.control")
                .exists()
        })
        .unwrap_or(false)
}

fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(root)
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql")?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

/// Run a PostgreSQL tool as the `postgres` user when we are root (initdb
/// and the server refuse to run as root).
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if is_root {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

impl PrivatePostgres {
    pub async fn start(scratch: &Path) -> anyhow::Result<Self> {
        Self::start_with(scratch, Vec::new()).await
    }

    /// A server that preloads TimescaleDB (the extension must be installed:
    /// see [`timescaledb_installed`]).
    pub async fn start_with_timescaledb(scratch: &Path) -> anyhow::Result<Self> {
        Self::start_with(
            scratch,
            vec![
                "shared_preload_libraries=timescaledb".into(),
                "timescaledb.telemetry_level=off".into(),
                "max_worker_processes=16".into(),
            ],
        )
        .await
    }

    async fn start_with(scratch: &Path, settings: Vec<String>) -> anyhow::Result<Self> {
        let bin = postgres_bin_dir()?;
        let data = scratch.join("pgdata");
        std::fs::create_dir_all(&data)?;
        // The directory must belong to the server's user.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(scratch)
            .status();
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )
        .output()
        .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let server = Self {
            port: free_port(),
            data,
            bin,
            settings,
        };
        server.resume().await?;
        Ok(server)
    }

    /// A hot-standby streaming replica of this server, in `scratch`
    /// (`pg_basebackup -R`), running on a port of its own.
    pub async fn start_replica(&self, scratch: &Path) -> anyhow::Result<Self> {
        let data = scratch.join("pgdata-replica");
        std::fs::create_dir_all(scratch)?;
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(scratch)
            .status();
        let port = self.port.to_string();
        let out = as_postgres(
            &self.bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                // Not a spread checkpoint: the copy starts at once.
                "--checkpoint=fast",
                "--no-sync",
            ],
        )
        .output()
        .context("running pg_basebackup")?;
        if !out.status.success() {
            bail!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let replica = Self {
            port: free_port(),
            data,
            bin: self.bin.clone(),
            settings: self.settings.clone(),
        };
        replica.resume().await?;
        Ok(replica)
    }

    /// Start the (stopped) server again on the same port and data.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        for setting in &self.settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let log = self.data.join("server.log");
        let out = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
        .output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let url = self.url("postgres");
        wait_for("the private PostgreSQL", Duration::from_secs(30), || {
            let url = url.clone();
            async move { crate::connect(&url).await.ok().map(|_| ()) }
        })
        .await
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        let out = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
        .output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        self.resume().await
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let client = crate::connect(&self.url("postgres")).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        Ok(self.url(name))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
