//! Target selectors: the small language that names which devices a job runs on,
//! e.g. `cam-*,web-1 and not tag:env=staging`. The server resolves job targets with
//! [`Selector::expand_groups`] and [`Selector::matches`]; the CLI calls [`Selector::parse`]
//! to validate a selector before sending it.
//!
//! ```text
//! selector := or ; or := and ("or" and)* ; and := not ("and" not)* ; not := "not" not | atom
//! atom     := "(" selector ")" | list ; list := item ("," item)*
//! item     := "*" | ID | GLOB | "tag:" KEY "=" VALUE | "group:" NAME
//! ```
//!
//! Precedence is comma list > `not` > `and` > `or`. Ids, globs and tag values compare
//! case-sensitively; the keywords `and`, `or`, `not` are lowercase and reserved.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use crate::text::excerpt;

/// Longest selector, in bytes; a longer one is refused before it is read
/// ([`SelectorErrorKind::TooLong`], `bad_selector` on the wire).
pub const MAX_INPUT_LEN: usize = 4096;
/// Deepest nesting of parentheses and `not` ([`SelectorErrorKind::TooDeep`]): the parser
/// recurses per level, so this bounds its stack whatever the input.
pub const MAX_DEPTH: usize = 32;
const MAX_ID_LEN: usize = 64;
const MAX_KEY_LEN: usize = 64;
const MAX_VALUE_LEN: usize = 256;
const MAX_GROUP_DEPTH: usize = 16;
/// Cap on nodes produced by [`Selector::expand_groups`], so groups that reference each other
/// many times cannot blow up exponentially.
const MAX_EXPANDED_NODES: usize = 65_536;
const EXPECTED_ITEM: &str = "expected a device id, glob, tag: or group:";

/// Something a selector is matched against: a device as the server knows it.
pub trait Subject {
    /// The device id, compared exactly (case-sensitive).
    fn id(&self) -> &str;
    /// The value of tag `key`, or `None` when the device has no such tag.
    fn tag(&self, key: &str) -> Option<&str>;
}

/// A parsed target selector. Build one with [`Selector::parse`] or [`str::parse`];
/// [`fmt::Display`] prints a canonical form that parses back to an equal selector (as long as
/// it stays within the parse limits, which a large group expansion can exceed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    root: Node,
}

/// What went wrong; see [`SelectorError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorErrorKind {
    /// The input does not follow the grammar: bad character, missing operand, unbalanced
    /// parenthesis, keyword where an item belongs, item too long...
    Syntax,
    /// [`Selector::expand_groups`] met a `group:` name the lookup does not know.
    UnknownGroup,
    /// Groups refer to each other in a cycle, or nest deeper than 16 levels.
    GroupCycle,
    /// The input is longer than 4096 bytes, or group expansion grew past 65536 nodes.
    TooLong,
    /// Parentheses and `not` nest deeper than 32 levels.
    TooDeep,
}

/// Why a selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct SelectorError {
    /// 0-based byte offset into the input. For expansion errors, the offset of the top-level
    /// `group:` reference that led to the problem.
    pub position: usize,
    /// The category of the problem.
    pub kind: SelectorErrorKind,
    /// Lowercase description of the problem, without trailing period.
    pub message: String,
}

impl SelectorError {
    fn new(kind: SelectorErrorKind, position: usize, message: impl Into<String>) -> Self {
        SelectorError { position, kind, message: message.into() }
    }

    fn syntax(position: usize, message: impl Into<String>) -> Self {
        Self::new(SelectorErrorKind::Syntax, position, message)
    }
}

/// Private AST. Invariants (kept by [`Node::or`] and [`Node::and`]): `Or` and `And` hold at
/// least two operands and never directly contain a node of their own kind; lists are non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A comma list, matching when any item matches (a bare item is a list of one).
    List(Vec<Item>),
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    All,
    Id(String),
    Glob(String),
    /// `value` is a glob matched against the tag value.
    Tag {
        key: String,
        value: String,
    },
    Group {
        name: String,
        at: SourcePos,
    },
}

/// Byte offset of a `group:` item in the text it was parsed from, used only to position
/// expansion errors. Ignored by equality, so `a,group:g` and `a , group:g` are equal.
#[derive(Debug, Clone, Copy)]
struct SourcePos(usize);

impl PartialEq for SourcePos {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SourcePos {}

impl Node {
    fn or(nodes: Vec<Node>) -> Node {
        Self::flatten(nodes, true)
    }

    fn and(nodes: Vec<Node>) -> Node {
        Self::flatten(nodes, false)
    }

    fn flatten(nodes: Vec<Node>, is_or: bool) -> Node {
        let mut flat = Vec::with_capacity(nodes.len());
        for node in nodes {
            match node {
                Node::Or(inner) if is_or => flat.extend(inner),
                Node::And(inner) if !is_or => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match <[Node; 1]>::try_from(flat) {
            Ok([single]) => single,
            Err(flat) if is_or => Node::Or(flat),
            Err(flat) => Node::And(flat),
        }
    }

    fn matches<S: Subject + ?Sized>(&self, subject: &S) -> bool {
        match self {
            Node::List(items) => items.iter().any(|item| item.matches(subject)),
            Node::Or(nodes) => nodes.iter().any(|node| node.matches(subject)),
            Node::And(nodes) => nodes.iter().all(|node| node.matches(subject)),
            Node::Not(node) => !node.matches(subject),
        }
    }

    fn collect_groups<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Node::List(items) => {
                for item in items {
                    if let Item::Group { name, .. } = item
                        && !out.contains(&name.as_str())
                    {
                        out.push(name);
                    }
                }
            }
            Node::Or(nodes) | Node::And(nodes) => nodes.iter().for_each(|n| n.collect_groups(out)),
            Node::Not(node) => node.collect_groups(out),
        }
    }
}

impl Item {
    fn matches<S: Subject + ?Sized>(&self, subject: &S) -> bool {
        match self {
            Item::All => true,
            Item::Id(id) => subject.id() == id,
            Item::Glob(pattern) => glob_match(pattern, subject.id()),
            Item::Tag { key, value } => subject.tag(key).is_some_and(|v| glob_match(value, v)),
            Item::Group { .. } => false,
        }
    }
}

impl Selector {
    /// Parse `input`; see the module docs for the grammar and limits.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        if input.len() > MAX_INPUT_LEN {
            return Err(SelectorError::new(
                SelectorErrorKind::TooLong,
                MAX_INPUT_LEN,
                format!("selector is longer than {MAX_INPUT_LEN} bytes"),
            ));
        }
        if input.trim().is_empty() {
            return Err(SelectorError::syntax(0, "empty selector"));
        }
        let mut parser = Parser::new(input);
        let root = parser.parse_or()?;
        match parser.tok {
            Tok::End => Ok(Selector { root }),
            Tok::RParen => Err(SelectorError::syntax(parser.tok_pos, "unbalanced ')' with no matching '('")),
            tok => Err(SelectorError::syntax(
                parser.tok_pos,
                format!("expected 'and', 'or' or end of input but found {}", describe(tok)),
            )),
        }
    }

    /// Replace every group:NAME with the selector `lookup(NAME)` returns (recursively, groups
    /// may name groups); unknown group -> SelectorError with kind UnknownGroup; cycle or
    /// expansion depth > 16 -> error kind GroupCycle. An expansion that grows past 65536
    /// nodes fails with kind TooLong.
    pub fn expand_groups(&self, lookup: &dyn Fn(&str) -> Option<Selector>) -> Result<Selector, SelectorError> {
        let mut expander = Expander { lookup, chain: Vec::new(), origin: 0, budget: MAX_EXPANDED_NODES };
        Ok(Selector { root: expander.node(&self.root)? })
    }

    /// true when the subject matches. A group: node that was not expanded never matches
    /// (so `not group:x` matches everything until expanded). Does not allocate.
    pub fn matches<S: Subject + ?Sized>(&self, subject: &S) -> bool {
        self.root.matches(subject)
    }

    /// When the whole selector is a comma list of plain ids (no globs, tags, groups,
    /// operators), those ids (duplicates removed, first occurrence kept), so a caller can
    /// look them up directly instead of scanning every device.
    pub fn exact_ids(&self) -> Option<Vec<&str>> {
        let Node::List(items) = &self.root else {
            return None;
        };
        let mut seen = HashSet::with_capacity(items.len());
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            let Item::Id(id) = item else { return None };
            if seen.insert(id.as_str()) {
                ids.push(id.as_str());
            }
        }
        Some(ids)
    }

    /// Names of groups referenced (before expansion), in order of first appearance, without
    /// duplicates.
    pub fn group_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.root.collect_groups(&mut names);
        names
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.root, f)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (operands, separator) = match self {
            Node::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let comma = if i > 0 { "," } else { "" };
                    write!(f, "{comma}{item}")?;
                }
                return Ok(());
            }
            Node::Not(node) => return write!(f, "not {}", Operand(node, false)),
            Node::Or(nodes) => (nodes, " or "),
            Node::And(nodes) => (nodes, " and "),
        };
        for (i, node) in operands.iter().enumerate() {
            let separator = if i > 0 { separator } else { "" };
            write!(f, "{separator}{}", Operand(node, matches!(self, Node::Or(_))))?;
        }
        Ok(())
    }
}

/// An operand of `not` or `and` (or of `or` when `.1` is true), displayed in parentheses when
/// it binds looser than its parent, so the output parses back to the same tree.
struct Operand<'a>(&'a Node, bool);

impl fmt::Display for Operand<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (node @ Node::Or(_), _) | (node @ Node::And(_), false) => write!(f, "({node})"),
            (node, _) => write!(f, "{node}"),
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::All => f.write_str("*"),
            Item::Id(text) | Item::Glob(text) => f.write_str(text),
            Item::Tag { key, value } => write!(f, "tag:{key}={value}"),
            Item::Group { name, .. } => write!(f, "group:{name}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    LParen,
    RParen,
    Comma,
    /// A maximal run of characters that are not whitespace, parentheses or commas.
    Word(&'a str),
    End,
}

fn is_keyword(word: &str) -> bool {
    matches!(word, "and" | "or" | "not")
}

fn describe(tok: Tok<'_>) -> String {
    match tok {
        Tok::LParen => "'('".to_owned(),
        Tok::RParen => "')'".to_owned(),
        Tok::Comma => "','".to_owned(),
        Tok::End => "end of input".to_owned(),
        Tok::Word(word) if is_keyword(word) => format!("keyword '{word}'"),
        // A word runs to the next space, so it may be the whole 4 KiB input: echo a prefix.
        Tok::Word(word) => format!("'{}'", excerpt(word).escape_debug()),
    }
}

/// Recursive-descent parser over a one-token lookahead lexer.
struct Parser<'a> {
    src: &'a str,
    /// Byte offset where lexing resumes.
    cursor: usize,
    tok: Tok<'a>,
    tok_pos: usize,
    /// Current nesting of parentheses and `not`.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        let mut parser = Parser { src, cursor: 0, tok: Tok::End, tok_pos: 0, depth: 0 };
        parser.advance();
        parser
    }

    fn advance(&mut self) {
        let rest = &self.src[self.cursor..];
        let trimmed = rest.trim_start();
        let start = self.cursor + (rest.len() - trimmed.len());
        let (tok, len) = match trimmed.chars().next() {
            None => (Tok::End, 0),
            Some('(') => (Tok::LParen, 1),
            Some(')') => (Tok::RParen, 1),
            Some(',') => (Tok::Comma, 1),
            Some(_) => {
                let len =
                    trimmed.find(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ',')).unwrap_or(trimmed.len());
                (Tok::Word(&trimmed[..len]), len)
            }
        };
        self.tok = tok;
        self.tok_pos = start;
        self.cursor = start + len;
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        self.tok == Tok::Word(keyword)
    }

    fn enter(&mut self) -> Result<(), SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SelectorError::new(
                SelectorErrorKind::TooDeep,
                self.tok_pos,
                format!("selector nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Node, SelectorError> {
        let mut nodes = vec![self.parse_and()?];
        while self.at_keyword("or") {
            self.advance();
            nodes.push(self.parse_and()?);
        }
        Ok(Node::or(nodes))
    }

    fn parse_and(&mut self) -> Result<Node, SelectorError> {
        let mut nodes = vec![self.parse_not()?];
        while self.at_keyword("and") {
            self.advance();
            nodes.push(self.parse_not()?);
        }
        Ok(Node::and(nodes))
    }

    fn parse_not(&mut self) -> Result<Node, SelectorError> {
        if !self.at_keyword("not") {
            return self.parse_atom();
        }
        self.enter()?;
        self.advance();
        let inner = self.parse_not()?;
        self.depth -= 1;
        Ok(Node::Not(Box::new(inner)))
    }

    fn parse_atom(&mut self) -> Result<Node, SelectorError> {
        if self.tok != Tok::LParen {
            return self.parse_list();
        }
        let open = self.tok_pos;
        self.enter()?;
        self.advance();
        let inner = self.parse_or()?;
        match self.tok {
            Tok::RParen => self.advance(),
            Tok::End => return Err(SelectorError::syntax(open, "unclosed '('")),
            tok => {
                return Err(SelectorError::syntax(
                    self.tok_pos,
                    format!("expected 'and', 'or' or ')' but found {}", describe(tok)),
                ));
            }
        }
        self.depth -= 1;
        Ok(inner)
    }

    fn parse_list(&mut self) -> Result<Node, SelectorError> {
        let mut items = vec![self.parse_item()?];
        while self.tok == Tok::Comma {
            self.advance();
            items.push(self.parse_item()?);
        }
        Ok(Node::List(items))
    }

    fn parse_item(&mut self) -> Result<Item, SelectorError> {
        match self.tok {
            Tok::Word(word) if !is_keyword(word) => {
                let item = parse_item_word(word, self.tok_pos)?;
                self.advance();
                Ok(item)
            }
            tok => Err(SelectorError::syntax(self.tok_pos, format!("{EXPECTED_ITEM} but found {}", describe(tok)))),
        }
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_glob_char(c: char) -> bool {
    is_id_char(c) || c == '*' || c == '?'
}

fn is_key_char(c: char) -> bool {
    is_id_char(c) || c == '.'
}

/// Checks that a tag can be selected as `tag:KEY=VALUE`: key and value use the selector's
/// characters and lengths. Positions in the error are offsets into the key or the value.
///
/// # Errors
/// The problem, as the selector parser would report it.
pub fn check_tag(key: &str, value: &str) -> Result<(), SelectorError> {
    if key.is_empty() {
        return Err(SelectorError::syntax(0, "empty tag key"));
    }
    check_chars(key, 0, "tag key", is_key_char)?;
    check_max_len(key, 0, "tag key", MAX_KEY_LEN)?;
    check_chars(value, 0, "tag value", is_value_char)?;
    check_max_len(value, 0, "tag value", MAX_VALUE_LEN)
}

fn is_value_char(c: char) -> bool {
    is_key_char(c) || matches!(c, ':' | '/' | '@' | '+' | '*' | '?')
}

/// Fail at the first character of `text` (which starts at byte `pos`) that `allowed` rejects.
fn check_chars(text: &str, pos: usize, what: &str, allowed: fn(char) -> bool) -> Result<(), SelectorError> {
    match text.char_indices().find(|&(_, c)| !allowed(c)) {
        Some((i, c)) => Err(SelectorError::syntax(pos + i, format!("invalid character {c:?} in {what}"))),
        None => Ok(()),
    }
}

fn check_max_len(text: &str, pos: usize, what: &str, max: usize) -> Result<(), SelectorError> {
    if text.len() > max {
        return Err(SelectorError::syntax(pos, format!("{what} is longer than {max} characters")));
    }
    Ok(())
}

/// Validate an id, glob or group name starting at byte `pos`.
fn check_id(text: &str, pos: usize, what: &str, allowed: fn(char) -> bool) -> Result<(), SelectorError> {
    check_chars(text, pos, what, allowed)?;
    match text.chars().next() {
        None => return Err(SelectorError::syntax(pos, format!("empty {what}"))),
        Some(c @ ('_' | '-')) => {
            return Err(SelectorError::syntax(pos, format!("{what} cannot start with {c:?}")));
        }
        Some(_) => {}
    }
    check_max_len(text, pos, what, MAX_ID_LEN)
}

/// Turn one non-keyword word starting at byte `pos` into an item.
fn parse_item_word(word: &str, pos: usize) -> Result<Item, SelectorError> {
    if word == "*" {
        return Ok(Item::All);
    }
    if let Some(rest) = word.strip_prefix("tag:") {
        let key_pos = pos + "tag:".len();
        let Some((key, value)) = rest.split_once('=') else {
            check_chars(rest, key_pos, "tag key", is_key_char)?;
            return Err(SelectorError::syntax(pos + word.len(), "expected '=' after tag key"));
        };
        check_chars(key, key_pos, "tag key", is_key_char)?;
        if key.is_empty() {
            return Err(SelectorError::syntax(key_pos, "empty tag key"));
        }
        check_max_len(key, key_pos, "tag key", MAX_KEY_LEN)?;
        let value_pos = key_pos + key.len() + 1;
        check_chars(value, value_pos, "tag value", is_value_char)?;
        check_max_len(value, value_pos, "tag value", MAX_VALUE_LEN)?;
        return Ok(Item::Tag { key: key.to_owned(), value: value.to_owned() });
    }
    if let Some(name) = word.strip_prefix("group:") {
        check_id(name, pos + "group:".len(), "group name", is_id_char)?;
        return Ok(Item::Group { name: name.to_owned(), at: SourcePos(pos) });
    }
    if word.contains(['*', '?']) {
        check_id(word, pos, "glob", is_glob_char)?;
        Ok(Item::Glob(word.to_owned()))
    } else {
        check_id(word, pos, "device id", is_id_char)?;
        Ok(Item::Id(word.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------
// Group expansion

struct Expander<'l> {
    lookup: &'l dyn Fn(&str) -> Option<Selector>,
    /// Groups currently being expanded, outermost first.
    chain: Vec<String>,
    /// Position of the top-level `group:` item being expanded.
    origin: usize,
    /// Nodes and items still allowed to be produced.
    budget: usize,
}

impl Expander<'_> {
    fn error(&self, kind: SelectorErrorKind, message: String) -> SelectorError {
        SelectorError::new(kind, self.origin, message)
    }

    fn spend(&mut self) -> Result<(), SelectorError> {
        match self.budget.checked_sub(1) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => {
                Err(self
                    .error(SelectorErrorKind::TooLong, format!("group expansion exceeds {MAX_EXPANDED_NODES} nodes")))
            }
        }
    }

    fn node(&mut self, node: &Node) -> Result<Node, SelectorError> {
        self.spend()?;
        Ok(match node {
            Node::List(items) => self.list(items)?,
            Node::Or(nodes) => Node::or(nodes.iter().map(|n| self.node(n)).collect::<Result<_, _>>()?),
            Node::And(nodes) => Node::and(nodes.iter().map(|n| self.node(n)).collect::<Result<_, _>>()?),
            Node::Not(inner) => Node::Not(Box::new(self.node(inner)?)),
        })
    }

    /// Expand a comma list. Groups that expand to a list are spliced in; anything else turns
    /// the list into `rest-of-list or expansion...`.
    fn list(&mut self, items: &[Item]) -> Result<Node, SelectorError> {
        let mut plain = Vec::with_capacity(items.len());
        let mut others = Vec::new();
        for item in items {
            let Item::Group { name, at } = item else {
                self.spend()?;
                plain.push(item.clone());
                continue;
            };
            if self.chain.is_empty() {
                self.origin = at.0;
            }
            match self.group(name)? {
                Node::List(more) => plain.extend(more),
                node => others.push(node),
            }
        }
        if others.is_empty() {
            return Ok(Node::List(plain));
        }
        if !plain.is_empty() {
            others.insert(0, Node::List(plain));
        }
        Ok(Node::or(others))
    }

    fn group(&mut self, name: &str) -> Result<Node, SelectorError> {
        if self.chain.iter().any(|n| n == name) {
            let path = self.chain.join(" -> ");
            return Err(self.error(SelectorErrorKind::GroupCycle, format!("group cycle {path} -> {name}")));
        }
        if self.chain.len() >= MAX_GROUP_DEPTH {
            return Err(self.error(
                SelectorErrorKind::GroupCycle,
                format!("groups nest deeper than {MAX_GROUP_DEPTH} levels at group '{name}'"),
            ));
        }
        let Some(selector) = (self.lookup)(name) else {
            let message = match self.chain.last() {
                Some(parent) => format!("unknown group '{name}' (used by group '{parent}')"),
                None => format!("unknown group '{name}'"),
            };
            return Err(self.error(SelectorErrorKind::UnknownGroup, message));
        };
        self.chain.push(name.to_owned());
        let expanded = self.node(&selector.root);
        self.chain.pop();
        expanded
    }
}

// ---------------------------------------------------------------------------------------
// Glob matching

/// Length of the UTF-8 sequence starting with byte `lead`.
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Match `text` against `pattern`, where `*` matches any run of characters and `?` exactly
/// one character; everything else matches itself. `pattern` is ASCII (the parser guarantees
/// it). Iterative, backtracking only to the last `*`: O(len(pattern) * len(text)) worst case,
/// no allocation.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // (pattern index just after the last `*`, text index that `*` currently extends to)
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                pi += 1;
                star = Some((pi, ti));
            }
            Some(b'?') => {
                pi += 1;
                ti += utf8_len(t[ti]);
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry from there.
                Some((star_pi, star_ti)) => {
                    let next = star_ti + utf8_len(t[star_ti]);
                    star = Some((star_pi, next));
                    pi = star_pi;
                    ti = next;
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    struct Dev {
        id: String,
        tags: Vec<(&'static str, &'static str)>,
    }

    impl Subject for Dev {
        fn id(&self) -> &str {
            &self.id
        }
        fn tag(&self, key: &str) -> Option<&str> {
            self.tags.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        }
    }

    fn dev(id: &'static str) -> Dev {
        Dev { id: id.to_owned(), tags: Vec::new() }
    }

    fn tagged(id: &'static str, tags: &[(&'static str, &'static str)]) -> Dev {
        Dev { id: id.to_owned(), tags: tags.to_vec() }
    }

    fn sel(input: &str) -> Selector {
        Selector::parse(input).unwrap()
    }

    fn err(input: &str) -> SelectorError {
        Selector::parse(input).unwrap_err()
    }

    fn matching(input: &str, ids: &[&'static str]) -> Vec<&'static str> {
        let s = sel(input);
        ids.iter().copied().filter(|id| s.matches(&dev(id))).collect()
    }

    #[test]
    fn star_matches_everything() {
        let s = sel("*");
        assert_eq!(s, Selector { root: Node::List(vec![Item::All]) });
        assert!(s.matches(&dev("anything")));
        assert_eq!(s.to_string(), "*");
    }

    #[test]
    fn plain_id_matches_exactly_and_case_sensitively() {
        assert_eq!(matching("web-1", &["web-1", "web-10", "WEB-1", "web"]), ["web-1"]);
        assert_eq!(matching("a_b-C9", &["a_b-C9", "a_b-c9"]), ["a_b-C9"]);
        let long = "a".repeat(64);
        assert!(sel(&long).matches(&Dev { id: long.clone(), tags: Vec::new() }));
    }

    #[test]
    fn globs_match_ids() {
        let ids = ["cam-1", "cam-22", "web-1", "web-12", "db-eu", "cam-eu", "camera"];
        assert_eq!(matching("cam-*", &ids), ["cam-1", "cam-22", "cam-eu"]);
        assert_eq!(matching("web-?", &ids), ["web-1"]);
        assert_eq!(matching("*-eu", &ids), ["db-eu", "cam-eu"]);
        assert_eq!(matching("?am*", &ids), ["cam-1", "cam-22", "cam-eu", "camera"]);
        assert_eq!(sel("cam-*"), Selector { root: Node::List(vec![Item::Glob("cam-*".into())]) });
    }

    #[test]
    fn comma_list_mixes_ids_and_globs() {
        let ids = ["cam-1", "cam-2", "web-1", "db-1"];
        assert_eq!(matching("web-1,cam-*", &ids), ["cam-1", "cam-2", "web-1"]);
        assert_eq!(sel("web-1 , cam-* ,db-1"), sel("web-1,cam-*,db-1"));
        assert_eq!(sel("web-1 , cam-* ,db-1").to_string(), "web-1,cam-*,db-1");
    }

    #[test]
    fn tags_match_with_glob_values() {
        let eu = tagged("a", &[("region", "eu-west-1"), ("os.version", "14.2"), ("empty", "")]);
        let us = tagged("b", &[("region", "us-east-1")]);
        let none = dev("c");
        assert!(sel("tag:region=eu-west-1").matches(&eu));
        assert!(!sel("tag:region=eu-west-1").matches(&us));
        assert!(sel("tag:region=eu-*").matches(&eu));
        assert!(sel("tag:region=*-1").matches(&us));
        assert!(sel("tag:os.version=14.?").matches(&eu));
        assert!(sel("tag:empty=").matches(&eu));
        assert!(!sel("tag:empty=").matches(&us));
        assert!(!sel("tag:region=*").matches(&none), "a missing tag never matches");
        assert!(sel("tag:url=http://x@y/z+1:2").matches(&tagged("d", &[("url", "http://x@y/z+1:2")])));
        assert_eq!(sel("tag:k=v").to_string(), "tag:k=v");
        assert!(check_tag("os.version", "14.2").is_ok());
        assert!(check_tag("url", "http://x@y/z+1:2").is_ok());
        for (k, v) in [("", "v"), ("a/b", "v"), ("a=b", "v"), ("k", "two words"), ("k", "a,b")] {
            assert!(check_tag(k, v).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn unexpanded_groups_never_match() {
        let s = sel("group:cams");
        assert!(!s.matches(&dev("cams")));
        assert!(sel("not group:cams").matches(&dev("x")));
        assert_eq!(s.to_string(), "group:cams");
        assert_eq!(sel("group:a or x,group:b and group:a").group_names(), ["a", "b"]);
        assert!(sel("a,b").group_names().is_empty());
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        assert_eq!(sel("a or b and not c"), sel("a or (b and (not c))"));
        assert_eq!(sel("not a and b"), sel("(not a) and b"));
        let ids = ["a", "b", "c"];
        assert_eq!(matching("a or b and not c", &ids), ["a", "b"]);
        assert_eq!(matching("b and not b or a", &ids), ["a"]);
        assert_eq!(matching("not not a", &ids), ["a"]);
        assert_eq!(matching("not a,b", &ids), ["c"], "a comma list binds tighter than not");
        assert_eq!(sel("a or b and not c").to_string(), "a or b and not c");
    }

    #[test]
    fn parentheses_override_precedence() {
        let ids = ["a", "b", "c"];
        assert_eq!(matching("(a or b) and not c", &ids), ["a", "b"]);
        assert_eq!(matching("(a or b) and not (b or c)", &ids), ["a"]);
        assert_eq!(matching("not (a or b)", &ids), ["c"]);
        assert_eq!(sel("((a))"), sel("a"));
        assert_eq!(sel("(a or b) or c"), sel("a or b or c"));
        assert_eq!(sel("(a or b) and c").to_string(), "(a or b) and c");
        assert_eq!(sel("not (a and b)").to_string(), "not (a and b)");
        assert_eq!(sel("not(a)and(b)").to_string(), "not a and b");
    }

    #[test]
    fn whitespace_and_keyword_boundaries() {
        assert_eq!(sel("  a \t or\nb  "), sel("a or b"));
        assert_eq!(sel("AND"), Selector { root: Node::List(vec![Item::Id("AND".into())]) });
        assert_eq!(matching("android or notes", &["android", "notes", "or"]), ["android", "notes"]);
        assert_eq!(err("a andb").position, 2);
    }

    #[test]
    fn from_str_and_error_display() {
        let s: Selector = "web-1,web-2".parse().unwrap();
        assert_eq!(s, sel("web-1,web-2"));
        let e = "a or )".parse::<Selector>().unwrap_err();
        assert_eq!(e.to_string(), "expected a device id, glob, tag: or group: but found ')' at position 5");
    }

    #[track_caller]
    fn assert_err(input: &str, position: usize, kind: SelectorErrorKind, message: &str) {
        let e = err(input);
        assert_eq!((e.position, e.kind), (position, kind), "{input:?}: {e}");
        assert!(e.message.contains(message), "{input:?}: {:?} lacks {message:?}", e.message);
    }

    #[test]
    fn syntax_errors_name_position_and_problem() {
        let long_id = "a".repeat(65);
        let long_glob = format!("x,{}*", "a".repeat(64));
        let long_value = format!("tag:k={}", "v".repeat(257));
        let long_key = format!("tag:{}=v", "k".repeat(65));
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty selector"),
            ("  \t ", 0, "empty selector"),
            ("(a or b", 0, "unclosed '('"),
            ("x and ((a or b)", 6, "unclosed '('"),
            ("a or b)", 6, "unbalanced ')'"),
            ("()", 1, "but found ')'"),
            ("(a b)", 3, "expected 'and', 'or' or ')' but found 'b'"),
            ("a or", 4, "but found end of input"),
            ("a and not", 9, "but found end of input"),
            ("or a", 0, "but found keyword 'or'"),
            ("a or or b", 5, "but found keyword 'or'"),
            ("a,and", 2, "but found keyword 'and'"),
            ("not", 3, "end of input"),
            ("a b", 2, "expected 'and', 'or' or end of input but found 'b'"),
            ("a && b", 2, "expected 'and', 'or' or end of input but found '&&'"),
            ("(a),b", 3, "found ','"),
            ("a,,b", 2, "found ','"),
            ("a,", 2, "found end of input"),
            ("web.1", 3, "invalid character '.' in device id"),
            ("cam-*.x", 5, "invalid character '.' in glob"),
            ("ok or wéb", 7, "invalid character 'é' in device id"),
            ("a or !b", 5, "invalid character '!' in device id"),
            ("-a", 0, "device id cannot start with '-'"),
            (&long_id, 0, "device id is longer than 64 characters"),
            (&long_glob, 2, "glob is longer than 64"),
            ("tag:env", 7, "expected '=' after tag key"),
            ("tag:=x", 4, "empty tag key"),
            ("tag:e$v=x", 5, "invalid character '$' in tag key"),
            ("tag:k=a=b", 7, "invalid character '=' in tag value"),
            (&long_value, 6, "tag value is longer than 256"),
            (&long_key, 4, "tag key is longer than 64"),
            ("group:", 6, "empty group name"),
            ("group:a.b", 7, "invalid character '.' in group name"),
            ("group:c*", 7, "invalid character '*' in group name"),
        ];
        for &(input, position, message) in cases {
            assert_err(input, position, SelectorErrorKind::Syntax, message);
        }
    }

    #[test]
    fn errors_echo_only_a_short_prefix_of_a_long_word() {
        let word = format!("{}!{}", "a".repeat(100), "b".repeat(3000));
        let e = err(&format!("x {word}"));
        assert!(e.message.contains(&format!("'{}…'", "a".repeat(64))), "{e}");
        assert!(e.to_string().len() < 200, "{e}");
        // Inputs past the length limit are refused before anything is echoed.
        let e = err(&"x ".repeat(1 << 19));
        assert!(e.to_string().len() < 100, "{e}");
        // check_tag names the problem, never the whole key or value.
        for (k, v) in [("k".repeat(1 << 20), "v".to_owned()), ("k".to_owned(), "v ".repeat(1 << 19))] {
            let e = check_tag(&k, &v).unwrap_err();
            assert!(e.to_string().len() < 100, "{e}");
        }
    }

    #[test]
    fn length_and_depth_limits() {
        let ok = format!("{}a", "a,".repeat(2047));
        assert_eq!(ok.len(), 4095);
        assert!(Selector::parse(&ok).is_ok());
        assert_err(&"a,".repeat(2049), 4096, SelectorErrorKind::TooLong, "longer than 4096 bytes");

        let nested = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(sel(&nested(32)), sel("a"));
        assert_err(&nested(33), 32, SelectorErrorKind::TooDeep, "deeper than 32");
        assert_eq!(err(&nested(2000)).kind, SelectorErrorKind::TooDeep);
        assert_eq!(err(&"(".repeat(100_000)).kind, SelectorErrorKind::TooLong);
        assert!(Selector::parse(&format!("{}a", "not ".repeat(32))).is_ok());
        assert_err(&format!("{}a", "not ".repeat(33)), 128, SelectorErrorKind::TooDeep, "deeper");
        assert_eq!(err(&"not (".repeat(800)).kind, SelectorErrorKind::TooDeep);
    }

    fn groups(defs: &[(&str, &str)]) -> HashMap<String, Selector> {
        defs.iter().map(|(name, body)| (name.to_string(), sel(body))).collect()
    }

    fn expand(input: &str, defs: &[(&str, &str)]) -> Result<Selector, SelectorError> {
        let map = groups(defs);
        sel(input).expand_groups(&|name| map.get(name).cloned())
    }

    #[test]
    fn group_expansion_replaces_groups() {
        let defs = [("cams", "cam-*"), ("eu", "tag:region=eu-*"), ("both", "group:cams,web-1")];
        assert_eq!(expand("group:cams", &defs).unwrap(), sel("cam-*"));
        assert_eq!(expand("group:cams and not group:eu", &defs).unwrap(), sel("cam-* and not tag:region=eu-*"));
        assert_eq!(expand("db-1,group:both", &defs).unwrap(), sel("db-1,cam-*,web-1"));
        assert_eq!(expand("a,b", &defs).unwrap(), sel("a,b"));
        let expanded = expand("group:both", &defs).unwrap();
        assert!(expanded.group_names().is_empty());
        assert!(expanded.matches(&dev("cam-7")) && expanded.matches(&dev("web-1")));
    }

    #[test]
    fn group_in_list_expanding_to_operators_becomes_or() {
        let defs = [("odd", "a and not b"), ("pair", "x or y")];
        let expanded = expand("c,group:odd,d", &defs).unwrap();
        assert_eq!(expanded, sel("c,d or a and not b"));
        assert_eq!(Selector::parse(&expanded.to_string()).unwrap(), expanded);
        assert_eq!(expand("group:pair or z", &defs).unwrap(), sel("x or y or z"));
        assert_eq!(expand("group:pair and z", &defs).unwrap().to_string(), "(x or y) and z");
    }

    #[test]
    fn unknown_groups_are_errors() {
        let e = expand("a or group:cams", &[]).unwrap_err();
        assert_eq!((e.kind, e.position), (SelectorErrorKind::UnknownGroup, 5));
        assert_eq!(e.to_string(), "unknown group 'cams' at position 5");
        let e = expand("x, group:outer", &[("outer", "group:inner")]).unwrap_err();
        assert_eq!((e.kind, e.position), (SelectorErrorKind::UnknownGroup, 3));
        assert_eq!(e.message, "unknown group 'inner' (used by group 'outer')");
    }

    #[test]
    fn group_cycles_and_deep_chains_are_errors() {
        let e = expand("group:a", &[("a", "x,group:a")]).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (SelectorErrorKind::GroupCycle, "group cycle a -> a"));
        let e = expand("x or group:a", &[("a", "group:b"), ("b", "not group:a")]).unwrap_err();
        assert_eq!((e.kind, e.position), (SelectorErrorKind::GroupCycle, 5));
        assert_eq!(e.message, "group cycle a -> b -> a");

        let chain: Vec<(String, String)> = (0..20).map(|i| (format!("g{i}"), format!("group:g{}", i + 1))).collect();
        let mut defs: Vec<(&str, &str)> = chain.iter().map(|(n, b)| (n.as_str(), b.as_str())).collect();
        defs.push(("g20", "leaf"));
        // g5 -> ... -> g20 is 16 groups deep: allowed. g4 needs 17: rejected.
        assert_eq!(expand("group:g5", &defs).unwrap(), sel("leaf"));
        let e = expand("group:g4", &defs).unwrap_err();
        assert_eq!(e.kind, SelectorErrorKind::GroupCycle);
        assert!(e.message.contains("deeper than 16"), "{e}");
    }

    #[test]
    fn group_expansion_cannot_blow_up() {
        // Each level references the next 8 times: 8^12 nodes if unbounded.
        let chain: Vec<(String, String)> =
            (0..12).map(|i| (format!("g{i}"), vec![format!("group:g{}", i + 1); 8].join(" or "))).collect();
        let mut defs: Vec<(&str, &str)> = chain.iter().map(|(n, b)| (n.as_str(), b.as_str())).collect();
        defs.push(("g12", "leaf"));
        assert_eq!(expand("group:g0", &defs).unwrap_err().kind, SelectorErrorKind::TooLong);
    }

    #[test]
    fn exact_ids_only_for_plain_id_lists() {
        assert_eq!(sel("web-1").exact_ids(), Some(vec!["web-1"]));
        assert_eq!(sel("a, b ,c,a").exact_ids(), Some(vec!["a", "b", "c"]));
        for input in ["a,b*", "a or b", "*", "a,*", "tag:k=v", "group:g", "not a", "(a,b) and c"] {
            assert_eq!(sel(input).exact_ids(), None, "{input}");
        }
        assert_eq!(sel("(a,b)").exact_ids(), Some(vec!["a", "b"]));
    }

    #[test]
    fn glob_matcher_edge_cases() {
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**", "abc"));
        assert!(!glob_match("?", ""));
        assert!(glob_match("?", "é"), "? matches one character, not one byte");
        assert!(!glob_match("??", "é"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("*a*a*a*b", &format!("{}b", "a".repeat(300))));
        assert!(!glob_match("*a*a*a*b", &"a".repeat(300)));
    }

    // ---- property tests

    fn arb_word() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9_-]{0,10}".prop_filter("keyword", |w| !is_keyword(w))
    }

    fn arb_item() -> impl Strategy<Value = Item> {
        prop_oneof![
            Just(Item::All),
            arb_word().prop_map(Item::Id),
            "[A-Za-z0-9*?][A-Za-z0-9_*?-]{0,8}"
                .prop_filter("needs a wildcard, not a lone star", |g| g.contains(['*', '?']) && g != "*")
                .prop_map(Item::Glob),
            ("[A-Za-z0-9_.-]{1,8}", "[A-Za-z0-9_.:/@+*?-]{0,10}").prop_map(|(key, value)| Item::Tag { key, value }),
            "[A-Za-z0-9][A-Za-z0-9_-]{0,8}".prop_map(|name| Item::Group { name, at: SourcePos(0) }),
        ]
    }

    fn arb_node() -> impl Strategy<Value = Node> {
        let leaf = prop::collection::vec(arb_item(), 1..4).prop_map(Node::List);
        leaf.prop_recursive(5, 40, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Node::or),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Node::and),
                inner.prop_map(|n| Node::Not(Box::new(n))),
            ]
        })
    }

    fn arb_selector_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("and ".to_owned()),
            Just("or ".to_owned()),
            Just("not ".to_owned()),
            Just("(".to_owned()),
            Just(")".to_owned()),
            Just(",".to_owned()),
            Just(" ".to_owned()),
            "(tag:|group:)?[a-z*?.:=é_-]{0,6}",
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    fn reference_glob(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| reference_glob(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && reference_glob(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && reference_glob(rest, &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn display_parses_back_to_equal_selector(root in arb_node()) {
            let selector = Selector { root };
            let text = selector.to_string();
            prop_assert_eq!(Selector::parse(&text), Ok(selector), "text: {}", text);
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(input in any::<String>()) {
            let _ = Selector::parse(&input);
        }

        #[test]
        fn parse_never_panics_on_unicode(input in "\\PC{0,64}") {
            let _ = Selector::parse(&input);
        }

        #[test]
        fn parsed_selector_like_input_round_trips(input in arb_selector_like()) {
            match Selector::parse(&input) {
                Ok(s) => prop_assert_eq!(Selector::parse(&s.to_string()), Ok(s)),
                Err(e) => prop_assert!(e.position <= input.len()),
            }
        }

        #[test]
        fn glob_agrees_with_reference(pattern in "[ab*?]{0,8}", text in "[abé]{0,10}") {
            let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
            prop_assert_eq!(glob_match(&pattern, &text), reference_glob(&p, &t));
        }
    }
}
