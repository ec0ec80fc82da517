//! `orb commands [SELECTOR]`: what the devices a selector matches (all by default) declare they
//! handle, one row per command name with how many devices declare it and how many of those are
//! connected, from `$orb.devices.list`; devices that declare nothing (they are sent every command)
//! are counted apart; the server's own `$orb.` commands are left out. Each row says whether the
//! command's arguments have a JSON Schema (declared in the devices' hellos; JSON and YAML carry
//! the schemas themselves, each distinct one with the devices that declare it). In the `-o`
//! formats: a table (`-o wide` adds the device ids), one JSON array, YAML, or the command names.

use std::collections::BTreeMap;
use std::time::Duration;

use orb_proto::message::{DeviceInfo, DevicesQuery, commands};
use serde::Serialize;

use crate::cli::CommandsArgs;
use crate::connect;
use crate::exit::{self, Failure};
use crate::output::{self, Format};

/// How long an answer may take.
const ANSWER: Duration = Duration::from_secs(30);

/// One command name and the devices that declare it.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct Supported {
    command: String,
    /// The devices that declare it, by id.
    devices: Vec<String>,
    /// How many of them are connected now.
    connected: usize,
    /// The distinct schemas of its arguments, each with the devices declaring it (in the order
    /// first seen); empty when no device declares one.
    schemas: Vec<Variant>,
}

/// One JSON Schema declared for a command's arguments, and the devices that declare it.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct Variant {
    schema: serde_json::Value,
    devices: Vec<String>,
}

impl Supported {
    /// The SCHEMA cell: `-` (none), `yes` (every device the same one), `yes (N of M)` (some
    /// devices), or `K different` (devices disagree).
    fn schema_cell(&self) -> String {
        match self.schemas.as_slice() {
            [] => "-".to_owned(),
            [one] if one.devices.len() == self.devices.len() => "yes".to_owned(),
            [one] => format!("yes ({} of {})", one.devices.len(), self.devices.len()),
            several => format!("{} different", several.len()),
        }
    }
}

/// Runs `orb commands`.
pub async fn run(args: CommandsArgs) -> Result<u8, Failure> {
    let client = connect::operator(&args.connect).await?;
    let query = DevicesQuery { selector: args.selector.clone(), connected: args.connected, schemas: true };
    let devices: Result<Vec<DeviceInfo>, _> = client.call_json(commands::DEVICES_LIST, &query, ANSWER).await;
    client.close().await;
    let devices = devices?;
    let (supported, silent) = tally(&devices);
    print(&supported, args.output.format(), !args.output.no_headers)?;
    if !silent.is_empty() && matches!(args.output.format(), Format::Table | Format::Wide) {
        eprintln!(
            "{} device{} declare{} no commands and {} sent every command: {}",
            silent.len(),
            if silent.len() == 1 { "" } else { "s" },
            if silent.len() == 1 { "s" } else { "" },
            if silent.len() == 1 { "is" } else { "are" },
            silent.join(", ")
        );
    }
    Ok(exit::OK)
}

/// Every declared command with its devices, by name; and the devices that declare none.
fn tally(devices: &[DeviceInfo]) -> (Vec<Supported>, Vec<String>) {
    let mut by_name: BTreeMap<&str, Supported> = BTreeMap::new();
    let mut silent = Vec::new();
    for d in devices {
        if d.commands.is_empty() {
            silent.push(d.id.clone());
        }
        // The server's own (`$orb.schedules.sync`, which agents keeping local schedules declare)
        // are the protocol's business, not commands anyone sends.
        for c in d.commands.iter().filter(|c| !c.starts_with(orb_proto::RESERVED_PREFIX)) {
            let row = by_name.entry(c).or_insert_with(|| Supported {
                command: c.clone(),
                devices: Vec::new(),
                connected: 0,
                schemas: Vec::new(),
            });
            row.devices.push(d.id.clone());
            row.connected += usize::from(d.connected);
            if let Some(schema) = d.schemas.get(c) {
                match row.schemas.iter_mut().find(|v| v.schema == *schema) {
                    Some(v) => v.devices.push(d.id.clone()),
                    None => row.schemas.push(Variant { schema: schema.clone(), devices: vec![d.id.clone()] }),
                }
            }
        }
    }
    (by_name.into_values().collect(), silent)
}

fn print(rows: &[Supported], format: Format, headers: bool) -> Result<(), Failure> {
    match format {
        f @ (Format::Json | Format::Yaml) => output::print_structured(&rows, f)?,
        Format::Name => rows.iter().for_each(|r| outln!("{}", r.command)),
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut row =
                        vec![r.command.clone(), r.devices.len().to_string(), r.connected.to_string(), r.schema_cell()];
                    if wide {
                        row.push(r.devices.join(","));
                    }
                    row
                })
                .collect();
            let mut header = vec!["COMMAND", "DEVICES", "CONNECTED", "SCHEMA"];
            if wide {
                header.push("DEVICE IDS");
            }
            outln!("{}", output::plain_table(headers.then_some(&header[..]), &cells).trim_end());
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn device(id: &str, connected: bool, commands: &[&str]) -> DeviceInfo {
        with_schemas(id, connected, commands, &[])
    }

    fn with_schemas(id: &str, connected: bool, commands: &[&str], schemas: &[(&str, serde_json::Value)]) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            connected,
            tags: BTreeMap::new(),
            remote_addr: None,
            connected_since: None,
            agent_version: None,
            transport: None,
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
            schemas: schemas.iter().map(|(c, s)| ((*c).to_owned(), s.clone())).collect(),
            rtt_ms: None,
            revoked: false,
            last_seen: None,
            held: 0,
        }
    }

    #[test]
    fn commands_are_counted_by_name_and_silent_devices_apart() {
        let devices = [
            device("a", true, &["ping", "exec", "$orb.schedules.sync"]),
            device("b", false, &["ping"]),
            device("c", true, &[]),
        ];
        let (rows, silent) = tally(&devices);
        assert_eq!(
            rows,
            [
                Supported { command: "exec".into(), devices: vec!["a".into()], connected: 1, schemas: vec![] },
                Supported {
                    command: "ping".into(),
                    devices: vec!["a".into(), "b".into()],
                    connected: 1,
                    schemas: vec![]
                },
            ]
        );
        assert_eq!(silent, ["c"]);
    }

    #[test]
    fn schemas_are_grouped_by_what_devices_declare() {
        let n = serde_json::json!({"type": "number"});
        let s = serde_json::json!({"type": "string"});
        let devices = [
            with_schemas("a", true, &["set", "get", "ping"], &[("set", n.clone()), ("get", n.clone())]),
            with_schemas("b", true, &["set", "get", "ping"], &[("set", n.clone()), ("get", s.clone())]),
            with_schemas("c", false, &["set"], &[]),
        ];
        let (rows, _) = tally(&devices);
        let row = |c: &str| rows.iter().find(|r| r.command == c).unwrap();
        assert_eq!(
            row("get").schemas,
            [
                Variant { schema: n.clone(), devices: vec!["a".into()] },
                Variant { schema: s, devices: vec!["b".into()] }
            ]
        );
        assert_eq!(row("get").schema_cell(), "2 different");
        assert_eq!(row("set").schema_cell(), "yes (2 of 3)");
        assert_eq!(row("ping").schema_cell(), "-");
        let (rows, _) = tally(&devices[..2]);
        assert_eq!(rows.iter().find(|r| r.command == "set").unwrap().schema_cell(), "yes");
    }
}
