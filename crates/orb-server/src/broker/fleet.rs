//! Settings pushed to agents (`[[fleet.agents]]`, decision 0031): the compiled rules, the
//! settings one device gets from them, and the push. A device is told its settings in its
//! `welcome` and again in a `config` frame whenever they change: a reload replaced the rules or
//! the groups, or an operator changed its tags. Each session remembers a digest of what it was
//! last told, so a push sends a frame only to the devices whose settings changed.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use orb_proto::agent_config::{AgentSettings, MAX_SETTINGS_BYTES};
use orb_proto::{DeviceId, Envelope, Kind, Selector, Subject};

use super::Broker;
use crate::config::{AgentRuleConfig, FleetConfig};
use crate::router::sessions::DeviceSession;

/// The compiled `[[fleet.agents]]` rules, in file order.
#[derive(Debug, Default)]
pub struct FleetRules {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    select: Selector,
    settings: AgentSettings,
}

impl FleetRules {
    /// Compiles the rules: selectors parsed with `groups` expanded, durations read, every value
    /// within the protocol's bounds, and everything all rules could push together within
    /// [`MAX_SETTINGS_BYTES`]. Every problem is reported, each naming its rule.
    ///
    /// # Errors
    /// The problems, one message each.
    pub fn compile(config: &FleetConfig, groups: &BTreeMap<String, Selector>) -> Result<FleetRules, Vec<String>> {
        let mut problems = Vec::new();
        let mut rules = Vec::with_capacity(config.agents.len());
        let mut all = AgentSettings::default();
        for (i, rule) in config.agents.iter().enumerate() {
            let key = format!("fleet.agents[{i}]");
            let select = Selector::parse(&rule.select)
                .map_err(|e| e.to_string())
                .and_then(|s| s.expand_groups(&|name| groups.get(name).cloned()).map_err(|e| e.to_string()))
                .map_err(|e| problems.push(format!("'{key}.select' = \"{}\": {e}", orb_proto::excerpt(&rule.select))))
                .ok();
            let settings = settings_of(&key, rule, &mut problems);
            if let (Some(select), Some(settings)) = (select, settings) {
                all.merge(&settings);
                rules.push(Rule { select, settings });
            }
        }
        let size = serde_json::to_vec(&all).map_or(0, |v| v.len());
        if size > MAX_SETTINGS_BYTES {
            problems.push(format!(
                "'fleet.agents': the rules together could push {size} bytes of settings, at most {MAX_SETTINGS_BYTES}"
            ));
        }
        if problems.is_empty() { Ok(FleetRules { rules }) } else { Err(problems) }
    }

    /// The settings for `device`: every matching rule in order, later values over earlier ones.
    pub fn settings_for<S: Subject + ?Sized>(&self, device: &S) -> AgentSettings {
        let mut settings = AgentSettings::default();
        for rule in self.rules.iter().filter(|r| r.select.matches(device)) {
            settings.merge(&rule.settings);
        }
        settings
    }
}

/// One rule's values as the protocol carries them, or `None` with its problems recorded.
fn settings_of(key: &str, rule: &AgentRuleConfig, problems: &mut Vec<String>) -> Option<AgentSettings> {
    let before = problems.len();
    let telemetry_interval_ms = rule.telemetry_interval.as_deref().and_then(|text| match interval_ms(text) {
        Ok(ms) => Some(ms),
        Err(e) => {
            problems.push(format!("'{key}.telemetry_interval' = \"{}\": {e}", orb_proto::excerpt(text)));
            None
        }
    });
    let settings = AgentSettings {
        telemetry_interval_ms,
        telemetry_metrics: rule.telemetry_metrics.clone(),
        log_level: rule.log_level.clone(),
        exec_allow: rule.exec_allow.clone(),
    };
    if let Err(p) = settings.check() {
        problems.extend(p.into_iter().map(|m| format!("'{key}': {m}")));
    }
    (problems.len() == before).then_some(settings)
}

/// A telemetry interval as written in the file: `0` or `off` (none), or a duration.
fn interval_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text == "0" || text.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    humantime::parse_duration(text)
        .map(|d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|e| format!("not a duration like 30s, nor 0 or \"off\": {e}"))
}

/// A digest of `settings`, to tell whether a device was told them already.
pub(crate) fn digest(settings: &AgentSettings) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    settings.hash(&mut h);
    h.finish()
}

/// A device as its hello describes it, before the registry has the hello's tags: its id, the
/// tags operators set (they win) and those it reports now.
pub(crate) struct HelloSubject<'a> {
    pub id: &'a str,
    pub operator_tags: &'a BTreeMap<String, String>,
    pub reported_tags: &'a BTreeMap<String, String>,
}

impl Subject for HelloSubject<'_> {
    fn id(&self) -> &str {
        self.id
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.operator_tags.get(key).or_else(|| self.reported_tags.get(key)).map(String::as_str)
    }
}

impl Broker {
    /// The settings the rules in force give `device`.
    pub(crate) fn agent_settings_for<S: Subject + ?Sized>(&self, device: &S) -> AgentSettings {
        self.0.fleet.read().unwrap_or_else(std::sync::PoisonError::into_inner).settings_for(device)
    }

    /// Replaces the `[[fleet.agents]]` rules (configuration reload) and pushes their new
    /// settings to the connected devices whose settings changed.
    pub fn set_fleet(&self, rules: FleetRules) {
        *self.0.fleet.write().unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(rules);
        for session in self.sessions().all() {
            self.push_agent_settings_to(&session);
        }
    }

    /// Pushes `device`'s settings to it if they changed since it was last told (its tags
    /// changed, or it just registered after a reload that its welcome missed).
    pub(crate) fn push_agent_settings(&self, device: &DeviceId) {
        if let Some(session) = self.sessions().get(device.as_str()) {
            self.push_agent_settings_to(&session);
        }
    }

    /// Computes and sends under the session's lock, so two pushes for one device (a reload and
    /// a tag change) cannot deliver their settings out of order: the later one reads the newer
    /// rules and tags.
    fn push_agent_settings_to(&self, session: &DeviceSession) {
        let mut told = session.record.settings_told.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(known) = self.registry().get(session.record.id.as_str()) else { return };
        let settings = self.agent_settings_for(&*known);
        let d = digest(&settings);
        if *told == d {
            return;
        }
        let frame = session.outbox.codec.encode(&Envelope::new(Kind::Config).with_json_body(&settings));
        let len = frame.len();
        if session.outbox.deliver(frame).is_ok() {
            *told = d;
            self.metrics().sent(Kind::Config, len);
            tracing::debug!(device = %session.record.id, "pushed changed agent settings");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(select: &str) -> AgentRuleConfig {
        AgentRuleConfig {
            select: select.into(),
            telemetry_interval: None,
            telemetry_metrics: None,
            log_level: None,
            exec_allow: Vec::new(),
        }
    }

    struct Dev(&'static str, BTreeMap<String, String>);
    impl Subject for Dev {
        fn id(&self) -> &str {
            self.0
        }
        fn tag(&self, key: &str) -> Option<&str> {
            self.1.get(key).map(String::as_str)
        }
    }

    fn dev(id: &'static str, tags: &[(&str, &str)]) -> Dev {
        Dev(id, tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn matching_rules_apply_in_order() {
        let config = FleetConfig {
            agents: vec![
                AgentRuleConfig {
                    telemetry_interval: Some("60s".into()),
                    log_level: Some("info".into()),
                    exec_allow: vec!["uptime".into()],
                    ..rule("*")
                },
                AgentRuleConfig {
                    telemetry_interval: Some("off".into()),
                    exec_allow: vec!["df -h".into()],
                    ..rule("tag:role=sensor")
                },
                AgentRuleConfig { telemetry_metrics: Some(vec!["cpu".into()]), ..rule("group:edge") },
            ],
        };
        let groups = BTreeMap::from([("edge".to_owned(), Selector::parse("edge-*").unwrap())]);
        let rules = FleetRules::compile(&config, &groups).unwrap();
        let web = rules.settings_for(&dev("web-1", &[("role", "web")]));
        assert_eq!(web.telemetry_interval_ms, Some(60_000));
        assert_eq!(web.exec_allow, ["uptime"]);
        let sensor = rules.settings_for(&dev("edge-7", &[("role", "sensor")]));
        assert_eq!(sensor.telemetry_interval_ms, Some(0));
        assert_eq!(sensor.log_level.as_deref(), Some("info"));
        assert_eq!(sensor.telemetry_metrics, Some(vec!["cpu".to_owned()]));
        assert_eq!(sensor.exec_allow, ["uptime", "df -h"]);
        assert!(FleetRules::default().settings_for(&dev("web-1", &[])).is_empty());
        assert_ne!(digest(&web), digest(&sensor));
        assert_eq!(digest(&AgentSettings::default()), digest(&FleetRules::default().settings_for(&dev("x", &[]))));
    }

    #[test]
    fn every_bad_rule_is_named() {
        let config = FleetConfig {
            agents: vec![
                AgentRuleConfig { telemetry_interval: Some("soon".into()), ..rule("web-(") },
                AgentRuleConfig { telemetry_interval: Some("10ms".into()), ..rule("group:nope") },
                AgentRuleConfig {
                    telemetry_metrics: Some(vec!["gpu".into()]),
                    log_level: Some("loud".into()),
                    ..rule("*")
                },
                AgentRuleConfig { exec_allow: vec!["* any".into()], ..rule("*") },
            ],
        };
        let p = FleetRules::compile(&config, &BTreeMap::new()).unwrap_err().join("\n");
        for part in [
            "'fleet.agents[0].select' = \"web-(\"",
            "'fleet.agents[0].telemetry_interval' = \"soon\"",
            "'fleet.agents[1].select' = \"group:nope\"",
            "'fleet.agents[1]': telemetry_interval_ms = 10",
            "'fleet.agents[2]': telemetry metric 'gpu'",
            "'fleet.agents[2]': log_level: 'loud'",
            "'fleet.agents[3]': exec_allow entry 0",
        ] {
            assert!(p.contains(part), "{part} missing from:\n{p}");
        }
        let huge = FleetConfig {
            agents: (0..200)
                .map(|i| AgentRuleConfig { exec_allow: vec![format!("prog-{i} {}", "a".repeat(500))], ..rule("*") })
                .collect(),
        };
        let p = FleetRules::compile(&huge, &BTreeMap::new()).unwrap_err().join("\n");
        assert!(p.contains("could push"), "{p}");
    }
}
