//! `Rules`: the collector's live rule set and everything that evaluates it.
//!
//! - The writer calls [`Rules::evaluate`] inside each transaction with the
//!   frames of the batches the ledger found new, and [`Rules::committed`]
//!   (or [`Rules::failed`]) after it; so transitions are persisted exactly
//!   once, with the readings that caused them.
//! - [`Rules::run_offline_checks`] is the timer of offline rules.
//! - [`Rules::replace`] swaps the set (SIGHUP, a change of the API rules:
//!   `managed` merges the two sources); the notifier follows the set
//!   through [`Rules::subscribe`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::engine::{Change, RuleEngine};
use super::managed::RuleSources;
use super::model::RuleSet;
use super::offline::OfflineWatch;
use super::store::{self, Persisted};
use crate::catalog::{CatalogLayouts, CatalogRegistry, Layouts};
use crate::derived::engine::DerivedEngine;
use crate::derived::plan::{plan, DerivedPlan, PlanSource};
use crate::polled::PolledFrame;
use crate::time::unix_ms_now;

/// How often offline rules are checked.
const OFFLINE_TICK: Duration = Duration::from_secs(1);

/// The frames of one new batch, for the rules.
pub struct CommittedBatch<'a> {
    pub site_id: i32,
    pub partition: i32,
    pub frames: &'a [PolledFrame],
}

/// What one transaction's evaluation wrote (see [`Rules::committed`]).
#[derive(Debug, Default)]
pub struct Evaluated {
    changes: Vec<Change>,
    sites: Vec<(i32, Arc<str>, i32)>,
    pub persisted: Persisted,
}

pub struct Rules {
    /// Notified after a commit that queued notifications.
    queued: Arc<tokio::sync::Notify>,
    engine: Mutex<RuleEngine>,
    derived: Mutex<DerivedEngine>,
    /// Plans by (site, catalog version), shared with the live lane.
    plans: Mutex<HashMap<(i32, u64), DerivedPlan>>,
    offline: OfflineWatch,
    published: watch::Sender<Arc<RuleSet>>,
    /// The file's set and the API rules the set in force is merged from.
    sources: RuleSources,
}

impl Rules {
    /// With the rules file's set in force (no API rule merged yet).
    pub fn new(set: RuleSet) -> Arc<Self> {
        let sources = RuleSources::new(set.clone());
        let set = Arc::new(set);
        Arc::new(Self {
            queued: Arc::default(),
            engine: Mutex::new(RuleEngine::new(set.clone())),
            derived: Mutex::new(DerivedEngine::default()),
            plans: Mutex::new(HashMap::new()),
            offline: OfflineWatch::default(),
            published: watch::Sender::new(set),
            sources,
        })
    }

    pub(super) fn rule_sources(&self) -> &RuleSources {
        &self.sources
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.published.borrow().clone()
    }

    /// Notified whenever a commit on this instance queued notifications.
    pub fn notifications_queued(&self) -> Arc<tokio::sync::Notify> {
        self.queued.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<RuleSet>> {
        self.published.subscribe()
    }

    /// Whether the writer must hand frames over (some rule reads them).
    pub fn wants_frames(&self) -> bool {
        self.engine.lock().expect("engine lock").evaluates_frames()
    }

    /// Whether nothing is declared at all (no rule, no derived point).
    pub fn is_empty(&self) -> bool {
        let set = self.current();
        set.rules.is_empty() && set.derived.is_empty()
    }

    /// Plan the derived points of a site's catalog version once, and
    /// register the derived devices' catalog (outside any transaction: the
    /// registration is idempotent and shared by every instance).
    pub async fn prepare_derived(
        &self,
        catalogs: &CatalogRegistry,
        client: &mut tokio_postgres::Client,
        site_id: i32,
        site: &str,
        catalog_hash: u64,
        layouts: &Layouts,
    ) -> Result<(), tokio_postgres::Error> {
        let set = self.current();
        if set.derived.is_empty() {
            return Ok(());
        }
        let known = self.plan_of(site_id, catalog_hash);
        let mut engine_has_it = self
            .derived
            .lock()
            .expect("derived lock")
            .has_plan(site_id, catalog_hash);
        if let (Some((plan, layouts)), false) = (known, engine_has_it) {
            self.derived.lock().expect("derived lock").install(
                site_id,
                catalog_hash,
                plan,
                layouts,
            );
            engine_has_it = true;
        }
        if engine_has_it {
            return Ok(());
        }
        let site_plan = Arc::new(plan(&set.derived, site, layouts));
        for (point, reason) in &site_plan.skipped {
            tracing::info!(site, point, "derived point left out: {reason}");
        }
        let derived = if site_plan.is_empty() {
            Arc::new(CatalogLayouts {
                groups: Vec::new(),
                device_ids: Vec::new(),
            })
        } else {
            let hash = site_plan.catalog.hash();
            catalogs
                .register(client, site_id, hash, &site_plan.catalog)
                .await?
        };
        self.plans.lock().expect("plans lock").insert(
            (site_id, catalog_hash),
            (site_plan.clone(), derived.clone()),
        );
        self.derived.lock().expect("derived lock").install(
            site_id,
            catalog_hash,
            site_plan,
            derived,
        );
        Ok(())
    }

    /// A planned site catalog version's derived plan (see
    /// [`prepare_derived`](Self::prepare_derived)).
    pub fn plan_of(&self, site_id: i32, catalog_hash: u64) -> Option<DerivedPlan> {
        self.plans
            .lock()
            .expect("plans lock")
            .get(&(site_id, catalog_hash))
            .cloned()
    }

    /// The derived frames the new batches' frames complete, per batch.
    pub fn derive(&self, batches: &[(i32, u64, &[PolledFrame])]) -> Vec<Vec<PolledFrame>> {
        let mut engine = self.derived.lock().expect("derived lock");
        let out = batches
            .iter()
            .map(|(site_id, catalog, frames)| {
                let mut out = Vec::new();
                for frame in *frames {
                    engine.evaluate(*site_id, *catalog, frame, &mut out);
                }
                out
            })
            .collect();
        metrics::gauge!("bess_collector_derived_frames_skipped_late")
            .set(engine.skipped_late() as f64);
        out
    }

    /// Swap the rule set: open episodes of removed rules are closed, every
    /// cached state is reloaded from the database as it is needed (the
    /// derived points' only when they changed).
    pub async fn replace(
        &self,
        set: RuleSet,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<(), tokio_postgres::Error> {
        store::close_removed_rules(client, &set).await?;
        let set = Arc::new(set);
        let previous = self.published.send_replace(set.clone());
        self.engine
            .lock()
            .expect("engine lock")
            .replace_rules(set.clone());
        if previous.derived != set.derived {
            self.derived.lock().expect("derived lock").clear();
            self.plans.lock().expect("plans lock").clear();
        }
        self.offline.seed(client, &set).await?;
        Ok(())
    }

    /// Evaluate the new batches of a transaction and persist what changed,
    /// in that transaction.
    pub async fn evaluate(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        batches: &[CommittedBatch<'_>],
    ) -> Result<Evaluated, tokio_postgres::Error> {
        let mut evaluated = Evaluated::default();
        if batches.is_empty() {
            return Ok(evaluated);
        }
        let site_ids: HashSet<i32> = batches.iter().map(|b| b.site_id).collect();
        let to_load: Vec<i32> = {
            let engine = self.engine.lock().expect("engine lock");
            site_ids
                .iter()
                .copied()
                .filter(|id| engine.needs_load(*id))
                .collect()
        };
        let loaded = if to_load.is_empty() {
            HashMap::new()
        } else {
            store::load_sites(tx, &to_load).await?
        };
        let rules = {
            let mut engine = self.engine.lock().expect("engine lock");
            for (site_id, persisted) in loaded {
                engine.load_site(site_id, persisted);
            }
            for batch in batches {
                for frame in batch.frames {
                    engine.evaluate(batch.site_id, frame, &mut evaluated.changes);
                }
            }
            metrics::gauge!("bess_collector_rule_readings_out_of_order")
                .set(engine.out_of_order() as f64);
            engine.rules().clone()
        };
        let now_ms = unix_ms_now();
        evaluated
            .changes
            .extend(self.offline.resolutions(&rules, &site_ids, now_ms));
        for batch in batches {
            if let Some(frame) = batch.frames.first() {
                evaluated
                    .sites
                    .push((batch.site_id, frame.site.clone(), batch.partition));
            }
        }
        evaluated.persisted = store::persist(tx, &rules, &evaluated.changes).await?;
        Ok(evaluated)
    }

    /// After COMMIT of a transaction [`evaluate`](Self::evaluate) wrote to.
    pub fn committed(&self, evaluated: &Evaluated) {
        let rules = self.current();
        self.offline.settled(&rules, &evaluated.changes);
        self.offline.arrived(
            evaluated.sites.iter().map(|(id, name, p)| (*id, name, *p)),
            unix_ms_now(),
        );
        record(&evaluated.persisted, &self.queued);
    }

    /// After a failed transaction: what the engine moved for these sites
    /// was never persisted, so it is reloaded before their next frames.
    pub fn failed(&self, site_ids: impl IntoIterator<Item = i32>) {
        let site_ids: Vec<i32> = site_ids.into_iter().collect();
        self.derived
            .lock()
            .expect("derived lock")
            .forget_sites(&site_ids);
        self.engine
            .lock()
            .expect("engine lock")
            .forget_sites(site_ids);
    }

    /// Check offline rules every second until cancelled. `assigned` gives
    /// the partitions of the stored topic this instance owns now (`None`
    /// while it owns none).
    pub async fn run_offline_checks(
        self: Arc<Self>,
        pool: deadpool_postgres::Pool,
        assigned: impl Fn() -> HashSet<i32> + Send,
        cancel: CancellationToken,
    ) {
        let mut owned: Option<HashSet<i32>> = None;
        let mut tick = tokio::time::interval(OFFLINE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now_owned = assigned();
            if let Err(e) = self.check_offline(&pool, &mut owned, now_owned).await {
                tracing::warn!("offline rules: {e}");
                owned = None;
            }
        }
    }

    async fn check_offline(
        &self,
        pool: &deadpool_postgres::Pool,
        owned: &mut Option<HashSet<i32>>,
        now_owned: HashSet<i32>,
    ) -> anyhow::Result<()> {
        let mut client = pool.get().await?;
        if owned.as_ref() != Some(&now_owned) {
            // Partitions moved: another instance may have moved their sites'
            // rules on; reload them before their next frames.
            self.engine.lock().expect("engine lock").forget_all();
            let rules = self.current();
            self.offline.seed(&**client, &rules).await?;
            *owned = Some(now_owned.clone());
        }
        let rules = self.current();
        let due = self.offline.due(&rules, &now_owned, unix_ms_now());
        if due.is_empty() {
            return Ok(());
        }
        let tx = client.transaction().await?;
        let persisted = store::persist(&*tx, &rules, &due).await?;
        tx.commit().await?;
        self.offline.settled(&rules, &due);
        record(&persisted, &self.queued);
        Ok(())
    }
}

fn record(persisted: &Persisted, queued: &tokio::sync::Notify) {
    if persisted.notifications > 0 {
        queued.notify_one();
    }
    metrics::counter!("bess_collector_alert_episodes_fired_total").increment(persisted.fired);
    metrics::counter!("bess_collector_alert_episodes_resolved_total").increment(persisted.resolved);
    metrics::counter!("bess_collector_notifications_queued_total")
        .increment(persisted.notifications);
}

impl PlanSource for Rules {
    fn plan_of(&self, site_id: i32, catalog_hash: u64) -> Option<DerivedPlan> {
        Rules::plan_of(self, site_id, catalog_hash)
    }

    fn declares_any(&self) -> bool {
        !self.current().derived.is_empty()
    }
}
