-- optin control plane, schema version 2: the audit trail's registry (docs/rules.md "Audit",
-- src/audit/anchors.ts). Kept outside the audit bucket, so that whoever can write or delete
-- objects there cannot make a whole writer stream, or the newest entries of one, vanish unnoticed.

-- Every writer stream of the audit trail: recorders (registered when they connect to the policy
-- stream), control-plane replicas, other writers (API). anchor_*: the furthest genuine head seen.
CREATE TABLE audit_streams (
  stream_id        text   PRIMARY KEY,
  registered_at_ms bigint NOT NULL,
  registered_by    text   NOT NULL,
  anchor_seq       bigint CHECK (anchor_seq >= 0),
  anchor_hash      text   CHECK (anchor_hash ~ '^[0-9a-f]{64}$'),
  anchor_head_at   text,
  anchored_at_ms   bigint
);

-- Each time a stream's anchor moved forward: the history the compliance report prints.
CREATE TABLE audit_anchors (
  stream_id      text   NOT NULL REFERENCES audit_streams (stream_id),
  seq            bigint NOT NULL CHECK (seq >= 0),
  hash           text   NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
  head_at        text   NOT NULL,
  anchored_at_ms bigint NOT NULL,
  PRIMARY KEY (stream_id, seq)
);
CREATE INDEX audit_anchors_at ON audit_anchors (anchored_at_ms);
