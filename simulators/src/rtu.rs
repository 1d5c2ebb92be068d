//! Modbus RTU on a pseudo-terminal: a simulated site's units answer on the
//! master side of a pty pair, and the slave side's path is symlinked where a
//! client (the edge, or any serial tool) can open it like a serial port.
//!
//! Frames are delimited by function code (fixed-length requests for FC01
//! to FC06, byte count for FC15/16) and checked by CRC; bytes that do not
//! form a valid frame are skipped, and a partial frame is discarded after a
//! silence. Requests for units not simulated here, and broadcasts, get no
//! answer, as on a shared bus. The site's transport faults apply: timeouts,
//! disconnects and site silence mean no answer; malformed answers are
//! truncated, garbled or carry a bad CRC; a wrong "transaction id" is
//! answered from the wrong unit address.

use std::{
    io,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use nix::{
    fcntl::{fcntl, FcntlArg, OFlag},
    pty::openpty,
    sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg},
};
use rand::{rngs::SmallRng, SeedableRng as _};
use thiserror::Error;
use tokio::{io::unix::AsyncFd, sync::watch};
use tokio_util::sync::CancellationToken;

use crate::{
    fault::ActiveFaults,
    fault::MalformedFrame,
    server::{corrupt, dispose, ControllerService, Disposition},
};

/// A partial frame is dropped after this much silence.
const INTER_FRAME_GAP: Duration = Duration::from_millis(50);

/// Why the pseudo-terminal could not be set up.
#[derive(Debug, Error)]
pub enum RtuError {
    #[error("cannot open a pseudo-terminal pair")]
    OpenPty(#[source] nix::Error),
    #[error("cannot configure the pseudo-terminal")]
    Configure(#[source] nix::Error),
    #[error("cannot link {} to the pseudo-terminal", .link.display())]
    Link {
        link: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pseudo-terminal I/O failed")]
    Io(#[from] io::Error),
}

/// Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF), sent low byte first.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFF_u16;
    for b in bytes {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Appends the CRC to `frame`.
pub fn with_crc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&frame);
    frame.extend(crc.to_le_bytes());
    frame
}

/// Length of the request frame starting at `buf`, if it can be told yet.
fn request_len(buf: &[u8]) -> Option<usize> {
    match *buf.get(1)? {
        0x0F | 0x10 => buf.get(6).map(|n| 9 + usize::from(*n)),
        _ => Some(8),
    }
}

/// Takes the next complete, CRC-valid request (address + PDU) off `buf`,
/// skipping bytes that cannot start one.
pub fn next_request(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        let len = request_len(buf)?;
        if buf.len() < len {
            return None;
        }
        let (frame, crc) = buf[..len].split_at(len - 2);
        if crc16(frame).to_le_bytes() == crc {
            let request = frame.to_vec();
            buf.drain(..len);
            return Some(request);
        }
        buf.remove(0);
    }
}

/// A pseudo-terminal serving Modbus RTU.
#[derive(Debug)]
pub struct RtuPort {
    /// The symlink clients open.
    pub link: PathBuf,
    /// The pty slave device the link points to (e.g. /dev/pts/3).
    pub device: PathBuf,
    master: AsyncFd<OwnedFd>,
    /// Kept open so the master never sees a hang-up between clients.
    _slave: OwnedFd,
}

impl RtuPort {
    /// Opens a pty pair in raw mode and links its slave side at `link`
    /// (replacing an existing symlink there).
    pub fn open(link: &Path) -> Result<Self, RtuError> {
        let pty = openpty(None, None).map_err(RtuError::OpenPty)?;
        let mut termios = tcgetattr(&pty.slave).map_err(RtuError::Configure)?;
        cfmakeraw(&mut termios);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &termios).map_err(RtuError::Configure)?;
        fcntl(&pty.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(RtuError::Configure)?;
        let device = nix::unistd::ttyname(&pty.slave).map_err(RtuError::Configure)?;
        let link_err = |source| RtuError::Link {
            link: link.to_owned(),
            source,
        };
        if link
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(link).map_err(link_err)?;
        }
        std::os::unix::fs::symlink(&device, link).map_err(link_err)?;
        // `register` is the non-deprecated spelling but is `unsafe`, which
        // this workspace forbids; `new` is sound here because the AsyncFd
        // takes ownership of the `OwnedFd` and is its only closer.
        #[allow(deprecated)]
        let master = AsyncFd::new(pty.master)?;
        Ok(Self {
            link: link.to_owned(),
            device,
            master,
            _slave: pty.slave,
        })
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.master.readable().await?;
            match ready.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut ready = self.master.writable().await?;
            match ready
                .try_io(|fd| nix::unistd::write(fd.get_ref(), bytes).map_err(io::Error::from))
            {
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Answers requests for `service`'s units until `cancel` fires.
    pub async fn serve(
        self,
        service: ControllerService,
        faults: watch::Receiver<Arc<ActiveFaults>>,
        cancel: CancellationToken,
    ) -> Result<(), RtuError> {
        let mut rng = SmallRng::seed_from_u64(0x0052_5455);
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0_u8; 256];
        loop {
            let read = if buf.is_empty() {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    read = self.read(&mut chunk) => read,
                }
            } else {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    read = tokio::time::timeout(INTER_FRAME_GAP, self.read(&mut chunk)) => match read {
                        Ok(read) => read,
                        Err(_silence) => {
                            tracing::debug!(bytes = buf.len(), "dropping a partial RTU frame");
                            buf.clear();
                            continue;
                        }
                    },
                }
            };
            match read {
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // EIO: no client has the slave open right now.
                Err(err) if err.raw_os_error() == Some(nix::libc::EIO) => {
                    tokio::time::sleep(INTER_FRAME_GAP).await;
                    continue;
                }
                Err(err) => return Err(err.into()),
            }
            while let Some(request) = next_request(&mut buf) {
                let (unit, pdu) = (request[0], &request[1..]);
                if unit == 0 || !service.serves(unit) {
                    continue;
                }
                let disposition = dispose(&service, &faults.borrow(), unit, pdu);
                let Disposition::Answer {
                    delay,
                    pdu: answer,
                    malformed,
                    wrong_id,
                } = disposition
                else {
                    continue;
                };
                if let Some(delay) = delay {
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                let address = if wrong_id {
                    unit.wrapping_add(1).max(1)
                } else {
                    unit
                };
                let mut frame = vec![address];
                frame.extend(answer);
                let frame = match malformed {
                    Some(MalformedFrame::WrongFunction) => {
                        corrupt(&mut frame, MalformedFrame::WrongFunction, &mut rng);
                        with_crc(frame)
                    }
                    Some(how) => {
                        let mut frame = with_crc(frame);
                        corrupt(&mut frame, how, &mut rng);
                        frame
                    }
                    None => with_crc(frame),
                };
                self.write_all(&frame).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_modbus_reference_frame() {
        // Read holding registers 0..1 of unit 1: 01 03 00 00 00 01 84 0A.
        assert_eq!(
            with_crc(vec![1, 3, 0, 0, 0, 1]),
            [1, 3, 0, 0, 0, 1, 0x84, 0x0A]
        );
    }

    #[test]
    fn requests_are_framed_and_noise_before_them_is_skipped() {
        let mut buf = vec![0xFF, 0x00];
        buf.extend(with_crc(vec![1, 3, 0, 0, 0, 1]));
        buf.extend(&with_crc(vec![2, 4, 0, 10, 0, 2])[..5]);
        assert_eq!(next_request(&mut buf), Some(vec![1, 3, 0, 0, 0, 1]));
        assert_eq!(next_request(&mut buf), None, "second frame is incomplete");
        assert_eq!(buf.len(), 5);
    }
}
