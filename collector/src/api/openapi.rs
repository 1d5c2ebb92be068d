//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the API,
//! maintained by hand in `openapi.json` next to this file and built into
//! the binary. A test checks that it lists exactly the router's routes.

use axum::http::header;
use axum::response::IntoResponse;

const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
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

    #[test]
    fn the_document_lists_exactly_the_routes_of_the_router() {
        let document: serde_json::Value =
            serde_json::from_str(super::DOCUMENT).expect("openapi.json is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let documented: BTreeSet<String> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let routed = routed_paths();
        assert!(routed.len() >= 8, "found the routes: {routed:?}");
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            stale.is_empty(),
            "openapi.json lists paths the router does not have: {stale:?}"
        );
    }

    #[test]
    fn every_operation_documents_its_responses() {
        let document: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("JSON");
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                assert!(
                    operation["responses"]
                        .as_object()
                        .is_some_and(|r| !r.is_empty()),
                    "{method} {path}"
                );
            }
        }
    }
}
