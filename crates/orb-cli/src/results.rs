//! Printing a job's results as they arrive, for `orb send`, `orb jobs wait` and `orb jobs show`:
//! one row (table), JSON line, YAML document or id per target, printed the moment its result is
//! known (above the progress line on a terminal), then the grouped summary and the job line.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use orb_proto::Status;
use orb_proto::message::{BatchStarted, JobSummary, TargetResult};

use crate::exit::{self, Failure};
use crate::output::{self, Format};
use crate::render;

const HEADER: [&str; 4] = ["DEVICE", "STATUS", "ELAPSED", "RESULT / ERROR"];
/// `cancelled`, the longest status.
const STATUS_WIDTH: usize = 9;
/// `12345 ms`.
const ELAPSED_WIDTH: usize = 8;

/// Prints one job's results in the chosen format.
pub struct ResultPrinter {
    format: Format,
    headers: bool,
    color: bool,
    /// Width the result column is cut to (`None`: printed whole).
    cut_at: Option<usize>,
    widths: [usize; 3],
    header_printed: bool,
    progress: Option<ProgressBar>,
}

impl ResultPrinter {
    /// A printer for a job whose targets are `targets`. Results are cut to the terminal's width
    /// only in `table` format, on a terminal, and when there is more than one target.
    pub fn new(format: Format, headers: bool, targets: &[String]) -> ResultPrinter {
        let terminal = output::stdout_is_terminal();
        let device_width = targets.iter().map(|t| t.chars().count()).max().unwrap_or(0).max(HEADER[0].len());
        let widths = [device_width, STATUS_WIDTH, ELAPSED_WIDTH];
        let used: usize = widths.iter().map(|w| w + 3).sum();
        let cut_at = (format == Format::Table && terminal && targets.len() > 1)
            .then(|| output::terminal_width().saturating_sub(used).max(20));
        ResultPrinter {
            format,
            headers,
            color: render::color_enabled(),
            cut_at,
            widths,
            header_printed: false,
            progress: None,
        }
    }

    /// Shows a progress line on stderr (terminals only): answers so far, the job id and the
    /// time left until `deadline`. Only for the table formats, where it does not mix with data.
    pub fn show_progress(&mut self, total: usize, job: &str, deadline: Duration) {
        if matches!(self.format, Format::Table | Format::Wide) {
            let pb = progress_bar(total);
            pb.set_prefix(format!("job {job}"));
            pb.set_message(time_left(deadline));
            self.progress = Some(pb);
        }
    }

    /// A batch started: said on stderr (table formats), and on the progress line.
    pub fn batch(&self, b: &BatchStarted) {
        if !matches!(self.format, Format::Table | Format::Wide) {
            return;
        }
        let line = format!("batch {}/{} started: {} target(s)", b.batch, b.batches, b.targets);
        match &self.progress {
            Some(pb) => {
                let prefix = pb.prefix();
                let job = prefix.split("  batch").next().unwrap_or_default().to_owned();
                pb.set_prefix(format!("{job}  batch {}/{}", b.batch, b.batches));
                pb.suspend(|| eprintln!("{line}"));
            }
            None => eprintln!("{line}"),
        }
    }

    /// A target's progress (`orb send --progress`), on stderr so stdout stays the results: in
    /// table formats `DEVICE | LINE` (the `line` of an object that has one, else the JSON), above
    /// the progress bar; in the others one JSON object per line, `{"device", "progress"}`.
    /// Devices write these: control characters are shown escaped.
    pub fn progress(&self, device: &str, body: &serde_json::value::RawValue) {
        let text = match self.format {
            Format::Table | Format::Wide => {
                let line = serde_json::from_str::<serde_json::Value>(body.get())
                    .ok()
                    .and_then(|v| v.get("line").and_then(|l| l.as_str().map(str::to_owned)))
                    .unwrap_or_else(|| body.get().to_owned());
                let line = if line.chars().any(char::is_control) { line.escape_debug().to_string() } else { line };
                format!("{device} | {line}")
            }
            Format::Json | Format::Yaml | Format::Name => {
                format!("{{\"device\":{},\"progress\":{}}}", serde_json::Value::String(device.to_owned()), body.get())
            }
        };
        match &self.progress {
            Some(pb) => pb.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Updates the time left on the progress line.
    pub fn set_time_left(&self, left: Duration) {
        if let Some(pb) = &self.progress {
            pb.set_message(time_left(left));
        }
    }

    /// Removes the progress line (before the summary, or when detaching).
    pub fn clear_progress(&mut self) {
        if let Some(pb) = self.progress.take() {
            pb.finish_and_clear();
        }
    }

    /// Prints one target's result now.
    pub fn result(&mut self, r: &TargetResult) -> Result<(), Failure> {
        let text = match self.format {
            Format::Json => render::result_line(r),
            Format::Yaml => output::yaml(r)?.trim_end().to_owned(),
            Format::Name => r.device.clone(),
            Format::Table | Format::Wide => {
                let mut text = String::new();
                if !self.header_printed && self.headers {
                    let header: Vec<String> = HEADER.iter().map(|h| (*h).to_owned()).collect();
                    text.push_str(&output::plain_row(&header, &self.widths));
                    text.push('\n');
                }
                text.push_str(&self.row(r));
                text
            }
        };
        self.header_printed = true;
        match &self.progress {
            Some(pb) => {
                pb.inc(1);
                pb.suspend(|| outln!("{text}"));
            }
            None => outln!("{text}"),
        }
        Ok(())
    }

    fn row(&self, r: &TargetResult) -> String {
        let elapsed = r.elapsed_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
        let outcome = outcome_text(r);
        let outcome = match self.cut_at {
            Some(w) => output::cut(&outcome, w),
            None => outcome,
        };
        let status = r.status.as_str();
        let pad = " ".repeat(STATUS_WIDTH.saturating_sub(status.len()));
        let status = if self.color { format!("{}{pad}", paint(r.status, status)) } else { format!("{status}{pad}") };
        let device_pad = " ".repeat(self.widths[0].saturating_sub(r.device.chars().count()));
        let line = format!("{}{device_pad}   {status}   {elapsed:<ELAPSED_WIDTH$}   {outcome}", r.device);
        line.trim_end().to_owned()
    }

    /// After the last result: the summary in the chosen format.
    pub fn finish(mut self, results: &[TargetResult], summary: &JobSummary) -> Result<(), Failure> {
        self.clear_progress();
        match self.format {
            Format::Json => outln!("{}", render::summary_line(summary)),
            Format::Yaml => outln!("{}", output::yaml(summary)?.trim_end()),
            Format::Name => {}
            Format::Table | Format::Wide => {
                if results.is_empty() && self.headers {
                    outln!("no target answered");
                }
                let width = (self.format == Format::Table && output::stdout_is_terminal())
                    .then(|| output::terminal_width().saturating_sub(10));
                for line in render::grouped_summary(results, width) {
                    outln!("  {line}");
                }
                outln!("{}", job_line(summary));
            }
        }
        if let Some(why) = &summary.aborted
            && !matches!(self.format, Format::Json | Format::Yaml)
        {
            eprintln!("rollout aborted: {why}");
        }
        Ok(())
    }
}

/// `job ID: 3 of 4 targets answered ok (3 ok, 1 timeout)`, and `, 2 skipped (not connected)`
/// after `orb send --online`.
pub fn job_line(summary: &JobSummary) -> String {
    let counts: Vec<String> =
        summary.summary.iter().filter(|(_, n)| **n > 0).map(|(s, n)| format!("{n} {s}")).collect();
    format!(
        "job {}: {} of {} targets answered ok ({}){}",
        summary.job,
        summary.summary.get(&Status::Ok).copied().unwrap_or(0),
        // The summary counts every target, also when the caller shows only some rows.
        summary.summary.values().sum::<u64>(),
        counts.join(", "),
        crate::online::skipped_note(summary.skipped)
    )
}

/// `orb send`'s exit code for these results: 0 when there are some and every one is ok.
pub fn exit_code(results: &[TargetResult]) -> u8 {
    if !results.is_empty() && results.iter().all(|r| r.status == Status::Ok) { exit::OK } else { exit::FAILED }
}

/// `code: message`, then the error's data (compact JSON) when it has some.
pub fn error_text(e: &orb_proto::ErrorBody) -> String {
    match e.data_json() {
        Some(data) => format!("{}: {} {data}", e.code, e.message),
        None => format!("{}: {}", e.code, e.message),
    }
}

/// The result value, or `code: message` (and data) for a failure. Devices write these: control characters
/// (a terminal's escape sequences, line breaks) are shown escaped, never sent to the terminal.
pub fn outcome_text(r: &TargetResult) -> String {
    let text = match (&r.result, &r.error) {
        (Some(v), _) => v.get().to_owned(),
        (None, Some(e)) => error_text(e),
        (None, None) => String::new(),
    };
    if text.chars().any(char::is_control) { text.escape_debug().to_string() } else { text }
}

fn paint(status: Status, text: &str) -> String {
    let code = match status {
        Status::Ok => "32",
        Status::Timeout | Status::Queued => "33",
        Status::Offline | Status::Cancelled | Status::Expired => "90",
        Status::Error | Status::Denied => "31",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn time_left(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 if d.is_zero() => "deadline reached".to_owned(),
        0..60 => format!("{}s left", s.max(1)),
        60..3600 => format!("{}m{:02}s left", s / 60, s % 60),
        _ => format!("{}h{:02}m left", s / 3600, (s % 3600) / 60),
    }
}

/// A progress bar counting answers, drawn on stderr only when it is a terminal.
fn progress_bar(total: usize) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{spinner} {pos}/{len} answered  {prefix}  {msg}  [{wide_bar}]")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_text_cannot_drive_the_terminal() {
        let r = TargetResult {
            device: "web-1".into(),
            status: Status::Error,
            result: None,
            error: Some(orb_proto::ErrorBody::new(orb_proto::ErrorCode::BadArgs, "bad\u{1b}[2J\nthing")),
            elapsed_ms: None,
            late: None,
        };
        let text = outcome_text(&r);
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("\\u{1b}[2J\\nthing"), "{text}");
    }

    #[test]
    fn time_left_is_short() {
        assert_eq!(time_left(Duration::from_millis(9_400)), "9s left");
        assert_eq!(time_left(Duration::from_millis(300)), "1s left");
        assert_eq!(time_left(Duration::ZERO), "deadline reached");
        assert_eq!(time_left(Duration::from_secs(125)), "2m05s left");
        assert_eq!(time_left(Duration::from_secs(7_260)), "2h01m left");
    }
}
