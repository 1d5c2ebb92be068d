//! `GET /api/v1/live`: a WebSocket that pushes each committed frame as JSON,
//! optionally only for one site (`?site=...`). A client that falls behind is
//! told how many frames it missed (`{"type":"lagged","missed":N}`) and goes on.

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{bad_query, ApiState, AppError};

#[derive(Deserialize)]
pub struct LiveQuery {
    site: Option<String>,
}

pub async fn live(
    State(state): State<ApiState>,
    query: Result<Query<LiveQuery>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(bad_query)?;
    Ok(upgrade.on_upgrade(move |socket| serve(socket, state, query.site)))
}

async fn serve(mut socket: WebSocket, state: ApiState, site: Option<String>) {
    let mut frames = state.live.subscribe();
    metrics::gauge!("bess_collector_live_clients").increment(1.0);
    loop {
        tokio::select! {
            received = frames.recv() => match received {
                Ok(message) => {
                    if site.as_deref().is_some_and(|s| s != &*message.site) {
                        continue;
                    }
                    if socket.send(Message::Text(message.json.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!("bess_collector_live_lagged_total").increment(missed);
                    let notice = serde_json::json!({ "type": "lagged", "missed": missed }).to_string();
                    if socket.send(Message::Text(notice.into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            () = state.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
    }
    metrics::gauge!("bess_collector_live_clients").decrement(1.0);
}
