-- Delivery counts (held commands handed over and answered, per device) move from two columns of
-- the wide `devices` row into a narrow table of their own: every held command updates them twice,
-- and rewriting a device's whole row (tags, inventory) each time cost about a sixth of a fan-out
-- with a TTL. A device without a row here has both counts at 0. Keep in step with
-- ../postgres/0011_device_deliveries.sql.

CREATE TABLE device_deliveries (
    device       TEXT   NOT NULL PRIMARY KEY,
    delivered    BIGINT NOT NULL DEFAULT 0,
    acknowledged BIGINT NOT NULL DEFAULT 0
);

INSERT INTO device_deliveries (device, delivered, acknowledged)
    SELECT id, delivered, acknowledged FROM devices WHERE delivered <> 0 OR acknowledged <> 0;

ALTER TABLE devices DROP COLUMN delivered;
ALTER TABLE devices DROP COLUMN acknowledged;
