//! Scripted faults seen from a Modbus TCP client: each test starts a site
//! with one fault and checks what a client gets, and what the fault log
//! recorded.

use std::{net::SocketAddr, time::Duration};

use bess_sim::{
    register_map::{addr, RegisterSnapshot},
    start_site, FaultClock, FaultEdge, FaultKind, FaultSpec, FaultTarget, MalformedFrame,
    RunningSite, SiteSimConfig,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_modbus::{
    client::{tcp::connect_slave, Reader as _},
    ExceptionCode, Slave,
};
use tokio_util::sync::CancellationToken;

async fn site_with(faults: Vec<FaultSpec>, time_scale: f64) -> RunningSite {
    let config = SiteSimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        units: 2,
        time_scale,
        faults,
        ..SiteSimConfig::default()
    };
    start_site(config, CancellationToken::new())
        .await
        .expect("site starts")
}

fn on_unit(name: &str, kind: FaultKind, unit: u8) -> FaultSpec {
    FaultSpec {
        target: FaultTarget::Units(vec![unit]),
        ..FaultSpec::from_start(name, kind)
    }
}

/// A raw FC03 request for 18 registers from 0.
fn request(tid: u16, unit: u8) -> Vec<u8> {
    let mut frame = tid.to_be_bytes().to_vec();
    frame.extend([0, 0, 0, 6, unit, 3, 0, 0, 0, 18]);
    frame
}

/// Length of a valid answer to [`request`].
const ANSWER_LEN: usize = 7 + 2 + 36;

#[tokio::test]
async fn exception_fault_answers_every_read_with_its_code_and_spares_other_units() {
    let site = site_with(
        vec![on_unit("busy", FaultKind::Exception { code: 6 }, 1)],
        1.0,
    )
    .await;
    let mut one = connect_slave(site.addrs[0], Slave(1)).await.unwrap();
    assert_eq!(
        one.read_holding_registers(0, 1).await.unwrap(),
        Err(ExceptionCode::ServerDeviceBusy)
    );
    let mut two = connect_slave(site.addrs[0], Slave(2)).await.unwrap();
    assert!(two.read_holding_registers(0, 18).await.unwrap().is_ok());
    let log = site.fault_log();
    assert_eq!(log.0.len(), 1);
    assert_eq!(
        (log.0[0].fault.as_str(), log.0[0].kind, log.0[0].edge),
        ("busy", "exception", FaultEdge::Started)
    );
    assert_eq!(log.0[0].units, [1]);
    site.shutdown().await;
}

#[tokio::test]
async fn timeout_fault_leaves_requests_unanswered_while_other_units_answer() {
    let site = site_with(vec![on_unit("mute", FaultKind::Timeout, 1)], 1.0).await;
    let mut stream = TcpStream::connect(site.addrs[0]).await.unwrap();
    stream.write_all(&request(1, 1)).await.unwrap();
    stream.write_all(&request(2, 2)).await.unwrap();
    let mut answer = [0_u8; ANSWER_LEN];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(
        u16::from_be_bytes([answer[0], answer[1]]),
        2,
        "the first answer is unit 2's"
    );
    assert_eq!(answer[6], 2);
    site.shutdown().await;
}

#[tokio::test]
async fn slow_fault_delays_answers_by_its_delay() {
    // A lower bound only: the answer cannot come before the delay.
    let delay = Duration::from_millis(300);
    let site = site_with(
        vec![FaultSpec::from_start("sluggish", FaultKind::Slow { delay })],
        1.0,
    )
    .await;
    let mut client = connect_slave(site.addrs[0], Slave(1)).await.unwrap();
    let asked = std::time::Instant::now();
    assert!(client.read_holding_registers(0, 18).await.unwrap().is_ok());
    assert!(
        asked.elapsed() >= delay,
        "answered after {:?}",
        asked.elapsed()
    );
    site.shutdown().await;
}

#[tokio::test]
async fn disconnect_fault_closes_the_connection_on_a_request() {
    let site = site_with(
        vec![FaultSpec::from_start("unplugged", FaultKind::Disconnect)],
        1.0,
    )
    .await;
    let mut stream = TcpStream::connect(site.addrs[0]).await.unwrap();
    stream.write_all(&request(1, 1)).await.unwrap();
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest).await;
    assert!(read.map_or(true, |n| n == 0), "closed without an answer");
    site.shutdown().await;
}

#[tokio::test]
async fn malformed_fault_sends_half_a_frame_then_valid_frames_for_other_units() {
    let fault = on_unit(
        "garbled",
        FaultKind::Malformed {
            frame: MalformedFrame::Truncated,
        },
        1,
    );
    let site = site_with(vec![fault], 1.0).await;
    let mut stream = TcpStream::connect(site.addrs[0]).await.unwrap();
    stream.write_all(&request(1, 1)).await.unwrap();
    stream.write_all(&request(2, 2)).await.unwrap();
    let truncated = ANSWER_LEN.div_ceil(2);
    let mut bytes = vec![0_u8; truncated + ANSWER_LEN];
    stream.read_exact(&mut bytes).await.unwrap();
    assert_eq!(
        &bytes[..2],
        &[0, 1],
        "the broken frame starts like unit 1's answer"
    );
    let valid = &bytes[truncated..];
    assert_eq!(
        (&valid[..2], valid[6], valid[7]),
        (&[0, 2][..], 2, 3),
        "then unit 2's whole answer"
    );
    site.shutdown().await;
}

#[tokio::test]
async fn wrong_transaction_id_fault_answers_with_another_id() {
    let site = site_with(
        vec![FaultSpec::from_start(
            "mixup",
            FaultKind::WrongTransactionId,
        )],
        1.0,
    )
    .await;
    let mut stream = TcpStream::connect(site.addrs[0]).await.unwrap();
    stream.write_all(&request(7, 1)).await.unwrap();
    let mut answer = [0_u8; ANSWER_LEN];
    stream.read_exact(&mut answer).await.unwrap();
    assert_ne!(u16::from_be_bytes([answer[0], answer[1]]), 7);
    let mut client = connect_slave(site.addrs[0], Slave(1)).await.unwrap();
    assert!(
        client.read_holding_registers(0, 1).await.is_err(),
        "a client sees a transport error"
    );
    site.shutdown().await;
}

async fn wait_for_change(site: &RunningSite, unit: u8, times: usize) -> RegisterSnapshot {
    let mut updates = site.subscribe(unit).unwrap();
    for _ in 0..times {
        updates.changed().await.unwrap();
    }
    let latest = updates.borrow().clone();
    latest
}

#[tokio::test]
async fn stuck_fault_freezes_one_units_registers_while_others_move() {
    let site = site_with(vec![on_unit("frozen", FaultKind::Stuck, 1)], 10.0).await;
    let frozen = site.snapshot(1).unwrap();
    let moving = site.snapshot(2).unwrap();
    let later = wait_for_change(&site, 2, 3).await;
    assert_ne!(later.word(addr::HEARTBEAT), moving.word(addr::HEARTBEAT));
    assert_eq!(site.snapshot(1).unwrap(), frozen);
    site.shutdown().await;
}

#[tokio::test]
async fn out_of_range_fault_serves_impossible_values() {
    let site = site_with(vec![on_unit("nonsense", FaultKind::OutOfRange, 2)], 1.0).await;
    let mut client = connect_slave(site.addrs[0], Slave(2)).await.unwrap();
    let words = client.read_holding_registers(0, 18).await.unwrap().unwrap();
    assert_eq!(words[usize::from(addr::SOC)], 25_000, "250 % SoC");
    assert_eq!(words[usize::from(addr::CELL_TEMP_MAX)], 3_000, "300 °C");
    let healthy = site.snapshot(1).unwrap().word(addr::SOC).unwrap();
    assert!(healthy <= 10_000);
    site.shutdown().await;
}

#[tokio::test]
async fn runaway_fault_raises_temperature_until_the_over_temperature_alarm_and_fault_bit_set() {
    use bess_sim::battery::{AlarmFlags, StatusFlags};
    let site = site_with(vec![on_unit("hot", FaultKind::Runaway, 1)], 500.0).await;
    let mut updates = site.subscribe(1).unwrap();
    let start = updates.borrow().word(addr::CELL_TEMP_MAX).unwrap() as i16;
    let hot = updates
        .wait_for(|s| s.word(addr::ALARMS).unwrap() & AlarmFlags::OVER_TEMPERATURE != 0)
        .await
        .unwrap()
        .clone();
    assert!(hot.word(addr::CELL_TEMP_MAX).unwrap() as i16 > start);
    assert!(hot.word(addr::STATUS).unwrap() & StatusFlags::FAULT != 0);
    assert_eq!(
        site.snapshot(2).unwrap().word(addr::ALARMS).unwrap() & AlarmFlags::OVER_TEMPERATURE,
        0
    );
    site.shutdown().await;
}

#[tokio::test]
async fn silent_site_answers_nothing_until_the_fault_ends() {
    let silent = FaultSpec {
        clock: FaultClock::Simulated,
        duration: Some(Duration::from_secs(20)),
        ..FaultSpec::from_start("blackout", FaultKind::SiteSilent)
    };
    let site = site_with(vec![silent], 20.0).await;
    assert!(site.fault_log().started("blackout"));
    let mut stream = TcpStream::connect(site.addrs[0]).await.unwrap();
    stream.write_all(&request(1, 1)).await.unwrap();
    let mut answer = [0_u8; ANSWER_LEN];
    stream.read_exact(&mut answer).await.unwrap();
    assert!(
        site.fault_log().ended("blackout"),
        "the answer came only after the site woke up"
    );
    site.shutdown().await;
}

#[tokio::test]
async fn fault_log_records_start_and_end_on_the_simulated_clock() {
    let fault = FaultSpec {
        clock: FaultClock::Simulated,
        at: Duration::from_secs(30),
        duration: Some(Duration::from_secs(60)),
        ..on_unit("blip", FaultKind::Timeout, 2)
    };
    let site = site_with(vec![fault], 600.0).await;
    let mut log = site.watch_faults();
    let log = log.wait_for(|l| l.ended("blip")).await.unwrap().clone();
    let edges: Vec<_> = log
        .0
        .iter()
        .map(|e| (e.fault.as_str(), e.edge, e.units.clone()))
        .collect();
    assert_eq!(
        edges,
        [
            ("blip", FaultEdge::Started, vec![2]),
            ("blip", FaultEdge::Ended, vec![2])
        ]
    );
    assert!(log.0[0].sim >= Duration::from_secs(30));
    assert!(log.0[1].sim >= Duration::from_secs(90));
    site.shutdown().await;
}
