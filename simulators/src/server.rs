//! The Modbus side of a simulated controller: `ControllerService` answers
//! FC03/FC04 reads from the latest register snapshot of the addressed unit,
//! and [`serve`] runs it on one TCP listener until cancelled.
//!
//! Requests never wait on the physics: each unit's snapshot sits in a
//! `watch` channel that the site clock replaces once per step.

use std::{collections::BTreeMap, future, io, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch};
use tokio_modbus::{
    server::{
        tcp::{accept_tcp_connection, Server},
        Service,
    },
    ExceptionCode, Request, Response, SlaveId, SlaveRequest,
};
use tokio_util::sync::CancellationToken;

use crate::register_map::RegisterSnapshot;

/// Latest snapshot of each unit a listener answers for, by unit id.
pub type UnitSnapshots = BTreeMap<SlaveId, watch::Receiver<RegisterSnapshot>>;

/// Answers register reads for the units behind one listener.
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

    fn answer(&self, req: SlaveRequest<'static>) -> Result<Response, ExceptionCode> {
        let Some(unit) = self.units.get(&req.slave) else {
            return Err(ExceptionCode::GatewayTargetDevice);
        };
        match req.request {
            Request::ReadHoldingRegisters(start, quantity) => {
                let words = unit.borrow().read(start, quantity)?;
                Ok(Response::ReadHoldingRegisters(words))
            }
            Request::ReadInputRegisters(start, quantity) => {
                let words = unit.borrow().read(start, quantity)?;
                Ok(Response::ReadInputRegisters(words))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

impl Service for ControllerService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        future::ready(self.answer(req))
    }
}

/// Serves `service` on `listener` until `cancel` fires; open connections are
/// dropped with it.
pub async fn serve(
    listener: TcpListener,
    service: ControllerService,
    cancel: CancellationToken,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let on_connected = move |stream, peer: SocketAddr| {
        let service = service.clone();
        async move {
            tracing::debug!(%local, %peer, "client connected");
            accept_tcp_connection(stream, peer, |_| Ok(Some(service.clone())))
        }
    };
    let on_process_error = move |err: io::Error| {
        tracing::debug!(%local, error = %err, "client connection ended with an error");
    };
    Server::new(listener)
        .serve_until(&on_connected, on_process_error, cancel.cancelled_owned())
        .await?;
    Ok(())
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

    fn ask(
        service: &ControllerService,
        slave: SlaveId,
        request: Request<'static>,
    ) -> Result<Response, ExceptionCode> {
        service.answer(SlaveRequest { slave, request })
    }

    #[test]
    fn unknown_unit_gets_gateway_target_device() {
        let service = service_for_unit(2);
        let answer = ask(&service, 1, Request::ReadHoldingRegisters(0, 1));
        assert_eq!(answer, Err(ExceptionCode::GatewayTargetDevice));
    }

    #[test]
    fn writes_are_refused_as_illegal_function() {
        let service = service_for_unit(1);
        let answer = ask(&service, 1, Request::WriteSingleRegister(0, 1));
        assert_eq!(answer, Err(ExceptionCode::IllegalFunction));
    }

    #[test]
    fn input_and_holding_reads_return_the_same_words() {
        let service = service_for_unit(1);
        let Ok(Response::ReadHoldingRegisters(holding)) =
            ask(&service, 1, Request::ReadHoldingRegisters(0, 18))
        else {
            panic!("holding read failed");
        };
        let Ok(Response::ReadInputRegisters(input)) =
            ask(&service, 1, Request::ReadInputRegisters(0, 18))
        else {
            panic!("input read failed");
        };
        assert_eq!(holding, input);
        assert_eq!(
            ask(&service, 1, Request::ReadInputRegisters(0, 0)),
            Err(ExceptionCode::IllegalDataValue)
        );
    }
}
