//! The `$orb.` commands of the wire protocol, each mapped onto its typed service: arguments are
//! decoded from the command's JSON body (`bad_args` when they do not fit), the result encoded as
//! JSON bytes. Nothing here decides anything; the services do.

use bytes::Bytes;
use orb_proto::message::commands;
use orb_proto::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Action, Audited, Broker};
use crate::identity::Requester;

/// Answers the `$orb.` command `name` with arguments `args` (JSON, `null` when absent).
pub(super) async fn answer(broker: &Broker, who: &Requester, name: &str, args: Bytes) -> Result<Bytes, ErrorBody> {
    // Whoever may not query learns nothing more, not even whether the arguments were right.
    let action = if name == commands::SIGNAL { Action::Signal } else { Action::Query { name } };
    if let Err(e) = broker.policy().check(&who.identity, &action) {
        // A refused change is recorded here, since its service is never reached: its arguments
        // (cut) say what it was about.
        // A `PING` changes nothing, refused or not.
        let ping = name == commands::SIGNAL
            && serde_json::from_slice::<orb_proto::message::SignalRequest>(&args)
                .is_ok_and(|r| r.message.eq_ignore_ascii_case("PING"));
        if let Some(audited) = Audited::of_query(name).filter(|_| !ping) {
            let detail = serde_json::json!({ "args": orb_proto::excerpt(&String::from_utf8_lossy(&args)) });
            broker.audit(who, audited, "", detail, &Err::<(), _>(e.clone()));
        }
        return Err(e);
    }
    match name {
        commands::SERVER_INFO => encode(&broker.server_info(who)?),
        commands::SELECTOR_RESOLVE => encode(&broker.resolve_selector(who, &decode(name, &args)?)?),
        commands::SIGNAL => encode(&broker.signal(who, decode(name, &args)?).await?),
        commands::DEVICES_LIST => encode(&broker.devices_list(who, &decode_or_default(name, &args)?).await?),
        commands::DEVICES_SHOW => encode(&broker.device_show(who, &decode(name, &args)?).await?),
        commands::DEVICES_SUMMARY => encode(&broker.devices_summary(who)?),
        commands::DEVICES_ADD => encode(&broker.device_add(who, decode(name, &args)?).await?),
        commands::DEVICES_REMOVE => encode(&broker.device_remove(who, decode(name, &args)?).await?),
        commands::DEVICES_REVOKE => encode(&broker.device_revoke(who, &decode(name, &args)?).await?),
        commands::DEVICES_TAG => encode(&broker.device_tag(who, &decode(name, &args)?).await?),
        commands::DEVICES_MESSAGES => encode(&broker.device_messages(who, &decode(name, &args)?).await?),
        commands::JOBS_LIST => encode(&broker.jobs_list(who, &decode_or_default(name, &args)?).await?),
        commands::JOBS_SHOW => encode(&broker.job_show(who, &decode(name, &args)?).await?),
        commands::JOBS_CANCEL => encode(&broker.job_cancel(who, &decode(name, &args)?).await?),
        commands::SCHEDULES_CREATE => encode(&broker.schedule_create(who, decode(name, &args)?).await?),
        commands::SCHEDULES_LIST => encode(&broker.schedules_list(who).await?),
        commands::SCHEDULES_SHOW => encode(&broker.schedule_show(who, &decode(name, &args)?).await?),
        commands::SCHEDULES_PAUSE => encode(&broker.schedule_pause(who, &decode(name, &args)?).await?),
        commands::SCHEDULES_RESUME => encode(&broker.schedule_resume(who, &decode(name, &args)?).await?),
        commands::SCHEDULES_REMOVE => encode(&broker.schedule_remove(who, &decode(name, &args)?).await?),
        commands::TOKENS_ADD => encode(&broker.token_add(who, decode(name, &args)?).await?),
        commands::TOKENS_LIST => encode(&broker.tokens_list(who)?),
        commands::TOKENS_REVOKE => encode(&broker.token_revoke(who, &decode(name, &args)?).await?),
        commands::AUDIT_LIST => encode(&broker.audit_list(who, &decode_or_default(name, &args)?).await?),
        _ => Err(ErrorBody::new(
            ErrorCode::UnknownCommand,
            format!("no server command named {}", orb_proto::excerpt(name)),
        )),
    }
}

fn decode<T: DeserializeOwned>(name: &str, args: &Bytes) -> Result<T, ErrorBody> {
    serde_json::from_slice(args)
        .map_err(|e| ErrorBody::new(ErrorCode::BadArgs, orb_proto::bounded(format!("{name}: {e}"))))
}

/// As [`decode`], with the default for absent (`null`) arguments.
fn decode_or_default<T: DeserializeOwned + Default>(name: &str, args: &Bytes) -> Result<T, ErrorBody> {
    if args.as_ref() == b"null" { Ok(T::default()) } else { decode(name, args) }
}

/// A result as JSON bytes. Raw JSON values inside are written as they are, never re-parsed, so a
/// deeply nested stored value cannot make the answer fail.
fn encode<T: Serialize>(value: &T) -> Result<Bytes, ErrorBody> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ErrorBody::new(ErrorCode::Internal, format!("the result does not encode: {e}")))
}
