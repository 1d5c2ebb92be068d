//! The edge against Modbus devices served by pymodbus, an implementation we
//! did not write (`tests/peers/pymodbus_device.py`): CDAB word order,
//! "not implemented" markers, strings and flags over TCP; SunSpec
//! discovery; and RTU over a pseudo-terminal pair.
//!
//! Needs `python3` with `pymodbus` and `pyserial`
//! (`pip install pymodbus pyserial`); the tests fail with that message when
//! they are missing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bess_edge::config::ValidConfig;
use bess_edge::link::ModbusLink;
use bess_edge::poller::read_group;
use bess_edge::register::Decoded;
use bess_protocol::{MissingReason, Reading};

/// The pymodbus device process; killed when dropped.
struct Peer {
    child: Child,
    /// `127.0.0.1:PORT` for TCP, the tty path for RTU.
    address: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pymodbus_device.py")
}

fn require_pymodbus() {
    let ok = Command::new("python3")
        .args(["-c", "import pymodbus, serial"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "these tests need python3 with pymodbus and pyserial: pip install pymodbus pyserial"
    );
}

fn spawn(args: &[&str]) -> (Child, String) {
    require_pymodbus();
    let mut child = Command::new("python3")
        .arg(script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("peer prints a first line");
    (child, line.trim().to_owned())
}

/// A TCP peer, returned once it accepts connections.
async fn tcp_peer() -> Peer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (child, _ready) = spawn(&["tcp", &port.to_string()]);
    let address = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "pymodbus did not listen on {address} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Peer { child, address }
}

fn rtu_peer() -> Peer {
    let (child, line) = spawn(&["rtu"]);
    let address = line
        .strip_prefix("rtu-port ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Peer { child, address }
}

fn vendor_map(device: &str) -> String {
    format!(
        r#"
site_id = "interop"
[kafka]
brokers = "127.0.0.1:1"

[maps.vendor]
order = "cdab"
max_gap = 0
not_implemented_defaults = true
[[maps.vendor.groups]]
name = "all"
interval = "1s"
points = [
  {{ name = "temperature", address = 0, type = "f32", unit = "°C" }},
  {{ name = "energy", address = 2, type = "i32", scale = 0.1 }},
  {{ name = "reserved_u16", address = 4, type = "u16" }},
  {{ name = "reserved_i16", address = 5, type = "i16" }},
  {{ name = "status", address = 6, type = "u16", flags = {{ 0 = "running", 4 = "fault", 1 = "charging" }} }},
  {{ name = "running", address = 6, type = "bool", bit = 0 }},
  {{ name = "serial", address = 10, type = "string", length = 4 }},
  {{ name = "counter", address = 20, type = "u16", order = "abcd" }},
]

[[devices]]
name = "vendor"
{device}
unit = 1
timeout = "2s"
map = "vendor"
"#
    )
}

#[tokio::test]
async fn a_pymodbus_device_with_cdab_words_markers_strings_and_flags_is_decoded() {
    let peer = tcp_peer().await;
    let (host, port) = peer.address.split_once(':').unwrap();
    let config = ValidConfig::parse(&vendor_map(&format!("host = \"{host}\"\nport = {port}")))
        .unwrap_or_else(|p| panic!("{p:?}"));
    let device = &config.devices[0];
    let group = &device.groups[0];
    assert_eq!(
        group.requests.len(),
        3,
        "max_gap = 0 leaves the undefined registers out: {:?}",
        group.requests
    );
    let link = ModbusLink::new(device.link.endpoint.clone(), device.link.pause);
    let reading = read_group(&link, &device.link, group).await;
    let values: Vec<Decoded> = reading.values.clone();
    assert_eq!(values[0], Decoded::Value(Reading::Float(12.375)));
    assert_eq!(values[1], Decoded::Value(Reading::Int(-123456)));
    assert_eq!(
        values[2],
        Decoded::Value(Reading::Missing(MissingReason::NotImplemented))
    );
    assert_eq!(
        values[3],
        Decoded::Value(Reading::Missing(MissingReason::NotImplemented))
    );
    assert_eq!(values[4], Decoded::Value(Reading::Int(0b10001)));
    assert_eq!(values[5], Decoded::Value(Reading::Int(1)));
    assert_eq!(values[6], Decoded::Text("PYMB-01".into()));
    assert_eq!(values[7], Decoded::Value(Reading::Int(4242)));
    let status = &group.points[4];
    assert_eq!(
        bess_edge::register::set_flags(0b10001, &status.flags),
        vec!["running", "fault"]
    );
    // The string is shown, not sent: the frame has one value fewer.
    assert_eq!(reading.frame_values(group).len(), 7);
    assert_eq!(config.catalog.groups[0].points.len(), 7);
}

#[tokio::test]
async fn sunspec_discovery_maps_a_pymodbus_device_without_a_register_map() {
    let peer = tcp_peer().await;
    let (host, port) = peer.address.split_once(':').unwrap();
    let text = format!(
        "site_id = \"interop\"\n[kafka]\nbrokers = \"127.0.0.1:1\"\n[[devices]]\nname = \"inverter\"\nhost = \"{host}\"\nport = {port}\nunit = 2\nsunspec = true\n"
    );
    let mut config = ValidConfig::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
    assert!(
        config.catalog.groups.is_empty(),
        "no groups before discovery"
    );
    let device = config.devices[0].clone();
    let link = ModbusLink::new(device.link.endpoint.clone(), device.link.pause);
    let found = bess_edge::sunspec::discover(&link, &device.link, None)
        .await
        .unwrap();
    assert_eq!(found.base, 40000);
    assert_eq!(
        found.models.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 103, 802]
    );
    assert_eq!(found.describe(), "PyModbus Peer Inverter (SN SN-0042)");
    config.devices[0].groups = found.groups(Duration::from_secs(1));
    config.rebuild_catalog();
    assert_eq!(
        config
            .catalog
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        vec!["inverter-3ph", "battery"]
    );

    let value = |group: usize, name: &str, reading: &bess_edge::poller::GroupReading| {
        let at = config.devices[0].groups[group]
            .points
            .iter()
            .position(|p| p.name == name)
            .unwrap();
        reading.values[at].reading()
    };
    let inverter = read_group(&link, &device.link, &config.devices[0].groups[0]).await;
    assert_eq!(value(0, "a", &inverter), Reading::Float(12.3));
    assert_eq!(value(0, "w", &inverter), Reading::Float(123.4));
    assert_eq!(value(0, "hz", &inverter), Reading::Float(50.01));
    assert_eq!(
        value(0, "va", &inverter),
        Reading::Missing(MissingReason::NotImplemented)
    );
    let battery = read_group(&link, &device.link, &config.devices[0].groups[1]).await;
    assert_eq!(value(1, "soc", &battery), Reading::Float(84.6));
    assert_eq!(value(1, "v", &battery), Reading::Float(712.3));
}

#[tokio::test]
async fn an_rtu_device_on_a_pseudo_terminal_pair_is_read_like_a_tcp_one() {
    let peer = rtu_peer();
    let device = format!(
        "transport = \"rtu\"\nserial = \"{}\"\nbaud = 19200\nparity = \"none\"",
        peer.address
    );
    let config = ValidConfig::parse(&vendor_map(&device)).unwrap_or_else(|p| panic!("{p:?}"));
    let device = &config.devices[0];
    let link = ModbusLink::new(device.link.endpoint.clone(), device.link.pause);
    // The server opens its end a moment after printing the path: wait for the first good answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reading = loop {
        let reading = read_group(&link, &device.link, &device.groups[0]).await;
        if reading.values[0] == Decoded::Value(Reading::Float(12.375)) {
            break reading;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no RTU answer within 30 s: {:?}",
            reading.outcomes
        );
    };
    assert_eq!(reading.values[1], Decoded::Value(Reading::Int(-123456)));
    assert_eq!(reading.values[6], Decoded::Text("PYMB-01".into()));
}

#[tokio::test]
async fn the_read_and_scan_commands_print_decoded_values() {
    let peer = tcp_peer().await;
    let (host, port) = peer.address.split_once(':').unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bess-edge"))
        .args([
            "read",
            "--host",
            host,
            "--port",
            port,
            "--unit",
            "1",
            "--address",
            "0",
            "--count",
            "4",
            "--type",
            "f32",
            "--order",
            "cdab",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("12.375"), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_bess-edge"))
        .args([
            "scan",
            "--host",
            host,
            "--port",
            port,
            "--units",
            "1-2",
            "--address",
            "0",
            "--count",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SunSpec at 40000"), "{stdout}");
    assert!(stdout.contains("model  802 battery"), "{stdout}");
    let cdab_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("CDAB"))
        .unwrap();
    assert!(cdab_line.contains("12.375"), "{stdout}");
}
