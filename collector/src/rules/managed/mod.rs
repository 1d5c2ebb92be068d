//! Alert rules managed over the API, beside the rules file: where the set
//! in force comes from, and the changes an admin makes to it.
//!
//! The rules in force are the file's rules followed by the enabled API
//! rules (`api_rules`, migration 9), by name. Receivers and derived points
//! stay the file's alone for now: an API rule names the file's receivers.
//!
//! - **One check.** An API rule is its JSON object of fields, read by the
//!   rules file's own parser after the file's receivers
//!   ([`RuleDefinition::check`]): it is refused for exactly what would
//!   refuse it in the file.
//! - **Names are unique across both.** Creating a rule with a name the file
//!   or another API rule uses is refused. Should a later file (SIGHUP)
//!   bring a name an API rule has, the file wins: the API rule is skipped,
//!   with a warning, until it is deleted or the file drops the name. An API
//!   rule that no longer checks against a new file (a receiver it names is
//!   gone) is skipped the same way. Skipped rules are listed as such.
//!   Each instance merges with its own file: instances with different
//!   files may skip different API rules.
//! - **Every instance follows.** A change writes `api_rules` and bumps
//!   the one-row `api_rules_version` in one transaction; the instance that
//!   made it merges at once, every other one when its poll (every
//!   [`API_RULES_POLL`]) sees the version move. A merge loads the rules and
//!   their version in one statement and puts the merged set in force with
//!   [`Rules::replace`], which closes the open episodes of rules that left
//!   the set (disabled, deleted, skipped). Merges never interleave.
//! - **Scope.** An actor of every site manages any API rule; a site-scoped
//!   one only rules whose `site` is one of its sites by name (no pattern),
//!   before and after the change.

mod definition;
mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use definition::{describe, FieldProblem, RuleDefinition};
pub use store::ApiRuleRecord;

use super::model::{Rule, RuleSet};
use super::Rules;
use crate::auth::SiteScope;

/// How often an instance looks at the API rules' version.
pub const API_RULES_POLL: Duration = Duration::from_secs(2);

/// What the rules in force were merged from.
#[derive(Debug)]
pub struct Sources {
    /// The rules file's set, as last loaded.
    pub file: Arc<RuleSet>,
    /// Every API rule, by name, with what became of it.
    pub api: Vec<ApiRule>,
    /// The API rules' version merged; `None` before the first merge.
    pub version: Option<i64>,
}

impl Sources {
    pub fn file_defines(&self, name: &str) -> bool {
        self.file.rules.iter().any(|r| r.name == name)
    }
}

/// One API rule and what became of it.
#[derive(Debug, Clone)]
pub struct ApiRule {
    pub record: ApiRuleRecord,
    pub status: ApiRuleStatus,
}

/// An API rule as a change left it: stored, and checked.
#[derive(Debug, Clone)]
pub struct ChangedRule {
    pub record: ApiRuleRecord,
    pub rule: Rule,
}

#[derive(Debug, Clone)]
pub enum ApiRuleStatus {
    InForce(Rule),
    /// Checked, kept, not evaluated.
    Disabled(Rule),
    /// Not in force, and why: the file defines its name, or it no longer
    /// checks against the file.
    Skipped(String),
}

/// Held by [`Rules`]: the last merge's sources, and the lock that keeps
/// merges apart.
pub struct RuleSources {
    merging: tokio::sync::Mutex<()>,
    sources: Mutex<Arc<Sources>>,
}

impl RuleSources {
    /// The file's set, no API rule merged yet.
    pub(super) fn new(file: RuleSet) -> Self {
        Self {
            merging: tokio::sync::Mutex::new(()),
            sources: Mutex::new(Arc::new(Sources {
                file: Arc::new(file),
                api: Vec::new(),
                version: None,
            })),
        }
    }
}

/// Who makes a change: a name for the audit columns, and the sites it may
/// manage rules of.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub scope: SiteScope,
}

/// Why a change to the API rules was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManagedRuleError {
    /// The definition does not check: every problem, each with its field.
    #[error("invalid rule: {}", describe(.0))]
    Invalid(Vec<FieldProblem>),
    #[error("a rule named {0:?} is defined in the rules file; choose another name")]
    NameInFile(String),
    #[error("a rule named {0:?} exists already (created over the API): replace it, or choose another name")]
    NameTaken(String),
    /// A change to a rule of the rules file.
    #[error("rule {0:?} is defined in the rules file; edit the file")]
    FileRule(String),
    #[error("no rule named {0:?} was created over the API")]
    NotFound(String),
    /// A site-scoped actor, and a rule not of one of its sites.
    #[error("{0}")]
    OutOfScope(String),
    /// Enabling or disabling a rule that no longer checks against the
    /// rules file (it is not in force either way).
    #[error("rule {name:?} no longer checks against the rules file ({}): replace its definition, or delete it", describe(.problems))]
    NoLongerValid {
        name: String,
        problems: Vec<FieldProblem>,
    },
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// The set in force from the file's set and the API rules: the file's
/// rules, then the enabled API rules that check and whose names the file
/// does not use. Every API rule comes back with what became of it.
pub fn merge(file: &RuleSet, records: Vec<ApiRuleRecord>) -> (RuleSet, Vec<ApiRule>) {
    let mut set = file.clone();
    let api = records
        .into_iter()
        .map(|record| {
            let status = if file.rules.iter().any(|r| r.name == record.name) {
                ApiRuleStatus::Skipped(
                    "the rules file defines a rule of this name; the file's is in force".into(),
                )
            } else {
                match (record.definition.check(&file.receivers), record.enabled) {
                    (Ok(rule), true) => {
                        set.rules.push(rule.clone());
                        ApiRuleStatus::InForce(rule)
                    }
                    (Ok(rule), false) => ApiRuleStatus::Disabled(rule),
                    (Err(problems), _) => ApiRuleStatus::Skipped(format!(
                        "no longer checks against the rules file: {}",
                        describe(&problems)
                    )),
                }
            };
            if let ApiRuleStatus::Skipped(reason) = &status {
                tracing::warn!(rule = %record.name, "API rule not in force: {reason}");
            }
            ApiRule { record, status }
        })
        .collect();
    (set, api)
}

/// Refused unless `scope` may manage a rule of `site` (as written).
fn may_manage(scope: &SiteScope, site: &str) -> Result<(), ManagedRuleError> {
    match scope {
        SiteScope::All => Ok(()),
        SiteScope::Only(sites) if !site.contains(['*', '?']) && sites.contains(site) => Ok(()),
        SiteScope::Only(sites) => Err(ManagedRuleError::OutOfScope(format!(
            "this token manages only rules of its own sites: `site` must be one of {} (a site name, not a pattern), not {site:?}",
            sites.iter().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

impl Rules {
    /// What the rules in force were merged from.
    pub fn sources(&self) -> Arc<Sources> {
        self.rule_sources()
            .sources
            .lock()
            .expect("sources lock")
            .clone()
    }

    /// Merge the API rules in the database with the file's rules and put
    /// the set in force (at start, and after a change).
    pub async fn refresh_api_rules(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<Arc<Sources>, tokio_postgres::Error> {
        self.merge_in(None, client).await
    }

    /// A new rules file (SIGHUP): merged with the API rules and put in force.
    pub async fn replace_file(
        &self,
        file: RuleSet,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<Arc<Sources>, tokio_postgres::Error> {
        self.merge_in(Some(file), client).await
    }

    async fn merge_in(
        &self,
        file: Option<RuleSet>,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<Arc<Sources>, tokio_postgres::Error> {
        let _merging = self.rule_sources().merging.lock().await;
        let file = file.map_or_else(|| self.sources().file.clone(), Arc::new);
        let (version, records) = store::load(client).await?;
        let (set, api) = merge(&file, records);
        self.replace(set, client).await?;
        let skipped = api
            .iter()
            .filter(|a| matches!(a.status, ApiRuleStatus::Skipped(_)))
            .count();
        metrics::gauge!("bess_collector_api_rules_skipped").set(skipped as f64);
        let sources = Arc::new(Sources {
            file,
            api,
            version: Some(version),
        });
        *self.rule_sources().sources.lock().expect("sources lock") = sources.clone();
        Ok(sources)
    }

    /// Follow the API rules' version every [`API_RULES_POLL`] until
    /// cancelled, merging when it moves: a change made on any instance is
    /// in force here within one poll.
    pub async fn poll_api_rules(
        self: Arc<Self>,
        pool: deadpool_postgres::Pool,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(API_RULES_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.follow_api_rules(&pool).await {
                metrics::counter!("bess_collector_api_rules_poll_failures_total").increment(1);
                tracing::warn!("API rules not followed: {e:#}");
            }
        }
    }

    async fn follow_api_rules(&self, pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
        let client = pool.get().await?;
        let version = store::version(&**client).await?;
        if self.sources().version == Some(version) {
            return Ok(());
        }
        let sources = self.refresh_api_rules(&**client).await?;
        let in_force = sources
            .api
            .iter()
            .filter(|a| matches!(a.status, ApiRuleStatus::InForce(_)))
            .count();
        tracing::info!(
            version = sources.version,
            api_rules = sources.api.len(),
            in_force,
            "API rules merged"
        );
        Ok(())
    }

    /// Create an API rule; it is in force here on return, on every other
    /// instance within a poll.
    pub async fn create_api_rule(
        &self,
        client: &mut tokio_postgres::Client,
        definition: RuleDefinition,
        actor: &Actor,
    ) -> Result<ChangedRule, ManagedRuleError> {
        // Outside the actor's sites is refused before anything else is said.
        if let Some(site) = definition.site() {
            may_manage(&actor.scope, site)?;
        }
        let sources = self.sources();
        let rule = definition
            .check(&sources.file.receivers)
            .map_err(ManagedRuleError::Invalid)?;
        may_manage(&actor.scope, &rule.target.site.0)?;
        if sources.file_defines(&rule.name) {
            return Err(ManagedRuleError::NameInFile(rule.name));
        }
        let tx = client.transaction().await?;
        let Some(record) = store::insert(&tx, &rule.name, &definition, &actor.name).await? else {
            return Err(ManagedRuleError::NameTaken(rule.name));
        };
        store::bump(&tx).await?;
        tx.commit().await?;
        self.after_change(client).await;
        Ok(ChangedRule { record, rule })
    }

    /// Replace an API rule's definition (its name stays; so does whether it
    /// is enabled).
    pub async fn replace_api_rule(
        &self,
        client: &mut tokio_postgres::Client,
        name: &str,
        mut definition: RuleDefinition,
        actor: &Actor,
    ) -> Result<ChangedRule, ManagedRuleError> {
        let sources = self.sources();
        if sources.file_defines(name) {
            return Err(ManagedRuleError::FileRule(name.to_owned()));
        }
        let tx = client.transaction().await?;
        let existing = store::lock(&tx, name)
            .await?
            .ok_or_else(|| ManagedRuleError::NotFound(name.to_owned()))?;
        may_manage(&actor.scope, existing.definition.site().unwrap_or("*"))?;
        if let Some(site) = definition.site() {
            may_manage(&actor.scope, site)?;
        }
        if definition.fields().contains_key("name") && definition.name() != Some(name) {
            return Err(ManagedRuleError::Invalid(vec![FieldProblem {
                field: "name".into(),
                message: format!(
                    "must be {name:?}, the name in the path: a rule is not renamed (create the new one, delete this one)"
                ),
            }]));
        }
        definition.name_if_absent(name);
        let rule = definition
            .check(&sources.file.receivers)
            .map_err(ManagedRuleError::Invalid)?;
        may_manage(&actor.scope, &rule.target.site.0)?;
        let record = store::update(&tx, name, &definition, existing.enabled, &actor.name).await?;
        store::bump(&tx).await?;
        tx.commit().await?;
        self.after_change(client).await;
        Ok(ChangedRule { record, rule })
    }

    /// Enable or disable an API rule. Disabling closes its open episodes
    /// (as for a rule removed from the file). Either checks it again
    /// against the rules file: one that no longer checks is refused (it is
    /// out of force already; replace or delete it).
    pub async fn set_api_rule_enabled(
        &self,
        client: &mut tokio_postgres::Client,
        name: &str,
        enabled: bool,
        actor: &Actor,
    ) -> Result<ChangedRule, ManagedRuleError> {
        let sources = self.sources();
        if sources.file_defines(name) {
            return Err(ManagedRuleError::FileRule(name.to_owned()));
        }
        let tx = client.transaction().await?;
        let existing = store::lock(&tx, name)
            .await?
            .ok_or_else(|| ManagedRuleError::NotFound(name.to_owned()))?;
        may_manage(&actor.scope, existing.definition.site().unwrap_or("*"))?;
        let rule = existing
            .definition
            .check(&sources.file.receivers)
            .map_err(|problems| ManagedRuleError::NoLongerValid {
                name: name.to_owned(),
                problems,
            })?;
        if existing.enabled == enabled {
            return Ok(ChangedRule {
                record: existing,
                rule,
            });
        }
        let record = store::update(&tx, name, &existing.definition, enabled, &actor.name).await?;
        store::bump(&tx).await?;
        tx.commit().await?;
        self.after_change(client).await;
        Ok(ChangedRule { record, rule })
    }

    /// Delete an API rule; its open episodes are closed.
    pub async fn delete_api_rule(
        &self,
        client: &mut tokio_postgres::Client,
        name: &str,
        actor: &Actor,
    ) -> Result<(), ManagedRuleError> {
        let tx = client.transaction().await?;
        let Some(existing) = store::lock(&tx, name).await? else {
            return Err(if self.sources().file_defines(name) {
                ManagedRuleError::FileRule(name.to_owned())
            } else {
                ManagedRuleError::NotFound(name.to_owned())
            });
        };
        may_manage(&actor.scope, existing.definition.site().unwrap_or("*"))?;
        store::delete(&tx, name).await?;
        store::bump(&tx).await?;
        tx.commit().await?;
        self.after_change(client).await;
        Ok(())
    }

    /// After a committed change: in force here now. Should the merge fail,
    /// the change is stored all the same and the next poll merges it.
    async fn after_change(&self, client: &tokio_postgres::Client) {
        if let Err(e) = self.refresh_api_rules(client).await {
            tracing::warn!("API rules changed but not merged yet (the next poll will): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;
    use crate::rules::config;

    const FILE: &str = r#"
[[rule]]
name = "soc-low"
kind = "threshold"
point = "soc"
below = 10

[[receiver]]
name = "ops"
kind = "alertmanager"
url = "http://127.0.0.1:9093"
"#;

    fn file() -> RuleSet {
        config::parse_with_env(FILE, std::path::Path::new("rules.toml"), &|_| None).unwrap()
    }

    fn record(definition: serde_json::Value, enabled: bool) -> ApiRuleRecord {
        let definition = RuleDefinition::from_json(definition).unwrap();
        ApiRuleRecord {
            name: definition.name().unwrap().to_owned(),
            definition,
            enabled,
            created_by: "admin".into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_by: "admin".into(),
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn names(set: &RuleSet) -> Vec<&str> {
        set.rules.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn the_set_is_the_files_rules_then_the_enabled_api_rules() {
        let file = file();
        let (set, api) = merge(
            &file,
            vec![
                record(
                    json!({ "name": "a-stale", "kind": "stale", "after": "1m" }),
                    true,
                ),
                record(
                    json!({ "name": "b-off", "kind": "stale", "after": "1m" }),
                    false,
                ),
            ],
        );
        assert_eq!(names(&set), ["soc-low", "a-stale"]);
        assert_eq!(set.receivers, file.receivers, "receivers are the file's");
        assert!(matches!(api[0].status, ApiRuleStatus::InForce(_)));
        assert!(matches!(api[1].status, ApiRuleStatus::Disabled(_)));
    }

    #[test]
    fn the_file_wins_a_name_both_use() {
        let (set, api) = merge(
            &file(),
            vec![record(
                json!({ "name": "soc-low", "kind": "stale", "after": "1m" }),
                true,
            )],
        );
        assert_eq!(names(&set), ["soc-low"]);
        assert_eq!(
            set.rules[0].condition.kind(),
            "threshold",
            "the file's rule"
        );
        assert!(
            matches!(&api[0].status, ApiRuleStatus::Skipped(why) if why.contains("rules file defines")),
            "{api:?}"
        );
    }

    #[test]
    fn a_rule_that_no_longer_checks_against_the_file_is_skipped() {
        let (set, api) = merge(
            &file(),
            vec![record(
                json!({ "name": "paged", "kind": "stale", "after": "1m", "receivers": ["pager"] }),
                true,
            )],
        );
        assert_eq!(names(&set), ["soc-low"]);
        assert!(
            matches!(&api[0].status, ApiRuleStatus::Skipped(why) if why.contains("`receivers[0]`")),
            "{api:?}"
        );
    }

    #[test]
    fn a_scoped_actor_manages_rules_of_its_sites_by_name_only() {
        let scope = SiteScope::Only(["site-a".to_owned()].into());
        assert!(may_manage(&scope, "site-a").is_ok());
        for site in ["site-b", "site-*", "*", "site-?"] {
            assert!(may_manage(&scope, site).is_err(), "{site}");
        }
        assert!(may_manage(&SiteScope::All, "*").is_ok());
    }
}
