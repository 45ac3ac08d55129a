//! Hash-consing: every distinct server state, message, stored state, ghost
//! history and client table the checker meets is kept once, and a state
//! refers to it by a 32-bit index ([`Ref`]).
//!
//! A state is then a few dozen small integers: copying one is a `memcpy`,
//! comparing two compares integers, and nothing is reference-counted (two
//! checker threads would otherwise keep bouncing the cache lines of shared
//! counters between them). Hashing a [`Ref`] writes the hash of what it
//! refers to, computed once when the value was first met, so fingerprints
//! depend on contents only: they are the same in every run and every process
//! (the Explorer's links, printed by `check` and opened by `explore`, are
//! paths of fingerprints), whatever order the values were met in.
//!
//! Values are never freed: a table grows with the distinct values of the
//! runs in the process, which are far fewer than the states.

use smallvec::SmallVec;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// Slots of a table's first segment (as a power of two); segment `k` has
/// twice as many slots as segment `k - 1`, so a small table stays small.
const FIRST_BITS: u32 = 6;
/// Segments per table: room for about 2^28 values.
const SEGMENTS: usize = 22;
/// Shards of a table's index (each behind its own lock).
const SHARDS: usize = 64;

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByHash = HashMap<u64, SmallVec<[u32; 2]>, BuildHasherDefault<Identity>>;

/// The segment and slot of index `i`.
fn locate(i: u32) -> (usize, usize) {
    let j = i as usize + (1 << FIRST_BITS);
    let bits = usize::BITS - 1 - j.leading_zeros();
    let segment = (bits - FIRST_BITS) as usize;
    (segment, j - (1 << bits))
}

/// One segment of a table: slots for values with their hashes.
type Segment<T> = Box<[OnceLock<(T, u64)>]>;

/// An append-only table of distinct values of one type.
pub struct Table<T: 'static> {
    /// Value `i` is in the slot [`locate`] gives, with its hash.
    segments: Box<[OnceLock<Segment<T>>]>,
    /// The next free index.
    next: AtomicU32,
    /// The indices of the values with each hash (almost always one).
    index: Box<[Mutex<ByHash>]>,
}

/// The hash a value is filed under (fixed keys: the same in every run).
pub fn content_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    use std::hash::BuildHasher;
    FixedState.hash_one(value)
}

/// A hasher builder with fixed keys: the same hashes in every run and
/// process ([`content_hash`]; the replay's network iterates in the same
/// order everywhere).
#[derive(Clone, Copy, Debug, Default)]
pub struct FixedState;

impl std::hash::BuildHasher for FixedState {
    type Hasher = ahash::AHasher;
    fn build_hasher(&self) -> ahash::AHasher {
        ahash::RandomState::with_seeds(0x5241_4654, 1, 2, 3).build_hasher()
    }
}

impl<T: Hash + Eq + Send + Sync + 'static> Table<T> {
    /// An empty table.
    pub fn new() -> Self {
        Table {
            segments: (0..SEGMENTS).map(|_| OnceLock::new()).collect(),
            next: AtomicU32::new(0),
            index: (0..SHARDS).map(|_| Mutex::new(ByHash::default())).collect(),
        }
    }

    fn slot(&self, i: u32) -> &OnceLock<(T, u64)> {
        let (segment, slot) = locate(i);
        let slots = self.segments[segment].get_or_init(|| {
            (0..1usize << (FIRST_BITS as usize + segment))
                .map(|_| OnceLock::new())
                .collect()
        });
        &slots[slot]
    }

    /// The value at `i` with its hash.
    ///
    /// # Panics
    /// If `i` was not handed out by this table (invariant: a [`Ref`] is made
    /// only by [`Table::intern`], and a value is in its slot before its index
    /// is published).
    fn entry(&self, i: u32) -> &(T, u64) {
        self.slot(i)
            .get()
            .expect("invariant: an interned index refers to a filled slot")
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, ByHash> {
        let shard = &self.index[(hash >> 58) as usize % SHARDS];
        // A panic while the lock was held left the index as it was between
        // two operations (every change is one insertion): keep using it.
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The index of `value`, if it is in the table.
    pub fn find(&self, value: &T, hash: u64) -> Option<u32> {
        let shard = self.shard(hash);
        shard
            .get(&hash)?
            .iter()
            .copied()
            .find(|&i| self.entry(i).0 == *value)
    }

    /// The index of `value`, added to the table if new.
    ///
    /// # Panics
    /// If the table is full (2^28 distinct values).
    pub fn intern(&self, value: T, hash: u64) -> u32 {
        let mut shard = self.shard(hash);
        let ids = shard.entry(hash).or_default();
        if let Some(i) = ids.iter().copied().find(|&i| self.entry(i).0 == value) {
            return i;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        assert!(
            locate(i).0 < SEGMENTS,
            "invariant: fewer than 2^28 distinct values of one type"
        );
        if self.slot(i).set((value, hash)).is_err() {
            unreachable!("invariant: each index is handed out once");
        }
        ids.push(i);
        i
    }
}

impl<T: Hash + Eq + Send + Sync + 'static> Default for Table<T> {
    fn default() -> Self {
        Table::new()
    }
}

/// A type whose values are hash-consed in one process-wide table.
pub trait Interned: Hash + Eq + Send + Sync + Sized + 'static {
    /// The table.
    fn table() -> &'static Table<Self>;
}

/// Declares the process-wide table of a type.
macro_rules! interned {
    ($t:ty) => {
        impl $crate::model::intern::Interned for $t {
            fn table() -> &'static $crate::model::intern::Table<Self> {
                static TABLE: std::sync::OnceLock<$crate::model::intern::Table<$t>> =
                    std::sync::OnceLock::new();
                TABLE.get_or_init($crate::model::intern::Table::new)
            }
        }
    };
}
pub(crate) use interned;

/// A value kept once in its type's table: 32 bits, `Copy`.
///
/// Equality is that of the values (two refs are equal exactly when they
/// refer to equal values). `Hash` writes the value's hash. Order is by hash,
/// then by value where a type orders its values ([`Ref::cmp_values`]): the
/// same in every run.
pub struct Ref<T> {
    index: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T: Interned> Ref<T> {
    /// The ref of `value`.
    pub fn new(value: T) -> Self {
        let hash = content_hash(&value);
        Ref {
            index: T::table().intern(value, hash),
            _type: PhantomData,
        }
    }

    /// The ref of `value` if it was ever interned, without adding it.
    pub fn find(value: &T) -> Option<Self> {
        let hash = content_hash(value);
        T::table().find(value, hash).map(|index| Ref {
            index,
            _type: PhantomData,
        })
    }

    /// The value's index in its table: the same for equal values within one
    /// process, but assigned in the order values are met, so never part of a
    /// fingerprint (use [`Ref::hash_value`]). For keys of process-local memos.
    pub fn index(self) -> u32 {
        self.index
    }

    /// The value.
    pub fn get(self) -> &'static T {
        &T::table().entry(self.index).0
    }

    /// The value's hash.
    pub fn hash_value(self) -> u64 {
        T::table().entry(self.index).1
    }

    /// The ref of the value `change` makes of a copy of this one; this ref
    /// itself when the value is the same.
    pub fn updated(self, change: impl FnOnce(&mut T)) -> Self
    where
        T: Clone,
    {
        let mut value = self.get().clone();
        change(&mut value);
        if value == *self.get() {
            self
        } else {
            Ref::new(value)
        }
    }
}

impl<T: Interned + Ord> Ref<T> {
    /// Order by hash, then by value.
    pub fn cmp_values(self, other: Self) -> std::cmp::Ordering {
        if self.index == other.index {
            return std::cmp::Ordering::Equal;
        }
        self.hash_value()
            .cmp(&other.hash_value())
            .then_with(|| self.get().cmp(other.get()))
    }
}

impl<T> Clone for Ref<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Ref<T> {}

impl<T> PartialEq for Ref<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}

impl<T> Eq for Ref<T> {}

impl<T: Interned> Hash for Ref<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash_value());
    }
}

impl<T: Interned + Ord> PartialOrd for Ref<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Interned + Ord> Ord for Ref<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.cmp_values(*other)
    }
}

impl<T: Interned> std::ops::Deref for Ref<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.get()
    }
}

impl<T: Interned + fmt::Debug> fmt::Debug for Ref<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    struct Word(String);
    interned!(Word);

    #[test]
    fn indices_fill_segments_in_order() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert_eq!(locate(192), (2, 0));
    }

    #[test]
    fn equal_values_share_one_ref_and_hash_by_content() {
        let a = Ref::new(Word("vote".into()));
        let b = Ref::new(Word("vote".into()));
        let c = Ref::new(Word("append".into()));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.get(), &Word("vote".into()));
        assert_eq!(a.hash_value(), content_hash(&Word("vote".into())));
        assert_eq!(Ref::find(&Word("append".into())), Some(c));
        assert_eq!(Ref::find(&Word("never interned".into())), None);
        assert_eq!(a.updated(|w| w.0.push('s')).get(), &Word("votes".into()));
        assert_eq!(a.updated(|_| {}), a);
    }

    #[test]
    fn refs_made_on_several_threads_agree() {
        let refs: Vec<Vec<Ref<Word>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..5000)
                            .map(|k| Ref::new(Word(format!("w{}", k % 1500))))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        for other in &refs[1..] {
            assert_eq!(&refs[0], other);
        }
        for (k, r) in refs[0].iter().enumerate() {
            assert_eq!(r.get(), &Word(format!("w{}", k % 1500)));
        }
    }
}
