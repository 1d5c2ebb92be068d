//! Offline rules: a site that stops reporting fires although nothing
//! arrives, so these rules run on a timer, not on frames.
//!
//! "Reporting" is arrival: when this instance last committed a batch of the
//! site. Only the instance that owns the site's partition judges it (the
//! partition of the site's last committed batch is among its assigned
//! ones); after a rebalance the new owner seeds arrivals from the batch
//! ledger (the newest batch of each site: its partition and when it was
//! written), so a site that went silent just before the hand-over still
//! fires, once: the open-episode index arbitrates between instances. The
//! episode starts at the last arrival and ends when the next batch of the
//! site is committed (resolved in that batch's transaction).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio_postgres::GenericClient;

use super::engine::{Change, Transition};
use super::model::{Condition, RuleSet};
use crate::time::unix_ms;

/// The target of a site-level episode.
pub const WHOLE_SITE: &str = "";

#[derive(Debug, Clone)]
struct Arrival {
    name: Arc<str>,
    partition: i32,
    at_ms: i64,
}

/// Last arrivals of the sites this instance writes, and the offline
/// episodes it knows to be open.
#[derive(Default)]
pub struct OfflineWatch {
    arrivals: Mutex<HashMap<i32, Arrival>>,
    /// (rule name, site id) of open offline episodes.
    open: Mutex<HashSet<(String, i32)>>,
}

impl OfflineWatch {
    /// Batches of these sites were committed: `(site id, name, partition)`.
    pub fn arrived<'a>(
        &self,
        sites: impl IntoIterator<Item = (i32, &'a Arc<str>, i32)>,
        now_ms: i64,
    ) {
        let mut arrivals = self.arrivals.lock().expect("arrivals lock");
        for (site_id, name, partition) in sites {
            arrivals.insert(
                site_id,
                Arrival {
                    name: name.clone(),
                    partition,
                    at_ms: now_ms,
                },
            );
        }
    }

    /// Offline episodes of these sites to resolve now (their batches are
    /// being committed).
    pub fn resolutions(
        &self,
        rules: &RuleSet,
        site_ids: &HashSet<i32>,
        now_ms: i64,
    ) -> Vec<Change> {
        let open = self.open.lock().expect("open lock");
        open.iter()
            .filter(|(_, site)| site_ids.contains(site))
            .filter_map(|(rule_name, site_id)| {
                let rule = rules.rules.iter().position(|r| &r.name == rule_name)?;
                Some(Change {
                    site_id: *site_id,
                    rule,
                    target: WHOLE_SITE.into(),
                    transition: Transition::Resolved {
                        end_ms: now_ms,
                        peak: None,
                        late: false,
                    },
                })
            })
            .collect()
    }

    /// After COMMIT: these episodes are open, or closed.
    pub fn settled(&self, rules: &RuleSet, changes: &[Change]) {
        let mut open = self.open.lock().expect("open lock");
        for change in changes.iter().filter(|c| &*c.target == WHOLE_SITE) {
            let key = (rules.rules[change.rule].name.clone(), change.site_id);
            match change.transition {
                Transition::Fired { .. } => {
                    open.insert(key);
                }
                Transition::Resolved { .. } => {
                    open.remove(&key);
                }
                _ => {}
            }
        }
    }

    /// Seed from the database: every site's newest batch (partition, when
    /// it was written) and the open offline episodes.
    pub async fn seed(
        &self,
        client: &impl GenericClient,
        rules: &RuleSet,
    ) -> Result<(), tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT s.site_id, s.name, l.kafka_partition, l.written_at
                 FROM sites s CROSS JOIN LATERAL (
                     SELECT kafka_partition, written_at FROM batch_ledger b
                     WHERE b.site_id = s.site_id ORDER BY seq DESC LIMIT 1) l",
                &[],
            )
            .await?;
        {
            let mut arrivals = self.arrivals.lock().expect("arrivals lock");
            for row in rows {
                let site_id: i32 = row.get(0);
                let name: String = row.get(1);
                let at_ms = unix_ms(row.get(3));
                let entry = arrivals.entry(site_id).or_insert(Arrival {
                    name: name.into(),
                    partition: row.get(2),
                    at_ms,
                });
                if at_ms > entry.at_ms {
                    entry.at_ms = at_ms;
                    entry.partition = row.get(2);
                }
            }
        }
        let names = offline_rules(rules);
        let rows = client
            .query(
                "SELECT rule, site_id FROM alert_episodes
                 WHERE ended_at IS NULL AND target = '' AND rule = ANY($1)",
                &[&names],
            )
            .await?;
        let mut open = self.open.lock().expect("open lock");
        open.clear();
        open.extend(
            rows.iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1))),
        );
        Ok(())
    }

    /// Offline episodes due now, of the sites in `assigned` partitions.
    pub fn due(&self, rules: &RuleSet, assigned: &HashSet<i32>, now_ms: i64) -> Vec<Change> {
        let arrivals = self.arrivals.lock().expect("arrivals lock");
        let open = self.open.lock().expect("open lock");
        let mut out = Vec::new();
        for (index, rule) in rules.rules.iter().enumerate() {
            let Condition::Offline { after } = rule.condition else {
                continue;
            };
            let after_ms = after.as_millis() as i64;
            for (site_id, arrival) in arrivals.iter() {
                if !assigned.contains(&arrival.partition)
                    || now_ms - arrival.at_ms <= after_ms
                    || !rule.target.site.matches(&arrival.name)
                    || open.contains(&(rule.name.clone(), *site_id))
                {
                    continue;
                }
                out.push(Change {
                    site_id: *site_id,
                    rule: index,
                    target: WHOLE_SITE.into(),
                    transition: Transition::Fired {
                        start_ms: arrival.at_ms,
                        peak: None,
                        late: false,
                    },
                });
            }
        }
        out
    }
}

fn offline_rules(rules: &RuleSet) -> Vec<&str> {
    rules
        .rules
        .iter()
        .filter(|r| matches!(r.condition, Condition::Offline { .. }))
        .map(|r| r.name.as_str())
        .collect()
}
