//! The system under test, started from scratch for each run: a Tansu broker
//! on a free port, a fresh PostgreSQL database, the collector (release
//! binary next to this one) and the `bess-sim load` generator.

use anyhow::Context as _;
use std::time::Duration;

use bess_tests::{binary, Broker, Proc, Scratch, TestDatabase};

/// How clients authenticate to the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `--auth disabled`: no tokens.
    Disabled,
    /// A read token for all sites, sent as `Authorization: Bearer`; no rate limit.
    Token,
}

pub struct Stack {
    pub database: TestDatabase,
    pub broker: Broker,
    pub collector: Proc,
    /// `http://127.0.0.1:PORT`
    pub api: String,
    pub token: Option<String>,
    /// Logs of every process, removed at the end (kept with `BESS_KEEP_TEST_FILES=1`).
    pub scratch: Scratch,
}

/// Where a stack's collector comes from and what it runs on, where not the
/// defaults (the release binary next to the bench, `BESS_TEST_DATABASE_URL`).
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// The database server's admin URL.
    pub admin_url: Option<String>,
    /// Another `bess-collector` binary (to compare two builds).
    pub collector_bin: Option<std::path::PathBuf>,
    /// More `bess-collector run` arguments.
    pub run_args: Vec<String>,
}

impl Stack {
    pub async fn start(name: &str, auth: Auth) -> anyhow::Result<Self> {
        Self::start_with(name, auth, StackOptions::default()).await
    }

    pub async fn start_with(name: &str, auth: Auth, options: StackOptions) -> anyhow::Result<Self> {
        let scratch = Scratch::new(name);
        let broker = Broker::start(&scratch.dir)
            .await
            .context("starting Tansu (deploy/tools/install-tansu.sh, or set BESS_TANSU_BIN)")?;
        let database = match &options.admin_url {
            Some(admin) => TestDatabase::create_on(admin, &name.replace('-', "_")).await?,
            None => TestDatabase::create(&name.replace('-', "_")).await?,
        };
        let url = database.url();
        let collector_bin = options
            .collector_bin
            .clone()
            .unwrap_or_else(|| binary("bess-collector"));
        let token = match auth {
            Auth::Disabled => None,
            Auth::Token => {
                run_to_end(&collector_bin, &["migrate", "--database-url", &url])?;
                let out = run_to_end(
                    &collector_bin,
                    &[
                        "token",
                        "create",
                        "--name",
                        "bench",
                        "--all-sites",
                        "--role",
                        "read",
                        "--database-url",
                        &url,
                    ],
                )?;
                Some(out.trim().to_owned())
            }
        };
        let brokers = broker.brokers();
        let mut args = vec![
            "run",
            "--database-url",
            &url,
            "--brokers",
            &brokers,
            "--listen",
            "127.0.0.1:0",
            "--session-timeout",
            "3s",
        ];
        // The bench's fleets write unsigned batches.
        args.extend(bess_tests::scenario::LAB_SIGNATURES);
        match auth {
            Auth::Disabled => args.extend(["--auth", "disabled"]),
            Auth::Token => args.extend(["--rate-limit", "none"]),
        }
        args.extend(options.run_args.iter().map(String::as_str));
        let mut collector = Proc::spawn("collector", &collector_bin, &args, &scratch.dir)?;
        let api = collector.wait_for_url("bess-collector: API on ").await?;
        Ok(Self {
            database,
            broker,
            collector,
            api,
            token,
            scratch,
        })
    }

    /// Start `bess-sim load`: `units` devices per site, one frame per device
    /// per second (15 samples per frame), one batch per site per second.
    pub fn start_load(
        &self,
        name: &str,
        sites: u16,
        units: u8,
        duration: Duration,
    ) -> anyhow::Result<Proc> {
        let rate = u64::from(sites) * u64::from(units) * 15;
        Proc::spawn(
            name,
            &binary("bess-sim"),
            &[
                "load",
                "--brokers",
                &self.broker.brokers(),
                "--sites",
                &sites.to_string(),
                "--units",
                &units.to_string(),
                "--rate",
                &rate.to_string(),
                "--batch-interval",
                "1s",
                "--duration",
                &format!("{}ms", duration.as_millis()),
            ],
            &self.scratch.dir,
        )
    }

    /// Run a load to its end and check that it delivered everything.
    pub async fn run_load(
        &self,
        name: &str,
        sites: u16,
        units: u8,
        duration: Duration,
    ) -> anyhow::Result<()> {
        let mut load = self.start_load(name, sites, units, duration)?;
        finish_load(&mut load, duration).await?;
        Ok(())
    }
}

/// Wait for a load generator to exit; its summary line.
pub async fn finish_load(load: &mut Proc, duration: Duration) -> anyhow::Result<String> {
    let status = load.wait_exit(duration + Duration::from_secs(60)).await?;
    anyhow::ensure!(
        status.success(),
        "{} failed\n{}",
        load.name,
        load.log_tail(20)
    );
    Ok(load
        .stdout_lines()
        .into_iter()
        .find(|l| l.starts_with("bess-sim load:"))
        .unwrap_or_default())
}

/// Run a short command and return its stdout.
fn run_to_end(program: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} {} failed: {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}
