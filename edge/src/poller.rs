//! `ModbusPoller`: one task per device. It reads each poll group on its
//! interval, one request at a time, and turns every answer — or the lack of
//! one — into a frame. A Modbus exception marks the group's points stale; a
//! timeout or a broken connection marks them comm-loss and the poller
//! reconnects with backoff. Either way the next cycle goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;

use bess_protocol::{Frame, GroupIndex, MissingReason, Reading};

use crate::clock::FrameClock;
use crate::config::{DevicePlan, GroupPlan};
use crate::register::RegisterTable;
use crate::status::{AgentStatus, PollOutcome, Totals};

const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(500);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

pub struct ModbusPoller {
    device: DevicePlan,
    device_index: usize,
    frames: mpsc::Sender<Frame>,
    status: Arc<AgentStatus>,
    connection: Option<Context>,
    next_connect_at: Instant,
    reconnect_delay: Duration,
    clock: FrameClock,
}

impl ModbusPoller {
    pub fn new(device: DevicePlan, device_index: usize, frames: mpsc::Sender<Frame>, status: Arc<AgentStatus>) -> Self {
        let clock = FrameClock::new(device.groups.len());
        Self {
            device,
            device_index,
            frames,
            status,
            connection: None,
            next_connect_at: Instant::now(),
            reconnect_delay: MIN_RECONNECT_DELAY,
            clock,
        }
    }

    /// Poll until cancelled. Cycles never overlap: a group that falls
    /// behind skips the missed ticks rather than bursting.
    pub async fn run(mut self, cancel: CancellationToken) {
        let start = Instant::now();
        let mut due: Vec<Instant> = vec![start; self.device.groups.len()];
        loop {
            let Some((group, &at)) = due.iter().enumerate().min_by_key(|(_, at)| **at) else {
                return;
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(at) => {}
            }
            let frame = self.poll_group(group).await;
            let interval = self.device.groups[group].interval;
            let mut next = at + interval;
            let now = Instant::now();
            if next <= now {
                let behind = now.duration_since(next).as_nanos() / interval.as_nanos() + 1;
                next += interval * behind as u32;
            }
            due[group] = next;
            if self.frames.send(frame).await.is_err() {
                break;
            }
        }
        if let Some(mut ctx) = self.connection.take() {
            use tokio_modbus::client::Client;
            let _ = timeout(Duration::from_millis(200), ctx.disconnect()).await;
        }
    }

    async fn poll_group(&mut self, group_at: usize) -> Frame {
        let group = self.device.groups[group_at].clone();
        let limit = self.device.timeout;
        let outcome = match self.connected().await {
            Some(ctx) => read_group(ctx, &group, limit).await,
            None => Err(MissingReason::Disconnected),
        };
        let ts_ms = self.clock.stamp(group_at);
        let values = match &outcome {
            Ok(words) => group
                .points
                .iter()
                .map(|p| {
                    let at = usize::from(p.address - group.start);
                    p.data_type.decode_words(&words[at..at + usize::from(p.data_type.width(group.table))])
                })
                .collect(),
            Err(reason) => vec![Reading::Missing(*reason); group.points.len()],
        };
        match outcome {
            Ok(_) => self.status.record_poll(self.device_index, ts_ms, PollOutcome::Good),
            Err(reason) => {
                if reason.quality() == bess_protocol::Quality::CommLoss {
                    self.drop_connection();
                }
                tracing::debug!(device = %self.device.name, group = %group.name, reason = %reason.describe(), "poll failed");
                self.status.record_poll(self.device_index, ts_ms, PollOutcome::Failed(reason));
            }
        }
        metrics::counter!("bess_edge_samples_read_total").increment(values.len() as u64);
        Totals::add(&self.status.totals.samples_read, values.len() as u64);
        Frame { group: GroupIndex(group.catalog_index), ts_ms, values }
    }

    async fn connected(&mut self) -> Option<&mut Context> {
        if self.connection.is_none() && Instant::now() >= self.next_connect_at {
            let connect = connect(self.device.host.clone(), self.device.port, self.device.unit);
            match timeout(self.device.timeout, connect).await {
                Ok(Ok(ctx)) => {
                    tracing::info!(device = %self.device.name, host = %self.device.host, port = self.device.port, unit = self.device.unit, "connected");
                    self.connection = Some(ctx);
                    self.reconnect_delay = MIN_RECONNECT_DELAY;
                }
                Ok(Err(e)) => self.connect_failed(&e.to_string()),
                Err(_) => self.connect_failed("connect timed out"),
            }
        }
        self.connection.as_mut()
    }


    fn connect_failed(&mut self, why: &str) {
        tracing::warn!(device = %self.device.name, host = %self.device.host, port = self.device.port, retry_in = ?self.reconnect_delay, "cannot connect: {why}");
        self.next_connect_at = Instant::now() + self.reconnect_delay;
        self.reconnect_delay = (self.reconnect_delay * 2).min(MAX_RECONNECT_DELAY);
    }

    /// After a timeout a late answer could be taken for the next request's,
    /// so the connection is not reused.
    fn drop_connection(&mut self) {
        if self.connection.take().is_some() {
            self.next_connect_at = Instant::now() + self.reconnect_delay;
            self.reconnect_delay = (self.reconnect_delay * 2).min(MAX_RECONNECT_DELAY);
        }
    }
}

async fn connect(host: String, port: u16, unit: u8) -> std::io::Result<Context> {
    let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "host has no address"))?;
    tokio_modbus::client::tcp::connect_slave(addr, Slave(unit)).await
}

/// One read request for the whole group; bit tables come back as 0/1 words.
async fn read_group(ctx: &mut Context, group: &GroupPlan, limit: Duration) -> Result<Vec<u16>, MissingReason> {
    let (start, count) = (group.start, group.count);
    let request = async {
        match group.table {
            RegisterTable::Holding => ctx.read_holding_registers(start, count).await,
            RegisterTable::Input => ctx.read_input_registers(start, count).await,
            RegisterTable::Coils => ctx
                .read_coils(start, count)
                .await
                .map(|r| r.map(|bits| bits.into_iter().map(u16::from).collect())),
            RegisterTable::DiscreteInputs => ctx
                .read_discrete_inputs(start, count)
                .await
                .map(|r| r.map(|bits| bits.into_iter().map(u16::from).collect())),
        }
    };
    match timeout(limit, request).await {
        Err(_) => Err(MissingReason::Timeout),
        Ok(Err(_transport)) => Err(MissingReason::Disconnected),
        Ok(Ok(Err(exception))) => Err(MissingReason::Exception(u8::from(exception))),
        Ok(Ok(Ok(words))) if words.len() >= usize::from(count) => Ok(words),
        // A short answer is as good as none.
        Ok(Ok(Ok(_))) => Err(MissingReason::Exception(0)),
    }
}
