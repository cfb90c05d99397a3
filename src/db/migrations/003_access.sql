-- optin control plane, schema version 2: the people's side (issue 14; docs/control-plane.md,
-- "The web app and the access API"). Times are bigint ms; ids pseudonymous.

-- Sign-in ------------------------------------------------------------------------------------

-- Server-side sessions of people signed in through the identity provider. The cookie holds a
-- 256-bit random id; only its sha256 is stored, so a copy of this table opens no session.
-- Revoked by sign-out, by an operator (all sessions of a subject), or at expiry.
CREATE TABLE web_sessions (
  id_sha256        text PRIMARY KEY,
  subject          text   NOT NULL,
  role             text   NOT NULL CHECK (role IN ('agent', 'team-lead', 'dpo', 'extract-operator')),
  -- Synchronizer token for CSRF protection: sent back in a form field or the X-CSRF-Token header.
  csrf_token       text   NOT NULL,
  created_at_ms    bigint NOT NULL,
  last_seen_ms     bigint NOT NULL,
  -- Absolute end, whatever the activity.
  expires_at_ms    bigint NOT NULL,
  revoked_at_ms    bigint,
  revoked_reason   text
);
CREATE INDEX web_sessions_subject ON web_sessions (subject);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at_ms);

-- An authorization request in flight (RFC 6749 §4.1, PKCE RFC 7636): state -> code verifier and
-- nonce, bound to the browser that started it by a cookie whose sha256 is `binding_sha256`.
-- Taken (deleted) by the callback; abandoned ones are purged after ten minutes.
CREATE TABLE login_transactions (
  state            text PRIMARY KEY,
  binding_sha256   text   NOT NULL,
  code_verifier    text   NOT NULL,
  nonce            text   NOT NULL,
  return_to        text   NOT NULL,
  created_at_ms    bigint NOT NULL
);
CREATE INDEX login_transactions_age ON login_transactions (created_at_ms);

-- Deletion requests ------------------------------------------------------------------------------

-- An agent asks their team lead to delete a recording (R9). One open request per recording; the
-- team lead's deletion closes it with the ledger's deletion id (whose receipt the ledger keeps).
CREATE TABLE deletion_requests (
  recording_id     text PRIMARY KEY,
  requested_by     text   NOT NULL,
  requested_at_ms  bigint NOT NULL,
  -- The team leads of the requesting agent when they asked: who sees it in their queue.
  team_lead_ids    text[] NOT NULL DEFAULT '{}',
  state            text   NOT NULL CHECK (state IN ('pending', 'deleted', 'closed')),
  closed_at_ms     bigint,
  closed_by        text,
  deletion_id      text
);
CREATE INDEX deletion_requests_pending ON deletion_requests USING gin (team_lead_ids) WHERE state = 'pending';
CREATE INDEX deletion_requests_by ON deletion_requests (requested_by);
CREATE INDEX deletion_requests_closed ON deletion_requests (closed_at_ms) WHERE state <> 'pending';

-- Subject-access extracts ------------------------------------------------------------------------

-- A job per subject-access request. The package itself (audio + manifest) is held in the memory
-- of the replica that made it (`replica_id`) until `expires_at_ms`, and dropped at once when one
-- of its recordings is deleted or its subject erased (state 'withdrawn').
CREATE TABLE extract_jobs (
  id               text PRIMARY KEY,
  owner            text   NOT NULL,
  subject_id       text   NOT NULL,
  case_ref         text   NOT NULL,
  format           text   NOT NULL CHECK (format IN ('ogg', 'wav')),
  state            text   NOT NULL CHECK (state IN ('queued', 'running', 'ready', 'failed', 'expired', 'withdrawn')),
  progress_done    int    NOT NULL DEFAULT 0,
  progress_total   int    NOT NULL DEFAULT 0,
  recording_ids    text[] NOT NULL DEFAULT '{}',
  -- [{name, contentType, bytes, sha256}] once ready.
  files            jsonb  NOT NULL DEFAULT '[]',
  replica_id       text   NOT NULL,
  error            text,
  created_at_ms    bigint NOT NULL,
  updated_at_ms    bigint NOT NULL,
  expires_at_ms    bigint
);
CREATE INDEX extract_jobs_owner ON extract_jobs (owner, created_at_ms);
CREATE INDEX extract_jobs_age ON extract_jobs (updated_at_ms);

-- The catalogue, read by people ---------------------------------------------------------------

-- The DPO lists every recording, newest first; the extract finds a subject's recordings.
CREATE INDEX recordings_started ON recordings (started_at_ms DESC, recording_id DESC);
CREATE INDEX recordings_participants ON recordings USING gin (participants jsonb_path_ops);
