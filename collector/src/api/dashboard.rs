//! The dashboard at `/`: one HTML page with its scripts (the shell and live
//! values, the alerts) and the uPlot chart library, all built into the
//! binary so nothing is fetched at run time.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::state::ApiState;

const INDEX: &str = include_str!("../../dashboard/index.html");
const SCRIPT: &str = include_str!("../../dashboard/dashboard.js");
const ALERTS_SCRIPT: &str = include_str!("../../dashboard/alerts.js");
const STYLE: &str = include_str!("../../dashboard/dashboard.css");
const UPLOT_JS: &str = include_str!("../../dashboard/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../dashboard/vendor/uPlot.min.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/dashboard.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .route(
            "/dashboard/alerts.js",
            get(|| async { asset("text/javascript", ALERTS_SCRIPT) }),
        )
        .route(
            "/dashboard/dashboard.css",
            get(|| async { asset("text/css", STYLE) }),
        )
        .route(
            "/dashboard/vendor/uPlot.iife.min.js",
            get(|| async { asset("text/javascript", UPLOT_JS) }),
        )
        .route(
            "/dashboard/vendor/uPlot.min.css",
            get(|| async { asset("text/css", UPLOT_CSS) }),
        )
}
