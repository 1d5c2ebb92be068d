//! `LastSeenThrottle`: which sites' `sites.last_seen` a write updates. The
//! column only feeds the site list, yet updating it in every transaction
//! for every site of the chunk cost a row update per message — about a
//! quarter of the ingest rate at 1,000 sites. So an instance moves a site's
//! `last_seen` only once the newest reading it stores is
//! [`LAST_SEEN_STEP_MS`] past what it last wrote there: the column is never
//! more than that behind the newest stored reading.

use std::collections::HashMap;
use std::sync::Mutex;

/// How far `sites.last_seen` may lag the newest stored reading.
pub const LAST_SEEN_STEP_MS: i64 = 60_000;

/// What this instance last wrote to `last_seen`, per site id.
#[derive(Debug, Default)]
pub struct LastSeenThrottle(Mutex<HashMap<i32, i64>>);

impl LastSeenThrottle {
    /// Of a chunk's newest reading per site, the ones to write.
    pub fn due(&self, newest: HashMap<i32, i64>) -> Vec<(i32, i64)> {
        let written = self.0.lock().expect("lock");
        let mut due: Vec<(i32, i64)> = newest
            .into_iter()
            .filter(|(site, ts)| {
                written
                    .get(site)
                    .is_none_or(|at| *ts >= at.saturating_add(LAST_SEEN_STEP_MS))
            })
            .collect();
        due.sort_unstable();
        due
    }

    /// The transaction that wrote `rows` committed.
    pub fn written(&self, rows: &[(i32, i64)]) {
        let mut written = self.0.lock().expect("lock");
        for (site, ts) in rows {
            let at = written.entry(*site).or_insert(*ts);
            *at = (*at).max(*ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_is_written_first_then_again_only_a_step_later() {
        let throttle = LastSeenThrottle::default();
        let due = throttle.due(HashMap::from([(1, 1_000), (2, 5_000)]));
        assert_eq!(due, vec![(1, 1_000), (2, 5_000)]);
        throttle.written(&due);
        assert_eq!(throttle.due(HashMap::from([(1, 60_999)])), vec![]);
        assert_eq!(
            throttle.due(HashMap::from([(1, 61_000)])),
            vec![(1, 61_000)]
        );
    }

    #[test]
    fn a_write_that_did_not_commit_is_due_again() {
        let throttle = LastSeenThrottle::default();
        let due = throttle.due(HashMap::from([(7, 1_000)]));
        // The transaction failed: nothing recorded.
        assert_eq!(throttle.due(HashMap::from([(7, 1_000)])), due);
    }
}
