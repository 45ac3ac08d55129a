//! Per-thread memos of pure functions of interned values ([`super::intern`]):
//! a server's step, a step's record in the ghost history, whether a message
//! is dead. Keys are built from the values' indices, so a lookup hashes a
//! few integers and never the values.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// How many results each memo keeps. The checker's depth-first search
/// meets the same servers and messages again soon, or not at all: a small
/// memo, which stays in the processor's caches, answers as often as a large
/// one (on the deep configuration, 16 K results per memo step as fast as
/// 1 M, and 1 K nearly so; without memos, half as fast).
pub(crate) const MEMO_CAPACITY: usize = 1 << 14;

/// A multiply-and-mix hasher for integer keys.
#[derive(Default)]
pub(crate) struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

/// Results by key, for one thread.
///
/// A memo keeps at most `capacity` results; when full it starts afresh,
/// which bounds its memory (a forgotten result is computed again).
pub(crate) struct Memo<K, V> {
    map: HashMap<K, V, BuildHasherDefault<Mix>>,
    capacity: usize,
    /// Tells apart the models whose results these are, where results depend
    /// on the model's configuration (0: they do not).
    tag: u64,
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    /// An empty memo that keeps at most `capacity` results.
    pub(crate) fn new(capacity: usize) -> Self {
        Memo {
            map: HashMap::default(),
            capacity,
            tag: 0,
        }
    }

    /// Forgets everything unless the results are for the model `tag`.
    pub(crate) fn for_model(&mut self, tag: u64) {
        if self.tag != tag {
            self.map.clear();
            self.tag = tag;
        }
    }

    /// The result for `key`, computed by `compute` if not known.
    pub(crate) fn get_or(&mut self, key: K, compute: impl FnOnce() -> V) -> V {
        if let Some(known) = self.map.get(&key) {
            return known.clone();
        }
        let value = compute();
        if self.map.len() >= self.capacity {
            self.map.clear();
        }
        self.map.insert(key, value.clone());
        value
    }
}
