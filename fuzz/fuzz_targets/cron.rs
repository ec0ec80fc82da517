//! Schedule parsing (`orb_schedule`) over arbitrary text: a cron expression in one of a few
//! zones (with DST gaps, half-hour and 45-minute offsets), and the same text as `--every`,
//! `--in`, `--at` and a zone name. Nothing may panic; an accepted cron expression validates,
//! its firings come strictly after the instant asked about and in order, and `due` over a short
//! downtime agrees with them.
//!
//! Input: byte 0 picks the zone, the rest is the text.
#![no_main]

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use orb_schedule::{
    MissedPolicy, Spec, due, next_after, parse_at, parse_cron, parse_every, parse_in, parse_time, parse_zone, preview,
};

const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Apia",
    "America/Sao_Paulo",
    "Antarctica/Troll",
];

/// Instants asked about: the epoch, around DST changes, a leap day, far ahead.
fn instants() -> [DateTime<Utc>; 5] {
    [
        DateTime::UNIX_EPOCH,
        Utc.with_ymd_and_hms(2026, 3, 29, 0, 59, 59).single().expect("valid instant"),
        Utc.with_ymd_and_hms(2026, 11, 1, 5, 30, 0).single().expect("valid instant"),
        Utc.with_ymd_and_hms(2028, 2, 29, 23, 59, 30).single().expect("valid instant"),
        Utc.with_ymd_and_hms(4999, 12, 31, 23, 0, 0).single().expect("valid instant"),
    ]
}

fn check_cron(spec: &Spec) {
    assert!(spec.validate().is_ok(), "{spec:?}: what parse_cron returns validates");
    for t in instants() {
        if let Some(next) = next_after(spec, t) {
            assert!(next > t, "{spec:?}: next after {t} is {next}");
        }
        let fires = preview(spec, t, 4);
        assert!(fires.windows(2).all(|w| w[0] < w[1]), "{spec:?}: preview from {t} in order: {fires:?}");
        assert!(fires.first().is_none_or(|f| *f > t), "{spec:?}: preview from {t} starts after it");
    }
    let start = instants()[2];
    let now = start + chrono::TimeDelta::minutes(10);
    if let Some(first) = next_after(spec, start) {
        let d = due(spec, MissedPolicy::RunOnce, first, now, Duration::from_secs(60));
        assert_eq!(d.fire_now, first <= now, "{spec:?}: due fires once a firing fell due");
        if let Some(next) = d.next {
            assert!(next > now, "{spec:?}: the next firing stored is after now");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let tz = ZONES[usize::from(pick) % ZONES.len()];
    let now = instants()[1];
    match parse_cron(text, tz) {
        Ok(spec) => check_cron(&spec),
        Err(e) => {
            let _ = (e.code(), e.to_string());
            // Stored specs are evaluated without the parse-time checks: they must not panic either.
            let raw = Spec::Cron { expr: text.to_owned(), tz: tz.to_owned() };
            let _ = next_after(&raw, now);
        }
    }
    let _ = parse_zone(text);
    if let Ok(spec) = parse_every(text, now) {
        assert!(spec.validate().is_ok(), "{text:?}: an accepted interval validates");
        assert!(next_after(&spec, now).is_some_and(|n| n > now), "{text:?}: an interval fires after its anchor");
    }
    if let Ok(Spec::At { at }) = parse_in(text, now) {
        assert!(at > now, "{text:?}: --in is after now");
    }
    if let Ok(zone) = parse_zone(tz) {
        let _ = parse_time(text, &zone);
        if let Ok(Spec::At { at }) = parse_at(text, &zone, now) {
            assert!(at > now, "{text:?}: --at is after now");
        }
    }
});
