//! `ModbusLink`: one connection or serial bus, shared by every device behind
//! it (unit ids behind one gateway, drops on one RS-485 line). It carries
//! one request at a time, keeps the configured pause between requests,
//! opens the connection on demand, and after a timeout or a transport error
//! drops it (a late answer could otherwise be taken for the next request's)
//! and reconnects, with exponential backoff when connecting itself fails.
//!
//! A device's refusal (`Ok(Err(exception))` from tokio-modbus) is kept apart
//! from a broken link (`Err(io)`): the first marks the request's points
//! stale and keeps the connection, the second marks them comm-loss.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::{timeout, Instant};
use tokio_modbus::client::{Client, Context, Reader};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::Slave;

use bess_protocol::MissingReason;

use crate::backoff::Backoff;
use crate::register::RegisterTable;
use crate::site_plan::{DevicePlan, Endpoint, Parity, ReadRequest, SerialSettings};

const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(500);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{endpoint}: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint}: cannot open serial port: {source}")]
    Serial {
        endpoint: String,
        source: tokio_serial::Error,
    },
    #[error("{endpoint}: connect timed out")]
    Timeout { endpoint: String },
    #[error("{endpoint}: waiting {wait:?} before the next connection attempt")]
    BackingOff { endpoint: String, wait: Duration },
}

/// How one request went.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestOutcome {
    /// One word per register (bit tables: one 0/1 word per bit).
    Words(Vec<u16>),
    Missing(MissingReason),
}

struct LinkState {
    ctx: Option<Context>,
    next_connect_at: Instant,
    reconnect: Backoff,
    last_request_end: Option<Instant>,
    last_error: Option<String>,
}

pub struct ModbusLink {
    endpoint: Endpoint,
    pause: Duration,
    state: Mutex<LinkState>,
}

impl ModbusLink {
    pub fn new(endpoint: Endpoint, pause: Duration) -> Arc<Self> {
        Arc::new(Self {
            endpoint,
            pause,
            state: Mutex::new(LinkState {
                ctx: None,
                next_connect_at: Instant::now(),
                reconnect: Backoff::new(MIN_RECONNECT_DELAY, MAX_RECONNECT_DELAY),
                last_request_end: None,
                last_error: None,
            }),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Read one request for `unit`, retrying `retries` times after a timeout
    /// or a broken connection. Holds the link for the whole exchange.
    pub async fn read(
        &self,
        unit: u8,
        request: ReadRequest,
        limit: Duration,
        retries: u8,
    ) -> RequestOutcome {
        let mut state = self.state.lock().await;
        let mut attempt = 0;
        loop {
            if let Some(last) = state.last_request_end {
                tokio::time::sleep_until(last + self.pause).await;
            }
            let outcome = self.read_once(&mut state, unit, request, limit).await;
            state.last_request_end = Some(Instant::now());
            match outcome {
                RequestOutcome::Missing(
                    reason @ (MissingReason::Timeout | MissingReason::Disconnected),
                ) if attempt < retries
                    && state.ctx.is_none()
                    && Instant::now() >= state.next_connect_at =>
                {
                    attempt += 1;
                    tracing::debug!(endpoint = %self.endpoint, unit, reason = %reason.describe(), attempt, "retrying request");
                    metrics::counter!("bess_edge_modbus_retries_total").increment(1);
                }
                outcome => return outcome,
            }
        }
    }

    async fn read_once(
        &self,
        state: &mut LinkState,
        unit: u8,
        request: ReadRequest,
        limit: Duration,
    ) -> RequestOutcome {
        if state.ctx.is_none() {
            if Instant::now() < state.next_connect_at {
                return RequestOutcome::Missing(MissingReason::Disconnected);
            }
            match self.connect(limit).await {
                Ok(ctx) => {
                    tracing::info!(endpoint = %self.endpoint, "connected");
                    state.ctx = Some(ctx);
                    state.reconnect.reset();
                    state.last_error = None;
                }
                Err(e) => {
                    let wait = state.reconnect.next_delay();
                    tracing::warn!(retry_in = ?wait, "cannot connect: {e}");
                    state.last_error = Some(e.to_string());
                    state.next_connect_at = Instant::now() + wait;
                    return RequestOutcome::Missing(MissingReason::Disconnected);
                }
            }
        }
        let ctx = state.ctx.as_mut().expect("connected above");
        ctx.set_slave(Slave(unit));
        metrics::counter!("bess_edge_modbus_requests_total").increment(1);
        let outcome = match timeout(limit, send(ctx, request)).await {
            Err(_) => RequestOutcome::Missing(MissingReason::Timeout),
            Ok(Err(e)) => {
                state.last_error = Some(e.to_string());
                RequestOutcome::Missing(MissingReason::Disconnected)
            }
            Ok(Ok(Err(exception))) => {
                RequestOutcome::Missing(MissingReason::Exception(u8::from(exception)))
            }
            Ok(Ok(Ok(words))) if words.len() >= usize::from(request.count) => {
                RequestOutcome::Words(words)
            }
            // A short answer is as good as none.
            Ok(Ok(Ok(_))) => RequestOutcome::Missing(MissingReason::Exception(0)),
        };
        if let RequestOutcome::Missing(reason) = outcome {
            if reason.quality() == bess_protocol::Quality::CommLoss {
                // After a timeout a late answer could be taken for the next
                // request's, so the connection is not reused.
                state.ctx = None;
            }
        }
        outcome
    }

    /// Close the connection (for devices that accept one client at a time).
    pub async fn release(&self) {
        let mut state = self.state.lock().await;
        if let Some(mut ctx) = state.ctx.take() {
            let _ = timeout(Duration::from_millis(200), ctx.disconnect()).await;
        }
    }

    /// The last connection or transport error, for `check` and `/status`.
    pub async fn last_error(&self) -> Option<String> {
        self.state.lock().await.last_error.clone()
    }

    async fn connect(&self, limit: Duration) -> Result<Context, ConnectError> {
        let endpoint = self.endpoint.to_string();
        let attempt = async {
            match &self.endpoint {
                Endpoint::Tcp { host, port } => {
                    let stream = tcp_stream(host, *port, &endpoint).await?;
                    Ok(tokio_modbus::client::tcp::attach(stream))
                }
                Endpoint::RtuOverTcp { host, port } => {
                    let stream = tcp_stream(host, *port, &endpoint).await?;
                    Ok(tokio_modbus::client::rtu::attach(stream))
                }
                Endpoint::Rtu(settings) => {
                    let port = open_serial(settings).map_err(|source| ConnectError::Serial {
                        endpoint: endpoint.clone(),
                        source,
                    })?;
                    Ok(tokio_modbus::client::rtu::attach(port))
                }
            }
        };
        // Serial ports open at once; give TCP the request timeout, at least 1 s.
        match timeout(limit.max(Duration::from_secs(1)), attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout { endpoint }),
        }
    }
}

async fn tcp_stream(
    host: &str,
    port: u16,
    endpoint: &str,
) -> Result<tokio::net::TcpStream, ConnectError> {
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| ConnectError::Resolve {
            host: host.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        })?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ConnectError::Io {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    stream.set_nodelay(true).ok();
    Ok(stream)
}

fn open_serial(
    settings: &SerialSettings,
) -> Result<tokio_serial::SerialStream, tokio_serial::Error> {
    use tokio_serial::SerialPortBuilderExt as _;
    let parity = match settings.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = match settings.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let stop_bits = if settings.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    tokio_serial::new(&settings.path, settings.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
}

async fn send(ctx: &mut Context, request: ReadRequest) -> tokio_modbus::Result<Vec<u16>> {
    let (start, count) = (request.start, request.count);
    match request.table {
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
}

/// One link per endpoint, in device order: devices with the same endpoint
/// share a link, whose pause is the longest any of them asks for.
pub fn links_for(devices: &[DevicePlan]) -> Vec<Arc<ModbusLink>> {
    let mut links: Vec<Arc<ModbusLink>> = Vec::new();
    devices
        .iter()
        .map(|d| {
            if let Some(link) = links.iter().find(|l| l.endpoint == d.link.endpoint) {
                return link.clone();
            }
            let sharing = devices
                .iter()
                .filter(|o| o.link.endpoint == d.link.endpoint);
            let pause = sharing.map(|o| o.link.pause).max().unwrap_or_default();
            let link = ModbusLink::new(d.link.endpoint.clone(), pause);
            links.push(link.clone());
            link
        })
        .collect()
}
