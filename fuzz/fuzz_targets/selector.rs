//! The selector parser (`orb_proto::Selector`) over arbitrary text: a selector that parses
//! displays in a canonical form that parses back to an equal selector (and displays the same),
//! unless that form outgrows the 4096-byte input limit (`not(a)` displays as `not a`); an error
//! points inside the input; matching, exact ids and group expansion never panic, and a plain id
//! list matches exactly its ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orb_proto::selector::MAX_INPUT_LEN;
use orb_proto::{Selector, SelectorErrorKind, Subject};

struct Device {
    id: &'static str,
    tags: &'static [(&'static str, &'static str)],
}

impl Subject for Device {
    fn id(&self) -> &str {
        self.id
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

const DEVICES: [Device; 5] = [
    Device { id: "cam-1", tags: &[("kind", "cam"), ("region", "eu-west")] },
    Device { id: "web-3", tags: &[("role", "web"), ("env", "staging")] },
    Device { id: "db-1", tags: &[("role", "db"), ("os.version", "14.2")] },
    Device { id: "a", tags: &[] },
    Device { id: "x_Y-9", tags: &[("k", "")] },
];

/// Groups for `group:NAME`, including a cycle and one that refers to others.
fn group(name: &str) -> Option<Selector> {
    let text = match name {
        "cams" => "cam-*",
        "web" => "tag:role=web and not web-3",
        "loop" => "a or group:loop",
        "both" => "group:cams,group:web",
        "deep" => "not (group:both or (x and group:cams))",
        _ => return None,
    };
    Selector::parse(text).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let selector = match Selector::parse(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.position <= text.len(), "error position {} past the input: {e}", e.position);
            return;
        }
    };
    let shown = selector.to_string();
    match Selector::parse(&shown) {
        Ok(again) => {
            assert_eq!(again, selector, "{text:?} displays as {shown:?}, which parses differently");
            assert_eq!(again.to_string(), shown, "the canonical form is stable");
        }
        Err(e) => assert!(
            e.kind == SelectorErrorKind::TooLong && shown.len() > MAX_INPUT_LEN,
            "{text:?} displays as {shown:?}, which does not parse: {e}"
        ),
    }
    if let Some(ids) = selector.exact_ids() {
        for d in &DEVICES {
            assert_eq!(selector.matches(d), ids.contains(&d.id), "{text:?} against {}", d.id);
        }
    } else {
        for d in &DEVICES {
            let _ = selector.matches(d);
        }
    }
    let _ = selector.group_names();
    if let Ok(expanded) = selector.expand_groups(&group) {
        assert!(expanded.group_names().is_empty(), "{text:?}: expansion leaves no group");
        for d in &DEVICES {
            let _ = expanded.matches(d);
        }
        let _ = Selector::parse(&expanded.to_string());
    }
});
