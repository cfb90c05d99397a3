-- optin control plane, schema version 1 (docs/control-plane.md, "Data model").
-- Times are integer milliseconds since the Unix epoch (bigint *_ms), as on the policy stream.
-- Ids are the pseudonymous ids of src/ids (never personal data).

-- The policy stream ---------------------------------------------------------------------------

-- The last assigned sequence number. A fact takes the next one with
-- UPDATE stream_head SET seq = seq + 1 RETURNING seq inside its own transaction: the row lock
-- serialises writers, so commit order equals seq order and no reader ever sees a gap.
CREATE TABLE stream_head (
  id  int PRIMARY KEY CHECK (id = 1),
  seq bigint NOT NULL CHECK (seq >= 0)
);
INSERT INTO stream_head (id, seq) VALUES (1, 0);

-- The stream log: every replica reads deltas from here (LISTEN optin_facts + a poll per tick).
CREATE TABLE facts (
  seq         bigint PRIMARY KEY,
  at_ms       bigint NOT NULL,
  type        text   NOT NULL,
  body        jsonb  NOT NULL,
  integration text
);
CREATE INDEX facts_at ON facts (at_ms);

-- State the snapshot is built from -----------------------------------------------------------

CREATE TABLE calls (
  call_id       text PRIMARY KEY,
  participants  jsonb   NOT NULL,
  paused        boolean NOT NULL DEFAULT false,
  state         text    NOT NULL CHECK (state IN ('active', 'ended')),
  started_at_ms bigint  NOT NULL,
  ended_at_ms   bigint
);
CREATE INDEX calls_active ON calls (call_id) WHERE state = 'active';
CREATE INDEX calls_ended ON calls (ended_at_ms) WHERE state = 'ended';

-- The latest accepted consent act of each customer of a call (R3); evidence as received.
CREATE TABLE consents (
  call_id        text   NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
  participant_id text   NOT NULL,
  status         text   NOT NULL CHECK (status IN ('granted', 'declined', 'withdrawn')),
  evidence       jsonb  NOT NULL,
  erase          boolean,
  PRIMARY KEY (call_id, participant_id)
);

-- Training windows and the monthly cap of each agent (R6), keyed by the agent's subjectId.
CREATE TABLE schedules (
  agent_id      text PRIMARY KEY,
  windows       jsonb  NOT NULL,
  monthly_cap   int    NOT NULL CHECK (monthly_cap >= 0),
  updated_at_ms bigint NOT NULL
);

-- Agent -> team lead (R10), from the HR integration.
CREATE TABLE teams (
  agent_id      text PRIMARY KEY,
  team_lead_id  text   NOT NULL,
  updated_at_ms bigint NOT NULL
);

-- Ingest --------------------------------------------------------------------------------------

CREATE TABLE integrations (
  id            text PRIMARY KEY,
  -- hex sha256 of the token's secret part (a 256-bit random value: no need for a slow hash).
  secret_hash   text    NOT NULL,
  scopes        text[]  NOT NULL,
  created_at_ms bigint  NOT NULL,
  disabled      boolean NOT NULL DEFAULT false
);

-- A retried POST/PUT with the same key and body gets the stored answer; only accepted writes
-- are stored (a refused one changed nothing, so its retry is judged afresh). Purged after 24 h.
CREATE TABLE idempotency (
  integration_id text   NOT NULL,
  key            text   NOT NULL,
  request_hash   text   NOT NULL,
  status         int,
  response       jsonb,
  created_at_ms  bigint NOT NULL,
  PRIMARY KEY (integration_id, key)
);
CREATE INDEX idempotency_age ON idempotency (created_at_ms);

-- Erasures and deletions ----------------------------------------------------------------------

CREATE TABLE erasures (
  id              text PRIMARY KEY,
  call_id         text   NOT NULL,
  participant_id  text   NOT NULL,
  recording_ids   text[] NOT NULL DEFAULT '{}',
  requested_at_ms bigint NOT NULL,
  state           text   NOT NULL CHECK (state IN ('pending', 'done')),
  completed_at_ms bigint,
  -- { storeReceipts: [...], confirmedBy: [...], completedBy } once done
  receipt         jsonb,
  confirmed_by    text[] NOT NULL DEFAULT '{}',
  worker_receipts jsonb  NOT NULL DEFAULT '[]',
  claimed_by      text,
  claimed_until_ms bigint
);
CREATE INDEX erasures_pending ON erasures (requested_at_ms) WHERE state = 'pending';
CREATE INDEX erasures_call ON erasures (call_id);
CREATE INDEX erasures_done ON erasures (completed_at_ms) WHERE state = 'done';

-- Team-lead deletions (and any other whole-recording deletion): the tombstone every writer checks.
CREATE TABLE deletions (
  id              text PRIMARY KEY,
  recording_id    text   NOT NULL,
  participant_id  text,
  actor           text   NOT NULL,
  reason          text   NOT NULL,
  requested_at_ms bigint NOT NULL,
  state           text   NOT NULL CHECK (state IN ('pending', 'done')),
  completed_at_ms bigint,
  receipt         jsonb,
  confirmed_by    text[] NOT NULL DEFAULT '{}',
  worker_receipts jsonb  NOT NULL DEFAULT '[]',
  claimed_by      text,
  claimed_until_ms bigint
);
CREATE INDEX deletions_pending ON deletions (requested_at_ms) WHERE state = 'pending';
CREATE INDEX deletions_recording ON deletions (recording_id);
CREATE INDEX deletions_done ON deletions (completed_at_ms) WHERE state = 'done';

-- Monthly cap (R6) ----------------------------------------------------------------------------

-- One row per agent and UTC month; admissions take a row lock on it (SELECT ... FOR UPDATE).
-- Purged after the month ended plus the retention period (R8).
CREATE TABLE cap_counts (
  agent_id text NOT NULL,
  month    text NOT NULL CHECK (month ~ '^[0-9]{4}-[0-9]{2}$'),
  count    int  NOT NULL CHECK (count >= 0),
  PRIMARY KEY (agent_id, month)
);
CREATE INDEX cap_counts_month ON cap_counts (month);

CREATE TABLE cap_admissions (
  recording_id text   NOT NULL,
  agent_id     text   NOT NULL,
  month        text   NOT NULL,
  at_ms        bigint NOT NULL,
  PRIMARY KEY (recording_id, agent_id)
);
CREATE INDEX cap_admissions_month ON cap_admissions (month);

-- The catalogue of recordings -----------------------------------------------------------------

-- One row per recording, from the workers' reports; the store's manifests stay the source of
-- truth (optin catalogue rebuild).
CREATE TABLE recordings (
  -- "C" collation as in recording_index: the join below must compare ids in one collation, or
  -- the planner cannot use this primary key for it.
  recording_id  text COLLATE "C" PRIMARY KEY,
  call_id       text    NOT NULL,
  agent_ids     text[]  NOT NULL DEFAULT '{}',
  team_lead_ids text[]  NOT NULL DEFAULT '{}',
  participants  jsonb   NOT NULL DEFAULT '[]',
  started_at_ms bigint  NOT NULL,
  ended_at_ms   bigint,
  tracks        int     NOT NULL DEFAULT 0,
  segments      int     NOT NULL DEFAULT 0,
  bytes         bigint  NOT NULL DEFAULT 0,
  expires_at_ms bigint  NOT NULL,
  state         text    NOT NULL CHECK (state IN ('recording', 'complete', 'interrupted', 'deleted', 'expired')),
  worker_id     text,
  updated_at_ms bigint  NOT NULL
);
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_live_expiry ON recordings (expires_at_ms) WHERE state IN ('recording', 'complete', 'interrupted');
CREATE INDEX recordings_gone ON recordings (updated_at_ms) WHERE state IN ('deleted', 'expired');

-- Keyset index for "a team's / an agent's recordings by date": one row per (recording, agent)
-- and per (recording, team lead), so a recording with two agents of one lead is listed once.
--   WHERE kind = $1 AND key = $2 AND (started_at_ms, recording_id) < ($3, $4)
--   ORDER BY started_at_ms DESC, recording_id DESC LIMIT $5
-- Ids compare in the "C" collation: byte order, whatever the database's locale, so the keyset
-- comparison and the index agree everywhere.
CREATE TABLE recording_index (
  kind          text   NOT NULL CHECK (kind IN ('agent', 'lead')),
  key           text   COLLATE "C" NOT NULL,
  started_at_ms bigint NOT NULL,
  recording_id  text   COLLATE "C" NOT NULL REFERENCES recordings (recording_id) ON DELETE CASCADE,
  PRIMARY KEY (kind, key, started_at_ms, recording_id)
);
CREATE INDEX recording_index_recording ON recording_index (recording_id);

-- Workers and what they report -----------------------------------------------------------------

-- Live policy-stream sessions, per replica: last_seen_ms is refreshed on every heartbeat tick,
-- so the rows of a replica that died age out. "A live worker holds the recording" reads this.
CREATE TABLE stream_sessions (
  worker_id       text   NOT NULL,
  replica_id      text   NOT NULL,
  connected_at_ms bigint NOT NULL,
  last_seen_ms    bigint NOT NULL,
  PRIMARY KEY (worker_id, replica_id)
);

-- R7: the last recording state reported for each call.
CREATE TABLE call_recording_states (
  call_id      text PRIMARY KEY,
  worker_id    text    NOT NULL,
  recording    boolean NOT NULL,
  reasons      text[]  NOT NULL,
  at_ms        bigint  NOT NULL,
  recording_id text
);
