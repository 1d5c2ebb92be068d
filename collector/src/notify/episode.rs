//! What a notification is about: an episode as its receivers see it, and
//! which of its two transitions is being announced.

use time::OffsetDateTime;

/// The edge of an episode a notification announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The condition started holding (the episode opened).
    Firing,
    /// The condition stopped holding (the episode closed).
    Resolved,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Firing => "firing",
            Transition::Resolved => "resolved",
        }
    }
}

/// An episode of `alert_episodes`, with its site's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub id: i64,
    pub rule: String,
    pub severity: String,
    pub site: String,
    /// `DEVICE/POINT`, `DEVICE` or empty (the whole site).
    pub target: String,
    pub summary: String,
    /// Event time the condition began holding (a reading's timestamp).
    pub started_at: OffsetDateTime,
    /// Event time it stopped holding; `None` while firing.
    pub ended_at: Option<OffsetDateTime>,
    pub peak: Option<f64>,
    /// Detected a while after the readings (a backlog after an outage).
    pub late: bool,
}

impl Episode {
    /// From a row whose columns are named as in `claim.sql` and
    /// `open_episodes.sql`.
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Episode {
            id: row.try_get("episode_id")?,
            rule: row.try_get("rule")?,
            severity: row.try_get("severity")?,
            site: row.try_get("site")?,
            target: row.try_get("target")?,
            summary: row.try_get("summary")?,
            started_at: row.try_get("started_at")?,
            ended_at: row.try_get("ended_at")?,
            peak: row.try_get("peak")?,
            late: row.try_get("late")?,
        })
    }
}
