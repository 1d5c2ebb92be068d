//! The sites' signing keys over the API against a real database: enrolled,
//! listed and revoked by admins within their sites only; bad keys, times
//! and duplicates refused with 4xx JSON errors; and every change seen by
//! an instance's key table, which is what the signature check reads.

mod support;

use std::time::Duration;

use bess_collector::auth::{self, AuthMode, Role, SiteScope};
use bess_collector::site_keys::{SignaturePolicy, SiteKeys};
use bess_protocol::signature::format_public_key;
use bess_protocol::SiteSigner;
use bess_tests::TestDatabase;
use serde_json::{json, Value};

async fn call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_enrol_list_and_revoke_their_sites_keys_and_every_check_follows(
) -> anyhow::Result<()> {
    let database = TestDatabase::create("api_site_keys").await?;
    let pool = bess_collector::service::pool(&database.url(), 4)?;
    let storage = bess_collector::service::prepare_database(&pool, Duration::from_secs(10)).await?;
    let base = support::serve_api(support::api_state(
        pool.clone(),
        storage,
        AuthMode::Required,
    ))
    .await?;
    let client = pool.get().await?;
    let only = |s: &str| SiteScope::Only([s.to_owned()].into_iter().collect());
    let admin = auth::create(&client, "admin", Role::Admin, SiteScope::All)
        .await?
        .secret;
    let admin_a = auth::create(&client, "admin-a", Role::Admin, only("site-a"))
        .await?
        .secret;
    let reader = auth::create(&client, "reader", Role::Read, SiteScope::All)
        .await?
        .secret;
    let keys_url = |site: &str| format!("{base}/api/v1/sites/{site}/keys");
    let key = SiteSigner::from_seed([11; 32]);
    let body = json!({
        "public_key": format_public_key(&key.public_key()),
        "valid_from": "2026-01-01T00:00:00Z",
        "note": "rack PC"
    });

    use reqwest::Method as M;
    // Who may: an admin of the site; not a reader, not an admin of another site.
    let (status, _) = call(M::POST, &keys_url("site-a"), &reader, Some(body.clone())).await?;
    assert_eq!(status, 403);
    let (status, _) = call(M::POST, &keys_url("site-b"), &admin_a, Some(body.clone())).await?;
    assert_eq!(status, 403);
    let (status, created) =
        call(M::POST, &keys_url("site-a"), &admin_a, Some(body.clone())).await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["key_id"], key.key_id().to_string());
    assert_eq!(created["valid_from"], "2026-01-01T00:00:00Z");
    assert_eq!(created["enrolled_by"], "admin-a");
    assert_eq!(created["revoked_at"], Value::Null);

    // Refused with a reason: the same key again, a bad key, a bad time, an empty window.
    let (status, e) = call(M::POST, &keys_url("site-a"), &admin, Some(body.clone())).await?;
    assert_eq!(status, 409, "{e}");
    for bad in [
        json!({"public_key": "ed25519:AAAA"}),
        json!({"public_key": format_public_key(&key.public_key()), "valid_until": "tomorrow"}),
        json!({"public_key": format_public_key(&SiteSigner::from_seed([12; 32]).public_key()),
               "valid_from": "2026-02-01T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z"}),
        json!({"key": "x"}),
    ] {
        let (status, e) = call(M::POST, &keys_url("site-a"), &admin, Some(bad.clone())).await?;
        assert_eq!(status, 400, "{bad}: {e}");
        assert!(e["error"]["message"].is_string(), "{e}");
    }
    let (status, e) = call(M::POST, &keys_url("bad site"), &admin, Some(body.clone())).await?;
    assert!(status == 400 || status == 404, "{status} {e}");

    // Listed for its site only.
    let (status, listed) = call(M::GET, &keys_url("site-a"), &admin_a, None).await?;
    assert_eq!(status, 200);
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(1));
    let (status, _) = call(M::GET, &keys_url("site-a"), &reader, None).await?;
    assert_eq!(status, 403);

    // An instance's key table has it; after the revocation, as revoked.
    let table = SiteKeys::new(SignaturePolicy::STRICT);
    table.refresh(&**client).await?;
    let site_a = table.table();
    let enrolled = site_a.site("site-a").expect("site-a has a key");
    assert!(enrolled.len() == 1 && !enrolled[0].revoked);
    let revoke_url = format!("{}/{}", keys_url("site-a"), key.key_id());
    let (status, _) = call(M::DELETE, &revoke_url, &reader, None).await?;
    assert_eq!(status, 403);
    let (status, revoked) = call(M::DELETE, &revoke_url, &admin_a, None).await?;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["revoked_by"], "admin-a");
    let (status, _) = call(M::DELETE, &revoke_url, &admin_a, None).await?;
    assert_eq!(status, 409);
    let (status, _) = call(
        M::DELETE,
        &format!("{}/0123456789abcdef", keys_url("site-a")),
        &admin,
        None,
    )
    .await?;
    assert_eq!(status, 404);
    let (status, _) = call(
        M::DELETE,
        &format!("{}/nothex", keys_url("site-a")),
        &admin,
        None,
    )
    .await?;
    assert_eq!(status, 400);
    let before = table.table().version;
    table.refresh(&**client).await?;
    assert!(table.table().version > before);
    assert!(table.table().site("site-a").unwrap()[0].revoked);
    Ok(())
}
