//! `orb audit`: the audit log (`$orb.audit.list`, admin only), newest first, in the `-o` formats:
//! a table (time, who, role, from where, action, target, outcome; `-o wide` adds the details),
//! one JSON array, YAML, or the entries' ids. The server's refusals (`forbidden`) exit 1 with its
//! message.

use std::time::Duration;

use orb_proto::audit::{AuditInfo, AuditQuery};
use orb_proto::message::commands;

use crate::cli::AuditArgs;
use crate::connect;
use crate::exit::{self, Failure};
use crate::output::{self, Format};
use crate::render;

/// How long an answer may take.
const ANSWER: Duration = Duration::from_secs(30);

/// Runs `orb audit`.
pub async fn run(args: AuditArgs) -> Result<u8, Failure> {
    let client = connect::operator(&args.connect).await?;
    let query = AuditQuery {
        since: args.since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        limit: args.limit,
    };
    let entries: Result<Vec<AuditInfo>, _> = client.call_json(commands::AUDIT_LIST, &query, ANSWER).await;
    client.close().await;
    print(&entries?, args.output.format(), !args.output.no_headers)?;
    Ok(exit::OK)
}

fn print(entries: &[AuditInfo], format: Format, headers: bool) -> Result<(), Failure> {
    match format {
        f @ (Format::Json | Format::Yaml) => output::print_structured(&entries, f)?,
        Format::Name => entries.iter().for_each(|e| outln!("{}", e.id)),
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    let mut row = vec![
                        e.at.clone(),
                        e.actor.clone(),
                        e.role.clone(),
                        e.source.clone(),
                        e.action.clone(),
                        e.outcome.clone(),
                        if e.target.is_empty() { "-".into() } else { e.target.clone() },
                    ];
                    if wide {
                        row.push(e.detail.as_ref().map_or_else(|| "-".into(), |d| d.get().to_owned()));
                    }
                    row
                })
                .collect();
            let mut header = vec!["TIME", "ACTOR", "ROLE", "SOURCE", "ACTION", "OUTCOME", "TARGET"];
            if wide {
                header.push("DETAIL");
            }
            let refused = |row: &[String], col: usize| (col == 5 && row[5] != "ok").then_some(comfy_table::Color::Red);
            outln!("{}", render::table(&header, rows, headers, refused));
        }
    }
    Ok(())
}
