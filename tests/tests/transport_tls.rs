//! Transport security on real components: the edge and the collector
//! reach Tansu through stunnel, which requires a client certificate signed
//! by the site's CA (mutual TLS), and the edge's MQTT uplink reaches a
//! Mosquitto with a TLS-only listener. Every reading arrives exactly once
//! over TLS; a broker the edge does not trust, or a client certificate the
//! broker does not accept, is a failed link with its reason in words, and
//! nothing goes in plaintext.

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::path::Path;
use std::time::Duration;

use bess_tests::scenario::{
    edge_acked, start_collector_with, start_edge, start_sim, stop_and_count, wait_for_ledger,
    write_edge_config,
};
use bess_tests::tls::{edge_tls_table, Identity, TestPki, TlsMosquitto, TlsProxy};
use bess_tests::*;

/// Tansu behind stunnel: clients can reach the broker only over mutual TLS
/// (Tansu advertises the proxy's port).
struct TlsBroker {
    /// Kept running for the test; clients never reach it but through `proxy`.
    _broker: Broker,
    proxy: TlsProxy,
}

impl TlsBroker {
    async fn start(scratch: &Scratch, pki: &TestPki) -> anyhow::Result<Self> {
        let (broker_port, proxy_port) = (free_port(), free_port());
        let broker = Broker::start_advertising(&scratch.dir, broker_port, proxy_port).await?;
        let proxy = TlsProxy::start(&scratch.dir, pki, proxy_port, broker.addr).await?;
        Ok(Self {
            _broker: broker,
            proxy,
        })
    }

    /// The address clients are given: the TLS proxy's.
    fn brokers(&self) -> String {
        self.proxy.addr.to_string()
    }

    /// The topics the broker holds, asked by a client the proxy lets in.
    fn topics(&self, pki: &TestPki) -> anyhow::Result<Vec<String>> {
        let path = |p: &Path| p.display().to_string();
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("security.protocol", "SSL")
            .set("ssl.ca.location", path(&pki.ca))
            .set("ssl.certificate.location", path(&pki.client.cert))
            .set("ssl.key.location", path(&pki.client.key))
            .create()?;
        let metadata = client.fetch_metadata(None, Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect())
    }
}

fn collector_tls_flags<'a>(pki: &'a TestPki, client: &'a Identity) -> Vec<&'a str> {
    vec![
        "--kafka-ca",
        pki.ca.to_str().expect("path"),
        "--kafka-cert",
        client.cert.to_str().expect("path"),
        "--kafka-key",
        client.key.to_str().expect("path"),
        "--batch-signatures",
        "optional",
        "--pin-first-key",
    ]
}

/// `bess-edge check --strict` on `config`: its exit code and stdout.
async fn edge_check(scratch: &Scratch, name: &str, config: &Path) -> anyhow::Result<(i32, String)> {
    let mut check = Proc::spawn(
        name,
        &binary("bess-edge"),
        &[
            "check",
            "--config",
            config.to_str().context("path")?,
            "--strict",
        ],
        &scratch.dir,
    )?;
    let exit = check.wait_exit(Duration::from_secs(120)).await?;
    Ok((exit.code().unwrap_or(-1), check.stdout_lines().join("\n")))
}

/// The uplink lines of a `bess-edge check` report.
fn uplink_report(stdout: &str) -> &str {
    stdout
        .split_once("Trying the uplink:")
        .map_or(stdout, |(_, uplink)| uplink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_crosses_mutual_tls_from_edge_to_database_exactly_once() -> anyhow::Result<()>
{
    let scratch = Scratch::new("tls-pipeline");
    let pki = TestPki::generate(&scratch.dir)?;
    let broker = TlsBroker::start(&scratch, &pki).await?;
    let database = TestDatabase::create("tls_pipeline").await?;
    let (collector, _api) = start_collector_with(
        &scratch.dir,
        "collector",
        &database.url(),
        &broker.brokers(),
        &collector_tls_flags(&pki, &pki.client),
    )
    .await?;

    let sim = start_sim(&scratch.dir, 3, 21).await?;
    let tls = edge_tls_table("kafka.tls", &pki.ca, Some(&pki.client));
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), &tls)?;
    let (code, report) = edge_check(&scratch, "check", &config).await?;
    assert_eq!(code, 0, "{report}");
    assert!(
        uplink_report(&report).contains("OK     Kafka over TLS"),
        "{report}"
    );

    let record = scratch.path("record.jsonl");
    let (edge, _status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    wait_for_ledger(&database.url(), 5, Duration::from_secs(120))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\n{}\n{}\n{}",
                edge.log_tail(30),
                collector.log_tail(30),
                broker.proxy.log()
            )
        })?;
    stop_and_count(edge, &[record], &database.url(), 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_does_not_trust_the_brokers_certificate_sends_nothing() -> anyhow::Result<()> {
    let scratch = Scratch::new("tls-wrong-ca");
    let pki = TestPki::generate(&scratch.dir)?;
    let broker = TlsBroker::start(&scratch, &pki).await?;
    let sim = start_sim(&scratch.dir, 1, 22).await?;
    let tls = edge_tls_table("kafka.tls", &pki.other_ca, Some(&pki.client));
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), &tls)?;

    let (code, report) = edge_check(&scratch, "check", &config).await?;
    assert_ne!(code, 0, "{report}");
    assert!(
        uplink_report(&report).contains("FAIL   Kafka metadata fetch (3 s)")
            && report.contains("TLS: the broker's certificate could not be verified"),
        "{report}"
    );

    // The agent keeps its readings and says why the uplink is down.
    let record = scratch.path("record.jsonl");
    let (mut edge, status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    let why = wait_for(
        "the edge's status to name the TLS failure",
        Duration::from_secs(60),
        || {
            let status = status.clone();
            async move {
                let (_, body) = get_json(&format!("{status}/status")).await.ok()?;
                let error = body["uplink"]["last_error"].as_str()?.to_owned();
                error.contains("TLS:").then_some(error)
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", edge.log_tail(30)))?;
    assert!(why.contains("could not be verified"), "{why}");
    assert_eq!(edge_acked(&status).await, Some(0));
    edge.terminate(Duration::from_secs(60)).await?;

    // Nothing reached the broker: not a batch, not a live message.
    let topics = broker.topics(&pki)?;
    assert!(
        !topics.iter().any(|t| t.starts_with("bess.")),
        "the broker holds {topics:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_the_broker_does_not_accept_are_refused_with_the_reason(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("tls-client-certs");
    let pki = TestPki::generate(&scratch.dir)?;
    let broker = TlsBroker::start(&scratch, &pki).await?;
    let sim = start_sim(&scratch.dir, 1, 23).await?;

    for (name, client, meaning) in [
        (
            "expired",
            &pki.expired_client,
            "TLS: the broker refused this site's client certificate: it has expired",
        ),
        (
            "foreign",
            &pki.foreign_client,
            // A client that sees its certificate is from another CA than
            // the broker asks for does not send it: the broker then
            // refuses a client without a certificate it knows.
            "TLS: the broker requires a client certificate signed by a CA it knows",
        ),
    ] {
        let dir = scratch.path(name);
        std::fs::create_dir_all(&dir)?;
        let tls = edge_tls_table("kafka.tls", &pki.ca, Some(client));
        let config = write_edge_config(&dir, sim.addr, &broker.brokers(), &tls)?;
        let (code, report) = edge_check(&scratch, &format!("check-{name}"), &config).await?;
        assert_ne!(code, 0, "{name}: {report}");
        assert!(
            uplink_report(&report).contains(meaning),
            "{name}: {report}\n{}",
            broker.proxy.log()
        );

        // The collector stops at start-up with the reason, before it
        // touches the database.
        let mut flags = vec![
            "run",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ];
        let brokers = broker.brokers();
        flags.extend(["--brokers", &brokers, "--listen", "127.0.0.1:0"]);
        flags.extend(collector_tls_flags(&pki, client));
        let mut collector = Proc::spawn(
            &format!("collector-{name}"),
            &binary("bess-collector"),
            &flags,
            &scratch.dir,
        )?;
        let exit = collector.wait_exit(Duration::from_secs(60)).await?;
        let log = collector.log_tail(20);
        assert!(!exit.success(), "{name}: {log}");
        assert!(log.contains("Kafka TLS to"), "{name}: {log}");
        assert!(log.contains("client certificate"), "{name}: {log}");
    }
    assert!(
        broker.topics(&pki)?.iter().all(|t| !t.starts_with("bess.")),
        "nothing may reach the broker"
    );
    Ok(())
}

/// The example config with `[mqtt_uplink]` (to Mosquitto on `port`, with
/// `tls`) instead of `[kafka]`.
fn mqtt_edge_config(
    dir: &Path,
    sim: std::net::SocketAddr,
    port: u16,
    tls: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let config = write_edge_config(dir, sim, "127.0.0.1:9092", "")?;
    let text = std::fs::read_to_string(&config)?;
    let kafka = text.find("[kafka]\n").context("[kafka] in the example")?;
    let end = "delivery_timeout = \"30s\"\n";
    let kafka_end = kafka + text[kafka..].find(end).context("end of [kafka]")? + end.len();
    let mqtt = format!(
        "{}[mqtt_uplink]\nhost = \"127.0.0.1\"\nport = {port}\n{}{tls}",
        &text[..kafka],
        &text[kafka_end..]
    );
    std::fs::write(&config, mqtt)?;
    Ok(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_uplink_delivers_over_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let scratch = Scratch::new("tls-mqtt");
    let pki = TestPki::generate(&scratch.dir)?;
    let mosquitto = TlsMosquitto::start(&scratch.dir, &pki).await?;
    let sim = start_sim(&scratch.dir, 1, 24).await?;

    // A CA that did not sign Mosquitto's certificate: refused, in words.
    let wrong = scratch.path("wrong-ca");
    std::fs::create_dir_all(&wrong)?;
    let tls = edge_tls_table("mqtt_uplink.tls", &pki.other_ca, Some(&pki.client));
    let config = mqtt_edge_config(&wrong, sim.addr, mosquitto.port, &tls)?;
    let (code, report) = edge_check(&scratch, "check-wrong-ca", &config).await?;
    assert_ne!(code, 0, "{report}");
    assert!(
        uplink_report(&report).contains("TLS: the broker's certificate could not be verified"),
        "{report}"
    );

    let tls = edge_tls_table("mqtt_uplink.tls", &pki.ca, Some(&pki.client));
    let config = mqtt_edge_config(&scratch.dir, sim.addr, mosquitto.port, &tls)?;
    let (code, report) = edge_check(&scratch, "check", &config).await?;
    assert!(
        uplink_report(&report).contains("accepted a connection over TLS"),
        "{code}: {report}\n{}",
        mosquitto.process.log_tail(20)
    );

    let record = scratch.path("record.jsonl");
    let (mut edge, status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    wait_for(
        "3 batches acknowledged over TLS",
        Duration::from_secs(90),
        || {
            let status = status.clone();
            async move { edge_acked(&status).await.filter(|&n| n >= 3) }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", edge.log_tail(30)))?;
    let exit = edge.terminate(Duration::from_secs(60)).await?;
    assert!(exit.success(), "{}", edge.log_tail(30));
    let summary = edge
        .stdout_lines()
        .into_iter()
        .find(|l| l.starts_with("bess-edge: stopped;"))
        .context("edge summary line")?;
    assert!(summary.ends_with(" 0 left in the buffer"), "{summary}");
    Ok(())
}
