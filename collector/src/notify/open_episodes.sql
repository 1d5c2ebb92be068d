-- Open episodes whose `firing` notification each of the receivers in $1
-- (Alertmanager receivers) has taken: what they must hear again before
-- their resolve_timeout. An episode never announced to a receiver
-- (silenced, or not notified by its rule) is not re-sent to it either.
SELECT DISTINCT
    o.receiver,
    e.episode_id,
    e.rule,
    e.severity,
    s.name AS site,
    e.target,
    e.summary,
    e.started_at,
    e.ended_at,
    e.peak,
    e.late
FROM alert_episodes e
JOIN sites s ON s.site_id = e.site_id
JOIN notification_outbox o ON o.episode_id = e.episode_id
WHERE e.ended_at IS NULL
  AND o.transition = 'firing'
  AND o.delivered_at IS NOT NULL
  AND o.receiver = ANY($1)
ORDER BY o.receiver, e.episode_id
