//! The linearizability checker: is there one order of the history's
//! operations, each taking effect at an instant inside its interval, in
//! which a single key-value map gives every answer the clients saw?
//!
//! ```text
//! &[Op] ──► split by key ──► per key: Wing–Gong search with Lowe's cache ──► Report
//!                                     (a register holding Option<String>)     (a Verdict a key)
//! ```
//!
//! Each command reads or writes one key, and linearizability is local
//! (Herlihy & Wing 1990, Theorem 1, "P-compositionality"): the history is
//! linearizable if and only if every key's sub-history is, as a register.
//!
//! Per key, the search is Wing & Gong's (1993) depth-first search with
//! Lowe's (2017) memoisation, laid out as Porcupine's `checkSingle` does it:
//! the call and return events sorted by time form a doubly linked list; the
//! search "lifts" an operation (unlinks its call and return) when it
//! linearizes it and "unlifts" it when it backtracks; a call that comes
//! before the first return still in the list may be linearized next; and a
//! cache of (set of linearized operations, register value) pairs prunes any
//! configuration already explored, since what can follow depends on nothing
//! else.
//!
//! Reductions keep the search small; each is argued, as a proof that it
//! loses no linearization, where it is made. An `Ok` get that fits is placed
//! at once, and so is an `Ok` write that fits when nothing left can write
//! the register's value again (`forced`): reads never branch. An unknown
//! write is placed only just before an `Ok` operation that returns its
//! value, and unknown writes of one value in invoke order (`search`). And an
//! unknown write whose value nothing returns is dropped up front.
//!
//! Semantics of the outcomes:
//! - an [`Outcome::Ok`] operation takes effect once, at an instant between
//!   `invoke_ns` and `complete_ns`, and its output is what the register gives;
//! - an [`Outcome::Unknown`] operation may take effect at any instant after
//!   `invoke_ns` (its return is at infinity) with any output, or never. So an
//!   unknown get is dropped, and the search succeeds once every `Ok`
//!   operation is linearized, whatever unknown writes are left over;
//! - an operation invoked at the very nanosecond another completes is
//!   concurrent with it (calls sort before returns at equal times);
//! - a key whose search goes beyond the budget of states is
//!   [`Verdict::Inconclusive`]: the checker never runs for ever.
//!
//! An operation with `complete_ns < invoke_ns` (which
//! [`read_history`](super::history::read_history) rejects) is taken to
//! complete at `invoke_ns`.

use crate::jepsen::history::{DisplayValue, Op, Outcome};
use raft_spec::{KvCommand, KvOutput};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// The budget of [`check`]: states explored per key before the key's verdict
/// is [`Verdict::Inconclusive`]. A linearizable history needs about one state
/// per operation; proving a violation means ruling out every order of the
/// operations before it, a few to a few dozen states per operation with
/// five clients on one key, more with many unknown outcomes. Each state
/// costs about 80 bytes of cache, so this caps a key's search near 400 MB.
pub const DEFAULT_MAX_STATES_PER_KEY: usize = 5_000_000;

/// Checks `history` with the default budget ([`DEFAULT_MAX_STATES_PER_KEY`]).
pub fn check(history: &[Op]) -> Report {
    check_with_budget(history, DEFAULT_MAX_STATES_PER_KEY)
}

/// Checks `history`, giving up on a key (verdict
/// [`Verdict::Inconclusive`]) once its search has explored more than
/// `max_states_per_key` states. Keys are checked one after the other, in
/// key order.
pub fn check_with_budget(history: &[Op], max_states_per_key: usize) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.command.key()).or_default().push(op);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| check_key(key, &ops, max_states_per_key))
        .collect();
    Report {
        ops: history.len(),
        max_states_per_key,
        keys,
    }
}

/// The checker's verdict on a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Operations in the history.
    pub ops: usize,
    /// The budget the keys were checked with.
    pub max_states_per_key: usize,
    /// One report per key, in key order.
    pub keys: Vec<KeyReport>,
}

/// The verdict on one key's sub-history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Operations on the key in the history.
    pub ops: usize,
    /// Of those, the unknown operations dropped before the search because no
    /// answer can depend on them (unknown gets, and unknown writes whose
    /// value no operation returns).
    pub dropped: usize,
    /// States (configurations) the search explored.
    pub states: u64,
    /// The verdict.
    pub verdict: Verdict,
}

/// Whether one key's sub-history is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An order exists.
    Linearizable,
    /// No order exists: the search explored every one.
    Violation(Violation),
    /// The search went beyond its budget of states before finding an order
    /// or ruling all out.
    Inconclusive,
}

/// Why a key's sub-history is not linearizable: the search's deepest point.
/// Every order of the operations agrees with the answers up to at most
/// `prefix.len()` operations; after the longest such prefix, each operation
/// that could come next (in `stuck`) contradicts the register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// The longest prefix of a linearization found, as op ids in order
    /// (unknown writes that take effect in it included).
    pub prefix: Vec<u64>,
    /// The last few operations of `prefix` (at most [`Violation::TAIL`]),
    /// for the explanation.
    pub prefix_tail: Vec<Op>,
    /// The register's value after `prefix`.
    pub register: KvOutput,
    /// The `Ok` operations that could come next in real time (invoked
    /// before the first of the remaining ones completed), none of which
    /// agrees with `register`.
    pub stuck: Vec<Op>,
}

impl Violation {
    /// How many operations of the prefix [`Violation::prefix_tail`] keeps.
    pub const TAIL: usize = 4;
}

impl Report {
    /// Whether every key's verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        self.keys
            .iter()
            .all(|key| key.verdict == Verdict::Linearizable)
    }

    /// The violations found, in key order.
    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.keys.iter().filter_map(|key| match &key.verdict {
            Verdict::Violation(violation) => Some(violation),
            _ => None,
        })
    }

    /// The keys whose verdict is [`Verdict::Inconclusive`].
    pub fn inconclusive(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys
            .iter()
            .filter(|key| key.verdict == Verdict::Inconclusive)
    }

    /// States explored, over all keys.
    pub fn states(&self) -> u64 {
        self.keys.iter().map(|key| key.states).sum()
    }
}

impl fmt::Display for Report {
    /// One line of verdict, then a paragraph per violating or inconclusive
    /// key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let violations = self.violations().count();
        let inconclusive = self.inconclusive().count();
        let summary = format!(
            "{} ops on {} keys, {} states explored",
            self.ops,
            self.keys.len(),
            self.states()
        );
        if violations > 0 {
            write!(
                f,
                "not linearizable: {violations} of {} keys have a violation ({summary})",
                self.keys.len()
            )?;
        } else if inconclusive > 0 {
            write!(
                f,
                "inconclusive: no violation found, but {inconclusive} of {} keys went beyond \
                 the budget of {} states ({summary})",
                self.keys.len(),
                self.max_states_per_key
            )?;
        } else {
            write!(f, "linearizable: {summary}")?;
        }
        for key in &self.keys {
            match &key.verdict {
                Verdict::Linearizable => {}
                Verdict::Violation(violation) => write!(f, "\n{violation}")?,
                Verdict::Inconclusive => write!(
                    f,
                    "\nkey {}: inconclusive: gave up after {} states",
                    key.key, key.states
                )?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Violation {
    /// `key k1: after 2 ops [put k1=v1 -> None (op 3), get k1 -> v1 (op 5)],
    /// the register holds v1 and no operation can come next:` then one line
    /// per stuck operation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let register = DisplayValue(self.register.as_deref());
        write!(f, "key {}: after {} ops [", self.key, self.prefix.len())?;
        if self.prefix.len() > self.prefix_tail.len() {
            write!(f, "..., ")?;
        }
        for (i, op) in self.prefix_tail.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{} -> ", op.command)?;
            match &op.outcome {
                Outcome::Ok(output) => write!(f, "{}", DisplayValue(output.as_deref()))?,
                Outcome::Unknown => write!(f, "? (unknown)")?,
            }
            write!(f, " (op {})", op.id)?;
        }
        write!(
            f,
            "], the register holds {register} and no operation can come next:"
        )?;
        for op in &self.stuck {
            write!(f, "\n  {op} cannot be placed: ")?;
            match &op.outcome {
                Outcome::Ok(output) if output != &self.register => {
                    write!(f, "the register holds {register}")?;
                }
                _ => write!(f, "every order after it fails")?,
            }
        }
        if self.stuck.is_empty() {
            write!(f, "\n  (no operation is left to place)")?;
        }
        Ok(())
    }
}

/// The register's value, interned: `NONE` (absent) or the index of a string.
type Value = usize;

/// The register's value when the key is absent.
const NONE: Value = 0;

/// An operation of one key's search.
#[derive(Clone, Copy, Debug)]
struct SearchOp<'a> {
    op: &'a Op,
    /// The value written: `Some(v)` for a put, `Some(NONE)` for a delete,
    /// `None` for a get.
    write: Option<Value>,
    /// The output, for an `Ok` operation; `None` for an unknown one.
    output: Option<Value>,
    invoke: u64,
    /// `Ok` operations only (an unknown one returns at infinity).
    complete: u64,
}

impl SearchOp<'_> {
    /// The register's value after the operation, if its output agrees with
    /// `state`.
    fn step(&self, state: Value) -> Option<Value> {
        match self.output {
            Some(output) if output != state => None,
            _ => Some(self.write.unwrap_or(state)),
        }
    }
}

/// The operations of one key, arranged for the search. Invariant: `ops` is
/// `n_ok` `Ok` operations sorted by invoke time, then `n_deletes` unknown
/// deletes, then the unknown puts, each group sorted by invoke time.
struct KeyOps<'a> {
    ops: Vec<SearchOp<'a>>,
    n_ok: usize,
    n_deletes: usize,
    /// `by_value[v]`: the unknown writes of `v`, by invoke time.
    by_value: Vec<Vec<usize>>,
}

impl KeyOps<'_> {
    fn is_ok(&self, op: usize) -> bool {
        op < self.n_ok
    }

    /// The bit of an unknown put in [`Linearized::puts`].
    fn put_bit(&self, op: usize) -> Option<usize> {
        (op >= self.n_ok + self.n_deletes).then(|| op - self.n_ok - self.n_deletes)
    }
}

/// The end of the linked list.
const END: usize = usize::MAX;
/// The head of the linked list.
const HEAD: usize = 0;

/// A node of the event list.
#[derive(Clone, Copy, Debug)]
struct Node {
    prev: usize,
    next: usize,
    /// The `Ok` operation (unused in the head).
    op: usize,
    is_call: bool,
}

/// The calls and returns of the `Ok` operations sorted by time, calls first
/// at equal times (so that an operation invoked at the nanosecond another
/// completes is concurrent with it), as a doubly linked list. An operation is
/// lifted (its two nodes unlinked) while it is linearized; unlinked nodes
/// keep their links, so lifts are undone in reverse order (Knuth's dancing
/// links).
struct Events {
    nodes: Vec<Node>,
    /// The call node of each `Ok` operation.
    call: Vec<usize>,
    /// The return node of each `Ok` operation.
    ret: Vec<usize>,
}

impl Events {
    fn new(ok: &[SearchOp<'_>]) -> Events {
        // (time, 0 for a call and 1 for a return, op)
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ok.len());
        for (i, op) in ok.iter().enumerate() {
            events.push((op.invoke, 0, i));
            events.push((op.complete, 1, i));
        }
        events.sort_unstable();
        let mut list = Events {
            nodes: Vec::with_capacity(events.len() + 1),
            call: vec![END; ok.len()],
            ret: vec![END; ok.len()],
        };
        list.nodes.push(Node {
            prev: END,
            next: END,
            op: END,
            is_call: false,
        });
        for (_, kind, op) in events {
            let node = list.nodes.len();
            let last = node - 1;
            list.nodes.push(Node {
                prev: last,
                next: END,
                op,
                is_call: kind == 0,
            });
            list.nodes[last].next = node;
            if kind == 0 {
                list.call[op] = node;
            } else {
                list.ret[op] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != END {
            self.nodes[next].prev = prev;
        }
    }

    /// Undoes `unlink(node)`.
    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != END {
            self.nodes[next].prev = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call[op]);
        self.unlink(self.ret[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.ret[op]);
        self.relink(self.call[op]);
    }
}

/// A bit set that the search fills roughly from the low end, with a short
/// cache key.
struct BitSet {
    words: Vec<u64>,
    /// Invariant: `words[..lead]` are all ones, and `words[lead]` is not.
    lead: usize,
    /// Invariant: `words[hi..]` are all zero, and `words[hi - 1]` is not.
    hi: usize,
}

impl BitSet {
    fn new(bits: usize) -> BitSet {
        BitSet {
            words: vec![0; bits.div_ceil(64)],
            lead: 0,
            hi: 0,
        }
    }

    fn insert(&mut self, bit: usize) {
        let word = bit / 64;
        self.words[word] |= 1 << (bit % 64);
        self.hi = self.hi.max(word + 1);
        while self.lead < self.words.len() && self.words[self.lead] == u64::MAX {
            self.lead += 1;
        }
    }

    fn remove(&mut self, bit: usize) {
        let word = bit / 64;
        self.words[word] &= !(1 << (bit % 64));
        self.lead = self.lead.min(word);
        while self.hi > 0 && self.words[self.hi - 1] == 0 {
            self.hi -= 1;
        }
    }

    /// Appends the set to a cache key: `lead` and the length of the words
    /// from there to the last non-zero one in one word, then those words.
    /// Canonical (a function of the set) and injective (the set can be read
    /// back). Each half of the first word is below 2^32: a key of 2^38
    /// operations would not fit in memory.
    fn append_key(&self, key: &mut Vec<u64>) {
        let window = &self.words[self.lead..self.hi.max(self.lead)];
        key.push(((self.lead as u64) << 32) | window.len() as u64);
        key.extend_from_slice(window);
    }
}

/// The set of linearized operations: the `Ok` ones, the unknown deletes
/// (always the first `used[NONE]` of them, see [`search`]), and the
/// unknown puts.
struct Linearized {
    ok: BitSet,
    puts: BitSet,
}

impl Linearized {
    /// The cache key of (this set, `state`), into `key`. It is short: the
    /// search linearizes `Ok` operations roughly in invoke order, so the
    /// windows between the full words and the last non-zero one are small.
    fn cache_key(&self, state: Value, deletes_used: usize, key: &mut Vec<u64>) {
        key.clear();
        // Both below 2^32, like `BitSet::append_key`'s.
        key.push(((state as u64) << 32) | deletes_used as u64);
        self.ok.append_key(key);
        self.puts.append_key(key);
    }
}

/// Where the search looks for the next operation to linearize.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// At a new configuration: first look for a candidate that must come
    /// next (see `forced`).
    Start,
    /// At this node of the list: a call is a candidate `Ok` operation; a
    /// return (the first one left) ends them.
    Main(usize),
    /// At this node of the list, looking for unknown writes: a call's output
    /// names the value an unknown write must write, and only writes invoked
    /// at or before `limit` (the first return left) are candidates.
    Unknown(usize, u64),
    /// Every candidate was tried.
    Exhausted,
}

/// A linearized operation on the search's stack.
#[derive(Clone, Copy, Debug)]
struct Frame {
    op: usize,
    /// The register's value before it.
    state: Value,
    /// Where to look for the next candidate once it is undone.
    resume: Cursor,
}

/// The longest stack seen. Invariant: `best[..common] == stack[..common]`,
/// which makes keeping it up to date cost O(1) amortised per push.
#[derive(Default)]
struct Deepest {
    best: Vec<usize>,
    common: usize,
}

impl Deepest {
    fn pushed(&mut self, stack: &[Frame]) {
        let depth = stack.len();
        let top = stack[depth - 1].op;
        if self.common + 1 == depth && depth <= self.best.len() && self.best[depth - 1] == top {
            self.common = depth;
        } else if depth > self.best.len() {
            self.best.truncate(self.common);
            self.best
                .extend(stack[self.common..].iter().map(|frame| frame.op));
            self.common = depth;
        }
    }

    fn popped(&mut self, depth: usize) {
        self.common = self.common.min(depth);
    }
}

/// Checks one key's operations.
fn check_key(key: &str, ops: &[&Op], max_states: usize) -> KeyReport {
    // Intern the values: `NONE` is 0, strings from 1.
    let mut values: HashMap<&str, Value> = HashMap::new();
    let mut ok = Vec::new();
    let mut unknown = Vec::new();
    for &op in ops {
        let write = match &op.command {
            KvCommand::Put { value, .. } => Some(intern(&mut values, Some(value))),
            KvCommand::Get { .. } => None,
            KvCommand::Delete { .. } => Some(NONE),
        };
        let output = match &op.outcome {
            Outcome::Ok(output) => Some(intern(&mut values, output.as_deref())),
            Outcome::Unknown => None,
        };
        let search_op = SearchOp {
            op,
            write,
            output,
            invoke: op.invoke_ns,
            complete: op.complete_ns.max(op.invoke_ns),
        };
        if output.is_some() {
            ok.push(search_op);
        } else if write.is_some() {
            unknown.push(search_op);
        }
        // An unknown get is dropped: it has no effect, and any output.
    }
    let mut read = vec![false; values.len() + 1];
    for op in &ok {
        if let Some(output) = op.output {
            read[output] = true;
        }
    }
    // Drop an unknown write whose value no operation returns: by the
    // argument at `search`, some valid order (if any) leaves it out.
    unknown.retain(|op| op.write.is_some_and(|value| read[value]));
    ok.sort_by_key(|op| (op.invoke, op.complete));
    // Deletes first, then puts, each by invoke time.
    unknown.sort_by_key(|op| (op.write != Some(NONE), op.invoke));
    let n_ok = ok.len();
    let n_deletes = unknown.iter().filter(|op| op.write == Some(NONE)).count();
    let dropped = ops.len() - n_ok - unknown.len();
    let mut search_ops = ok;
    search_ops.append(&mut unknown);
    let mut by_value = vec![Vec::new(); values.len() + 1];
    for (i, op) in search_ops.iter().enumerate().skip(n_ok) {
        if let Some(value) = op.write {
            by_value[value].push(i);
        }
    }
    let key_ops = KeyOps {
        ops: search_ops,
        n_ok,
        n_deletes,
        by_value,
    };

    let (states, outcome) = search(&key_ops, max_states);
    let verdict = match outcome {
        SearchOutcome::Linearizable => Verdict::Linearizable,
        SearchOutcome::Inconclusive => Verdict::Inconclusive,
        SearchOutcome::Violation(prefix) => {
            Verdict::Violation(explain(key, &key_ops, &prefix, &values))
        }
    };
    KeyReport {
        key: key.to_string(),
        ops: key_ops.ops.len() + dropped,
        dropped,
        states,
        verdict,
    }
}

/// The interned `value`: `NONE`, or a string's index (from 1).
fn intern<'a>(values: &mut HashMap<&'a str, Value>, value: Option<&'a str>) -> Value {
    match value {
        None => NONE,
        Some(value) => {
            let next = values.len() + 1;
            *values.entry(value).or_insert(next)
        }
    }
}

/// How a key's search ended.
enum SearchOutcome {
    Linearizable,
    /// With the longest prefix found (search operation indices).
    Violation(Vec<usize>),
    Inconclusive,
}

/// The Wing–Gong–Lowe search over one key's operations. Returns the states
/// explored and the outcome.
///
/// Unknown writes are where a naive search loses its way: each may take
/// effect at any point after its invocation, or never, so each doubles the
/// configurations. The search only places an unknown write `u` of value `v`
/// when
/// 1. some candidate `Ok` operation returns `v`,
/// 2. the register does not already hold `v`, and
/// 3. `u` is the first of the unknown writes of `v` not yet placed, in
///    invoke order.
///
/// This loses no linearization. Take any order that explains every `Ok`
/// output, and remove from it every unknown write that is last, or followed
/// at once by another write of unknown outcome, or writes the value the
/// register already holds: none of these changes the value any `Ok`
/// operation sees, and removing an operation breaks no real-time order. What
/// is left places each unknown write `u` just before an `Ok` operation `o`
/// that sees `u`'s value: `o` returns `v` (1; it was a candidate before `u`,
/// as `u` has no return to wait for), and the register did not hold `v`
/// before (2). For (3), give the k-th placed write of `v` the name of the
/// k-th unknown write of `v` by invoke time: the k-th earliest invocation is
/// no later than the latest of the k actually placed, and the first return
/// left only moves later, so each is still a candidate where it is placed;
/// the effects are the same. The three rules depend only on the set of
/// placed operations and the register, so they agree with the cache.
///
/// The same argument lets [`check_key`] drop an unknown write whose value no
/// `Ok` operation returns (rule 1 could never hold), and makes the unknown
/// deletes placed always the first few (3), so a count stands for them in
/// the cache key.
fn search(key_ops: &KeyOps<'_>, max_states: usize) -> (u64, SearchOutcome) {
    let ops = &key_ops.ops;
    let n_ok = key_ops.n_ok;
    let mut events = Events::new(&ops[..n_ok]);
    let mut linearized = Linearized {
        ok: BitSet::new(n_ok),
        puts: BitSet::new(ops.len() - n_ok - key_ops.n_deletes),
    };
    // used[v]: how many of `by_value[v]` are placed (always the first ones).
    let mut used = vec![0usize; key_ops.by_value.len()];
    // writers[v]: the operations not yet placed that write v.
    let mut writers = vec![0usize; key_ops.by_value.len()];
    for op in ops {
        if let Some(value) = op.write {
            writers[value] += 1;
        }
    }
    let mut cache: HashSet<Box<[u64]>> = HashSet::new();
    let mut key = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut deepest = Deepest::default();
    let mut state = NONE;
    let mut remaining_ok = n_ok;
    let mut states: u64 = 0;
    let mut cursor = Cursor::Start;
    loop {
        if remaining_ok == 0 {
            return (states, SearchOutcome::Linearizable);
        }
        // The candidate under the cursor and where to look if it fails, or
        // `None` once every candidate was tried. The `Ok` candidates go
        // first, then the unknown writes they call for.
        let candidate = match cursor {
            Cursor::Start => {
                cursor = Cursor::Main(events.nodes[HEAD].next);
                match forced(&events, ops, state, &writers) {
                    Some(op) => Some((op, Cursor::Exhausted)),
                    None => continue,
                }
            }
            Cursor::Main(node) if node != END && events.nodes[node].is_call => {
                let next = Cursor::Main(events.nodes[node].next);
                Some((events.nodes[node].op, next))
            }
            Cursor::Main(node) => {
                let limit = match node {
                    END => u64::MAX,
                    _ => ops[events.nodes[node].op].complete,
                };
                cursor = Cursor::Unknown(events.nodes[HEAD].next, limit);
                continue;
            }
            Cursor::Unknown(node, limit) if node != END && events.nodes[node].is_call => {
                cursor = Cursor::Unknown(events.nodes[node].next, limit);
                let wanted = ops[events.nodes[node].op].output;
                let write = wanted
                    .filter(|&value| value != state)
                    .and_then(|value| key_ops.by_value[value].get(used[value]))
                    .filter(|&&write| ops[write].invoke <= limit);
                match write {
                    Some(&write) => Some((write, cursor)),
                    None => continue,
                }
            }
            Cursor::Unknown(_, _) | Cursor::Exhausted => None,
        };
        if let Some((op, on_failure)) = candidate {
            if let Some(next_state) = ops[op].step(state) {
                place(key_ops, op, &mut linearized, &mut used);
                linearized.cache_key(next_state, used[NONE], &mut key);
                if !cache.contains(key.as_slice()) {
                    cache.insert(key.as_slice().into());
                    states += 1;
                    if states > max_states as u64 {
                        return (states, SearchOutcome::Inconclusive);
                    }
                    stack.push(Frame {
                        op,
                        state,
                        resume: on_failure,
                    });
                    deepest.pushed(&stack);
                    if key_ops.is_ok(op) {
                        events.lift(op);
                        remaining_ok -= 1;
                    }
                    if let Some(value) = ops[op].write {
                        writers[value] -= 1;
                    }
                    state = next_state;
                    cursor = Cursor::Start;
                    continue;
                }
                unplace(key_ops, op, &mut linearized, &mut used);
            }
            cursor = on_failure;
            continue;
        }
        // Every candidate was tried: undo the last linearized operation and
        // try the ones after it.
        let Some(frame) = stack.pop() else {
            return (states, SearchOutcome::Violation(deepest.best));
        };
        deepest.popped(stack.len());
        unplace(key_ops, frame.op, &mut linearized, &mut used);
        if key_ops.is_ok(frame.op) {
            events.unlift(frame.op);
            remaining_ok += 1;
        }
        if let Some(value) = ops[frame.op].write {
            writers[value] += 1;
        }
        state = frame.state;
        cursor = frame.resume;
    }
}

/// The candidate that must come next, if there is one: then the search
/// places it and tries nothing else at this configuration.
///
/// 1. A candidate `Ok` get that returns `state`: if any order of the
///    remaining operations works, one that starts with this get does. Move
///    the get to the front: it changes nothing, so every other output stays
///    explained, and every `Ok` operation that completed before it was
///    invoked is already placed (it is a candidate), so no real-time order
///    breaks.
/// 2. Failing that, a candidate `Ok` write `p` that returns `state` when no
///    operation left writes `state` (`writers[state] == 0`): every order
///    that works starts with `p`. In one, `p` sees `state`, and once a write
///    comes nothing can bring `state` back, so only gets returning `state`
///    can come before `p`; the first operation of the order would then be
///    such a get, and a candidate, which (1) rules out.
fn forced(events: &Events, ops: &[SearchOp<'_>], state: Value, writers: &[usize]) -> Option<usize> {
    let mut write = None;
    let mut node = events.nodes[HEAD].next;
    while node != END && events.nodes[node].is_call {
        let op = events.nodes[node].op;
        if ops[op].output == Some(state) {
            if ops[op].write.is_none() {
                return Some(op);
            }
            write = write.or(Some(op));
        }
        node = events.nodes[node].next;
    }
    write.filter(|_| writers[state] == 0)
}

/// Adds `op` to the set of placed operations.
fn place(key_ops: &KeyOps<'_>, op: usize, linearized: &mut Linearized, used: &mut [usize]) {
    if key_ops.is_ok(op) {
        linearized.ok.insert(op);
    } else {
        used[key_ops.ops[op].write.unwrap_or(NONE)] += 1;
        if let Some(bit) = key_ops.put_bit(op) {
            linearized.puts.insert(bit);
        }
    }
}

/// Removes `op` from the set of placed operations.
fn unplace(key_ops: &KeyOps<'_>, op: usize, linearized: &mut Linearized, used: &mut [usize]) {
    if key_ops.is_ok(op) {
        linearized.ok.remove(op);
    } else {
        used[key_ops.ops[op].write.unwrap_or(NONE)] -= 1;
        if let Some(bit) = key_ops.put_bit(op) {
            linearized.puts.remove(bit);
        }
    }
}

/// Builds the explanation of a violation from the longest prefix.
fn explain(
    key: &str,
    key_ops: &KeyOps<'_>,
    prefix: &[usize],
    values: &HashMap<&str, Value>,
) -> Violation {
    let ops = &key_ops.ops;
    let mut names: Vec<Option<&str>> = vec![None; values.len() + 1];
    for (&name, &value) in values {
        names[value] = Some(name);
    }
    let mut placed = vec![false; ops.len()];
    let mut state = NONE;
    for &op in prefix {
        placed[op] = true;
        state = ops[op].write.unwrap_or(state);
    }
    // The `Ok` operations that could come next: those invoked before the
    // first remaining one completed.
    let pending = (0..key_ops.n_ok).filter(|&op| !placed[op]);
    let first_return = pending.clone().map(|op| ops[op].complete).min();
    let stuck = match first_return {
        None => Vec::new(),
        Some(limit) => pending
            .filter(|&op| ops[op].invoke <= limit)
            .map(|op| ops[op].op.clone())
            .collect(),
    };
    let tail_start = prefix.len().saturating_sub(Violation::TAIL);
    Violation {
        key: key.to_string(),
        prefix: prefix.iter().map(|&op| ops[op].op.id).collect(),
        prefix_tail: prefix[tail_start..]
            .iter()
            .map(|&op| ops[op].op.clone())
            .collect(),
        register: names[state].map(raft_spec::Value::from),
        stuck,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
