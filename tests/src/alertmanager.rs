//! A real Prometheus Alertmanager on a free port: one route to a receiver
//! that notifies nobody, no clustering, its state in the test's scratch
//! directory. Tests post alerts to it (or have the collector do so) and
//! read them back from `GET /api/v2/alerts`.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{free_port, wait_for, Proc};

/// Where Debian's `prometheus-alertmanager` package puts the binary.
const DEBIAN_BINARY: &str = "/usr/bin/prometheus-alertmanager";

const CONFIG: &str = r#"
route:
  receiver: nobody
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: nobody
"#;

pub struct Alertmanager {
    /// `http://127.0.0.1:PORT`, the base URL a receiver config names.
    pub url: String,
    _process: Proc,
}

impl Alertmanager {
    /// `BESS_ALERTMANAGER_BIN`, else the Debian package's binary.
    pub fn binary() -> PathBuf {
        let path = std::env::var_os("BESS_ALERTMANAGER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEBIAN_BINARY));
        assert!(
            path.exists(),
            "no Alertmanager at {}: install it with `apt-get install prometheus-alertmanager` \
             (or set BESS_ALERTMANAGER_BIN)",
            path.display()
        );
        path
    }

    /// Start one, writing its config, data and log under `dir`; ready
    /// (`GET /-/ready` is 200) when this returns. Killed on drop.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let config = dir.join("alertmanager.yml");
        std::fs::write(&config, CONFIG).context("writing the Alertmanager config")?;
        let storage = dir.join("alertmanager-data");
        std::fs::create_dir_all(&storage)?;
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", storage.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // Empty: no cluster listener (it would need a port of its own).
            "--cluster.listen-address=".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Proc::spawn("alertmanager", &Self::binary(), &args, dir)?;
        let ready = format!("{url}/-/ready");
        let client = reqwest::Client::new();
        let waited = wait_for("Alertmanager to be ready", Duration::from_secs(60), || {
            let (client, ready) = (client.clone(), ready.clone());
            async move {
                let response = client.get(&ready).send().await.ok()?;
                response.status().is_success().then_some(())
            }
        })
        .await;
        if let Err(e) = waited {
            let running = process.is_running();
            anyhow::bail!(
                "{e} (process {})\n{}",
                if running { "running" } else { "exited" },
                process.log_tail(30)
            );
        }
        Ok(Self {
            url,
            _process: process,
        })
    }

    /// `GET /api/v2/alerts` with `query` (e.g. `active=true`): the alerts
    /// Alertmanager holds that have not ended.
    pub async fn alerts(&self, query: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let url = format!("{}/api/v2/alerts?{query}", self.url);
        let response = reqwest::get(&url)
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?;
        Ok(response.json().await?)
    }
}
