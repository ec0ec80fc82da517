-- Rollouts (decision 0015): how a job reaches its targets (a splay window, batches, an abort
-- threshold), as JSON of orb_proto::rollout::Rollout; NULL for all at once. Stored with each
-- job (so a fired job dispatched after a crash keeps it, and `orb jobs show` tells it) and with
-- each schedule (every firing uses it). Keep in step with ../postgres/0013_rollouts.sql.

ALTER TABLE schedules ADD COLUMN rollout TEXT;
ALTER TABLE jobs ADD COLUMN rollout TEXT;
