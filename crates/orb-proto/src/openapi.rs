//! JSON Schemas of the protocol types whose JSON form is written by hand (a string each), for
//! the server's OpenAPI document; the derived ones sit on their types. Only with the `openapi`
//! feature: clients and agents never build it.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::ErrorCode;
use crate::rollout::BatchSize;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(
                "A stable snake_case code from docs/errors.md (the table of the wire protocol); a device's \
                 handler may answer a code of its own in a job result",
            ))
            .examples(["bad_request"])
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

impl PartialSchema for BatchSize {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(format!(
                "Targets per batch: a count from 1 to {} (\"25\") or a percentage of the job's targets from 1% \
                 to 100% (\"10%\", rounded up, at least one)",
                crate::rollout::MAX_BATCH_COUNT
            )))
            .pattern(Some(r"^\s*\+?[0-9]+\s*%?\s*$"))
            .examples(["25", "10%"])
            .into()
    }
}

impl ToSchema for BatchSize {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("BatchSize")
    }
}
