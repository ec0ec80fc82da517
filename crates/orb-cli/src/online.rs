//! `orb send --online` and `--one`: the job's target selection mode they ask for, and the note
//! the human summary line gets for the matched devices that were skipped because they were not
//! connected.

use orb_client::Select;

/// The selection mode of a job: one connected device with `--one`, only connected devices with
/// `--online`, else every known one.
pub fn select(online: bool, one: bool) -> Select {
    match (online, one) {
        (_, true) => Select::One,
        (true, false) => Select::Online,
        (false, false) => Select::All,
    }
}

/// What the summary line adds for `skipped` devices: nothing when there were none.
pub fn skipped_note(skipped: u64) -> String {
    if skipped == 0 { String::new() } else { format!(", {skipped} skipped (not connected)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_appears_only_when_devices_were_skipped() {
        assert_eq!(skipped_note(0), "");
        assert_eq!(skipped_note(3), ", 3 skipped (not connected)");
        assert_eq!(select(true, false), Select::Online);
        assert_eq!(select(false, false), Select::All);
        assert_eq!(select(false, true), Select::One);
    }
}
