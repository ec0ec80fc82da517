-- JSON Schemas of the arguments of the commands a device declared in its last hello (issue 16,
-- decision 0030): a JSON object, command name to schema, as TEXT like `commands` ('{}': none).
-- Keep in step with ../postgres/0020_command_schemas.sql.

ALTER TABLE devices ADD COLUMN command_schemas TEXT NOT NULL DEFAULT '{}';
