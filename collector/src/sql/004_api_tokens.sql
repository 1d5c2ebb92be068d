-- API tokens. Only the SHA-256 of a token is stored; the token itself is
-- shown once, when it is created. `sites` NULL means every site.
CREATE TABLE api_tokens (
    token_id     serial PRIMARY KEY,
    name         text NOT NULL,
    token_hash   bytea NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('read', 'operate', 'admin')),
    sites        text[],
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
