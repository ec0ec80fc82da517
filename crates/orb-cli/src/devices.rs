//! `orb devices`: the known devices (online, offline, revoked) as a table or one JSON array,
//! `--summary` counts, and the registry sub-commands `show`, `add`, `rm`, `revoke`, `tag`,
//! `untag`. Input is checked before connecting (bad id or `KEY=VALUE`: exit 2); the server's
//! refusals (`device_not_found`, `device_exists`) exit 1 with its message.

use std::collections::BTreeMap;
use std::time::Duration;

use orb_client::Client;
use orb_proto::DeviceId;
use orb_proto::message::{DeviceInfo, DevicesQuery, commands};
use orb_proto::registry::{DeviceAdd, DeviceCredential, DeviceDetail, DeviceRef, DeviceTags, DevicesSummary};

use crate::cli::{DevicesArgs, DevicesCommand};
use crate::connect;
use crate::exit::{self, Failure};
use crate::render;

/// How long the server gets to answer a registry command.
const ANSWER: Duration = Duration::from_secs(15);

/// Runs `orb devices [SUB-COMMAND]`.
pub async fn run(args: DevicesArgs) -> Result<u8, Failure> {
    match args.action {
        None if args.summary => summary(&args).await,
        None => list(&args).await,
        Some(DevicesCommand::Show { ref id }) => show(&args, id).await,
        Some(DevicesCommand::Add { ref id, ref tags }) => add(&args, id, tags).await,
        Some(DevicesCommand::Rm { ref id }) => remove(&args, id).await,
        Some(DevicesCommand::Revoke { ref id }) => revoke(&args, id).await,
        Some(DevicesCommand::Tag { ref id, ref tags }) => {
            let set = crate::input::pairs(tags, "tag")?;
            change_tags(&args, DeviceTags { id: device_id(id)?, set, remove: Vec::new() }).await
        }
        Some(DevicesCommand::Untag { ref id, ref keys }) => {
            if let Some(bad) = keys.iter().find(|k| k.is_empty() || k.contains('=')) {
                return Err(Failure::usage(format!("'{bad}' is not a tag key (untag takes keys, not KEY=VALUE)")));
            }
            change_tags(&args, DeviceTags { id: device_id(id)?, set: BTreeMap::new(), remove: keys.clone() }).await
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

fn json<T: serde::Serialize>(v: &T) -> Result<String, Failure> {
    serde_json::to_string(v).map_err(|e| Failure::new(exit::FAILED, e.to_string()))
}

async fn list(args: &DevicesArgs) -> Result<u8, Failure> {
    if let Some(s) = &args.selector {
        crate::hints::check_selector("orb devices", s, None)?;
    }
    let client = connect::operator(&args.connect).await?;
    let q = DevicesQuery { selector: args.selector.clone(), connected: args.connected };
    let mut devices: Vec<DeviceInfo> = call(&client, commands::DEVICES_LIST, &q).await?;
    devices.sort_by(|a, b| render::natural_cmp(&a.id, &b.id));
    if args.json {
        outln!("{}", json(&devices)?);
    } else if devices.is_empty() {
        let what = if args.connected { "connected" } else { "known" };
        let matching = args.selector.as_ref().map(|s| format!(" matching '{s}'")).unwrap_or_default();
        eprintln!("no devices {what}{matching}");
    } else {
        outln!("{}", render::devices_table(&devices, render::color_enabled()));
        let online = devices.iter().filter(|d| d.connected).count();
        outln!("{} device(s), {online} online", devices.len());
    }
    Ok(exit::OK)
}

async fn summary(args: &DevicesArgs) -> Result<u8, Failure> {
    let client = connect::operator(&args.connect).await?;
    let s: DevicesSummary = call(&client, commands::DEVICES_SUMMARY, &serde_json::Value::Null).await?;
    if args.json {
        outln!("{}", json(&s)?);
    } else {
        outln!("known {}, connected {} (revoked {})", s.known, s.connected, s.revoked);
    }
    Ok(exit::OK)
}

async fn show(args: &DevicesArgs, id: &str) -> Result<u8, Failure> {
    let id = device_id(id)?;
    let client = connect::operator(&args.connect).await?;
    let d: DeviceDetail = call(&client, commands::DEVICES_SHOW, &DeviceRef { id }).await?;
    if args.json {
        outln!("{}", json(&d)?);
    } else {
        out!("{}", render::device_detail(&d, chrono::Utc::now()));
    }
    Ok(exit::OK)
}

async fn add(args: &DevicesArgs, id: &str, tags: &[String]) -> Result<u8, Failure> {
    let id = device_id(id)?;
    let tags = crate::input::pairs(tags, "tag")?;
    let client = connect::operator(&args.connect).await?;
    let c: DeviceCredential = call(&client, commands::DEVICES_ADD, &DeviceAdd { id, tags }).await?;
    // Stdout is exactly a `credentials.json` for the agent: `orb devices add ID --json > FILE`.
    if args.json {
        outln!("{}", json(&c)?);
    } else {
        outln!("id      {}", c.id);
        outln!("secret  {}", c.secret);
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

async fn remove(args: &DevicesArgs, id: &str) -> Result<u8, Failure> {
    let id = device_id(id)?;
    let client = connect::operator(&args.connect).await?;
    let answer: serde_json::Value = call(&client, commands::DEVICES_REMOVE, &DeviceRef { id: id.clone() }).await?;
    if args.json {
        outln!("{answer}");
    } else {
        outln!("device {id} removed");
    }
    Ok(exit::OK)
}

async fn revoke(args: &DevicesArgs, id: &str) -> Result<u8, Failure> {
    let id = device_id(id)?;
    let client = connect::operator(&args.connect).await?;
    let d: DeviceDetail = call(&client, commands::DEVICES_REVOKE, &DeviceRef { id }).await?;
    if args.json {
        outln!("{}", json(&d)?);
    } else {
        outln!("device {} revoked: its credential no longer connects and any session was closed", d.id);
    }
    Ok(exit::OK)
}

async fn change_tags(args: &DevicesArgs, tags: DeviceTags) -> Result<u8, Failure> {
    let client = connect::operator(&args.connect).await?;
    let d: DeviceDetail = call(&client, commands::DEVICES_TAG, &tags).await?;
    if args.json {
        outln!("{}", json(&d)?);
    } else {
        out!("{}", render::device_tags(&d));
    }
    Ok(exit::OK)
}
