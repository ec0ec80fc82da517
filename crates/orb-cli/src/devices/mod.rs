//! `orb devices`: the known devices (online, offline, revoked) in the `-o` formats, `--summary`
//! counts, and the registry sub-commands `show`, `add`, and `rm`, `revoke`, `tag`, `untag` on
//! one id or a selector ([`bulk`]). Input is checked before connecting (bad id or `KEY=VALUE`:
//! exit 2); the server's refusals (`device_not_found`, `device_exists`) exit 1 with its message.

use std::collections::BTreeMap;
use std::time::Duration;

use orb_client::Client;
use orb_proto::DeviceId;
use orb_proto::message::{DeviceInfo, DevicesQuery, commands};
use orb_proto::registry::{
    DeviceAdd, DeviceCredential, DeviceDetail, DeviceMessage, DeviceRef, DevicesSummary, MessagesQuery,
};

use crate::cli::{DevicesArgs, DevicesCommand};
use crate::connect;
use crate::exit::{self, Failure};
use crate::output::{self, Format};
use crate::render;

mod bulk;

use bulk::Change;

/// How long the server gets to answer a registry command.
pub(super) const ANSWER: Duration = Duration::from_secs(15);

/// Runs `orb devices [SUB-COMMAND]`.
pub async fn run(args: DevicesArgs) -> Result<u8, Failure> {
    match args.action {
        None if args.summary => summary(&args).await,
        None => list(&args).await,
        Some(DevicesCommand::Show { ref id }) => show(&args, id).await,
        Some(DevicesCommand::Messages { ref id, limit }) => messages(&args, id, limit).await,
        Some(DevicesCommand::Add { ref id, ref tags }) => add(&args, id, tags).await,
        Some(DevicesCommand::Rm { ref bulk }) => bulk::run(&args, bulk, Change::Remove).await,
        Some(DevicesCommand::Revoke { ref bulk }) => bulk::run(&args, bulk, Change::Revoke).await,
        Some(DevicesCommand::Tag { ref bulk, ref tags }) => {
            let set = crate::input::pairs(tags, "tag")?;
            bulk::run(&args, bulk, Change::Tags { set, remove: Vec::new() }).await
        }
        Some(DevicesCommand::Untag { ref bulk, ref keys }) => {
            if let Some(bad) = keys.iter().find(|k| k.is_empty() || k.contains('=')) {
                return Err(Failure::usage(format!("'{bad}' is not a tag key (untag takes keys, not KEY=VALUE)")));
            }
            bulk::run(&args, bulk, Change::Tags { set: BTreeMap::new(), remove: keys.clone() }).await
        }
    }
}

/// Checks an id's form before anything is sent (exit 2 when it cannot be an id).
fn device_id(id: &str) -> Result<String, Failure> {
    DeviceId::new(id).map(|d| d.to_string()).map_err(|e| Failure::usage(e.to_string()))
}

/// Calls `cmd` and closes the connection whatever the answer.
async fn call<A: serde::Serialize, T: serde::de::DeserializeOwned>(
    client: &Client,
    cmd: &str,
    args: &A,
) -> Result<T, Failure> {
    let answer = client.call_json(cmd, args, ANSWER).await;
    client.close().await;
    answer.map_err(Failure::from)
}

/// The known devices `selector` (checked by the caller) matches, all when `None`, in natural
/// id order.
pub(super) async fn matching(
    client: &Client,
    selector: Option<&str>,
    connected: bool,
) -> Result<Vec<DeviceInfo>, Failure> {
    let q = DevicesQuery { selector: selector.map(str::to_owned), connected, schemas: false };
    let mut devices: Vec<DeviceInfo> = client.call_json(commands::DEVICES_LIST, &q, ANSWER).await?;
    devices.sort_by(|a, b| render::natural_cmp(&a.id, &b.id));
    Ok(devices)
}

async fn list(args: &DevicesArgs) -> Result<u8, Failure> {
    if let Some(s) = &args.selector {
        crate::hints::check_selector("orb devices", s, None)?;
    }
    let client = connect::operator(&args.connect).await?;
    let devices = matching(&client, args.selector.as_deref(), args.connected).await;
    client.close().await;
    let devices = devices?;
    let format = args.output.format();
    match format {
        Format::Json | Format::Yaml => output::print_structured(&devices, format)?,
        Format::Name => devices.iter().for_each(|d| outln!("{}", d.id)),
        Format::Table | Format::Wide if devices.is_empty() => {
            let what = if args.connected { "connected" } else { "known" };
            let matching = args.selector.as_ref().map(|s| format!(" matching '{s}'")).unwrap_or_default();
            eprintln!("no devices {what}{matching}");
        }
        Format::Table | Format::Wide => {
            outln!("{}", render::devices_table(&devices, format, !args.output.no_headers));
            let online = devices.iter().filter(|d| d.connected).count();
            eprintln!("{} device(s), {online} online", devices.len());
        }
    }
    Ok(exit::OK)
}

async fn summary(args: &DevicesArgs) -> Result<u8, Failure> {
    let client = connect::operator(&args.connect).await?;
    let s: DevicesSummary = call(&client, commands::DEVICES_SUMMARY, &serde_json::Value::Null).await?;
    match args.output.format() {
        f @ (Format::Json | Format::Yaml) => output::print_structured(&s, f)?,
        _ => outln!("known {}, connected {} (revoked {})", s.known, s.connected, s.revoked),
    }
    Ok(exit::OK)
}

async fn show(args: &DevicesArgs, id: &str) -> Result<u8, Failure> {
    let id = device_id(id)?;
    let client = connect::operator(&args.connect).await?;
    let d: DeviceDetail = call(&client, commands::DEVICES_SHOW, &DeviceRef { id }).await?;
    match args.output.format() {
        f @ (Format::Json | Format::Yaml) => output::print_structured(&d, f)?,
        Format::Name => outln!("{}", d.id),
        Format::Table | Format::Wide => out!("{}", render::device_detail(&d, chrono::Utc::now())),
    }
    Ok(exit::OK)
}

async fn messages(args: &DevicesArgs, id: &str, limit: u32) -> Result<u8, Failure> {
    let id = device_id(id)?;
    let client = connect::operator(&args.connect).await?;
    let query = MessagesQuery { id: id.clone(), limit: Some(limit) };
    let list: Vec<DeviceMessage> = call(&client, commands::DEVICES_MESSAGES, &query).await?;
    let format = args.output.format();
    match format {
        Format::Json | Format::Yaml => output::print_structured(&list, format)?,
        Format::Name => list.iter().for_each(|m| outln!("{}", m.msg)),
        Format::Table | Format::Wide if list.is_empty() => eprintln!("device {id} sent no outbox messages"),
        Format::Table | Format::Wide => {
            let header = ["SENT", "RECEIVED", "COMMAND", "BODY"];
            // Bodies are cut only for a person reading a terminal; piped output is whole.
            let cut = format == Format::Table && output::stdout_is_terminal();
            let width = output::terminal_width().saturating_sub(72).max(20);
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|m| {
                    let body = m.body.as_ref().map_or("null", |b| b.get());
                    let body = if cut { output::cut(body, width) } else { body.to_owned() };
                    vec![m.sent_at.clone(), m.received_at.clone(), m.command.clone(), body]
                })
                .collect();
            let header = (!args.output.no_headers).then_some(&header[..]);
            out!("{}", output::plain_table(header, &rows));
        }
    }
    Ok(exit::OK)
}

async fn add(args: &DevicesArgs, id: &str, tags: &[String]) -> Result<u8, Failure> {
    let id = device_id(id)?;
    let tags = crate::input::pairs(tags, "tag")?;
    let client = connect::operator(&args.connect).await?;
    let c: DeviceCredential = call(&client, commands::DEVICES_ADD, &DeviceAdd { id, tags }).await?;
    // Stdout is exactly a `credentials.json` for the agent: `orb devices add ID --json > FILE`.
    match args.output.format() {
        f @ (Format::Json | Format::Yaml) => output::print_structured(&c, f)?,
        Format::Name => outln!("{}", c.id),
        Format::Table | Format::Wide => {
            outln!("id      {}", c.id);
            outln!("secret  {}", c.secret);
        }
    }
    eprintln!(
        "device {id} added. The secret is shown only this once. Provision the agent with either:\n  \
         - DATA/credentials.json containing {{\"id\": \"{id}\", \"secret\": \"...\"}} \
         (`orb devices add {id} --json` prints exactly that), then `orb agent --data DATA`\n  \
         - the secret alone in a file (mode 0600): `orb agent --id {id} --secret-file FILE`",
        id = c.id
    );
    Ok(exit::OK)
}
