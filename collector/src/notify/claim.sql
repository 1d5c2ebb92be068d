-- Claim up to $1 due notifications for $2 seconds (the lease), oldest due
-- first, with what their payload needs.
--
-- The lease is `next_attempt_at` pushed into the future: another instance
-- running this statement skips the rows while it is locked (SKIP LOCKED)
-- and, once committed, no longer sees them as due. A row waits while an
-- earlier row of the same episode and receiver is undelivered, so
-- `resolved` never overtakes `firing`. Only outbox rows are locked;
-- alert_episodes and sites are read.
WITH due AS (
    SELECT o.notification_id
    FROM notification_outbox o
    WHERE o.delivered_at IS NULL
      AND o.next_attempt_at <= now()
      AND NOT EXISTS (
          SELECT 1
          FROM notification_outbox earlier
          WHERE earlier.episode_id = o.episode_id
            AND earlier.receiver = o.receiver
            AND earlier.delivered_at IS NULL
            AND earlier.notification_id < o.notification_id
      )
    ORDER BY o.next_attempt_at, o.notification_id
    LIMIT $1
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE notification_outbox n
SET next_attempt_at = now() + make_interval(secs => $2)
FROM due, alert_episodes e, sites s
WHERE n.notification_id = due.notification_id
  AND e.episode_id = n.episode_id
  AND s.site_id = e.site_id
RETURNING
    n.notification_id,
    n.transition = 'resolved' AS resolved,
    n.receiver,
    n.idempotency_key,
    n.attempts,
    n.next_attempt_at AS lease_until,
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
