//! `orb devices rm|revoke|tag|untag ID|SELECTOR`: a registry change on one device, or on every
//! known device a selector matches — listed with `--dry-run`, confirmed above a threshold unless
//! `--yes`, then applied device by device (a few at a time), each outcome printed.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use futures_util::StreamExt;
use orb_client::Client;
use orb_proto::DeviceId;
use orb_proto::message::commands;
use orb_proto::registry::{DeviceDetail, DeviceRef, DeviceTags};
use serde_json::Value;

use super::{ANSWER, matching};
use crate::cli::{BulkArgs, DevicesArgs};
use crate::connect;
use crate::exit::{self, Failure};
use crate::output::{self, Format};
use crate::render;

/// Changes applied at once to the devices a selector matched.
const CONCURRENCY: usize = 16;

/// What to do to each device.
#[derive(Debug, Clone)]
pub enum Change {
    /// Forget it.
    Remove,
    /// Disable its credential.
    Revoke,
    /// Set and remove operator tags.
    Tags {
        /// Tags to set.
        set: BTreeMap<String, String>,
        /// Tag keys to remove.
        remove: Vec<String>,
    },
}

impl Change {
    fn verb(&self) -> &'static str {
        match self {
            Change::Remove => "remove",
            Change::Revoke => "revoke",
            Change::Tags { set, .. } if set.is_empty() => "untag",
            Change::Tags { .. } => "tag",
        }
    }

    /// Above how many devices the change asks first: rm and revoke cannot be undone by tagging
    /// again, so they ask for any selector matching more than one device.
    fn confirm_above(&self) -> usize {
        match self {
            Change::Remove | Change::Revoke => 1,
            Change::Tags { .. } => 10,
        }
    }

    /// Applies the change to `id`; the server's answer as JSON.
    async fn apply(&self, client: &Client, id: &str) -> Result<Value, Failure> {
        let r = DeviceRef { id: id.to_owned() };
        let answer = match self {
            Change::Remove => client.call_json::<_, Value>(commands::DEVICES_REMOVE, &r, ANSWER).await,
            Change::Revoke => client.call_json::<_, Value>(commands::DEVICES_REVOKE, &r, ANSWER).await,
            Change::Tags { set, remove } => {
                let tags = DeviceTags { id: id.to_owned(), set: set.clone(), remove: remove.clone() };
                client.call_json::<_, Value>(commands::DEVICES_TAG, &tags, ANSWER).await
            }
        };
        answer.map_err(Failure::from)
    }

    /// What people read after the change on `id` succeeded.
    fn done_text(&self, id: &str, answer: &Value) -> String {
        match self {
            Change::Remove => format!("device {id} removed\n"),
            Change::Revoke => {
                format!("device {id} revoked: its credential no longer connects and any session was closed\n")
            }
            Change::Tags { .. } => match serde_json::from_value::<DeviceDetail>(answer.clone()) {
                Ok(d) => render::device_tags(&d),
                Err(_) => format!("device {id}: tags changed\n"),
            },
        }
    }
}

/// Runs one bulk change; exit 1 when it failed on any device.
pub async fn run(args: &DevicesArgs, bulk: &BulkArgs, change: Change) -> Result<u8, Failure> {
    let single = DeviceId::new(&bulk.selector).is_ok();
    if !single {
        crate::hints::check_selector("orb devices", &bulk.selector, None)?;
    }
    let client = connect::operator(&args.connect).await?;
    let outcome = run_on(&client, args, bulk, change, single).await;
    client.close().await;
    outcome
}

async fn run_on(
    client: &Client,
    args: &DevicesArgs,
    bulk: &BulkArgs,
    change: Change,
    single: bool,
) -> Result<u8, Failure> {
    // One id goes to the server as it is (an unknown one is its `device_not_found`).
    let ids: Vec<String> = if single {
        vec![bulk.selector.clone()]
    } else {
        matching(client, Some(&bulk.selector), false).await?.into_iter().map(|d| d.id).collect()
    };
    if ids.is_empty() {
        return Err(Failure::new(exit::FAILED, format!("no device matches '{}'", bulk.selector)));
    }
    let format = args.output.format();
    if bulk.dry_run {
        eprintln!("{} device(s) match '{}'; nothing was changed (would {}):", ids.len(), bulk.selector, change.verb());
        match format {
            Format::Json | Format::Yaml => output::print_structured(&ids, format)?,
            _ => ids.iter().for_each(|id| outln!("{id}")),
        }
        return Ok(exit::OK);
    }
    if ids.len() > change.confirm_above() && !bulk.yes {
        confirm(&change, &bulk.selector, &ids).await?;
    }
    let mut outcomes = futures_util::stream::iter(ids.iter().map(|id| {
        let change = &change;
        async move { (id, change.apply(client, id).await) }
    }))
    .buffered(CONCURRENCY);
    let (mut answers, mut failed) = (Vec::new(), 0usize);
    while let Some((id, outcome)) = outcomes.next().await {
        match outcome {
            Ok(answer) => match format {
                Format::Json | Format::Yaml if single => output::print_structured(&answer, format)?,
                Format::Json | Format::Yaml => answers.push(answer),
                Format::Name => outln!("{id}"),
                Format::Table | Format::Wide => out!("{}", change.done_text(id, &answer)),
            },
            Err(e) if single => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("error: {id}: {}", e.message);
            }
        }
    }
    if !single && matches!(format, Format::Json | Format::Yaml) {
        output::print_structured(&answers, format)?;
    }
    if failed > 0 {
        return Err(Failure::new(exit::FAILED, format!("{failed} of {} device(s) failed", ids.len())));
    }
    Ok(exit::OK)
}

/// Asks on the terminal before changing many devices; without one, refuses (exit 2).
async fn confirm(change: &Change, selector: &str, ids: &[String]) -> Result<(), Failure> {
    let verb = change.verb();
    let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
    let more = if ids.len() > shown.len() { ", ..." } else { "" };
    let what = format!("{} devices match '{selector}' ({}{more})", ids.len(), shown.join(", "));
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!("{what}; pass --yes to {verb} them all (or --dry-run to list them)")));
    }
    eprint!("{what}. {} them all? [y/N] ", capitalised(verb));
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?
    .map_err(|e| Failure::new(exit::FAILED, format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Failure::new(exit::FAILED, format!("nothing was changed ({verb} not confirmed)")))
    }
}

fn capitalised(verb: &str) -> String {
    let mut c = verb.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}
