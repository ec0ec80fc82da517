//! Target selectors: `Selector::parse` of typical selectors, and `Selector::matches` over a
//! registry of 10,000 synthetic devices (what a job's target resolution does when the selector
//! is not a plain id list).
//!
//! Run: `cargo bench -p orb-proto --bench selector`

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orb_proto::{Selector, Subject};

const DEVICES: usize = 10_000;

/// A device as a registry would hold it: an id and its tags.
struct Device {
    id: String,
    tags: BTreeMap<String, String>,
}

impl Subject for Device {
    fn id(&self) -> &str {
        &self.id
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// `web-0`, `db-1`, `cam-2`, `web-3`, ...: one third each, tagged `role` (= the prefix),
/// `env` (every fifth is `staging`, the rest `prod`) and `zone` (one of four).
fn devices() -> Vec<Device> {
    (0..DEVICES)
        .map(|i| {
            let role = ["web", "db", "cam"][i % 3];
            let env = if i % 5 == 0 { "staging" } else { "prod" };
            let zone = ["eu-1", "eu-2", "us-1", "us-2"][i % 4];
            Device {
                id: format!("{role}-{i}"),
                tags: [("role", role), ("env", env), ("zone", zone)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            }
        })
        .collect()
}

const SELECTORS: [(&str, &str); 4] = [
    ("all", "*"),
    ("glob", "web-*"),
    ("tag_and_not", "tag:role=web and not web-3"),
    ("id_list_5", "web-0,db-1,cam-2,web-3,db-4"),
];

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("selector_parse");
    let extra = [("complex", "(cam-*,web-1 or tag:env=staging) and not (tag:zone=us-2 or db-*)")];
    for (name, text) in SELECTORS.iter().chain(extra.iter()) {
        Selector::parse(text).expect("valid selector");
        g.bench_function(*name, |b| b.iter(|| Selector::parse(black_box(text)).expect("valid selector")));
    }
    g.finish();
}

fn bench_matches(c: &mut Criterion) {
    let devices = devices();
    let mut g = c.benchmark_group("selector_matches_10k");
    g.throughput(Throughput::Elements(DEVICES as u64));
    for (name, text) in SELECTORS {
        let sel = Selector::parse(text).expect("valid selector");
        let expected = match name {
            "all" => DEVICES,
            "glob" => DEVICES.div_ceil(3),
            "tag_and_not" => DEVICES.div_ceil(3) - 1,
            _ => 5,
        };
        let count = |sel: &Selector| devices.iter().filter(|d| sel.matches(*d)).count();
        assert_eq!(count(&sel), expected, "{text}");
        g.bench_function(name, |b| b.iter(|| count(black_box(&sel))));
    }
    g.finish();
}

criterion_group!(benches, bench_parse, bench_matches);
criterion_main!(benches);
