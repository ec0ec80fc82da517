//! Who may do what: one place for every permission check the broker makes, so access rules
//! (roles, finer ACLs) extend this and nothing else. Operators with the admin token (or an
//! `admin` token) may do everything; `operator` tokens read, cancel and change schedules, and
//! send where `[[acl.operators]]` rules allow; `viewer` tokens only read (never the audit log,
//! which is the admin's). Agents may call the server's application handlers; publish and subscribe where the `[acl]`
//! allow-lists say (outside `$orb.`); and send commands to other devices only where an
//! `[acl.peers]` rule allows (none by default). The rules are compiled once per configuration
//! (selectors parsed, `group:` names expanded) and replaced as a whole on reload.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use orb_proto::message::{Role, commands};
use orb_proto::tokens::Access;
use orb_proto::topic::{Pattern, Topic};
use orb_proto::{ErrorBody, ErrorCode, Selector, Subject};

use crate::config::AclConfig;
use crate::identity::Identity;
use crate::operators::OperatorTokens;
use crate::registry::Known;

/// Something a client asks the broker to do (jobs and requests to devices are checked with
/// [`Policy::reach`] instead: what they may reach depends on the targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Store a schedule that runs `command` on `target`.
    Schedule {
        /// Command name.
        command: &'a str,
        /// Selector.
        target: &'a str,
    },
    /// Call an application handler registered on the server.
    Call {
        /// Command name.
        command: &'a str,
    },
    /// Read or change the registry or the job history, or ask about the server (the `$orb.`
    /// queries).
    Query {
        /// The query's name (`$orb.devices.list`, ...).
        name: &'a str,
    },
    /// Send an admin message to the server process (`orb signal`).
    Signal,
    /// Publish on `topic` (never a `$orb.` one: those are refused before the policy).
    Publish {
        /// The topic.
        topic: &'a str,
    },
    /// Keep a publication as `topic`'s retained one (or clear it): server-wide state.
    Retain {
        /// The topic.
        topic: &'a str,
    },
    /// Subscribe to `pattern`.
    Subscribe {
        /// The pattern.
        pattern: &'a str,
    },
}

/// Which devices a client's command may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Any device (operators).
    Any,
    /// The devices one of these selectors matches by id and operator-set tags (an agent, by
    /// its `[acl.peers]` rules).
    Only(Vec<Selector>),
}

impl Reach {
    /// Whether `target` may get the command.
    pub fn allows(&self, target: &Known) -> bool {
        match self {
            Reach::Any => true,
            Reach::Only(to) => to.iter().any(|sel| sel.matches(&OperatorView(target))),
        }
    }
}

/// A device as access rules see it: its id and the tags operators set, never the tags it
/// reports about itself (a device must not widen its own rights).
struct OperatorView<'a>(&'a Known);

impl Subject for OperatorView<'_> {
    fn id(&self) -> &str {
        &self.0.id
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.0.operator_tags.get(key).map(String::as_str)
    }
}

/// One allow-list entry for topics: a pattern, or one naming the device's own id (`{id}`).
#[derive(Debug, Clone)]
enum TopicRule {
    Pattern(Pattern),
    /// A pattern with `{id}` segments, replaced by the device's id when checked.
    PerDevice(String),
}

impl TopicRule {
    /// The pattern for device `id`; `None` for an `{id}` entry when the session is no device.
    fn for_device(&self, id: Option<&str>) -> Option<Pattern> {
        match self {
            TopicRule::Pattern(p) => Some(p.clone()),
            TopicRule::PerDevice(t) => Pattern::parse(&t.replace(ID_VAR, id?)).ok(),
        }
    }
}

/// The placeholder for the device's own id in a topic allow-list entry.
const ID_VAR: &str = "{id}";

/// A command-name rule of `[acl.peers]`: `*` (any), `NAME`, or `PREFIX*`.
#[derive(Debug, Clone)]
enum CommandRule {
    Exact(String),
    Prefix(String),
}

impl CommandRule {
    fn matches(&self, command: &str) -> bool {
        match self {
            CommandRule::Exact(c) => c == command,
            CommandRule::Prefix(p) => command.starts_with(p.as_str()),
        }
    }
}

/// One compiled `[[acl.peers]]` rule: devices `from` may send `commands` to devices `to`.
#[derive(Debug, Clone)]
struct PeerRule {
    from: Selector,
    to: Selector,
    commands: Vec<CommandRule>,
}

/// One compiled `[[acl.operators]]` rule: operator-role tokens (all, or those in `tokens`) may
/// send `commands` to devices `to`.
#[derive(Debug, Clone)]
struct OperatorRule {
    tokens: Vec<String>,
    to: Selector,
    commands: Vec<CommandRule>,
}

/// The compiled `[acl]` section.
#[derive(Debug, Clone)]
pub struct Acl {
    publish: Vec<TopicRule>,
    retain: Vec<TopicRule>,
    subscribe: Vec<TopicRule>,
    peers: Vec<PeerRule>,
    operators: Vec<OperatorRule>,
}

impl Default for Acl {
    fn default() -> Self {
        let groups = BTreeMap::new();
        Acl::compile(&AclConfig::default(), &groups).expect("the default [acl] compiles")
    }
}

impl Acl {
    /// Compiles `config`, expanding `group:` names with `groups`.
    ///
    /// # Errors
    /// Every problem, one message each naming its key.
    pub fn compile(config: &AclConfig, groups: &BTreeMap<String, Selector>) -> Result<Acl, Vec<String>> {
        let mut problems = Vec::new();
        let publish = topic_rules("acl.agent_publish", &config.agent_publish, &mut problems);
        let retain = topic_rules("acl.agent_retain", &config.agent_retain, &mut problems);
        let subscribe = topic_rules("acl.agent_subscribe", &config.agent_subscribe, &mut problems);
        let selector = |key: String, text: &str, problems: &mut Vec<String>| {
            Selector::parse(text)
                .map_err(|e| e.to_string())
                .and_then(|s| s.expand_groups(&|name| groups.get(name).cloned()).map_err(|e| e.to_string()))
                .map_err(|e| problems.push(format!("'{key}' = \"{}\": {e}", orb_proto::excerpt(text))))
                .ok()
        };
        let mut peers = Vec::new();
        for (i, rule) in config.peers.iter().enumerate() {
            let from = selector(format!("acl.peers[{i}].from"), &rule.from, &mut problems);
            let to = selector(format!("acl.peers[{i}].to"), &rule.to, &mut problems);
            let commands = command_rules(&format!("acl.peers[{i}].commands"), &rule.commands, &mut problems);
            if let (Some(from), Some(to)) = (from, to) {
                peers.push(PeerRule { from, to, commands });
            }
        }
        let mut operators = Vec::new();
        for (i, rule) in config.operators.iter().enumerate() {
            let to = selector(format!("acl.operators[{i}].to"), &rule.to, &mut problems);
            let commands = command_rules(&format!("acl.operators[{i}].commands"), &rule.commands, &mut problems);
            if let Some(to) = to {
                operators.push(OperatorRule { tokens: rule.tokens.clone(), to, commands });
            }
        }
        if problems.is_empty() { Ok(Acl { publish, retain, subscribe, peers, operators }) } else { Err(problems) }
    }
}

/// Compiles the command names of a rule (`key`): `NAME`, `PREFIX*` or `*`; none is a problem.
fn command_rules(key: &str, entries: &[String], problems: &mut Vec<String>) -> Vec<CommandRule> {
    let mut commands = Vec::new();
    for c in entries {
        match c.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => commands.push(CommandRule::Prefix(prefix.to_owned())),
            None if !c.is_empty() && !c.contains('*') => commands.push(CommandRule::Exact(c.clone())),
            _ => problems.push(format!("'{key}': \"{}\" is not a command name, NAME* or *", orb_proto::excerpt(c))),
        }
    }
    if entries.is_empty() {
        problems.push(format!("'{key}' is empty: name the commands, or \"*\" for any"));
    }
    commands
}

fn topic_rules(key: &str, entries: &[String], problems: &mut Vec<String>) -> Vec<TopicRule> {
    let mut rules = Vec::new();
    for text in entries {
        let bad = |why: String| format!("'{key}': \"{}\": {why}", orb_proto::excerpt(text));
        if text.starts_with(orb_proto::topic::RESERVED) {
            problems.push(bad("the server's $orb. topics are for operators only".into()));
            continue;
        }
        let per_device = text.contains(ID_VAR);
        if per_device && text.split('.').any(|seg| seg.contains(ID_VAR) && seg != ID_VAR) {
            problems.push(bad(format!("{ID_VAR} stands alone as a whole segment")));
            continue;
        }
        match Pattern::parse(&text.replace(ID_VAR, "x")) {
            Ok(_) if per_device => rules.push(TopicRule::PerDevice(text.clone())),
            Ok(p) => rules.push(TopicRule::Pattern(p)),
            Err(e) => problems.push(bad(e.message)),
        }
    }
    rules
}

/// The access policy: fixed rules for roles, and the configured [`Acl`] (replaced on reload).
#[derive(Default)]
pub struct Policy {
    acl: RwLock<Arc<Acl>>,
    /// The operator tokens, whose names are looked up on every check (a revoked one admits
    /// nothing more). Unset: no named token is valid.
    tokens: std::sync::OnceLock<Arc<OperatorTokens>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("acl", &self.acl).finish_non_exhaustive()
    }
}

/// The `$orb.` queries that only read: a viewer may ask them.
const READS: [&str; 10] = [
    commands::SERVER_INFO,
    commands::SELECTOR_RESOLVE,
    commands::DEVICES_LIST,
    commands::DEVICES_SHOW,
    commands::DEVICES_SUMMARY,
    commands::DEVICES_MESSAGES,
    commands::JOBS_LIST,
    commands::JOBS_SHOW,
    commands::SCHEDULES_LIST,
    commands::SCHEDULES_SHOW,
];

/// The `$orb.` queries an `operator` may ask beyond the reads: about jobs and schedules (a
/// schedule's creation is judged again by its service, as [`Action::Schedule`]).
const OPERATES: [&str; 5] = [
    commands::JOBS_CANCEL,
    commands::SCHEDULES_CREATE,
    commands::SCHEDULES_PAUSE,
    commands::SCHEDULES_RESUME,
    commands::SCHEDULES_REMOVE,
];

impl Policy {
    /// A policy with `acl`.
    pub fn new(acl: Acl) -> Policy {
        Policy { acl: RwLock::new(Arc::new(acl)), tokens: std::sync::OnceLock::new() }
    }

    /// The server's operator tokens, once given.
    pub fn tokens(&self) -> Option<&Arc<OperatorTokens>> {
        self.tokens.get()
    }

    /// Gives the policy the server's operator tokens (once, at start).
    pub fn set_tokens(&self, tokens: Arc<OperatorTokens>) {
        let _ = self.tokens.set(tokens);
    }

    /// What an operator identity may do now: its named token's role while the token is valid,
    /// else the access its credential gave (an operator without one, from a custom
    /// authenticator, has full rights as before roles existed).
    ///
    /// # Errors
    /// `forbidden` once its token was revoked or expired.
    fn access(&self, who: &Identity) -> Result<Access, ErrorBody> {
        match &who.token {
            Some(name) => match self.tokens.get() {
                Some(tokens) => tokens.access(name).map_err(|why| ErrorBody::new(ErrorCode::Forbidden, why)),
                None => Err(ErrorBody::new(ErrorCode::Forbidden, format!("the token {name} is not known here"))),
            },
            None => Ok(who.access.unwrap_or(Access::Admin)),
        }
    }

    /// The operator side of [`Policy::check`].
    fn check_operator(&self, who: &Identity, action: &Action<'_>) -> Result<(), ErrorBody> {
        let access = self.access(who)?;
        let refused = |what: &str| {
            Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("{} ({} token) may not {what}", who.name, access.as_str()),
            ))
        };
        match (access, action) {
            (Access::Admin, _) => Ok(()),
            (_, Action::Query { name }) if *name == commands::AUDIT_LIST => {
                refused("read the audit log: it is the admin's")
            }
            (_, Action::Query { name }) if READS.contains(name) => Ok(()),
            (_, Action::Subscribe { .. }) => Ok(()),
            (Access::Viewer, _) => refused("change anything: the viewer role reads only"),
            (Access::Operator, Action::Query { name }) if OPERATES.contains(name) => Ok(()),
            (Access::Operator, Action::Publish { .. } | Action::Retain { .. } | Action::Call { .. }) => Ok(()),
            (Access::Operator, Action::Schedule { command, target }) => {
                // A schedule fires later on whatever its selector matches then: only a rule that
                // reaches every device (`to = "*"`) covers it.
                let everywhere = self.operator_rules(who, command).iter().any(|to| to.to_string() == "*");
                if everywhere {
                    Ok(())
                } else {
                    refused(&format!(
                        "schedule '{}' on '{}': an operator schedules only commands an [[acl.operators]] rule allows on every device (to = \"*\")",
                        orb_proto::excerpt(command),
                        orb_proto::excerpt(target)
                    ))
                }
            }
            (Access::Operator, Action::Query { name }) => refused(&format!(
                "ask {}: the registry, tokens and audit changes are the admin's",
                orb_proto::excerpt(name)
            )),
            (Access::Operator, Action::Signal) => refused("send admin signals"),
        }
    }

    /// The `to` selectors of the `[[acl.operators]]` rules for `who`'s token that allow `command`.
    fn operator_rules(&self, who: &Identity, command: &str) -> Vec<Selector> {
        self.acl()
            .operators
            .iter()
            .filter(|r| r.tokens.is_empty() || who.token.as_deref().is_some_and(|t| r.tokens.iter().any(|n| n == t)))
            .filter(|r| r.commands.iter().any(|c| c.matches(command)))
            .map(|r| r.to.clone())
            .collect()
    }

    /// Replaces the ACL (configuration reload): every check from now on uses the new rules.
    pub fn set_acl(&self, acl: Acl) {
        *self.acl.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(acl);
    }

    fn acl(&self) -> Arc<Acl> {
        Arc::clone(&self.acl.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Whether `who` may do `action`.
    ///
    /// # Errors
    /// `forbidden` saying what would be needed.
    pub fn check(&self, who: &Identity, action: &Action<'_>) -> Result<(), ErrorBody> {
        if who.role == Role::Operator {
            return self.check_operator(who, action);
        }
        // `{id}` entries name a device's own topics: a session that is no device has none.
        let device = who.device.as_ref().map(orb_proto::DeviceId::as_str);
        let forbidden = |what: String| {
            Err(ErrorBody::new(ErrorCode::Forbidden, format!("{what} need an operator session (admin token)")))
        };
        match action {
            Action::Call { .. } => Ok(()),
            Action::Publish { topic } | Action::Retain { topic } => {
                let (rules, key, what) = match action {
                    Action::Retain { .. } => (&self.acl().retain, "acl.agent_retain", "retain"),
                    _ => (&self.acl().publish, "acl.agent_publish", "publish on"),
                };
                let allowed = Topic::parse(topic)
                    .is_ok_and(|topic| rules.iter().filter_map(|r| r.for_device(device)).any(|p| p.matches(&topic)));
                if allowed {
                    return Ok(());
                }
                let msg =
                    format!("{} may not {what} '{}': no entry of {key} allows it", who.name, orb_proto::excerpt(topic));
                Err(ErrorBody::new(ErrorCode::Forbidden, msg))
            }
            Action::Subscribe { pattern } => {
                // The server's own events (`$orb.`: presence, jobs) are for operators.
                let msg = if pattern.starts_with(orb_proto::topic::RESERVED) {
                    format!("subscriptions to {} need an operator session", orb_proto::excerpt(pattern))
                } else if Pattern::parse(pattern).is_ok_and(|wanted| {
                    self.acl().subscribe.iter().filter_map(|r| r.for_device(device)).any(|p| p.covers(&wanted))
                }) {
                    return Ok(());
                } else {
                    format!(
                        "{} may not subscribe to '{}': no entry of acl.agent_subscribe covers it",
                        who.name,
                        orb_proto::excerpt(pattern)
                    )
                };
                Err(ErrorBody::new(ErrorCode::Forbidden, msg))
            }
            Action::Schedule { .. } => forbidden("schedules".into()),
            Action::Query { name } => forbidden(format!("{} and the other $orb. queries", orb_proto::excerpt(name))),
            Action::Signal => forbidden("admin signals".into()),
        }
    }

    /// Which devices `who` may send `command` to: any for operators; for an agent (`sender`, as
    /// the registry knows it) the `to` selectors of the `[acl.peers]` rules whose `from` it
    /// matches and whose commands include `command`.
    ///
    /// # Errors
    /// `forbidden` when no rule lets the agent send `command` anywhere.
    pub fn reach(&self, who: &Identity, sender: Option<&Known>, command: &str) -> Result<Reach, ErrorBody> {
        if who.role == Role::Operator {
            return match self.access(who)? {
                Access::Admin => Ok(Reach::Any),
                Access::Viewer => Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    format!("{} (viewer token) may not send commands: the viewer role reads only", who.name),
                )),
                Access::Operator => {
                    let to = self.operator_rules(who, command);
                    if to.is_empty() {
                        let msg = format!(
                            "{} (operator token) may not send '{}': no [[acl.operators]] rule allows it",
                            who.name,
                            orb_proto::excerpt(command)
                        );
                        return Err(ErrorBody::new(ErrorCode::Forbidden, msg));
                    }
                    Ok(Reach::Only(to))
                }
            };
        }
        let to: Vec<Selector> = match sender {
            Some(sender) => self
                .acl()
                .peers
                .iter()
                .filter(|r| r.from.matches(&OperatorView(sender)) && r.commands.iter().any(|c| c.matches(command)))
                .map(|r| r.to.clone())
                .collect(),
            None => Vec::new(),
        };
        if to.is_empty() {
            let msg = format!(
                "{} may not send '{}' to other devices: no [[acl.peers]] rule allows it (device-to-device commands are denied unless configured)",
                who.name,
                orb_proto::excerpt(command)
            );
            return Err(ErrorBody::new(ErrorCode::Forbidden, msg));
        }
        Ok(Reach::Only(to))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::PeerRuleConfig;
    use orb_proto::DeviceId;

    fn known(id: &str, operator: &[(&str, &str)], reported: &[(&str, &str)]) -> Known {
        let tags = |t: &[(&str, &str)]| t.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Known {
            id: id.into(),
            secret_hash: None,
            revoked: false,
            first_seen: None,
            reported_tags: tags(reported),
            operator_tags: tags(operator),
            commands: Arc::from([]),
        }
    }

    fn agent(id: &str) -> Identity {
        Identity::device(DeviceId::new(id).unwrap())
    }

    #[test]
    fn agents_may_call_handlers_and_operators_may_do_everything() {
        let p = Policy::default();
        let op = Identity::admin("op-1");
        let actions = [
            Action::Schedule { command: "ping", target: "*" },
            Action::Query { name: "$orb.devices.list" },
            Action::Signal,
        ];
        for a in actions {
            assert_eq!(p.check(&agent("cam-1"), &a).unwrap_err().code, ErrorCode::Forbidden, "{a:?}");
            assert!(p.check(&op, &a).is_ok());
        }
        assert!(p.check(&agent("cam-1"), &Action::Call { command: "report" }).is_ok());
        assert_eq!(p.reach(&op, None, "ping").unwrap(), Reach::Any);
    }

    #[test]
    fn device_to_device_is_denied_unless_a_rule_allows_it() {
        let sender = known("ctl-1", &[("role", "controller")], &[]);
        let p = Policy::default();
        let e = p.reach(&agent("ctl-1"), Some(&sender), "ping").unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.contains("acl.peers"), "{}", e.message);

        let config = AclConfig {
            peers: vec![PeerRuleConfig {
                from: "tag:role=controller".into(),
                to: "w-*".into(),
                commands: vec!["motor.*".into(), "ping".into()],
            }],
            ..AclConfig::default()
        };
        let p = Policy::new(Acl::compile(&config, &BTreeMap::new()).unwrap());
        let reach = p.reach(&agent("ctl-1"), Some(&sender), "motor.stop").unwrap();
        assert!(reach.allows(&known("w-1", &[], &[])));
        assert!(!reach.allows(&known("cam-1", &[], &[])));
        assert!(p.reach(&agent("ctl-1"), Some(&sender), "reboot").is_err(), "command not listed");
        // A device claiming the tag itself gains nothing: rules read operator tags only.
        let pretender = known("cam-9", &[], &[("role", "controller")]);
        assert!(p.reach(&agent("cam-9"), Some(&pretender), "ping").is_err());
    }

    #[test]
    fn topic_allow_lists_with_the_devices_own_id() {
        let config = AclConfig {
            agent_publish: vec!["telemetry.{id}.>".into(), "events.*".into()],
            agent_subscribe: vec!["commands.{id}.>".into(), "broadcast.>".into()],
            ..AclConfig::default()
        };
        let p = Policy::new(Acl::compile(&config, &BTreeMap::new()).unwrap());
        let gw = agent("gw-1");
        let publish = |t| p.check(&gw, &Action::Publish { topic: t }).is_ok();
        assert!(publish("telemetry.gw-1.cpu"));
        assert!(!publish("telemetry.gw-2.cpu"), "another device's topic");
        assert!(publish("events.boot"));
        assert!(!publish("events.boot.extra"));
        assert!(p.check(&gw, &Action::Retain { topic: "telemetry.gw-1.cpu" }).is_err(), "retaining: none by default");
        // A session that is no device has no `{id}` topics.
        let nameless = Identity { device: None, ..agent("gw-1") };
        assert!(p.check(&nameless, &Action::Publish { topic: "telemetry.gw-1.cpu" }).is_err());
        let subscribe = |pat| p.check(&gw, &Action::Subscribe { pattern: pat }).is_ok();
        assert!(subscribe("commands.gw-1.>"));
        assert!(subscribe("broadcast.*.x"));
        assert!(!subscribe(">"), "wider than allowed");
        assert!(!subscribe("commands.*.>"));
        assert!(!subscribe("$orb.presence.>"));
        // Operators are not bound by the agents' lists.
        assert!(p.check(&Identity::admin("op"), &Action::Publish { topic: "anything" }).is_ok());
    }

    #[test]
    fn bad_rules_are_reported_naming_their_key() {
        let config = AclConfig {
            agent_publish: vec!["a..b".into(), "$orb.x".into(), "t.x{id}".into()],
            agent_retain: vec!["r.>.x".into()],
            agent_subscribe: vec![],
            peers: vec![PeerRuleConfig { from: "(".into(), to: "group:nope".into(), commands: vec!["a*b".into()] }],
            operators: vec![],
            token_devices: false,
        };
        let all = Acl::compile(&config, &BTreeMap::new()).unwrap_err().join("\n");
        for says in [
            "acl.agent_publish",
            "acl.agent_retain",
            "$orb.",
            "whole segment",
            "acl.peers[0].from",
            "acl.peers[0].to",
            "acl.peers[0].commands",
        ] {
            assert!(all.contains(says), "{says} missing from:\n{all}");
        }
        // An empty list denies; it never means "everything".
        let config = AclConfig { agent_publish: vec![], ..AclConfig::default() };
        let p = Policy::new(Acl::compile(&config, &BTreeMap::new()).unwrap());
        assert!(p.check(&agent("gw-1"), &Action::Publish { topic: "a" }).is_err());
    }
}
