//! The signature check of a chunk of batches: what the decode stage can
//! settle from the keys in memory ([`check_chunk`], with one Ed25519 batch
//! verification over the chunk), and the same judgement for a batch whose
//! key had to be looked up ([`judge_looked_up`]).

use bess_protocol::signature::{signed_part, verify, verify_all, SignedPart};
use bess_protocol::{Batch, Header, KeyId, VerifyingKey};

use super::{EnrolledKey, SignaturePolicy, SiteKeys};
use crate::dead_letter::RejectClass;

/// What the check made of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a key of its site, valid for its readings.
    Verified,
    /// Unsigned, and the policy allows it.
    Unsigned,
    /// Set aside, and why.
    Rejected(RejectClass, String),
    /// Its site or key is not in memory: look it up (it may have been
    /// enrolled a moment ago, or be pinned now) before refusing it.
    LookUp,
}

/// The span of event time a batch speaks for: its frames and its gaps.
/// `None` for a batch of neither (a catalog carrier).
pub fn event_span(batch: &Batch) -> Option<(i64, i64)> {
    let times = batch
        .frames
        .iter()
        .map(|f| (f.ts_ms, f.ts_ms))
        .chain(batch.gaps.iter().map(|g| (g.first_ts_ms, g.last_ts_ms)));
    times.reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
}

/// The key `key_id` of a site with `keys`, when it may sign `span`.
fn judge<'k>(
    site: &str,
    keys: &'k [EnrolledKey],
    key_id: KeyId,
    span: Option<(i64, i64)>,
) -> Result<&'k EnrolledKey, (RejectClass, String)> {
    let Some(key) = keys.iter().find(|k| k.key_id == key_id) else {
        return Err((
            RejectClass::UnknownKey,
            format!(
                "site {site:?} has no key {key_id} (enrolled: {})",
                key_list(keys)
            ),
        ));
    };
    if key.revoked {
        return Err((
            RejectClass::RevokedKey,
            format!("key {key_id} of site {site:?} is revoked"),
        ));
    }
    if let Some((first, last)) = span {
        if !key.covers(first, last) {
            return Err((
                RejectClass::ExpiredKey,
                format!(
                    "key {key_id} of site {site:?} is not valid for readings from {} to {}",
                    crate::time::rfc3339(crate::time::timestamp(first)),
                    crate::time::rfc3339(crate::time::timestamp(last))
                ),
            ));
        }
    }
    Ok(key)
}

fn key_list(keys: &[EnrolledKey]) -> String {
    keys.iter()
        .map(|k| k.key_id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unsigned(policy: SignaturePolicy) -> Verdict {
    if policy.require {
        Verdict::Rejected(
            RejectClass::Unsigned,
            "unsigned batch (format version 1); this collector requires signed batches".into(),
        )
    } else {
        Verdict::Unsigned
    }
}

fn bad_signature(site: &str, key_id: KeyId) -> Verdict {
    Verdict::Rejected(
        RejectClass::BadSignature,
        format!("the signature does not match the batch and key {key_id} of site {site:?} (altered, or not signed by that key)"),
    )
}

/// Check every decoded batch of a chunk: `payloads[i]` is the message
/// `batches[i]` decoded from; `None` batches (not decodable) get `None`.
pub fn check_chunk(
    keys: &SiteKeys,
    payloads: &[&[u8]],
    batches: &[Option<&Batch>],
) -> Vec<Option<Verdict>> {
    let table = keys.table();
    let mut verdicts: Vec<Option<Verdict>> = vec![None; batches.len()];
    // (index, signed part, key) of the batches a signature now decides.
    let mut pending: Vec<(usize, SignedPart<'_>, &VerifyingKey)> = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let Some(batch) = batch else { continue };
        let payload = payloads[i];
        let Ok(header) = Header::parse(payload) else {
            continue;
        };
        let Some(part) = signed_part(payload, &header) else {
            verdicts[i] = Some(unsigned(keys.policy));
            continue;
        };
        let site = batch.site.as_str();
        let Some(site_keys) = table.site(site) else {
            verdicts[i] = Some(Verdict::LookUp);
            continue;
        };
        match judge(site, site_keys, part.key_id, event_span(batch)) {
            Ok(key) => pending.push((i, part, &key.key)),
            // Perhaps enrolled since the table was loaded.
            Err((RejectClass::UnknownKey, _)) => verdicts[i] = Some(Verdict::LookUp),
            Err((class, reason)) => verdicts[i] = Some(Verdict::Rejected(class, reason)),
        }
    }
    let parts: Vec<(SignedPart<'_>, &VerifyingKey)> =
        pending.iter().map(|(_, part, key)| (*part, *key)).collect();
    let all_good = verify_all(&parts);
    for (i, part, key) in &pending {
        let good = all_good || verify(part, key).is_ok();
        let site = batches[*i].map(|b| b.site.as_str()).unwrap_or_default();
        verdicts[*i] = Some(if good {
            Verdict::Verified
        } else {
            bad_signature(site, part.key_id)
        });
    }
    let verified = verdicts
        .iter()
        .filter(|v| matches!(v, Some(Verdict::Verified)))
        .count();
    metrics::counter!("bess_collector_batches_verified_total").increment(verified as u64);
    verdicts
}

/// The public key a signed message carries (flag bit 3), if any: what
/// first-use pinning pins.
pub fn carried_public_key(payload: &[u8]) -> Option<VerifyingKey> {
    let header = Header::parse(payload).ok()?;
    signed_part(payload, &header)?.public_key
}

/// The verdict on a batch whose key was looked up: `keys` are its site's
/// keys fresh from the database (empty: the site has none).
pub fn judge_looked_up(payload: &[u8], batch: &Batch, keys: &[EnrolledKey]) -> Verdict {
    let site = batch.site.as_str();
    let Some(part) = Header::parse(payload)
        .ok()
        .and_then(|h| signed_part(payload, &h))
    else {
        return Verdict::Rejected(RejectClass::Unsigned, "unsigned batch".into());
    };
    if keys.is_empty() {
        return Verdict::Rejected(
            RejectClass::UnknownSite,
            format!(
                "site {site:?} has no enrolled key (its batch is signed by {}): enroll it with `bess-collector site enroll {site} --public-key ...`",
                part.key_id
            ),
        );
    }
    match judge(site, keys, part.key_id, event_span(batch)) {
        Ok(key) => match verify(&part, &key.key) {
            Ok(()) => {
                metrics::counter!("bess_collector_batches_verified_total").increment(1);
                Verdict::Verified
            }
            Err(_) => bad_signature(site, part.key_id),
        },
        Err((class, reason)) => Verdict::Rejected(class, reason),
    }
}
