//! `ModbusPoller` against the project's simulator over real TCP: values are
//! decoded, an exception marks exactly the affected group stale, and a
//! device that does not answer does not hold up the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use bess_edge::config::ValidConfig;
use bess_edge::poller::ModbusPoller;
use bess_edge::status::AgentStatus;
use bess_protocol::{Frame, MissingReason, Quality, Reading};
use bess_sim::{start_site, SiteSimConfig};

fn config(sim_port: u16, dead_port: u16) -> ValidConfig {
    let text = format!(
        r#"
site_id = "poll-test"
[kafka]
brokers = "127.0.0.1:1"

[maps.m]
[[maps.m.groups]]
name = "fast"
interval = "100ms"
points = [
  {{ name = "soc", address = 0, type = "u16", scale = 0.01 }},
  {{ name = "power", address = 4, type = "i32" }},
]
[[maps.m.groups]]
name = "unmapped"
interval = "100ms"
points = [ {{ name = "nothing", address = 50, type = "u16" }} ]
[[maps.m.groups]]
name = "nameplate"
interval = "100ms"
points = [ {{ name = "cells", address = 102, type = "u16" }} ]

[[devices]]
name = "one"
host = "127.0.0.1"
port = {sim_port}
unit = 1
map = "m"

[[devices]]
name = "two"
host = "127.0.0.1"
port = {sim_port}
unit = 2
map = "m"

[[devices]]
name = "dead"
host = "127.0.0.1"
port = {dead_port}
timeout = "200ms"
map = "m"
"#
    );
    ValidConfig::parse(&text).unwrap_or_else(|p| panic!("{p:?}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn pollers_decode_values_mark_exceptions_stale_and_survive_a_dead_device() {
    let cancel = CancellationToken::new();
    let sim = start_site(
        SiteSimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            units: 2,
            ..SiteSimConfig::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    let config = config(sim.addrs[0].port(), free_port());
    let status = Arc::new(AgentStatus::new(
        "poll-test".into(),
        config.devices.iter().map(|d| d.name.clone()),
    ));
    let (tx, mut rx) = mpsc::channel::<Frame>(1024);
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for (i, device) in config.devices.iter().cloned().enumerate() {
        tasks.push(tokio::spawn(
            ModbusPoller::new(device, i, tx.clone(), status.clone()).run(stop.clone()),
        ));
    }
    drop(tx);

    // Collect until every group of every device produced at least 5 frames.
    let mut frames: HashMap<u16, Vec<Frame>> = HashMap::new();
    let groups = config.catalog.groups.len();
    tokio::time::timeout(Duration::from_secs(30), async {
        while frames.len() < groups || frames.values().any(|f| f.len() < 5) {
            let frame = rx.recv().await.expect("pollers alive");
            frames.entry(frame.group.0).or_default().push(frame);
        }
    })
    .await
    .expect("every group polled 5 times within 30 s");
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }

    let group_index = |device: &str, group: &str| {
        let d = config
            .catalog
            .devices
            .iter()
            .position(|d| d.name == device)
            .unwrap() as u16;
        config
            .catalog
            .groups
            .iter()
            .position(|g| g.device == d && g.name == group)
            .unwrap() as u16
    };
    for device in ["one", "two"] {
        for frame in &frames[&group_index(device, "fast")] {
            assert!(
                frame.values.iter().all(|v| v.quality() == Quality::Good),
                "{device}: {frame:?}"
            );
        }
        for frame in &frames[&group_index(device, "unmapped")] {
            assert_eq!(
                frame.values,
                vec![Reading::Missing(MissingReason::Exception(2))],
                "{device}"
            );
        }
        let unit = if device == "one" { 1 } else { 2 };
        let cells = sim.snapshot(unit).unwrap().word(102).unwrap();
        let last = frames[&group_index(device, "nameplate")].last().unwrap();
        assert_eq!(
            last.values,
            vec![Reading::Int(i64::from(cells))],
            "{device}"
        );
    }
    for group in ["fast", "unmapped", "nameplate"] {
        for frame in &frames[&group_index("dead", group)] {
            assert!(
                frame
                    .values
                    .iter()
                    .all(|v| v.quality() == Quality::CommLoss),
                "dead/{group}: {frame:?}"
            );
        }
    }
    // Timestamps of one group strictly increase.
    for list in frames.values() {
        assert!(list.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
    }
    let devices = status.devices();
    assert!(
        devices[0].online && devices[1].online && !devices[2].online,
        "{devices:?}"
    );
    assert!(devices[2].last_error.is_some());
    cancel.cancel();
}

#[tokio::test]
async fn an_exception_marks_only_the_points_of_its_own_request_and_units_share_one_connection() {
    use bess_edge::link::links_for;
    use bess_edge::poller::read_group;

    let cancel = CancellationToken::new();
    let sim = start_site(
        SiteSimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            units: 2,
            ..SiteSimConfig::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    let port = sim.addrs[0].port();
    let text = format!(
        r#"
site_id = "plan-test"
[kafka]
brokers = "127.0.0.1:1"
[maps.m]
max_gap = 16
[[maps.m.groups]]
name = "spread"
interval = "1s"
points = [
  {{ name = "soc", address = 0, type = "u16", scale = 0.01 }},
  {{ name = "heartbeat", address = 17, type = "u16" }},
  {{ name = "nothing", address = 50, type = "u16" }},
  {{ name = "cells", address = 102, type = "u16" }},
]
[[devices]]
name = "one"
host = "127.0.0.1"
port = {port}
unit = 1
map = "m"
[[devices]]
name = "two"
host = "127.0.0.1"
port = {port}
unit = 2
map = "m"
"#
    );
    let config = ValidConfig::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
    let group = &config.devices[0].groups[0];
    assert_eq!(
        group.requests.len(),
        3,
        "0..17, 50 and 102 are more than max_gap apart: {:?}",
        group.requests
    );
    assert_eq!(group.min_requests, 1);

    let links = links_for(&config.devices);
    assert!(
        Arc::ptr_eq(&links[0], &links[1]),
        "two unit ids behind one address share one link"
    );
    for (unit, (device, link)) in config.devices.iter().zip(&links).enumerate() {
        let reading = read_group(link, &device.link, &device.groups[0]).await;
        let values = reading.frame_values(&device.groups[0]);
        let cells = sim.snapshot(unit as u8 + 1).unwrap().word(102).unwrap();
        assert_eq!(values[0].quality(), Quality::Good, "{values:?}");
        assert_eq!(values[1].quality(), Quality::Good, "{values:?}");
        assert_eq!(
            values[2],
            Reading::Missing(MissingReason::Exception(2)),
            "only the point at 50 is stale"
        );
        assert_eq!(values[3], Reading::Int(i64::from(cells)));
    }
    cancel.cancel();
}
