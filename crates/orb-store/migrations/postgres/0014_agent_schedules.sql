-- Agent-local schedules (decision 0016): a schedule with on_agent = 1 is not fired by the server
-- (its next_fire_at stays NULL); each matching device runs it on its own clock. Keep in step
-- with ../sqlite/0014_agent_schedules.sql.

ALTER TABLE schedules ADD COLUMN on_agent BIGINT NOT NULL DEFAULT 0;
