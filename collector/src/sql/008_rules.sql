-- Alert rules on the committed stream (collector/src/rules/) and the
-- notifications they send (collector/src/notify/).
--
-- rule_state: where a (rule, target) stands between episodes: `pending`
-- (the condition holds, its for-duration has not passed yet) with the
-- event time it began. A target with no row is `ok`, or `firing` when
-- alert_episodes has an open episode for it. Written in the transaction
-- that commits the readings that moved it, so a redelivered batch (skipped
-- by the ledger) never moves it twice.
CREATE TABLE rule_state (
    rule        text NOT NULL,
    site_id     int NOT NULL REFERENCES sites,
    target      text NOT NULL,
    phase       text NOT NULL CHECK (phase IN ('pending')),
    since       timestamptz NOT NULL,
    peak        float8,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, site_id, target)
);
CREATE INDEX rule_state_site ON rule_state (site_id);

-- One row per episode: the condition held for its for-duration at
-- `started_at` (event time, the reading's timestamp) and stopped holding at
-- `ended_at` (NULL while firing). `late`: detected a while after the
-- readings that started or ended it (a backlog after an outage).
CREATE TABLE alert_episodes (
    episode_id      bigserial PRIMARY KEY,
    rule            text NOT NULL,
    site_id         int NOT NULL REFERENCES sites,
    -- `DEVICE/POINT`, `DEVICE` or '' (the whole site), by the rule's kind.
    target          text NOT NULL,
    severity        text NOT NULL,
    summary         text NOT NULL DEFAULT '',
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    peak            float8,
    late            boolean NOT NULL DEFAULT false,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    resolved_detected_at timestamptz,
    acknowledged_by text,
    acknowledged_at timestamptz,
    ack_note        text
);
-- At most one open episode per (rule, target): a second instance that
-- evaluates the same readings conflicts here and fires nothing.
CREATE UNIQUE INDEX alert_episodes_open ON alert_episodes (rule, site_id, target) WHERE ended_at IS NULL;
CREATE INDEX alert_episodes_site_started ON alert_episodes (site_id, started_at DESC);

-- Silences (maintenance windows): episodes of matching rules and targets
-- are recorded but not notified until `ends_at`. NULL matches anything.
CREATE TABLE alert_silences (
    silence_id  bigserial PRIMARY KEY,
    site_id     int REFERENCES sites,
    device      text,
    rule        text,
    starts_at   timestamptz NOT NULL DEFAULT now(),
    ends_at     timestamptz NOT NULL,
    created_by  text NOT NULL,
    comment     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX alert_silences_ends ON alert_silences (ends_at);

-- The transactional outbox: one row per (episode transition, receiver),
-- inserted with the transition, delivered by the notifier after COMMIT.
-- `idempotency_key` is the same for every retry of one delivery, so a
-- receiver can deduplicate.
CREATE TABLE notification_outbox (
    notification_id bigserial PRIMARY KEY,
    episode_id      bigint NOT NULL REFERENCES alert_episodes,
    transition      text NOT NULL CHECK (transition IN ('firing', 'resolved')),
    receiver        text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX notification_outbox_episode ON notification_outbox (episode_id);
