//! The Jepsen-style queue checker: given, per device, what the harness submitted (and how each
//! acknowledged job ended), what the agent's handler recorded running, what its event generator
//! recorded sending and what the server stored, it counts commands and events lost, run or
//! stored twice, reordered, and unexpected. A pure function over histories; the harness
//! ([`super`]) gathers them.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::history::Events;

/// How many anomalies the report describes one by one.
const EXAMPLES: usize = 20;

/// One numbered command the harness tried to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// The server acknowledged the job (so it is durable), and this is how it ended.
    Acked(Outcome),
    /// The submit failed without an answer (the server was killed): the job may or may not
    /// exist, so the command may run at most once.
    Unsure,
    /// The server refused the job (with this error): it must never run, and a crash test
    /// expects no refusal at all.
    Refused(String),
}

/// How an acknowledged job's one target ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The device answered `ok`.
    Ok,
    /// `error` with code `interrupted`: started by an agent that died before answering.
    Interrupted,
    /// Any other final status (`expired`, `queue_full`, ...), as `status` or `status/code`.
    Other(String),
    /// Still pending or `queued` when the harness stopped waiting.
    Unfinished,
}

/// Everything known about one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceHistory {
    /// The device id.
    pub device: String,
    /// Command number → what became of its submission.
    pub submitted: BTreeMap<u64, Submission>,
    /// Command numbers the handler ran, in the order it ran them.
    pub executed: Vec<u64>,
    /// The agent's event generator's record.
    pub events: Events,
    /// Event numbers the server stored, in the order it stored them.
    pub stored: Vec<u64>,
}

/// The verdict.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Commands the server acknowledged.
    pub commands_acknowledged: u64,
    /// Commands whose submit got no answer (may run at most once).
    pub commands_unsure: u64,
    /// Commands the server refused.
    pub commands_refused: u64,
    /// Handler runs recorded.
    pub executions: u64,
    /// Acknowledged commands that ended `interrupted` (allowed; counted).
    pub interrupted: u64,
    /// Of those, how many the handler had run before the agent died.
    pub interrupted_after_running: u64,
    /// Acknowledged commands that never ran and did not end `interrupted`.
    pub lost: u64,
    /// Commands run more than once.
    pub executed_twice: u64,
    /// Runs out of per-device submission order.
    pub reordered: u64,
    /// Runs of commands never submitted, or `ok` answers for commands never run.
    pub unexpected: u64,
    /// Events the outbox accepted.
    pub events_sent: u64,
    /// Events intended whose send a kill interrupted (may be stored at most once).
    pub events_unsure: u64,
    /// Events the server stored.
    pub events_stored: u64,
    /// Accepted events the server does not have.
    pub events_lost: u64,
    /// Events stored more than once.
    pub events_duplicated: u64,
    /// Events stored out of the order they were sent.
    pub events_reordered: u64,
    /// Events stored that were never generated.
    pub events_unexpected: u64,
    /// The first anomalies, described.
    pub examples: Vec<String>,
}

impl Report {
    /// Nothing lost, doubled, reordered or unexpected (interrupted ones are allowed).
    pub fn passed(&self) -> bool {
        self.lost
            + self.commands_refused
            + self.executed_twice
            + self.reordered
            + self.unexpected
            + self.events_lost
            + self.events_duplicated
            + self.events_reordered
            + self.events_unexpected
            == 0
    }

    fn note(&mut self, counter: fn(&mut Report) -> &mut u64, example: String) {
        *counter(self) += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example);
        }
    }
}

/// Judges every device's history.
pub fn check(devices: &[DeviceHistory]) -> Report {
    let mut report = Report::default();
    for d in devices {
        check_commands(d, &mut report);
        check_events(d, &mut report);
    }
    report
}

fn check_commands(d: &DeviceHistory, r: &mut Report) {
    let dev = &d.device;
    r.executions += d.executed.len() as u64;
    let runs = counts(&d.executed);
    for (&n, &times) in &runs {
        if !d.submitted.contains_key(&n) {
            r.note(|r| &mut r.unexpected, format!("{dev}: command {n} ran but was never submitted"));
        }
        if times > 1 {
            r.note(|r| &mut r.executed_twice, format!("{dev}: command {n} ran {times} times"));
        }
    }
    for (n, before) in out_of_order(&d.executed) {
        r.note(|r| &mut r.reordered, format!("{dev}: command {n} ran after command {before}"));
    }
    for (&n, submission) in &d.submitted {
        let ran = runs.get(&n).copied().unwrap_or(0);
        let outcome = match submission {
            Submission::Acked(outcome) => outcome,
            Submission::Unsure => {
                r.commands_unsure += 1;
                continue;
            }
            Submission::Refused(why) => {
                r.note(|r| &mut r.commands_refused, format!("{dev}: command {n} was refused: {why}"));
                if ran > 0 {
                    r.note(|r| &mut r.unexpected, format!("{dev}: command {n} ran though it was refused"));
                }
                continue;
            }
        };
        r.commands_acknowledged += 1;
        match outcome {
            Outcome::Ok if ran == 0 => {
                r.note(|r| &mut r.unexpected, format!("{dev}: command {n} answered ok but never ran"));
            }
            Outcome::Ok => {}
            Outcome::Interrupted => {
                r.interrupted += 1;
                r.interrupted_after_running += u64::from(ran > 0);
            }
            Outcome::Other(status) if ran == 0 => {
                r.note(|r| &mut r.lost, format!("{dev}: acknowledged command {n} never ran; it ended {status}"));
            }
            Outcome::Other(status) => {
                r.note(|r| &mut r.unexpected, format!("{dev}: command {n} ran, yet it ended {status}"));
            }
            Outcome::Unfinished if ran == 0 => {
                r.note(|r| &mut r.lost, format!("{dev}: acknowledged command {n} never ran nor ended"));
            }
            Outcome::Unfinished => {
                r.note(|r| &mut r.lost, format!("{dev}: command {n} ran but its job never recorded an outcome"));
            }
        }
    }
}

fn check_events(d: &DeviceHistory, r: &mut Report) {
    let dev = &d.device;
    let unsure = d.events.intended.difference(&d.events.sent).count() as u64;
    r.events_sent += d.events.sent.len() as u64;
    r.events_unsure += unsure;
    r.events_stored += d.stored.len() as u64;
    let stored = counts(&d.stored);
    for (&n, &times) in &stored {
        if !d.events.intended.contains(&n) {
            r.note(|r| &mut r.events_unexpected, format!("{dev}: event {n} stored but never generated"));
        }
        if times > 1 {
            r.note(|r| &mut r.events_duplicated, format!("{dev}: event {n} stored {times} times"));
        }
    }
    for (n, before) in out_of_order(&d.stored) {
        r.note(|r| &mut r.events_reordered, format!("{dev}: event {n} stored after event {before}"));
    }
    for n in &d.events.sent {
        if !stored.contains_key(n) {
            r.note(|r| &mut r.events_lost, format!("{dev}: event {n} was accepted by the outbox but never stored"));
        }
    }
}

fn counts(seq: &[u64]) -> HashMap<u64, u64> {
    let mut counts = HashMap::new();
    for &n in seq {
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

/// Each first occurrence that comes after a larger number, with that number (repeats are
/// counted as duplicates, not again here).
fn out_of_order(seq: &[u64]) -> Vec<(u64, u64)> {
    let mut seen = std::collections::HashSet::new();
    let mut highest = 0;
    let mut late = Vec::new();
    for &n in seq {
        if !seen.insert(n) {
            continue;
        }
        if n < highest {
            late.push((n, highest));
        }
        highest = highest.max(n);
    }
    late
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(submitted: &[(u64, Submission)], executed: &[u64]) -> DeviceHistory {
        DeviceHistory {
            device: "d".into(),
            submitted: submitted.iter().cloned().collect(),
            executed: executed.to_vec(),
            ..DeviceHistory::default()
        }
    }

    fn acked(o: Outcome) -> Submission {
        Submission::Acked(o)
    }

    #[test]
    fn a_clean_history_passes_and_counts_interruptions() {
        let d = device(
            &[
                (1, acked(Outcome::Ok)),
                (2, Submission::Unsure),
                (3, acked(Outcome::Interrupted)),
                (4, acked(Outcome::Ok)),
            ],
            &[1, 3, 4],
        );
        let r = check(&[d]);
        assert!(r.passed(), "{r:?}");
        assert_eq!((r.commands_acknowledged, r.commands_unsure, r.executions), (3, 1, 3));
        assert_eq!((r.interrupted, r.interrupted_after_running), (1, 1));
    }

    #[test]
    fn lost_doubled_reordered_and_unexpected_commands_are_each_caught() {
        let lost = check(&[device(&[(1, acked(Outcome::Other("expired".into())))], &[])]);
        assert_eq!(lost.lost, 1, "{lost:?}");
        let never_ended = check(&[device(&[(1, acked(Outcome::Unfinished))], &[])]);
        assert_eq!(never_ended.lost, 1);
        let twice = check(&[device(&[(1, acked(Outcome::Ok))], &[1, 1])]);
        assert_eq!(twice.executed_twice, 1);
        let unsure_twice = check(&[device(&[(1, Submission::Unsure)], &[1, 1])]);
        assert_eq!(unsure_twice.executed_twice, 1, "an unsure submission may run once, not twice");
        let reordered = check(&[device(&[(1, acked(Outcome::Ok)), (2, acked(Outcome::Ok))], &[2, 1])]);
        assert_eq!(reordered.reordered, 1);
        let stranger = check(&[device(&[(1, acked(Outcome::Ok))], &[1, 7])]);
        assert_eq!(stranger.unexpected, 1);
        let phantom = check(&[device(&[(1, acked(Outcome::Ok))], &[])]);
        assert_eq!(phantom.unexpected, 1, "ok without a run");
        for r in [lost, never_ended, twice, unsure_twice, reordered, stranger, phantom] {
            assert!(!r.passed());
            assert_eq!(r.examples.len(), 1, "{r:?}");
        }
    }

    #[test]
    fn events_are_checked_against_what_the_outbox_accepted() {
        let events = |intended: &[u64], sent: &[u64], stored: &[u64]| DeviceHistory {
            device: "d".into(),
            events: Events { intended: intended.iter().copied().collect(), sent: sent.iter().copied().collect() },
            stored: stored.to_vec(),
            ..DeviceHistory::default()
        };
        // Event 3's send was interrupted: stored or not, both are fine.
        for stored in [&[1, 2, 3, 4][..], &[1, 2, 4]] {
            let r = check(&[events(&[1, 2, 3, 4], &[1, 2, 4], stored)]);
            assert!(r.passed(), "{r:?}");
            assert_eq!(r.events_unsure, 1);
        }
        assert_eq!(check(&[events(&[1, 2], &[1, 2], &[1])]).events_lost, 1);
        assert_eq!(check(&[events(&[1, 2], &[1, 2], &[1, 2, 2])]).events_duplicated, 1);
        assert_eq!(check(&[events(&[1, 2], &[1, 2], &[2, 1])]).events_reordered, 1);
        assert_eq!(check(&[events(&[1], &[1], &[1, 9])]).events_unexpected, 1);
    }

    #[test]
    fn examples_are_bounded() {
        let executed: Vec<u64> = (1..=100).flat_map(|n| [n, n]).collect();
        let submitted: Vec<(u64, Submission)> = (1..=100).map(|n| (n, acked(Outcome::Ok))).collect();
        let r = check(&[device(&submitted, &executed)]);
        assert_eq!(r.executed_twice, 100);
        assert_eq!(r.examples.len(), EXAMPLES);
    }
}
