//! Harness for cross-process scenarios: a real Kafka-compatible broker
//! (Tansu) on a free port, a fresh PostgreSQL database per test, and the
//! project's binaries run as child processes with their output captured.
//!
//! Every wait here is on a condition (a port, a line, a row count) with a
//! generous deadline; nothing sleeps for a fixed time and hopes.

pub mod alertmanager;
pub mod audit;
pub mod lake;
pub mod postgres;
pub mod proxy;
pub mod scenario;
pub mod tls;
pub mod webhook;

use anyhow::{bail, Context as _};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// A binary of this workspace, from the target directory this test (or
/// benchmark binary) runs from.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/<bench> -> target/<profile>/<name>
    let beside = exe.parent().expect("executable dir").join(name);
    if beside.exists() {
        return beside;
    }
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, which deploy/local/test.sh does)",
        path.display()
    );
    path
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Poll `check` every 100 ms until it returns `Some`, or fail after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A directory for one test's files, removed at the end unless the test failed.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(test: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bess-test-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("BESS_KEEP_TEST_FILES").is_some() {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A child process whose stdout lines are kept for `wait_for_line` and whose
/// stderr goes to a log file (shown when a test fails).
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log_dir)
    }

    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        // The caller's environment may override the log level.
        let mut child = Command::new(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        let mut copy = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{name}.stdout")))?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(copy, "{line}");
                sink.lock().expect("lines").push(line);
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first stdout line starting with `prefix`, waiting up to `limit`.
    pub async fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> anyhow::Result<String> {
        let lines = self.lines.clone();
        let result = wait_for(&format!("{} to print {prefix:?}", self.name), limit, || {
            let found = lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned();
            async move { found }
        })
        .await;
        match result {
            Ok(line) => Ok(line),
            Err(e) => {
                if let Ok(Some(status)) = self.child.try_wait() {
                    bail!(
                        "{} exited with {status} before printing {prefix:?}\n{}",
                        self.name,
                        self.log_tail(40)
                    );
                }
                bail!("{e}\n{}", self.log_tail(40))
            }
        }
    }

    /// `http://host:port` from a line like `bess-edge: status on http://...`.
    pub async fn wait_for_url(&mut self, prefix: &str) -> anyhow::Result<String> {
        let line = self.wait_for_line(prefix, Duration::from_secs(60)).await?;
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .context("no URL in line")?;
        Ok(url.to_owned())
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status();
    }

    /// SIGTERM, then wait up to `limit` for the exit.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM");
        self.wait_exit(limit).await
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {limit:?}\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}

/// A Tansu broker on a free port: in-memory storage, or S3 storage (a local
/// S3 server) that survives a restart.
pub struct Broker {
    pub addr: SocketAddr,
    process: Proc,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
}

impl Broker {
    /// The broker process's id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn tansu_binary() -> PathBuf {
        if let Some(path) = std::env::var_os("BESS_TANSU_BIN") {
            return PathBuf::from(path);
        }
        let local = workspace_root().join(".tools/bin/tansu");
        assert!(
            local.exists(),
            "no Kafka-compatible broker: run deploy/tools/install-tansu.sh (or set BESS_TANSU_BIN)"
        );
        local
    }

    pub async fn start(log_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port();
        Self::start_advertising(log_dir, port, port).await
    }

    /// A broker listening on `port` that tells clients to connect to
    /// `advertised` (e.g. a [`proxy::LinkProxy`] in front of it).
    pub async fn start_advertising(
        log_dir: &Path,
        port: u16,
        advertised: u16,
    ) -> anyhow::Result<Self> {
        Self::launch(log_dir, port, advertised, "memory://tansu/", Vec::new()).await
    }

    /// A broker whose messages and committed offsets live in `store`, so
    /// they survive [`Broker::restart`].
    pub async fn start_persistent(log_dir: &Path, store: &S3Store) -> anyhow::Result<Self> {
        let port = free_port();
        Self::start_persistent_advertising(log_dir, port, port, store).await
    }

    /// A persistent broker (as [`Broker::start_persistent`]) listening on
    /// `port` that tells clients to connect to `advertised`.
    pub async fn start_persistent_advertising(
        log_dir: &Path,
        port: u16,
        advertised: u16,
        store: &S3Store,
    ) -> anyhow::Result<Self> {
        Self::launch(log_dir, port, advertised, "s3://tansu/", store.env()).await
    }

    async fn launch(
        log_dir: &Path,
        port: u16,
        advertised: u16,
        storage: &str,
        mut env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        // The broker logs every request at `info` (hundreds of MB a test):
        // warnings only, unless BESS_TANSU_LOG asks for more.
        env.push((
            "RUST_LOG".into(),
            std::env::var("BESS_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
        ));
        let args: Vec<String> = [
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
            "--storage-engine",
            storage,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let process = Self::spawn_and_wait(log_dir, addr, &args, &env).await?;
        Ok(Self {
            addr,
            process,
            args,
            env,
            log_dir: log_dir.to_owned(),
        })
    }

    async fn spawn_and_wait(
        log_dir: &Path,
        addr: SocketAddr,
        args: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Proc> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Proc::spawn_with_env("tansu", &Self::tansu_binary(), &args, env, log_dir)?;
        wait_for(
            "the broker's port",
            Duration::from_secs(30),
            || async move {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .ok()
                    .map(|_| ())
            },
        )
        .await?;
        Ok(process)
    }

    /// Stop the broker (SIGTERM) and start it again on the same port and storage.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.resume().await
    }

    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.process.terminate(Duration::from_secs(30)).await?;
        Ok(())
    }

    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.process =
            Self::spawn_and_wait(&self.log_dir, self.addr, &self.args, &self.env).await?;
        Ok(())
    }

    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(30)
    }
}

/// A local S3 server (moto) holding a bucket `tansu` for the broker's storage.
pub struct S3Store {
    pub endpoint: String,
    _process: Proc,
}

impl S3Store {
    pub async fn start(log_dir: &Path) -> anyhow::Result<Self> {
        let program = std::env::var_os("BESS_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("moto_server"));
        let port = free_port();
        let process = Proc::spawn("s3", &program, &["-H", "127.0.0.1", "-p", &port.to_string()], log_dir)
            .context("no local S3 server: install it with `python3 -m pip install 'moto[server]'` (deploy/local/test.sh does)")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let bucket = format!("{endpoint}/tansu");
        wait_for(
            "the S3 server and its bucket",
            Duration::from_secs(60),
            || {
                let bucket = bucket.clone();
                async move {
                    let client = reqwest::Client::new();
                    client
                        .put(&bucket)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ())
                }
            },
        )
        .await?;
        Ok(Self {
            endpoint,
            _process: process,
        })
    }

    /// Create another bucket (idempotent).
    pub async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let response = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "creating bucket {name}: {}",
            response.status()
        );
        Ok(())
    }

    /// The environment an S3 client of this server needs (credentials,
    /// region, endpoint, plain HTTP).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ENDPOINT", self.endpoint.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// The environment variable naming the TimescaleDB test server.
pub const TIMESCALEDB_URL_VAR: &str = "BESS_TEST_TIMESCALEDB_URL";

/// A TimescaleDB test whose server is missing (`why`): a loud line on the
/// terminal, or a failure under `CI`.
pub fn skip_without_timescaledb(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}, and CI must run every backend (deploy/tools/ensure-timescaledb.sh)");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED (no TimescaleDB): {test} ({why})"
    );
}

/// A fresh database on the test PostgreSQL server, dropped afterwards.
pub struct TestDatabase {
    pub name: String,
    admin_url: String,
}

impl TestDatabase {
    pub fn admin_url() -> String {
        std::env::var("BESS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    pub async fn create(test: &str) -> anyhow::Result<Self> {
        Self::create_on(&Self::admin_url(), test).await
    }

    /// The TimescaleDB test server (`BESS_TEST_TIMESCALEDB_URL`, from
    /// `deploy/tools/ensure-timescaledb.sh`). Without it: `None`, after a
    /// `SKIPPED (no TimescaleDB): <test>` line on stderr; under `CI` a
    /// panic instead, since CI must test both backends.
    pub fn timescaledb_admin_url(test: &str) -> Option<String> {
        match std::env::var(TIMESCALEDB_URL_VAR) {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                skip_without_timescaledb(test, &format!("{TIMESCALEDB_URL_VAR} is not set"));
                None
            }
        }
    }

    /// A fresh database on the server of `admin_url` (e.g. the TimescaleDB
    /// test server), dropped afterwards.
    pub async fn create_on(admin_url: &str, test: &str) -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "bess_test_{test}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let admin_url = admin_url.to_owned();
        let client = connect(&admin_url).await.with_context(|| {
            format!("connecting to the test server {admin_url} (is it running?)")
        })?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        Ok(Self { name, admin_url })
    }

    pub fn url(&self) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{}", self.name),
            None => panic!("database URL without a path: {}", self.admin_url),
        }
    }

    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.url()).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test database kept: {}", self.name);
            return;
        }
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(client) = connect(&url).await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// GET a URL and parse its JSON body, with its status code.
pub async fn get_json(url: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = reqwest::get(url)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let body = response
        .json()
        .await
        .with_context(|| format!("GET {url}: body is not JSON"))?;
    Ok((status, body))
}

/// GET a URL's text body.
pub async fn get_text(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(url).await?.error_for_status()?.text().await?)
}

/// The value of an unlabelled Prometheus counter or gauge, 0 when absent.
pub fn prometheus_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The example edge config, pointed at this test's simulator, broker and files.
pub fn edge_config(sim: SocketAddr, brokers: &str, buffer: &Path, extra_devices: &str) -> String {
    let example = std::fs::read_to_string(workspace_root().join("edge/bess-edge.example.toml"))
        .expect("example config");
    let mut config = example
        .replace("port = 5020", &format!("port = {}", sim.port()))
        .replace("host = \"127.0.0.1\"", &format!("host = \"{}\"", sim.ip()))
        .replace(
            "brokers = \"127.0.0.1:9092\"",
            &format!("brokers = \"{brokers}\""),
        )
        .replace(
            "path = \"bess-edge-buffer.sqlite\"",
            &format!("path = \"{}\"", buffer.display()),
        )
        .replace("max_age = \"15s\"", "max_age = \"500ms\"")
        // The site's signing key beside its buffer.
        .replace(
            "key_file = \"bess-edge-site.key\"",
            &format!(
                "key_file = \"{}\"",
                buffer.with_file_name("site.key").display()
            ),
        );
    config.push_str(extra_devices);
    config
}
