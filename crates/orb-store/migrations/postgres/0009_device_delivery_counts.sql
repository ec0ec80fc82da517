-- Per device, held commands handed over (every delivery, redeliveries included) and answered by
-- the device: the inventory's "delivered vs acknowledged". Keep in step with
-- ../sqlite/0009_device_delivery_counts.sql.

ALTER TABLE devices ADD COLUMN delivered BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN acknowledged BIGINT NOT NULL DEFAULT 0;
