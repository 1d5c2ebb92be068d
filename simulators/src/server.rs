//! The Modbus side of a simulated controller. `ControllerService` turns a
//! request PDU into an answer PDU from the latest register snapshot of the
//! addressed unit; [`serve`] runs a small Modbus TCP frame loop (MBAP
//! header, one request at a time per connection) on one listener until
//! cancelled, applying the transport faults in force ([`ActiveFaults`]).
//!
//! The frame loop is ours rather than a library server's so that faults can
//! misbehave at the byte level: withhold answers, close sockets, send
//! truncated or garbled frames, or the wrong transaction id.
//!
//! Requests never wait on the physics: each unit's snapshot sits in a
//! `watch` channel that the site clock replaces once per tick.

use std::{collections::BTreeMap, io, sync::Arc, time::Duration};

use rand::{rngs::SmallRng, Rng as _, SeedableRng as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_modbus::{ExceptionCode, SlaveId};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    fault::{ActiveFaults, MalformedFrame, UnitFaults},
    register_map::RegisterSnapshot,
};

/// Latest snapshot of each unit a listener answers for, by unit id.
pub type UnitSnapshots = BTreeMap<SlaveId, watch::Receiver<RegisterSnapshot>>;

/// Largest MBAP length field accepted (unit id + 253-byte PDU).
const MAX_MBAP_LEN: usize = 254;

/// The exception answer to function `function`.
pub fn exception_pdu(function: u8, code: u8) -> Vec<u8> {
    vec![function | 0x80, code]
}

/// Answers register reads for the units behind one listener or serial line.
#[derive(Debug, Clone)]
pub struct ControllerService {
    units: Arc<UnitSnapshots>,
}

impl ControllerService {
    pub fn new(units: UnitSnapshots) -> Self {
        Self {
            units: Arc::new(units),
        }
    }

    pub fn serves(&self, unit: SlaveId) -> bool {
        self.units.contains_key(&unit)
    }

    /// The answer PDU to request `pdu` for `unit`: FC03/FC04 reads from the
    /// snapshot, exceptions for everything else.
    pub fn answer(&self, unit: SlaveId, pdu: &[u8]) -> Vec<u8> {
        let function = pdu.first().copied().unwrap_or(0);
        let Some(snapshot) = self.units.get(&unit) else {
            return exception_pdu(function, ExceptionCode::GatewayTargetDevice.into());
        };
        if !matches!(function, 0x03 | 0x04) {
            return exception_pdu(function, ExceptionCode::IllegalFunction.into());
        }
        let [_, s0, s1, q0, q1] = *pdu else {
            return exception_pdu(function, ExceptionCode::IllegalDataValue.into());
        };
        let (start, quantity) = (u16::from_be_bytes([s0, s1]), u16::from_be_bytes([q0, q1]));
        match snapshot.borrow().read(start, quantity) {
            Ok(words) => {
                let mut out = Vec::with_capacity(2 + words.len() * 2);
                out.push(function);
                out.push((words.len() * 2) as u8);
                out.extend(words.iter().flat_map(|w| w.to_be_bytes()));
                out
            }
            Err(err) => exception_pdu(function, ExceptionCode::from(err).into()),
        }
    }
}

/// What the fault layer decides to do with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Say nothing.
    Ignore,
    /// Close the connection.
    Close,
    /// After `delay`, send this answer PDU, possibly broken or mislabelled.
    Answer {
        delay: Option<Duration>,
        pdu: Vec<u8>,
        malformed: Option<MalformedFrame>,
        wrong_id: bool,
    },
}

/// Applies the faults in force on `unit` to a request.
pub fn dispose(
    service: &ControllerService,
    faults: &ActiveFaults,
    unit: SlaveId,
    pdu: &[u8],
) -> Disposition {
    if faults.site_silent {
        return Disposition::Ignore;
    }
    let f: UnitFaults = faults.unit(unit);
    if f.disconnect {
        return Disposition::Close;
    }
    if f.timeout {
        return Disposition::Ignore;
    }
    let function = pdu.first().copied().unwrap_or(0);
    let pdu = match f.exception {
        Some(code) if service.serves(unit) => exception_pdu(function, code),
        _ => service.answer(unit, pdu),
    };
    Disposition::Answer {
        delay: f.slow,
        pdu,
        malformed: f.malformed,
        wrong_id: f.wrong_transaction_id,
    }
}

/// Breaks a complete frame the way `how` says; `header` is the length of
/// the frame's header (7 for MBAP, 1 for RTU's address byte).
pub fn corrupt(frame: &mut Vec<u8>, how: MalformedFrame, rng: &mut SmallRng) {
    match how {
        MalformedFrame::Truncated => frame.truncate(frame.len().div_ceil(2).max(1)),
        MalformedFrame::Garbage => rng.fill(frame.as_mut_slice()),
        MalformedFrame::BadLength => {
            // MBAP length high byte, or the last CRC byte for RTU.
            if frame.len() > 6 && frame[2] == 0 && frame[3] == 0 {
                frame[4] = frame[4].wrapping_add(0x40);
            } else if let Some(last) = frame.last_mut() {
                *last ^= 0x5A;
            }
        }
        MalformedFrame::WrongFunction => {
            let at = if frame.len() > 7 && frame[2] == 0 && frame[3] == 0 {
                7
            } else {
                1
            };
            if let Some(fc) = frame.get_mut(at) {
                *fc = fc.wrapping_add(1) & 0x7F;
            }
        }
    }
}

/// Serves Modbus TCP for `service` on `listener` until `cancel` fires;
/// while the site is silent it neither accepts nor answers.
pub async fn serve(
    listener: TcpListener,
    service: ControllerService,
    mut faults: watch::Receiver<Arc<ActiveFaults>>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let connections = TaskTracker::new();
    loop {
        if faults.borrow_and_update().site_silent {
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = faults.changed() => if changed.is_err() { break },
            }
            continue;
        }
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            changed = faults.changed() => { if changed.is_err() { break } continue }
            accepted = listener.accept() => accepted?,
        };
        tracing::debug!(%local, %peer, "client connected");
        let (service, faults, cancel) = (service.clone(), faults.clone(), cancel.clone());
        connections.spawn(async move {
            match serve_connection(stream, &service, faults, cancel).await {
                Ok(()) => tracing::debug!(%local, %peer, "client connection closed"),
                Err(err) => tracing::debug!(%local, %peer, error = %err, "client connection ended with an error"),
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn serve_connection(
    mut stream: TcpStream,
    service: &ControllerService,
    faults: watch::Receiver<Arc<ActiveFaults>>,
    cancel: CancellationToken,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut rng = SmallRng::seed_from_u64(u64::from(stream.local_addr()?.port()));
    let mut header = [0_u8; 7];
    let mut pdu = vec![0_u8; MAX_MBAP_LEN];
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            read = stream.read_exact(&mut header) => match read {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(err) => return Err(err),
            },
        }
        let tid = u16::from_be_bytes([header[0], header[1]]);
        let protocol = u16::from_be_bytes([header[2], header[3]]);
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let unit = header[6];
        if protocol != 0 || !(2..=MAX_MBAP_LEN).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad MBAP header {header:02x?}"),
            ));
        }
        let request = &mut pdu[..len - 1];
        stream.read_exact(request).await?;

        let disposition = dispose(service, &faults.borrow(), unit, request);
        match disposition {
            Disposition::Ignore => continue,
            Disposition::Close => return Ok(()),
            Disposition::Answer {
                delay,
                pdu: answer,
                malformed,
                wrong_id,
            } => {
                if let Some(delay) = delay {
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                let tid = if wrong_id {
                    tid.wrapping_add(0x1000)
                } else {
                    tid
                };
                let mut frame = Vec::with_capacity(7 + answer.len());
                frame.extend(tid.to_be_bytes());
                frame.extend([0, 0]);
                frame.extend(((answer.len() + 1) as u16).to_be_bytes());
                frame.push(unit);
                frame.extend(answer);
                if let Some(how) = malformed {
                    corrupt(&mut frame, how, &mut rng);
                }
                stream.write_all(&frame).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battery::SimulatedPack;

    fn service_for_unit(unit: SlaveId) -> ControllerService {
        let pack = SimulatedPack::new(5, unit);
        let snapshot = RegisterSnapshot::encode(&pack.spec, &pack.measure());
        let (_tx, rx) = watch::channel(snapshot);
        ControllerService::new(BTreeMap::from([(unit, rx)]))
    }

    #[test]
    fn unknown_unit_gets_gateway_target_device() {
        let service = service_for_unit(2);
        assert_eq!(service.answer(1, &[3, 0, 0, 0, 1]), [0x83, 0x0B]);
    }

    #[test]
    fn writes_are_refused_as_illegal_function() {
        let service = service_for_unit(1);
        assert_eq!(service.answer(1, &[6, 0, 0, 0, 1]), [0x86, 0x01]);
    }

    #[test]
    fn input_and_holding_reads_return_the_same_words() {
        let service = service_for_unit(1);
        let holding = service.answer(1, &[3, 0, 0, 0, 18]);
        let input = service.answer(1, &[4, 0, 0, 0, 18]);
        assert_eq!(holding.len(), 2 + 36);
        assert_eq!(holding[1..], input[1..]);
        assert_eq!(service.answer(1, &[4, 0, 0, 0, 0]), [0x84, 0x03]);
        assert_eq!(service.answer(1, &[4, 0, 0]), [0x84, 0x03]);
    }

    #[test]
    fn faults_decide_silence_closing_or_a_changed_answer() {
        let service = service_for_unit(1);
        let mut faults = ActiveFaults::default();
        faults.units.insert(
            1,
            UnitFaults {
                exception: Some(4),
                slow: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        );
        let Disposition::Answer { pdu, delay, .. } =
            dispose(&service, &faults, 1, &[3, 0, 0, 0, 1])
        else {
            panic!("expected an answer");
        };
        assert_eq!((pdu, delay), (vec![0x83, 4], Some(Duration::from_secs(1))));
        faults.units.insert(
            1,
            UnitFaults {
                disconnect: true,
                timeout: true,
                ..Default::default()
            },
        );
        assert_eq!(
            dispose(&service, &faults, 1, &[3, 0, 0, 0, 1]),
            Disposition::Close
        );
        faults.site_silent = true;
        assert_eq!(
            dispose(&service, &faults, 1, &[3, 0, 0, 0, 1]),
            Disposition::Ignore
        );
    }

    #[test]
    fn corrupted_frames_differ_from_the_valid_one() {
        let valid = vec![0, 1, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34];
        let mut rng = SmallRng::seed_from_u64(1);
        for how in [
            MalformedFrame::Truncated,
            MalformedFrame::Garbage,
            MalformedFrame::BadLength,
            MalformedFrame::WrongFunction,
        ] {
            let mut frame = valid.clone();
            corrupt(&mut frame, how, &mut rng);
            assert_ne!(frame, valid, "{how:?}");
        }
    }
}
