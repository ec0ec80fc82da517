//! `orb devices [SELECTOR]`: the connected devices, as a table or one JSON array.

use std::time::Duration;

use orb_proto::Selector;
use orb_proto::message::{DeviceInfo, DevicesQuery, commands};

use crate::cli::DevicesArgs;
use crate::connect;
use crate::exit::{self, Failure};
use crate::render;

/// Runs `orb devices`.
pub async fn run(args: DevicesArgs) -> Result<u8, Failure> {
    if let Some(s) = &args.selector {
        Selector::parse(s).map_err(|e| Failure::usage(format!("bad selector '{s}': {e}")))?;
    }
    let client = connect::operator(&args.connect).await?;
    let q = DevicesQuery { selector: args.selector.clone() };
    let mut devices: Vec<DeviceInfo> = client.call_json(commands::DEVICES_LIST, &q, Duration::from_secs(10)).await?;
    devices.sort_by(|a, b| render::natural_cmp(&a.id, &b.id));
    client.close().await;
    if args.json {
        outln!("{}", serde_json::to_string(&devices).map_err(|e| Failure::new(exit::FAILED, e.to_string()))?);
    } else if devices.is_empty() {
        eprintln!("no devices connected{}", args.selector.map(|s| format!(" matching '{s}'")).unwrap_or_default());
    } else {
        outln!("{}", render::devices_table(&devices, render::color_enabled()));
        outln!("{} device(s)", devices.len());
    }
    Ok(exit::OK)
}
