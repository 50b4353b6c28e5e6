//! Exchanges and their bindings. Each kind keeps an index suited to its routing: a hash map for
//! direct, a [`TopicTrie`] for topic, a [`HashRing`] for `x-consistent-hash`.

use std::collections::HashMap;

use amq_protocol::types::FieldTable;

use crate::protocol::method::{value_as_i64, value_as_str};
use crate::routing::{headers_match, HashRing, TopicTrie};

/// Exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every binding.
    Fanout,
    /// `*`/`#` patterns.
    Topic,
    /// Header matching.
    Headers,
    /// Consistent hashing of the routing key; binding key = weight.
    ConsistentHash,
}

impl ExchangeKind {
    /// Parse a type name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "direct" => Self::Direct,
            "fanout" => Self::Fanout,
            "topic" => Self::Topic,
            "headers" => Self::Headers,
            "x-consistent-hash" => Self::ConsistentHash,
            _ => return None,
        })
    }

    /// Type name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
            Self::ConsistentHash => "x-consistent-hash",
        }
    }
}

/// A binding destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    /// A queue.
    Queue(String),
    /// An exchange (exchange-to-exchange binding).
    Exchange(String),
}

impl Dest {
    /// Name of the destination.
    pub fn name(&self) -> &str {
        match self {
            Dest::Queue(n) | Dest::Exchange(n) => n,
        }
    }
}

/// A binding from an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Destination.
    pub dest: Dest,
    /// Binding key.
    pub key: String,
    /// Binding arguments.
    pub args: FieldTable,
}

/// An exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// `alternate-exchange` argument.
    pub alternate: Option<String>,
    /// Bindings, in creation order.
    pub bindings: Vec<Binding>,
    direct: HashMap<String, Vec<Dest>>,
    topic: TopicTrie<Dest>,
    ring: HashRing<Dest>,
}

impl Exchange {
    /// New exchange with no bindings.
    pub fn new(
        name: &str,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let alternate = arguments
            .inner()
            .get("alternate-exchange")
            .and_then(value_as_str);
        Self {
            name: name.to_owned(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            bindings: Vec::new(),
            direct: HashMap::new(),
            topic: TopicTrie::new(),
            ring: HashRing::default(),
        }
    }

    /// Add a binding; false if an identical one exists.
    pub fn bind(&mut self, b: Binding) -> bool {
        if self.bindings.contains(&b) {
            return false;
        }
        match self.kind {
            ExchangeKind::Direct => self
                .direct
                .entry(b.key.clone())
                .or_default()
                .push(b.dest.clone()),
            ExchangeKind::Topic => {
                self.topic.insert(&b.key, b.dest.clone());
            }
            _ => {}
        }
        self.bindings.push(b);
        self.reindex_ring();
        true
    }

    /// Remove a binding; false if absent.
    pub fn unbind(&mut self, dest: &Dest, key: &str, args: &FieldTable) -> bool {
        let Some(pos) = self
            .bindings
            .iter()
            .position(|b| &b.dest == dest && b.key == key && &b.args == args)
        else {
            return false;
        };
        let b = self.bindings.remove(pos);
        self.unindex(&b);
        self.reindex_ring();
        true
    }

    /// Remove every binding to `dest`; returns how many.
    pub fn remove_dest(&mut self, dest: &Dest) -> usize {
        let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.bindings)
            .into_iter()
            .partition(|b| &b.dest == dest);
        self.bindings = keep;
        for b in &gone {
            self.unindex(b);
        }
        self.reindex_ring();
        gone.len()
    }

    fn unindex(&mut self, b: &Binding) {
        match self.kind {
            ExchangeKind::Direct => {
                // several bindings may share key+dest with different args
                let still = self
                    .bindings
                    .iter()
                    .any(|o| o.key == b.key && o.dest == b.dest);
                if !still {
                    if let Some(v) = self.direct.get_mut(&b.key) {
                        v.retain(|d| d != &b.dest);
                        if v.is_empty() {
                            self.direct.remove(&b.key);
                        }
                    }
                }
            }
            ExchangeKind::Topic => {
                let still = self
                    .bindings
                    .iter()
                    .any(|o| o.key == b.key && o.dest == b.dest);
                if !still {
                    self.topic.remove(&b.key, &b.dest);
                }
            }
            _ => {}
        }
    }

    fn reindex_ring(&mut self) {
        if self.kind == ExchangeKind::ConsistentHash {
            let items: Vec<(String, Dest, u32)> = self
                .bindings
                .iter()
                .map(|b| {
                    let w = b.key.parse::<u32>().ok().or_else(|| {
                        b.args
                            .inner()
                            .get("weight")
                            .and_then(value_as_i64)
                            .map(|w| w as u32)
                    });
                    (
                        format!("{}\u{0}{}", b.dest.name(), b.key),
                        b.dest.clone(),
                        w.unwrap_or(1),
                    )
                })
                .collect();
            self.ring =
                HashRing::build(items.iter().map(|(id, d, w)| (id.as_str(), d.clone(), *w)));
        }
    }

    /// Destinations for a message.
    pub fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Dest>) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get(routing_key) {
                    out.extend(v.iter().cloned());
                }
            }
            ExchangeKind::Fanout => out.extend(self.bindings.iter().map(|b| b.dest.clone())),
            ExchangeKind::Topic => out.extend(self.topic.matches(routing_key)),
            ExchangeKind::Headers => out.extend(
                self.bindings
                    .iter()
                    .filter(|b| headers_match(&b.args, headers))
                    .map(|b| b.dest.clone()),
            ),
            ExchangeKind::ConsistentHash => {
                let key = match self
                    .arguments
                    .inner()
                    .get("hash-header")
                    .and_then(value_as_str)
                {
                    Some(h) => headers
                        .and_then(|t| t.inner().get(h.as_str()))
                        .and_then(value_as_str)
                        .unwrap_or_default(),
                    None => routing_key.to_owned(),
                };
                if let Some(d) = self.ring.route(&key) {
                    out.push(d.clone());
                }
            }
        }
    }
}
