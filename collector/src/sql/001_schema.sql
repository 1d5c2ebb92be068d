-- Sites, their catalogs, devices and points, registered from the catalogs the edges send.
CREATE TABLE sites (
    site_id    serial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz
);

CREATE TABLE catalogs (
    site_id      int NOT NULL REFERENCES sites,
    catalog_hash bigint NOT NULL,
    body         jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, catalog_hash)
);

CREATE TABLE devices (
    device_id serial PRIMARY KEY,
    site_id   int NOT NULL REFERENCES sites,
    name      text NOT NULL,
    model     text NOT NULL DEFAULT '',
    UNIQUE (site_id, name)
);

-- A point keeps its id across catalog versions as long as device and name stay.
CREATE TABLE points (
    point_id  serial PRIMARY KEY,
    device_id int NOT NULL REFERENCES devices,
    name      text NOT NULL,
    unit      text NOT NULL DEFAULT '',
    kind      text NOT NULL,
    UNIQUE (device_id, name)
);

-- One poll group of one catalog version: which point sits in which array slot.
CREATE TABLE layouts (
    layout_id    serial PRIMARY KEY,
    site_id      int NOT NULL REFERENCES sites,
    catalog_hash bigint NOT NULL,
    group_index  int NOT NULL,
    device_id    int NOT NULL REFERENCES devices,
    group_name   text NOT NULL,
    interval_ms  int NOT NULL,
    point_ids    int[] NOT NULL,
    UNIQUE (site_id, catalog_hash, group_index)
);
CREATE INDEX layouts_point_ids ON layouts USING gin (point_ids);

-- One row per polled frame: engineering values in catalog order; NULL where
-- missing, with the reason in `status` (NULL when every value is good).
CREATE TABLE frames (
    layout_id int NOT NULL,
    ts        timestamptz NOT NULL,
    vals      float8[] NOT NULL,
    status    int2[]
);
CREATE INDEX frames_layout_ts ON frames (layout_id, ts);

-- Every batch written, by (site, sequence): a redelivered batch finds its row and is skipped.
CREATE TABLE batch_ledger (
    site_id      int NOT NULL,
    seq          bigint NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset bigint NOT NULL,
    frames       int NOT NULL,
    samples      int NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, seq)
);

-- Messages that are not valid batches, set aside with the reason.
CREATE TABLE rejected_messages (
    id              bigserial PRIMARY KEY,
    kafka_topic     text NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset    bigint NOT NULL,
    message_key     bytea,
    reason          text NOT NULL,
    payload         bytea NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);
