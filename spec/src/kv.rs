//! A replicated key-value map: the state machine that `raft-node` runs, kept
//! here so that the model and the trace replayer apply the very same code.
//!
//! Reads are linearizable because they go through the log like writes: a
//! [`KvCommand::Get`] is committed and applied in log order, and its reply is
//! the value at that point of the log (Raft §8 allows reads to go through the
//! log; it costs one round of replication and needs no extra protocol rule).
//! Writes are exactly-once through the server's session table (Raft §8): a
//! retried `(client id, request number)` is answered from the table.

use crate::state_machine::StateMachine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A value of the map: text shared, not copied, by the log entry, the
/// messages that carry it, the write that persists it and the map that
/// holds it, so that a large value costs one copy however many times a
/// step clones its entry. It compares, orders, hashes and serializes as
/// its text (a JSON string, a postcard string), exactly as a `String`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Value(Arc<str>);

impl Value {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Value {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value(s.into())
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value(s.as_str().into())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value(s.into())
    }
}

impl PartialEq<str> for Value {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Value {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Builds the shared text straight from the decoder's string, in
        /// one copy (a `String` first would be two).
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
                Ok(Value::from(s))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
                Ok(Value::from(s))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// A client command on the map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`; returns the previous value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Value,
    },
    /// Reads `key`; returns its value.
    Get {
        /// The key.
        key: String,
    },
    /// Removes `key`; returns the value it had.
    Delete {
        /// The key.
        key: String,
    },
}

impl KvCommand {
    /// `Put { key, value }`.
    pub fn put(key: impl Into<String>, value: impl Into<Value>) -> Self {
        KvCommand::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `Get { key }`.
    pub fn get(key: impl Into<String>) -> Self {
        KvCommand::Get { key: key.into() }
    }

    /// The key the command is about.
    pub fn key(&self) -> &str {
        match self {
            KvCommand::Put { key, .. } | KvCommand::Get { key } | KvCommand::Delete { key } => key,
        }
    }
}

impl fmt::Display for KvCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvCommand::Put { key, value } => write!(f, "put {key}={value}"),
            KvCommand::Get { key } => write!(f, "get {key}"),
            KvCommand::Delete { key } => write!(f, "delete {key}"),
        }
    }
}

/// What applying a [`KvCommand`] returns: the value the key held before the
/// command (for `Get`, the value it holds), `None` if it was absent.
pub type KvOutput = Option<Value>;

/// The replicated map. Keys are ordered, so its serialization, hash and
/// comparison are canonical.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Kv {
    map: BTreeMap<String, Value>,
}

impl Kv {
    /// The value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(Value::as_str)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All pairs, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl StateMachine for Kv {
    type Command = KvCommand;
    type Output = KvOutput;

    fn apply(&mut self, command: &KvCommand) -> KvOutput {
        match command {
            KvCommand::Put { key, value } => self.map.insert(key.clone(), value.clone()),
            KvCommand::Get { key } => self.map.get(key).cloned(),
            KvCommand::Delete { key } => self.map.remove(key),
        }
    }

    fn read(&self, command: &KvCommand) -> Option<KvOutput> {
        match command {
            KvCommand::Get { key } => Some(self.map.get(key).cloned()),
            KvCommand::Put { .. } | KvCommand::Delete { .. } => None,
        }
    }

    /// The key's and value's bytes, plus a varint length for each and the
    /// command's tag.
    fn command_bytes(command: &KvCommand) -> u64 {
        let strings = match command {
            KvCommand::Put { key, value } => key.len() + value.len() + 20,
            KvCommand::Get { key } | KvCommand::Delete { key } => key.len() + 10,
        };
        strings as u64 + 1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete_return_the_previous_value() {
        let mut kv = Kv::default();
        assert_eq!(kv.apply(&KvCommand::put("a", "1")), None);
        assert_eq!(kv.apply(&KvCommand::put("a", "2")), Some("1".into()));
        assert_eq!(
            kv.apply(&KvCommand::Get { key: "a".into() }),
            Some("2".into())
        );
        assert_eq!(kv.apply(&KvCommand::Get { key: "b".into() }), None);
        assert_eq!(
            kv.apply(&KvCommand::Delete { key: "a".into() }),
            Some("2".into())
        );
        assert_eq!(kv.apply(&KvCommand::Delete { key: "a".into() }), None);
        assert!(kv.is_empty());
    }

    #[test]
    fn get_does_not_change_the_map() {
        let mut kv = Kv::default();
        kv.apply(&KvCommand::put("k", "v"));
        let before = kv.clone();
        kv.apply(&KvCommand::Get { key: "k".into() });
        assert_eq!(kv, before);
        assert_eq!(kv.iter().collect::<Vec<_>>(), vec![("k", "v")]);
    }

    #[test]
    fn commands_display_and_name_their_key() {
        assert_eq!(KvCommand::put("a", "1").to_string(), "put a=1");
        assert_eq!(KvCommand::Delete { key: "z".into() }.key(), "z");
    }
}
