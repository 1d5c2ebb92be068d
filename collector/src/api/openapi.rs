//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the API,
//! assembled from the handlers' `#[utoipa::path]` annotations, their
//! response types and the error schema of `error.rs` (utoipa); this module
//! only lists them. Tests check that it lists exactly the router's
//! routes and that `docs/openapi.json`, the copy for readers and client
//! generators, is current (`BESS_UPDATE_OPENAPI=1` rewrites it).

use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    alerts, episodes, handlers, inventory, latest, live, reports, rules, series, silences,
    site_keys, tokens,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bess-collector API",
        version = "1",
        description = "BESS fleet telemetry: sites, devices and points, latest values, series, alerts (device alarms and alert-rule episodes) with their history, silences and the alert rules (the rules file's and those managed here), gap and completeness reports, token administration and a live WebSocket.\n\n\
Every `/api/v1` operation except this document needs `Authorization: Bearer <token>` (or `?access_token=` on the WebSocket) unless the collector runs with `--auth disabled`. A token is scoped to sites and has a role: `read` (everything that reads), `operate` (also acknowledges alarms and episodes and manages silences) or `admin` (also manages tokens and the alert rules kept beside the rules file).\n\n\
Times are RFC 3339 (UTC). Lists that grow with the fleet are paged: pass `limit` (1–1000, default 100) and the previous page's `next_cursor` as `cursor`; `next_cursor` is `null` on the last page. Errors are `{\"error\":{\"code\":\"...\",\"message\":\"...\"}}`."
    ),
    paths(
        handlers::health,
        handlers::metrics,
        document,
        inventory::sites,
        inventory::devices,
        inventory::points,
        latest::latest,
        series::series,
        alerts::list,
        alerts::acknowledge,
        episodes::history,
        episodes::acknowledge,
        silences::list,
        silences::create,
        silences::end,
        rules::list,
        rules::create,
        rules::replace,
        rules::enable,
        rules::disable,
        rules::delete,
        reports::gaps,
        reports::completeness,
        tokens::list,
        tokens::create,
        tokens::revoke,
        site_keys::list,
        site_keys::enrol,
        site_keys::revoke,
        live::live,
    ),
    modifiers(&BearerToken),
    tags(
        (name = "fleet", description = "Sites, devices, points and their values"),
        (name = "alerts", description = "Alarms the devices raise, episodes of the alert rules, silences, and the rules: those in force and those managed over the API"),
        (name = "reports", description = "Data quality: gaps and completeness"),
        (name = "live", description = "WebSocket push of committed frames"),
        (name = "admin", description = "API tokens and the sites' batch-signing keys (role `admin`)"),
        (name = "service", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `bess-collector token create` or `POST /api/v1/tokens`",
                    ))
                    .build(),
            ),
        );
    }
}

fn rendered() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi_document",
    tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], rendered())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Paths routed in `api/mod.rs` (the dashboard's static files are not API).
    fn routed_paths() -> BTreeSet<String> {
        let source = include_str!("mod.rs");
        // `.route("/path", ...)`, also when rustfmt puts the path on its own line.
        source
            .split(".route(")
            .skip(1)
            .map(|rest| {
                let rest = rest
                    .trim_start()
                    .strip_prefix('"')
                    .expect("a route path literal");
                rest.split('"').next().expect("closing quote").to_owned()
            })
            .collect()
    }

    fn document() -> serde_json::Value {
        serde_json::from_str(super::rendered()).expect("the document is JSON")
    }

    #[test]
    fn the_document_lists_exactly_the_routes_of_the_router() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let documented: BTreeSet<String> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let routed = routed_paths();
        assert!(routed.len() >= 15, "found the routes: {routed:?}");
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the OpenAPI document: {undocumented:?}"
        );
        assert!(
            stale.is_empty(),
            "the OpenAPI document lists paths the router does not have: {stale:?}"
        );
    }

    #[test]
    fn every_api_operation_documents_its_errors_and_security() {
        let document = document();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let responses = operation["responses"].as_object().expect("responses");
                assert!(!responses.is_empty(), "{method} {path}");
                let protected = path.starts_with("/api/v1/") && path != "/api/v1/openapi.json";
                if protected {
                    for status in ["401", "403", "429", "500", "503"] {
                        assert!(responses.contains_key(status), "{method} {path}: {status}");
                    }
                    assert_eq!(
                        operation["security"],
                        serde_json::json!([{ "bearer": [] }]),
                        "{method} {path}"
                    );
                }
            }
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let document = document();
        let mut ids = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let id = operation["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_owned()), "{method} {path}: {id} twice");
            }
        }
    }

    #[test]
    fn the_copy_in_docs_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let current = format!("{}\n", super::rendered());
        if std::env::var_os("BESS_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &current).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == current,
            "docs/openapi.json is out of date; run `BESS_UPDATE_OPENAPI=1 cargo test -p bess-collector openapi` and commit it"
        );
    }
}
