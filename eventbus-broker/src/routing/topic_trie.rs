//! A trie for topic bindings: words separated by `.`, `*` matches exactly one word and `#` zero
//! or more. Matching walks the trie once per routing key instead of running a regex per binding.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Split a key or pattern into words; as in RabbitMQ the empty string has zero words.
pub fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// Topic-binding trie mapping patterns to destinations of type `T`.
#[derive(Debug, Clone)]
pub struct TopicTrie<T> {
    root: Node<T>,
}

#[derive(Debug, Clone)]
struct Node<T> {
    children: HashMap<String, Node<T>>,
    dests: HashSet<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            dests: HashSet::new(),
        }
    }
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
        }
    }
}

impl<T: Clone + Eq + Hash> TopicTrie<T> {
    /// Empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a binding; returns false if it already existed.
    pub fn insert(&mut self, pattern: &str, dest: T) -> bool {
        let mut node = &mut self.root;
        for w in words(pattern) {
            node = node.children.entry(w.to_owned()).or_default();
        }
        node.dests.insert(dest)
    }

    /// Remove a binding; returns whether it existed.
    pub fn remove(&mut self, pattern: &str, dest: &T) -> bool {
        fn rec<T: Eq + Hash>(node: &mut Node<T>, words: &[&str], dest: &T) -> bool {
            match words.split_first() {
                None => node.dests.remove(dest),
                Some((w, rest)) => {
                    let Some(child) = node.children.get_mut(*w) else {
                        return false;
                    };
                    let removed = rec(child, rest, dest);
                    if child.dests.is_empty() && child.children.is_empty() {
                        node.children.remove(*w);
                    }
                    removed
                }
            }
        }
        rec(&mut self.root, &words(pattern), dest)
    }

    /// All destinations whose pattern matches `routing_key` (deduplicated).
    pub fn matches(&self, routing_key: &str) -> HashSet<T> {
        let mut out = HashSet::new();
        walk(&self.root, &words(routing_key), &mut out);
        out
    }
}

fn walk<T: Clone + Eq + Hash>(node: &Node<T>, words: &[&str], out: &mut HashSet<T>) {
    if let Some(hash) = node.children.get("#") {
        // `#` consumes 0..=len words
        for i in 0..=words.len() {
            walk(hash, &words[i..], out);
        }
    }
    match words.split_first() {
        None => out.extend(node.dests.iter().cloned()),
        Some((w, rest)) => {
            if let Some(c) = node.children.get(*w) {
                walk(c, rest, out);
            }
            if *w != "*" {
                if let Some(c) = node.children.get("*") {
                    walk(c, rest, out);
                }
            } else if let Some(c) = node.children.get("*") {
                // literal "*" word already handled by exact lookup above
                let _ = c;
            }
        }
    }
}

/// Naive reference matcher (used by property tests and as documentation of the semantics).
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn rec(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| rec(rest, &k[i..])),
            Some((&"*", rest)) => !k.is_empty() && rec(rest, &k[1..]),
            Some((w, rest)) => k.first() == Some(w) && rec(rest, &k[1..]),
        }
    }
    rec(&words(pattern), &words(routing_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basics() {
        let mut t = TopicTrie::new();
        t.insert("a.*.c", 1);
        t.insert("a.#", 2);
        t.insert("#", 3);
        t.insert("*.b.#", 4);
        t.insert("topic1.#", 5);
        assert_eq!(t.matches("a.b.c"), [1, 2, 3, 4].into_iter().collect());
        assert_eq!(t.matches("a"), [2, 3].into_iter().collect());
        assert_eq!(t.matches("topic1"), [3, 5].into_iter().collect());
        assert_eq!(t.matches("topic1.x.y"), [3, 5].into_iter().collect());
        assert!(t.remove("#", &3));
        assert_eq!(t.matches("x"), HashSet::new());
        // the empty key has zero words: `#` matches it, `*` does not
        let mut t = TopicTrie::new();
        t.insert("*", 1);
        t.insert("#", 2);
        t.insert("*.#", 3);
        t.insert("", 4);
        assert_eq!(t.matches(""), [2, 4].into_iter().collect());
        assert_eq!(t.matches("a"), [1, 2, 3].into_iter().collect());
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("c".to_owned()),
            Just(String::new())
        ]
    }
    fn pword() -> impl Strategy<Value = String> {
        prop_oneof![word(), Just("*".to_owned()), Just("#".to_owned())]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn trie_agrees_with_reference(
            patterns in proptest::collection::vec(proptest::collection::vec(pword(), 1..5), 1..8),
            key in proptest::collection::vec(word(), 1..6),
        ) {
            let key = key.join(".");
            let mut t = TopicTrie::new();
            for (i, p) in patterns.iter().enumerate() {
                t.insert(&p.join("."), i);
            }
            let expected: HashSet<usize> = patterns.iter().enumerate()
                .filter(|(_, p)| topic_matches(&p.join("."), &key)).map(|(i, _)| i).collect();
            prop_assert_eq!(t.matches(&key), expected);
        }
    }
}
