//! Terminal and script output for job results and devices: a summary grouping identical
//! outcomes, JSON lines, tables (bordered on a terminal, plain columns when piped), the device
//! list and one device's detail, relative times ("5m ago").

use std::collections::BTreeMap;
use std::io::IsTerminal;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use orb_proto::Status;
use orb_proto::message::{DeviceInfo, JobSummary, TargetResult};
use orb_proto::registry::{DeviceDetail, SysGlance};

use crate::output::{self, Format, cut};

/// Writes to stdout; exits with 141 when the reader went away (broken pipe).
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(141);
    }
}

/// Orders device ids the way people read them: `web-2` before `web-10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let dx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let dy = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (nx, ny) = (trim_zeros(&x[..dx]), trim_zeros(&y[..dy]));
                let ord = nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny)).then_with(|| dx.cmp(&dy));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
                x = &x[dx..];
                y = &y[dy..];
            }
            (Some(p), Some(q)) => {
                if p != q {
                    return p.cmp(q);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n..]
}

/// Whether stdout gets colours: a terminal, and `NO_COLOR` unset.
pub fn color_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// The one-line JSON form of a target's result (`orb send --json`).
pub fn result_line(r: &TargetResult) -> String {
    serde_json::to_string(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The last line of `orb send --json`.
pub fn summary_line(s: &JobSummary) -> String {
    // JobSummary serialises as {"job", "summary"}, statuses in their documented order.
    serde_json::to_string(s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Groups identical outcomes by their whole value: `48 × {"pong":true}`, `2 × timeout`,
/// `1 × error unknown_command`, most frequent first. With `width`, values are cut to it for a
/// terminal, except where two different values would then look the same: those are shown whole.
pub fn grouped_summary(results: &[TargetResult], width: Option<usize>) -> Vec<String> {
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        let key = match (r.status, &r.result, &r.error) {
            (Status::Ok, Some(v), _) => v.get().to_owned(),
            (Status::Error, _, Some(e)) => format!("error {}", e.code),
            (s, _, _) => s.as_str().to_owned(),
        };
        *groups.entry(key).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = groups.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest: Vec<(String, usize)> = v.split_off(v.len().min(MAX_GROUPS));
    let shown: Vec<String> = v.iter().map(|(k, _)| width.map_or_else(|| k.clone(), |w| cut(k, w))).collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &shown {
        *seen.entry(s.as_str()).or_default() += 1;
    }
    let mut lines: Vec<String> = v
        .iter()
        .zip(&shown)
        .map(|((k, n), s)| if seen[s.as_str()] > 1 { format!("{n} × {k}") } else { format!("{n} × {s}") })
        .collect();
    if !rest.is_empty() {
        let targets: usize = rest.iter().map(|(_, n)| n).sum();
        lines.push(format!("{targets} × one of {} other results (see the rows above)", rest.len()));
    }
    lines
}

/// Distinct outcomes the summary lists; the rarer ones are counted on one line.
const MAX_GROUPS: usize = 10;

/// The device list's columns, tags last (values may hold spaces); `wide` adds the address,
/// transport, connected-since and the declared commands before the tags.
pub fn devices_table(devices: &[DeviceInfo], format: Format, headers: bool) -> String {
    let now = chrono::Utc::now();
    let wide = format == Format::Wide;
    let mut header = vec!["ID", "STATUS", "AGENT", "LAST SEEN", "RTT"];
    if wide {
        header.extend(["ADDRESS", "TRANSPORT", "CONNECTED SINCE", "HELD", "COMMANDS"]);
    }
    header.push("TAGS");
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let seen =
                if d.connected { "now".to_owned() } else { d.last_seen.as_deref().map_or("-".into(), |t| age(t, now)) };
            let mut row = vec![
                d.id.clone(),
                device_status(d).to_owned(),
                d.agent_version.clone().unwrap_or_else(|| "-".into()),
                seen,
                d.rtt_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}ms")),
            ];
            if wide {
                row.extend([
                    d.remote_addr.clone().unwrap_or_else(|| "-".into()),
                    d.transport.clone().unwrap_or_else(|| "-".into()),
                    d.connected_since.clone().unwrap_or_else(|| "-".into()),
                    d.held.to_string(),
                    if d.commands.is_empty() { "-".to_owned() } else { d.commands.join(",") },
                ]);
            }
            row.push(if tags.is_empty() { "-".to_owned() } else { tags.join(",") });
            row
        })
        .collect();
    table(&header, rows, headers, |row, col| match (col, row[1].as_str()) {
        (1, "online") => Some(Color::Green),
        (1, "offline") => Some(Color::DarkGrey),
        (1, "revoked") => Some(Color::Red),
        _ => None,
    })
}

fn device_status(d: &DeviceInfo) -> &'static str {
    match (d.revoked, d.connected) {
        (true, _) => "revoked",
        (false, true) => "online",
        (false, false) => "offline",
    }
}

/// A table for people: box borders (and `colour` per cell) on a terminal, plain columns
/// otherwise (put columns whose values may hold spaces last).
pub fn table(
    header: &[&str],
    rows: Vec<Vec<String>>,
    headers: bool,
    colour: impl Fn(&[String], usize) -> Option<Color>,
) -> String {
    if !output::stdout_is_terminal() {
        return output::plain_table(headers.then_some(header), &rows).trim_end().to_owned();
    }
    let color = color_enabled();
    let mut t = Table::new();
    t.load_style(presets::UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Dynamic);
    if !color {
        t.force_no_tty();
    }
    // The width comfy-table finds, unless COLUMNS says otherwise or the terminal reports none.
    t.set_width(u16::try_from(output::terminal_width()).unwrap_or(u16::MAX));
    if headers {
        t.set_header(header.to_vec());
    }
    for row in &rows {
        t.add_row(row.iter().enumerate().map(|(i, c)| match colour(row, i) {
            Some(col) if color => Cell::new(c).fg(col),
            _ => Cell::new(c),
        }));
    }
    t.to_string()
}

/// How long before `now` the RFC 3339 time `at` was: `12s`, `5m`, `3h`, `2d` (`at` itself when
/// it does not parse).
pub fn age(at: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(at) else { return at.to_owned() };
    let s = (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// [`age`] followed by ` ago`.
pub fn ago(at: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    if chrono::DateTime::parse_from_rfc3339(at).is_err() {
        return at.to_owned();
    }
    format!("{} ago", age(at, now))
}

/// An RFC 3339 time with its age: `2026-01-02T10:00:00Z (5m ago)`; `-` when absent.
fn when(at: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    at.map_or_else(|| "-".to_owned(), |t| format!("{t} ({})", ago(t, now)))
}

/// `12.3 KiB` style sizes.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// The effective tags with their source, one per line: `role=web  (operator; agent reported role=db)`.
pub fn device_tags(d: &DeviceDetail) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if d.tags.is_empty() {
        let _ = writeln!(out, "device {}: no tags", d.id);
        return out;
    }
    let _ = writeln!(out, "tags of {}:", d.id);
    for (k, v) in &d.tags {
        let source = match (d.operator_tags.get(k), d.reported_tags.get(k)) {
            (Some(_), Some(r)) if r != v => format!("operator; agent reported {k}={r}"),
            (Some(_), _) => "operator".to_owned(),
            (None, _) => "agent".to_owned(),
        };
        let _ = writeln!(out, "  {:<30} {source}", format!("{k}={v}"));
    }
    out
}

/// The commands a device declared, `(schema)` after those whose arguments have a JSON Schema
/// (`--json` shows the schemas); `-` for none.
fn declared_commands(d: &DeviceDetail) -> String {
    if d.commands.is_empty() {
        return "-".to_owned();
    }
    let named: Vec<String> = d
        .commands
        .iter()
        .map(|c| if d.schemas.contains_key(c) { format!("{c} (schema)") } else { c.clone() })
        .collect();
    named.join(", ")
}

/// Everything about one device in sections: identity and credential, tags with their source,
/// inventory, the latest telemetry (when the device published any), the live connection.
pub fn device_detail(d: &DeviceDetail, now: chrono::DateTime<chrono::Utc>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let status = match (d.revoked, d.connected) {
        (true, _) => "revoked",
        (false, true) => "online",
        (false, false) => "offline",
    };
    let row = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "  {k:<15} {v}");
    };
    let _ = writeln!(out, "device {}", d.id);
    row(&mut out, "status", status);
    row(&mut out, "credential", &d.credential);
    row(&mut out, "registered", &when(Some(&d.registered_at), now));
    row(&mut out, "first seen", &when(d.first_seen.as_deref(), now));
    row(
        &mut out,
        "last seen",
        &if d.connected { "now (connected)".to_owned() } else { when(d.last_seen.as_deref(), now) },
    );
    row(&mut out, "last address", d.last_remote_addr.as_deref().unwrap_or("-"));
    row(&mut out, "user agent", d.user_agent.as_deref().unwrap_or("-"));
    row(&mut out, "connections", &format!("{} ({} flaps)", d.connections, d.flaps));
    out.push('\n');
    out.push_str(&device_tags(d));
    out.push('\n');
    let _ = writeln!(out, "inventory");
    row(&mut out, "agent", d.agent_version.as_deref().unwrap_or("-"));
    row(&mut out, "commands", &declared_commands(d));
    out.push('\n');
    if let Some(t) = &d.telemetry {
        let g = SysGlance::of(&t.value);
        let _ = writeln!(out, "telemetry (telemetry.{}.sys)", d.id);
        row(&mut out, "received", &when(Some(&t.at), now));
        row(&mut out, "cpu", &g.cpu_text());
        let load = g.load_avg.map_or_else(|| "-".to_owned(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"));
        row(&mut out, "load", &load);
        row(&mut out, "memory", &g.memory_text());
        out.push('\n');
    }
    let c = &d.delivery;
    if c.delivered > 0 || c.queued > 0 || c.in_flight > 0 {
        let _ = writeln!(out, "delivery (commands sent with --ttl)");
        row(&mut out, "queued", &c.queued.to_string());
        row(&mut out, "in flight", &c.in_flight.to_string());
        row(&mut out, "delivered", &c.delivered.to_string());
        row(&mut out, "acknowledged", &c.acknowledged.to_string());
        out.push('\n');
    }
    if !d.held.is_empty() {
        let _ = writeln!(out, "held commands (sent with --ttl; oldest first)");
        for h in &d.held {
            let state =
                if h.attempts == 0 { "waiting".to_owned() } else { format!("delivered (attempt {})", h.attempts) };
            let _ = writeln!(
                out,
                "  {:<15} job {}  held {}  expires {}  {state}",
                h.command,
                h.job,
                ago(&h.queued_at, now),
                h.expires_at
            );
        }
        out.push('\n');
    }
    match &d.connection {
        None => {
            let _ = writeln!(out, "connection      none (not connected)");
        }
        Some(c) => {
            let _ = writeln!(out, "connection {}", c.id);
            row(&mut out, "remote", &format!("{} ({})", c.remote_addr, c.transport));
            row(&mut out, "connected at", &when(Some(&c.connected_at), now));
            row(&mut out, "last received", &when(c.last_received.as_deref(), now));
            row(&mut out, "last sent", &when(c.last_sent.as_deref(), now));
            row(&mut out, "received", &format!("{} messages, {}", c.received_messages, bytes(c.received_bytes)));
            row(&mut out, "sent", &format!("{} messages, {}", c.sent_messages, bytes(c.sent_bytes)));
            row(&mut out, "rtt", &c.rtt_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2} ms")));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use orb_proto::{ErrorBody, ErrorCode};
    use serde_json::value::RawValue;

    fn ok(d: &str, v: &str) -> TargetResult {
        TargetResult {
            device: d.into(),
            status: Status::Ok,
            result: Some(RawValue::from_string(v.into()).unwrap()),
            error: None,
            elapsed_ms: Some(3),
            late: None,
        }
    }

    fn failed(d: &str, status: Status, code: ErrorCode) -> TargetResult {
        TargetResult {
            device: d.into(),
            status,
            result: None,
            error: Some(ErrorBody::new(code, "x")),
            elapsed_ms: None,
            late: None,
        }
    }

    #[test]
    fn summary_groups_identical_outcomes_most_frequent_first() {
        let rs = vec![
            ok("a", r#"{"pong":true}"#),
            ok("b", r#"{"pong":true}"#),
            failed("c", Status::Timeout, ErrorCode::Timeout),
            failed("d", Status::Error, ErrorCode::UnknownCommand),
            ok("e", r#"{"pong":true}"#),
        ];
        assert_eq!(
            grouped_summary(&rs, None),
            vec![r#"3 × {"pong":true}"#, "1 × error unknown_command", "1 × timeout"]
        );
    }

    #[test]
    fn json_line_has_the_documented_shape() {
        let line = result_line(&failed("web-1", Status::Timeout, ErrorCode::Timeout));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["device"], "web-1");
        assert_eq!(v["status"], "timeout");
        assert!(v["result"].is_null());
        assert_eq!(v["error"]["code"], "timeout");
        assert!(v["elapsed_ms"].is_null());
        let line = result_line(&ok("web-2", r#"{"pong":true}"#));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["result"]["pong"], true);
        assert!(v["error"].is_null());
        assert_eq!(v["elapsed_ms"], 3);
    }

    #[test]
    fn device_ids_sort_naturally() {
        let mut v = vec!["web-10", "web-2", "db-1", "web-1", "web-02"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["db-1", "web-1", "web-2", "web-02", "web-10"]);
    }

    #[test]
    fn ages_are_short_and_relative() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-02T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(ago("2026-01-02T09:59:48Z", now), "12s ago");
        assert_eq!(ago("2026-01-02T09:55:00Z", now), "5m ago");
        assert_eq!(ago("2026-01-02T07:00:00Z", now), "3h ago");
        assert_eq!(ago("2025-12-30T10:00:00Z", now), "3d ago");
        assert_eq!(ago("not a time", now), "not a time");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn tag_sources_are_shown_with_overridden_reports() {
        let mut d: DeviceDetail = serde_json::from_value(serde_json::json!({
            "id": "web-1", "connected": false, "revoked": false, "credential": "secret",
            "tags": {"role": "db", "region": "eu"}, "reported_tags": {"role": "web", "region": "eu"},
            "operator_tags": {"role": "db"}, "agent_version": null, "commands": [],
            "registered_at": "2026-01-02T10:00:00Z", "first_seen": null, "last_seen": null,
            "last_remote_addr": null, "user_agent": null, "connections": 0, "flaps": 0, "connection": null
        }))
        .unwrap();
        let text = device_tags(&d);
        assert!(text.contains("role=db") && text.contains("operator; agent reported role=web"), "{text}");
        assert!(text.lines().any(|l| l.contains("region=eu") && l.trim_end().ends_with("agent")), "{text}");
        d.tags.clear();
        assert!(device_tags(&d).contains("no tags"));
        let all = device_detail(&d, chrono::Utc::now());
        for section in ["device web-1", "credential", "inventory", "connection      none"] {
            assert!(all.contains(section), "{section}: {all}");
        }
        assert!(!all.contains("telemetry"), "no telemetry, no section: {all}");
        d.commands = vec!["ping".into(), "set".into()];
        d.schemas.insert("set".into(), serde_json::json!({"type": "number"}));
        let all = device_detail(&d, chrono::Utc::now());
        assert!(all.lines().any(|l| l.contains("commands") && l.ends_with("ping, set (schema)")), "{all}");
    }

    #[test]
    fn telemetry_shows_cpu_load_memory_and_its_age() {
        let mut d: DeviceDetail = serde_json::from_value(serde_json::json!({
            "id": "web-1", "connected": true, "revoked": false, "credential": "secret",
            "tags": {}, "reported_tags": {}, "operator_tags": {}, "agent_version": null, "commands": [],
            "registered_at": "2026-01-02T10:00:00Z", "first_seen": null, "last_seen": null,
            "last_remote_addr": null, "user_agent": null, "connections": 1, "flaps": 0, "connection": null,
            "telemetry": {"at": "2026-01-02T09:59:48.000Z", "value": {
                "cpu_percent": 12.34, "load_avg": {"one": 0.5, "five": 0.25, "fifteen": 0.75},
                "memory": {"total_bytes": 8_589_934_592_u64, "used_bytes": 1_288_490_189_u64, "available_bytes": 0}
            }}
        }))
        .unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-02T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let text = device_detail(&d, now);
        for line in
            ["telemetry (telemetry.web-1.sys)", "(12s ago)", "cpu             12%", "0.50 0.25 0.75", "1.2/8.0 GiB"]
        {
            assert!(text.contains(line), "{line}: {text}");
        }
        // A sample without the figures (another agent's shape) shows dashes.
        d.telemetry.as_mut().unwrap().value = serde_json::json!({"temp": 40});
        let text = device_detail(&d, now);
        assert!(text.contains("cpu             -") && text.contains("memory          -"), "{text}");
    }

    #[test]
    fn summary_groups_by_the_whole_value_and_never_shows_two_groups_alike() {
        let long = |tail: &str| format!(r#"{{"clock":"{}{tail}"}}"#, "x".repeat(70));
        let rs = vec![ok("a", &long("1")), ok("b", &long("2")), ok("c", &long("2")), ok("d", r#""short""#)];
        let whole = grouped_summary(&rs, None);
        assert_eq!(whole, vec![format!("2 × {}", long("2")), r#"1 × "short""#.into(), format!("1 × {}", long("1"))]);
        // Cut for a terminal, the two long values would read the same: both are shown whole.
        assert_eq!(grouped_summary(&rs, Some(40)), whole);
        let rs = vec![ok("a", &long("1")), ok("b", r#""short""#)];
        let cut = grouped_summary(&rs, Some(40));
        assert_eq!(cut[0], r#"1 × "short""#);
        assert!(cut[1].ends_with('…') && cut[1].chars().count() < 50, "{cut:?}");
        // A thousand distinct results: the ten most frequent, then one line for the others.
        let rs: Vec<TargetResult> = (0..1000).map(|i| ok(&format!("d-{i}"), &i.to_string())).collect();
        let lines = grouped_summary(&rs, None);
        assert_eq!(lines.len(), 11, "{lines:?}");
        assert_eq!(lines[10], "990 × one of 990 other results (see the rows above)");
    }
}
