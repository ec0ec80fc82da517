//! `orb send`'s rollout flags (`--splay`, `--batch`, `--batch-wait`, `--abort-on-failure`) as
//! the [`Rollout`] a job or schedule carries, checked before anything is sent (a usage error,
//! exit 2), and a rollout told in words for `orb schedule show` and `orb jobs show`.

use std::time::Duration;

use orb_proto::rollout::{self, Rollout};

use crate::cli::RolloutArgs;
use crate::exit::Failure;

/// The rollout the flags describe (the default without them).
///
/// # Errors
/// A usage failure naming the value at fault (a splay or batch wait above a day).
pub fn from_args(args: &RolloutArgs) -> Result<Rollout, Failure> {
    // Said in the units it was typed in (the wire's check speaks milliseconds).
    for (flag, value, max) in
        [("--splay", args.splay, rollout::MAX_SPLAY), ("--batch-wait", args.batch_wait, rollout::MAX_BATCH_WAIT)]
    {
        if let Some(d) = value.filter(|d| *d > max) {
            let (d, max) = (humantime::format_duration(d), humantime::format_duration(max));
            return Err(Failure::usage(format!("bad_rollout: {flag} {d} is longer than {max}, the most allowed")));
        }
    }
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let rollout = Rollout {
        splay_ms: args.splay.map(ms),
        batch: args.batch,
        batch_wait_ms: args.batch_wait.map(ms),
        abort_on_failure_pct: args.abort_on_failure,
    };
    rollout.check().map_err(|e| Failure::usage(format!("{}: {}", e.code, e.message)))?;
    Ok(rollout)
}

/// `batches of 10%, 30s apart, abort above 5% failed, splay 1m`; `all at once` for the default.
pub fn describe(r: &Rollout) -> String {
    let human = |ms: u64| humantime::format_duration(Duration::from_millis(ms)).to_string();
    let mut parts = Vec::new();
    if let Some(b) = r.batch {
        parts.push(format!("batches of {b}"));
    }
    if let Some(w) = r.batch_wait_ms.filter(|w| *w > 0) {
        parts.push(format!("{} apart", human(w)));
    }
    if let Some(p) = r.abort_on_failure_pct {
        parts.push(format!("abort above {p}% failed"));
    }
    if let Some(s) = r.splay_ms.filter(|s| *s > 0) {
        parts.push(format!("splay {}", human(s)));
    }
    if parts.is_empty() { "all at once".to_owned() } else { parts.join(", ") }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use orb_proto::rollout::BatchSize;

    #[test]
    fn flags_become_a_checked_rollout() {
        let args = RolloutArgs {
            splay: Some(Duration::from_secs(60)),
            batch: Some(BatchSize::Percent(10)),
            batch_wait: Some(Duration::from_secs(30)),
            abort_on_failure: Some(5),
        };
        let r = from_args(&args).unwrap();
        assert_eq!(describe(&r), "batches of 10%, 30s apart, abort above 5% failed, splay 1m");
        assert_eq!(describe(&Rollout::default()), "all at once");
        let too_long = RolloutArgs { splay: Some(Duration::from_secs(2 * 86_400)), ..RolloutArgs::default() };
        let e = from_args(&too_long).unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE);
        assert_eq!(e.message, "bad_rollout: --splay 2days is longer than 1day, the most allowed");
        let too_long = RolloutArgs {
            batch: Some(BatchSize::Count(1)),
            batch_wait: Some(Duration::from_secs(90_000)),
            ..RolloutArgs::default()
        };
        let e = from_args(&too_long).unwrap_err();
        assert_eq!(e.message, "bad_rollout: --batch-wait 1day 1h is longer than 1day, the most allowed");
    }
}
