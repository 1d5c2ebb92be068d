//! Modbus RTU on a pseudo-terminal, read by a real RTU client through the
//! serial port path.

use bess_sim::{
    register_map::addr, rtu::RtuPort, start_site, FaultKind, FaultSpec, FaultTarget, SiteSimConfig,
};
use tokio_modbus::{
    client::{rtu::attach_slave, Reader as _},
    slave::SlaveContext as _,
    ExceptionCode, Slave,
};
use tokio_serial::SerialPortBuilderExt as _;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn rtu_client_on_the_pty_link_reads_the_same_registers_as_the_site_serves() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("bess-sim-rtu");
    let busy = FaultSpec {
        target: FaultTarget::Units(vec![2]),
        ..FaultSpec::from_start("busy", FaultKind::Exception { code: 6 })
    };
    let config = SiteSimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        units: 2,
        faults: vec![busy],
        ..SiteSimConfig::default()
    };
    let cancel = CancellationToken::new();
    let site = start_site(config, cancel.clone()).await.unwrap();
    let port = RtuPort::open(&link).unwrap();
    assert!(link.exists());
    let serving = tokio::spawn(port.serve(site.service(), site.transport_faults(), cancel.clone()));

    let serial = tokio_serial::new(link.to_string_lossy(), 19_200)
        .open_native_async()
        .unwrap();
    let mut client = attach_slave(serial, Slave(1));
    let nameplate = client.read_input_registers(100, 4).await.unwrap().unwrap();
    assert_eq!(nameplate[3], 0x0102);
    assert_eq!(
        nameplate[2],
        site.snapshot(1)
            .unwrap()
            .word(addr::CELLS_IN_SERIES)
            .unwrap()
    );
    let live = client.read_holding_registers(0, 18).await.unwrap().unwrap();
    assert_eq!(live.len(), 18);

    client.set_slave(Slave(2));
    assert_eq!(
        client.read_holding_registers(0, 1).await.unwrap(),
        Err(ExceptionCode::ServerDeviceBusy)
    );

    cancel.cancel();
    serving.await.unwrap().unwrap();
    site.shutdown().await;
}
