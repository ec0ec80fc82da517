//! How a job reaches its targets when not all at once (decision 0015): `splay` spreads each
//! target's dispatch over a window, `batch` runs the targets a number (or a percentage) at a time,
//! the next batch starting when one finished plus `batch_wait`, and `abort_on_failure_pct` stops a
//! batched job once too many of its finished targets failed (those not started end `cancelled`).
//! Parsed and checked here, sans I/O, so the CLI refuses bad input before connecting and the
//! server refuses it the same way; the server's job task carries it out.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envelope::ErrorBody;
use crate::error::ErrorCode;

/// The longest splay window: a day.
pub const MAX_SPLAY: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between batches: a day.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(24 * 3600);
/// The largest batch given as a count.
pub const MAX_BATCH_COUNT: u32 = 1_000_000;

/// How many targets one batch runs on: a count, or a percentage of the job's targets (rounded
/// up, at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// This many targets at a time (1 to [`MAX_BATCH_COUNT`]).
    Count(u32),
    /// This percentage of the targets at a time (1 to 100).
    Percent(u8),
}

impl BatchSize {
    /// Targets per batch for a job of `targets` targets: at least one, at most all of them.
    pub fn of(self, targets: usize) -> usize {
        let n = match self {
            BatchSize::Count(n) => n as usize,
            BatchSize::Percent(p) => (targets * usize::from(p)).div_ceil(100),
        };
        n.clamp(1, targets.max(1))
    }
}

impl FromStr for BatchSize {
    type Err = ErrorBody;

    /// `N` (a count) or `P%` (a percentage of the targets).
    fn from_str(text: &str) -> Result<BatchSize, ErrorBody> {
        let t = text.trim();
        let bad = |why: &str| bad_rollout(format!("batch '{}': {why}", crate::excerpt(text)));
        if let Some(p) = t.strip_suffix('%') {
            let p: u8 = p.trim().parse().map_err(|_| bad("expected a whole percentage from 1% to 100%"))?;
            return match p {
                0 => Err(bad("a batch of 0% runs nothing; give 1% to 100%")),
                1..=100 => Ok(BatchSize::Percent(p)),
                _ => Err(bad("a percentage above 100%")),
            };
        }
        let n: u64 = t.parse().map_err(|_| bad("expected a count (25) or a percentage of the targets (10%)"))?;
        match n {
            0 => Err(bad("a batch of 0 runs nothing; give at least 1")),
            n if n > u64::from(MAX_BATCH_COUNT) => Err(bad(&format!("at most {MAX_BATCH_COUNT} targets per batch"))),
            n => Ok(BatchSize::Count(n as u32)),
        }
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for BatchSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(|e: ErrorBody| serde::de::Error::custom(e.message))
    }
}

/// How a job reaches its targets. The default sends to every target at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rollout {
    /// Each target's dispatch is delayed by a stable per-device offset within this many
    /// milliseconds (from the start of its batch, with `batch`); at most [`MAX_SPLAY`] (a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 86_400_000))]
    pub splay_ms: Option<u64>,
    /// Targets per batch; the next batch starts when every target of one has an outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSize>,
    /// Milliseconds between one batch's end and the next one's start; at most
    /// [`MAX_BATCH_WAIT`] (a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 86_400_000))]
    pub batch_wait_ms: Option<u64>,
    /// Once more than this percentage of the finished targets failed (`error` or `timeout`), no
    /// further batch starts: the targets not started end `cancelled` (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub abort_on_failure_pct: Option<u8>,
}

impl Rollout {
    /// Whether this is the default (every target at once, nothing else set).
    pub fn is_default(&self) -> bool {
        *self == Rollout::default()
    }

    /// The same rollout with zero durations left out (a zero splay or batch wait is none).
    pub fn normalized(self) -> Rollout {
        Rollout {
            splay_ms: self.splay_ms.filter(|s| *s > 0),
            batch_wait_ms: self.batch_wait_ms.filter(|w| *w > 0),
            ..self
        }
    }

    /// As stored with a job or schedule: JSON of the normalized rollout, `None` for the default.
    pub fn stored(&self) -> Option<String> {
        let r = self.normalized();
        (!r.is_default()).then(|| serde_json::to_string(&r).expect("a rollout always serialises"))
    }

    /// A stored rollout (`None`: the default).
    ///
    /// # Errors
    /// `bad_rollout` when the text is not a rollout this build can read and check.
    pub fn from_stored(text: Option<&str>) -> Result<Rollout, ErrorBody> {
        let Some(text) = text else { return Ok(Rollout::default()) };
        let r: Rollout =
            serde_json::from_str(text).map_err(|e| bad_rollout(format!("the stored rollout cannot be read: {e}")))?;
        r.check()?;
        Ok(r)
    }

    /// Whether targets are dispatched in stages (splay or batches) rather than all at once.
    pub fn is_staged(&self) -> bool {
        self.splay_ms.is_some_and(|s| s > 0) || self.batch.is_some()
    }

    /// The splay window (zero without one).
    pub fn splay(&self) -> Duration {
        Duration::from_millis(self.splay_ms.unwrap_or(0))
    }

    /// The wait between batches (zero without one).
    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms.unwrap_or(0))
    }

    /// Checks the bounds and that batch options come with a batch size.
    ///
    /// # Errors
    /// `bad_rollout` naming the value at fault.
    pub fn check(&self) -> Result<(), ErrorBody> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if self.splay_ms.is_some_and(|s| s > ms(MAX_SPLAY)) {
            return Err(bad_rollout(format!("splay of {} ms is longer than a day", self.splay_ms.unwrap_or(0))));
        }
        if self.batch_wait_ms.is_some_and(|w| w > ms(MAX_BATCH_WAIT)) {
            let w = self.batch_wait_ms.unwrap_or(0);
            return Err(bad_rollout(format!("batch wait of {w} ms is longer than a day")));
        }
        if let Some(p) = self.abort_on_failure_pct
            && p > 100
        {
            return Err(bad_rollout(format!("abort on failure of {p}%: give 0% to 100%")));
        }
        if self.batch.is_none() {
            if self.batch_wait_ms.is_some() {
                return Err(bad_rollout("a batch wait needs a batch size (batch)"));
            }
            if self.abort_on_failure_pct.is_some() {
                return Err(bad_rollout("abort on failure needs a batch size (batch): it is checked between batches"));
            }
        }
        if let Some(BatchSize::Count(0) | BatchSize::Percent(0)) = self.batch {
            return Err(bad_rollout("a batch of 0 runs nothing; give at least 1"));
        }
        Ok(())
    }

    /// Whether `failed` failures among `finished` finished targets are more than the abort
    /// threshold allows (never without one).
    pub fn should_abort(&self, failed: u64, finished: u64) -> bool {
        match self.abort_on_failure_pct {
            Some(p) => finished > 0 && failed * 100 > u64::from(p) * finished,
            None => false,
        }
    }
}

impl Rollout {
    /// The rollout a job `cmd` asks for (its `splay_ms`, `batch`, `batch_wait_ms` and
    /// `abort_on_failure_pct` fields), checked.
    ///
    /// # Errors
    /// `bad_rollout` naming the value at fault.
    pub fn from_envelope(env: &crate::Envelope) -> Result<Rollout, ErrorBody> {
        let abort_on_failure_pct = match env.abort_on_failure_pct {
            Some(p) if p > 100 => return Err(bad_rollout(format!("abort on failure of {p}%: give 0% to 100%"))),
            p => p.map(|p| p as u8),
        };
        let r = Rollout {
            splay_ms: env.splay_ms,
            batch: env.batch.as_deref().map(str::parse).transpose()?,
            batch_wait_ms: env.batch_wait_ms,
            abort_on_failure_pct,
        };
        r.check()?;
        Ok(r.normalized())
    }

    /// Sets a job `cmd`'s rollout fields (absent for the defaults).
    pub fn write_to(&self, env: &mut crate::Envelope) {
        env.splay_ms = self.splay_ms;
        env.batch = self.batch.map(|b| b.to_string());
        env.batch_wait_ms = self.batch_wait_ms;
        env.abort_on_failure_pct = self.abort_on_failure_pct.map(u64::from);
    }
}

/// Parses an abort threshold: `P%` or `P` (0 to 100).
///
/// # Errors
/// `bad_rollout` naming the value.
pub fn parse_abort_pct(text: &str) -> Result<u8, ErrorBody> {
    let t = text.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    match t.parse::<u8>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(bad_rollout(format!(
            "abort on failure '{}': expected a whole percentage from 0% to 100%",
            crate::excerpt(text)
        ))),
    }
}

fn bad_rollout(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRollout, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_parse_and_print() {
        assert_eq!("25".parse::<BatchSize>().unwrap(), BatchSize::Count(25));
        assert_eq!(" 10% ".parse::<BatchSize>().unwrap(), BatchSize::Percent(10));
        assert_eq!(BatchSize::Percent(10).to_string(), "10%");
        assert_eq!(BatchSize::Count(3).to_string(), "3");
        for bad in ["0", "0%", "101%", "-1", "ten", "", "2000000", "1.5%"] {
            let e = bad.parse::<BatchSize>().unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRollout, "{bad}");
            assert!(e.message.contains("batch"), "{bad}: {}", e.message);
        }
        assert!("0".parse::<BatchSize>().unwrap_err().message.contains("batch of 0"));
    }

    #[test]
    fn a_batch_is_at_least_one_target_and_at_most_all() {
        assert_eq!(BatchSize::Percent(10).of(10_000), 1000);
        assert_eq!(BatchSize::Percent(10).of(15), 2);
        assert_eq!(BatchSize::Percent(1).of(3), 1);
        assert_eq!(BatchSize::Percent(100).of(7), 7);
        assert_eq!(BatchSize::Count(50).of(7), 7);
        assert_eq!(BatchSize::Count(2).of(7), 2);
    }

    #[test]
    fn checks_name_the_value_at_fault() {
        let day_ms = 24 * 3600 * 1000;
        let cases = [
            (Rollout { splay_ms: Some(day_ms + 1), ..Rollout::default() }, "splay"),
            (Rollout { batch_wait_ms: Some(5), ..Rollout::default() }, "batch wait"),
            (Rollout { abort_on_failure_pct: Some(5), ..Rollout::default() }, "abort"),
            (
                Rollout { batch: Some(BatchSize::Count(1)), abort_on_failure_pct: Some(101), ..Rollout::default() },
                "101%",
            ),
            (Rollout { batch: Some(BatchSize::Count(0)), ..Rollout::default() }, "batch of 0"),
        ];
        for (r, needle) in cases {
            let e = r.check().unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRollout);
            assert!(e.message.contains(needle), "{needle}: {}", e.message);
        }
        let ok = Rollout {
            splay_ms: Some(day_ms),
            batch: Some(BatchSize::Percent(10)),
            batch_wait_ms: Some(1000),
            abort_on_failure_pct: Some(5),
        };
        assert!(ok.check().is_ok());
        assert!(ok.is_staged());
        assert!(!Rollout::default().is_staged());
        assert!(!Rollout { splay_ms: Some(0), ..Rollout::default() }.is_staged());
        assert_eq!(Rollout { splay_ms: Some(0), batch_wait_ms: Some(0), ..Rollout::default() }.stored(), None);
    }

    #[test]
    fn abort_when_failures_exceed_the_threshold() {
        let r = Rollout { batch: Some(BatchSize::Count(1)), abort_on_failure_pct: Some(5), ..Rollout::default() };
        assert!(!r.should_abort(0, 0));
        assert!(!r.should_abort(5, 100), "5% is not more than 5%");
        assert!(r.should_abort(6, 100));
        assert!(r.should_abort(1, 1));
        let zero = Rollout { abort_on_failure_pct: Some(0), ..r };
        assert!(zero.should_abort(1, 1000));
        assert!(!zero.should_abort(0, 1000));
        assert!(!Rollout::default().should_abort(10, 10));
    }

    #[test]
    fn rollouts_travel_in_envelope_fields() {
        let r = Rollout {
            splay_ms: Some(2000),
            batch: Some(BatchSize::Percent(10)),
            batch_wait_ms: Some(500),
            abort_on_failure_pct: Some(5),
        };
        let mut env = crate::Envelope::new(crate::Kind::Cmd);
        r.write_to(&mut env);
        assert_eq!(env.batch.as_deref(), Some("10%"));
        assert_eq!(Rollout::from_envelope(&env).unwrap(), r);
        assert_eq!(Rollout::from_envelope(&crate::Envelope::new(crate::Kind::Cmd)).unwrap(), Rollout::default());
        env.abort_on_failure_pct = Some(300);
        assert_eq!(Rollout::from_envelope(&env).unwrap_err().code, ErrorCode::BadRollout);
        env.abort_on_failure_pct = None;
        env.batch = Some("0".into());
        assert!(Rollout::from_envelope(&env).unwrap_err().message.contains("batch of 0"));
    }

    #[test]
    fn abort_thresholds_parse() {
        assert_eq!(parse_abort_pct("5%").unwrap(), 5);
        assert_eq!(parse_abort_pct("0").unwrap(), 0);
        assert_eq!(parse_abort_pct("100%").unwrap(), 100);
        for bad in ["101%", "-1%", "five", "2.5%"] {
            assert_eq!(parse_abort_pct(bad).unwrap_err().code, ErrorCode::BadRollout, "{bad}");
        }
    }

    #[test]
    fn rollouts_round_trip_through_json() {
        let r = Rollout { splay_ms: Some(500), batch: Some(BatchSize::Percent(25)), ..Rollout::default() };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"splay_ms":500,"batch":"25%"}"#);
        assert_eq!(serde_json::from_str::<Rollout>(&json).unwrap(), r);
        assert!(serde_json::from_str::<Rollout>(r#"{"batch":"0"}"#).is_err());
    }
}
