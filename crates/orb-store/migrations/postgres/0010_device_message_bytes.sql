-- Each stored device message's size (command, body, id), so a device's messages are bounded in
-- bytes as well as in count (`limits.max_message_bytes_per_device`). Rows stored before count 0.
-- Keep in step with ../sqlite/0010_device_message_bytes.sql.

ALTER TABLE device_messages ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
