//! `bess-edge check`: validate a config file and print its poll plan, then
//! try every device once and the uplink. Exit status 2 for a file that
//! cannot be loaded; with `--strict` also 1 when a device or the uplink
//! does not answer. A TLS uplink that fails its handshake is a failed
//! uplink, shown with what the failure means (see `uplink::tls`).

use anyhow::Context as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bess_edge::config::{KafkaConfig, MqttUplinkConfig, UplinkConfig, ValidConfig};
use bess_edge::link::{links_for, RequestOutcome};
use bess_edge::poller::read_group;
use bess_edge::sunspec;

use super::block_on;
use super::plan_report::print_plan;

/// Load and plan the config at `config`, then (unless `offline`) try
/// every device and the uplink.
pub fn check(config: &Path, offline: bool, strict: bool) -> ExitCode {
    let valid = match ValidConfig::load(config) {
        Ok(valid) => valid,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    print_plan(config, &valid);
    if offline {
        return ExitCode::SUCCESS;
    }
    match block_on(check_online(&valid)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) if strict => ExitCode::FAILURE,
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bess-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Try every device once and the uplink; true when everything answered.
async fn check_online(valid: &ValidConfig) -> anyhow::Result<bool> {
    let mut all_ok = true;
    println!("Trying devices:");
    let links = links_for(&valid.devices);
    for (device, link) in valid.devices.iter().zip(&links) {
        if let Some(s) = device.sunspec {
            match sunspec::discover(link, &device.link, s.base).await {
                Ok(found) => {
                    let groups = found.groups(Duration::from_secs(1));
                    let models: Vec<String> = found
                        .models
                        .iter()
                        .map(|m| format!("{} {}", m.id, m.name()))
                        .collect();
                    println!(
                        "  {:<12} OK     SunSpec at {}: {} — models {}; {} groups",
                        device.name,
                        found.base,
                        found.describe(),
                        models.join(", "),
                        groups.len()
                    );
                }
                Err(e) => {
                    all_ok = false;
                    println!("  {:<12} FAIL   {e}", device.name);
                }
            }
            continue;
        }
        let mut answered = 0;
        let mut total = 0;
        let mut problems = Vec::new();
        let started = std::time::Instant::now();
        for group in &device.groups {
            let reading = read_group(link, &device.link, group).await;
            for (request, outcome) in group.requests.iter().zip(&reading.outcomes) {
                total += 1;
                match outcome {
                    RequestOutcome::Words(_) => answered += 1,
                    RequestOutcome::Missing(reason) => {
                        problems.push(format!("{}: {request}: {}", group.name, reason.describe()))
                    }
                }
            }
        }
        link.release().await;
        let verdict = if problems.is_empty() { "OK" } else { "FAIL" };
        all_ok &= problems.is_empty();
        println!(
            "  {:<12} {verdict:<6} {answered}/{total} requests answered in {} ms",
            device.name,
            started.elapsed().as_millis()
        );
        for problem in problems.iter().take(5) {
            println!("               {problem}");
        }
        if let Some(error) = link.last_error().await {
            println!("               last connection error: {error}");
        }
    }
    println!("Trying the uplink:");
    let uplink = match &valid.uplink {
        UplinkConfig::Kafka(kafka) => check_kafka(kafka).await,
        UplinkConfig::Mqtt(mqtt) => check_mqtt(mqtt, valid.site.as_str()).await,
    };
    match uplink {
        Ok(what) => println!("  OK     {what}"),
        Err(e) => {
            all_ok = false;
            println!("  FAIL   {e:#}");
        }
    }
    Ok(all_ok)
}

async fn check_kafka(kafka: &KafkaConfig) -> anyhow::Result<String> {
    use bess_edge::uplink::tls::LinkErrors;
    use rdkafka::producer::{BaseProducer, Producer};
    let mut config = bess_edge::uplink::producer_config(kafka);
    config.set("socket.timeout.ms", "3000");
    let errors = LinkErrors::default();
    let producer: BaseProducer<LinkErrors> = config
        .create_with_context(errors.clone())
        .context("creating Kafka client")?;
    let topic = kafka.topic.clone();
    let secured = if kafka.tls.is_some() { " over TLS" } else { "" };
    tokio::task::spawn_blocking(move || {
        // A TLS refusal reaches the client on some attempts only (others
        // see the connection reset): try a few times for its reason.
        let mut attempt = 1;
        let metadata = loop {
            let result = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(3));
            let Err(e) = result else {
                break result?;
            };
            // The client's own errors (a refused handshake) arrive as events.
            producer.poll(Duration::from_millis(200));
            let why = errors.last();
            let explained = why.as_deref().is_some_and(|w| w.starts_with("TLS: "));
            if !secured.is_empty() && !explained && attempt < 3 {
                attempt += 1;
                continue;
            }
            match why {
                Some(why) => anyhow::bail!("Kafka metadata fetch (3 s): {e}: {why}"),
                None => anyhow::bail!("Kafka metadata fetch (3 s): {e}"),
            }
        };
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        Ok(format!(
            "Kafka{secured}: {} brokers, topic {topic} with {partitions} partitions",
            metadata.brokers().len()
        ))
    })
    .await?
}

async fn check_mqtt(mqtt: &MqttUplinkConfig, site: &str) -> anyhow::Result<String> {
    let id = format!("bess-edge-check-{site}-{}", std::process::id());
    let credentials = mqtt
        .username
        .as_deref()
        .map(|u| (u, mqtt.password.as_deref().unwrap_or("")));
    let mut options = bess_edge::uplink::mqtt::mqtt_options(
        &id,
        &mqtt.host,
        mqtt.port,
        mqtt.keep_alive,
        credentials,
    )?;
    if let Some(tls) = &mqtt.tls {
        options.set_transport(
            bess_edge::uplink::tls::mqtt_tls_transport(tls).context("mqtt_uplink.tls")?,
        );
    }
    let secured = if mqtt.tls.is_some() { " over TLS" } else { "" };
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    let result = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "{}",
                        bess_edge::uplink::tls::describe_link_error(&e.to_string())
                    ))
                }
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    match result {
        Ok(Ok(())) => Ok(format!(
            "MQTT broker {}:{} accepted a connection{secured}",
            mqtt.host, mqtt.port
        )),
        Ok(Err(e)) => Err(e.context(format!("MQTT broker {}:{}", mqtt.host, mqtt.port))),
        Err(_) => anyhow::bail!(
            "MQTT broker {}:{}: no answer within 3 s",
            mqtt.host,
            mqtt.port
        ),
    }
}
