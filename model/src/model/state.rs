//! The model's state: one type designed for checking.
//!
//! Every state the checker generates is built from the state before it, then
//! hashed (its fingerprint) and usually found to have been seen already. So
//! the state is cheap to build from another and to hash:
//! - each server is shared with the states that hold the same one, behind an
//!   `Arc`, with its hash computed once when it is made ([`ServerState`]);
//!   what it persisted is shared the same way ([`Stored`]);
//! - its timers are a bit set and its crash a flag, next to it ([`ServerSlot`]);
//! - the messages in flight are one sorted vector of shared, pre-hashed
//!   messages, whose hash is kept up to date as messages come and go (the sum
//!   of the envelopes' hashes, so it does not depend on order: [`Network`]);
//! - the clients, the ghost history and the linearizability tester are shared
//!   between states and change rarely ([`Ghost`], [`Cached`]).
//!
//! So hashing a state writes a few words per server and one per network,
//! whatever the logs and the messages hold.

use crate::actors::{fixed_hash, RaftMsg};
use crate::config::NetworkKind;
use raft_spec::safety::{History, ServerView};
use raft_spec::{
    ClientReply, Counter, Increment, NodeId, PersistentState, Server, StateMachine, Timer,
};
use stateright::actor::{Envelope, Id};
use stateright::semantics::{LinearizabilityTester, SequentialSpec};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// The state machine the model replicates.
pub type Sm = Counter;
/// The command the model's clients submit.
pub type Cmd = Increment;

/// Converts a server's actor id into its Raft id (they are equal).
pub fn node_id(id: Id) -> NodeId {
    NodeId(usize::from(id) as u64)
}

/// Converts a Raft id into the actor id.
pub fn actor_id(node: NodeId) -> Id {
    Id::from(node.0 as usize)
}

/// A value shared between states, with its hash computed once.
///
/// `Hash` writes the cached hash; equality compares pointers, then hashes,
/// then values.
pub struct Cached<T>(Arc<(T, u64)>);

impl<T: Hash> Cached<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        let hash = fixed_hash(&value);
        Cached(Arc::new((value, hash)))
    }
}

impl<T> Cached<T> {
    /// The cached hash.
    pub fn hash_value(&self) -> u64 {
        self.0 .1
    }
}

impl<T: Clone + Hash + PartialEq> Cached<T> {
    /// The value after `change`, sharing this one when `change` leaves it as
    /// it was.
    pub fn updated(&self, change: impl FnOnce(&mut T)) -> Self {
        let mut value = self.0 .0.clone();
        change(&mut value);
        if value == self.0 .0 {
            self.clone()
        } else {
            Cached::new(value)
        }
    }
}

impl<T> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Cached(Arc::clone(&self.0))
    }
}

impl<T> std::ops::Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0 .0
    }
}

impl<T: PartialEq> PartialEq for Cached<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0 .1 == other.0 .1 && self.0 .0 == other.0 .0)
    }
}

impl<T: Eq> Eq for Cached<T> {}

impl<T> Hash for Cached<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0 .1);
    }
}

impl<T: fmt::Debug> fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0 .0.fmt(f)
    }
}

/// A server's answer to a client's request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Answer {
    /// The request answered.
    pub request_no: u64,
    /// The answer.
    pub reply: ClientReply<u64>,
}

/// Messages of the model: Raft RPCs between servers, and the client protocol.
///
/// Its `Debug` is the one-line rendering of [`crate::render::message`], which
/// Stateright's Explorer uses to label the sequence diagram.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Msg {
    /// A Raft RPC or response.
    Raft(RaftMsg),
    /// A client asks a server to apply its request (the client is the sender).
    Request {
        /// The client's request number.
        request_no: u64,
    },
    /// A server answers a client (behind a pointer, to keep `Msg` two words).
    Reply(Arc<Answer>),
}

impl Msg {
    /// The message with its server ids renamed by `nodes` (clients are never
    /// renamed); a message the renaming leaves as it was keeps its shared copy.
    pub fn renamed(&self, nodes: &dyn Fn(NodeId) -> NodeId) -> Msg {
        match self {
            Msg::Raft(m) => {
                let mapped = m.map_ids(nodes, &|c| c);
                if mapped == **m {
                    self.clone()
                } else {
                    Msg::Raft(RaftMsg::new(mapped))
                }
            }
            Msg::Request { .. } => self.clone(),
            Msg::Reply(answer) => match answer.reply {
                ClientReply::NotLeader {
                    leader_hint: Some(leader),
                } if nodes(leader) != leader => Msg::Reply(Arc::new(Answer {
                    request_no: answer.request_no,
                    reply: ClientReply::NotLeader {
                        leader_hint: Some(nodes(leader)),
                    },
                })),
                _ => self.clone(),
            },
        }
    }

    /// A hash of the message (cached for Raft messages).
    pub fn hash_value(&self) -> u64 {
        match self {
            Msg::Raft(m) => m.hash_value(),
            Msg::Request { request_no } => fixed_hash(&(1u8, request_no)),
            Msg::Reply(answer) => fixed_hash(&(2u8, &**answer)),
        }
    }
}

/// A server's state in the model: the spec's server, unchanged, with its
/// hash.
///
/// The hash is computed once, when the server state is made (it cannot
/// change after: the server is reachable only through
/// [`ServerState::server`]), and `Hash` writes just that, as [`RaftMsg`]
/// does for messages. Equality compares the hashes first, then the servers.
///
/// Ordering (used only to pick a representative under symmetry reduction)
/// compares the persistent and volatile state before the server's id, so that
/// servers are sorted by what they hold rather than by who they are.
#[derive(Clone)]
pub struct ServerState {
    server: Server<Sm>,
    hash: u64,
}

impl ServerState {
    /// Wraps a server.
    pub fn new(server: Server<Sm>) -> Self {
        ServerState {
            hash: fixed_hash(&server),
            server,
        }
    }

    /// The server.
    pub fn server(&self) -> &Server<Sm> {
        &self.server
    }
}

impl fmt::Debug for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.server.fmt(f)
    }
}

impl PartialEq for ServerState {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.server == other.server
    }
}

impl Eq for ServerState {}

impl Hash for ServerState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for ServerState {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ServerState {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.server, &other.server);
        (&a.persistent, &a.volatile, a.id, &a.peers).cmp(&(
            &b.persistent,
            &b.volatile,
            b.id,
            &b.peers,
        ))
    }
}

/// What a server keeps across a crash: the spec's persistent state, as it
/// was after the server's last `Persist` output. Shared between the states
/// that hold the same one, with its hash cached.
pub type Stored = Cached<PersistentState<Cmd>>;

/// The bit of a timer in [`ServerSlot::timers`].
pub const fn timer_bit(timer: Timer) -> u8 {
    match timer {
        Timer::Election => 1,
        Timer::Heartbeat => 2,
    }
}

/// Every timer, in the order timeouts are offered.
pub const TIMERS: [Timer; 2] = [Timer::Election, Timer::Heartbeat];

/// One server of a state: its state, what it persisted, its timers, and
/// whether it is down.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerSlot {
    /// The server; while it is down, the state it will recover in (built
    /// from `stored` as a restart does), which is what the Explorer shows.
    pub state: Arc<ServerState>,
    /// What it persisted (`None`: nothing yet).
    pub stored: Option<Stored>,
    /// The timers that are set, as bits ([`timer_bit`]).
    pub timers: u8,
    /// Whether the server is down.
    pub crashed: bool,
}

impl ServerSlot {
    /// The Raft server.
    pub fn server(&self) -> &Server<Sm> {
        self.state.server()
    }

    /// Whether `timer` is set.
    pub fn timer_set(&self, timer: Timer) -> bool {
        self.timers & timer_bit(timer) != 0
    }

    /// The timers that are set, in order.
    pub fn timers(&self) -> Vec<Timer> {
        TIMERS.into_iter().filter(|&t| self.timer_set(t)).collect()
    }

    /// What it persisted, or the empty state if nothing.
    pub fn persisted(&self) -> &PersistentState<Cmd> {
        match &self.stored {
            Some(stored) => stored,
            None => nothing_persisted(),
        }
    }

    fn hash_into<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.state.hash);
        h.write_u64(self.stored.as_ref().map_or(0, |s| s.hash_value()));
        h.write_u8(self.timers | (u8::from(self.crashed) << 7));
    }
}

impl fmt::Debug for ServerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSlot")
            .field("server", &self.state)
            .field("stored", &self.stored)
            .field("timers", &self.timers())
            .field("crashed", &self.crashed)
            .finish()
    }
}

fn nothing_persisted() -> &'static PersistentState<Cmd> {
    static EMPTY: std::sync::OnceLock<PersistentState<Cmd>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(PersistentState::default)
}

/// What a client has seen of its request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientStatus {
    /// Sent, not answered yet.
    Pending,
    /// Answered: the counter's value before this request's increment.
    Done(u64),
}

/// A client's state. Clients are never renamed by symmetry reduction (only
/// servers are interchangeable).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientState {
    /// The client's actor index (servers come first).
    pub index: usize,
    /// The request number it sent (each client sends one request).
    pub request_no: u64,
    /// Its progress.
    pub status: ClientStatus,
}

/// The messages in flight.
///
/// On the unordered networks, a set of envelopes kept sorted (by
/// `storage_order`); the non-duplicating network consumes a
/// message it delivers, and holds at most one copy of identical messages
/// ([`Network::insert`]). On the ordered network, the envelopes are grouped
/// by channel (sender, then receiver) and, within one, in delivery order.
///
/// `hash` is kept equal to [`Network::full_hash`]: on the unordered networks
/// the wrapping sum of the envelopes' hashes, updated by each insertion and
/// removal; on the ordered network, where order matters, a hash of the
/// sequence, recomputed after a change (the ordered network is checked on
/// small configurations only).
#[derive(Clone)]
pub struct Network {
    kind: NetworkKind,
    envelopes: Vec<Envelope<Msg>>,
    hash: u64,
}

/// The order of envelopes on an unordered network: by sender, receiver and
/// the message's hash (cheap), then the message. Deliveries are offered in
/// another order, [`Envelope`]'s own (see [`super::Action`]).
fn storage_order(a: &Envelope<Msg>, ha: u64, b: &Envelope<Msg>, hb: u64) -> Ordering {
    (a.src, a.dst, ha)
        .cmp(&(b.src, b.dst, hb))
        .then_with(|| a.msg.cmp(&b.msg))
}

fn envelope_hash(e: &Envelope<Msg>) -> u64 {
    fixed_hash(&(usize::from(e.src), usize::from(e.dst), e.msg.hash_value()))
}

impl Network {
    /// An empty network of a kind.
    pub fn new(kind: NetworkKind) -> Self {
        Network {
            kind,
            envelopes: Vec::new(),
            hash: 0,
        }
    }

    /// The kind of network.
    pub fn kind(&self) -> NetworkKind {
        self.kind
    }

    /// The envelopes in flight, sorted (unordered) or by channel in delivery
    /// order (ordered).
    pub fn envelopes(&self) -> &[Envelope<Msg>] {
        &self.envelopes
    }

    /// How many messages are in flight.
    pub fn len(&self) -> usize {
        self.envelopes.len()
    }

    /// Whether no message is in flight.
    pub fn is_empty(&self) -> bool {
        self.envelopes.is_empty()
    }

    fn ordered(&self) -> bool {
        self.kind == NetworkKind::Ordered
    }

    fn full_hash(&self) -> u64 {
        if self.ordered() {
            let mut h = ahash::RandomState::with_seeds(7, 11, 13, 17).build_hasher();
            for e in &self.envelopes {
                h.write_u64(envelope_hash(e));
            }
            h.finish()
        } else {
            self.envelopes
                .iter()
                .fold(0u64, |sum, e| sum.wrapping_add(envelope_hash(e)))
        }
    }

    /// Where `e` is (`Ok`) or would go (`Err`) on an unordered network.
    fn search(&self, e: &Envelope<Msg>) -> Result<usize, usize> {
        let hash = e.msg.hash_value();
        self.envelopes
            .binary_search_by(|x| storage_order(x, x.msg.hash_value(), e, hash))
    }

    /// Whether a Raft message from `src` to `dst` equal to `message` is in
    /// flight, without building the message's shared copy.
    pub fn contains_raft(&self, src: Id, dst: Id, message: &raft_spec::Message<Cmd>) -> bool {
        let hash = RaftMsg::hash_of(message);
        let matches = |x: &Envelope<Msg>| matches!(&x.msg, Msg::Raft(m) if m.hash_value() == hash && **m == *message);
        if self.ordered() {
            return self
                .envelopes
                .iter()
                .any(|x| x.src == src && x.dst == dst && matches(x));
        }
        let key = (src, dst, hash);
        let start = self
            .envelopes
            .partition_point(|x| (x.src, x.dst, x.msg.hash_value()) < key);
        self.envelopes[start..]
            .iter()
            .take_while(|x| (x.src, x.dst, x.msg.hash_value()) == key)
            .any(matches)
    }

    /// Whether `e` is in flight.
    pub fn contains(&self, e: &Envelope<Msg>) -> bool {
        if self.ordered() {
            self.envelopes.contains(e)
        } else {
            self.search(e).is_ok()
        }
    }

    /// Sends `e`. A copy of an identical message already in flight (on its
    /// channel) is not added a second time.
    ///
    /// Deviation (bounding): without this a non-duplicating or ordered
    /// network grows without bound, since a leader's heartbeat timer can
    /// fire forever, each time sending the same AppendEntries again. A
    /// second copy of an identical message in flight is coalesced with the
    /// first, as a transport that deduplicates retransmissions would; on the
    /// duplicating network (the default) a message is deliverable any number
    /// of times anyway.
    pub fn insert(&mut self, e: Envelope<Msg>) {
        if self.ordered() {
            let channel = (e.src, e.dst);
            let start = self.envelopes.partition_point(|x| (x.src, x.dst) < channel);
            let end = start
                + self.envelopes[start..]
                    .iter()
                    .take_while(|x| (x.src, x.dst) == channel)
                    .count();
            if self.envelopes[start..end].iter().any(|x| x.msg == e.msg) {
                return;
            }
            self.envelopes.insert(end, e);
            self.hash = self.full_hash();
        } else if let Err(at) = self.search(&e) {
            self.hash = self.hash.wrapping_add(envelope_hash(&e));
            self.envelopes.insert(at, e);
        }
    }

    /// Removes `e` if it is in flight (on the ordered network, from wherever
    /// it is in its channel).
    pub fn remove(&mut self, e: &Envelope<Msg>) {
        let at = if self.ordered() {
            self.envelopes.iter().position(|x| x == e)
        } else {
            self.search(e).ok()
        };
        if let Some(at) = at {
            self.remove_at(at);
        }
    }

    fn remove_at(&mut self, at: usize) {
        let e = self.envelopes.remove(at);
        if self.ordered() {
            self.hash = self.full_hash();
        } else {
            self.hash = self.hash.wrapping_sub(envelope_hash(&e));
        }
    }

    /// Removes the envelopes at the positions given, in increasing order.
    pub fn remove_positions(&mut self, positions: &[usize]) {
        for &at in positions.iter().rev() {
            if at < self.envelopes.len() {
                let e = self.envelopes.remove(at);
                if !self.ordered() {
                    self.hash = self.hash.wrapping_sub(envelope_hash(&e));
                }
            }
        }
        if self.ordered() {
            self.hash = self.full_hash();
        }
    }

    /// Whether `at` is the first message of its channel (always, on an
    /// unordered network).
    pub fn is_head(&self, at: usize) -> bool {
        !self.ordered()
            || at == 0
            || self
                .envelopes
                .get(at - 1)
                .zip(self.envelopes.get(at))
                .is_none_or(|(before, e)| (before.src, before.dst) != (e.src, e.dst))
    }

    /// The network with every actor id and message renamed by `nodes`.
    pub fn renamed(&self, nodes: &dyn Fn(Id) -> Id, node_ids: &dyn Fn(NodeId) -> NodeId) -> Self {
        let mut envelopes: Vec<Envelope<Msg>> = self
            .envelopes
            .iter()
            .map(|e| Envelope {
                src: nodes(e.src),
                dst: nodes(e.dst),
                msg: e.msg.renamed(node_ids),
            })
            .collect();
        if self.ordered() {
            // Channels are renamed as a whole; within one, the order stays.
            envelopes.sort_by_key(|e| (e.src, e.dst));
        } else {
            envelopes.sort_by(|a, b| storage_order(a, a.msg.hash_value(), b, b.msg.hash_value()));
        }
        let mut network = Network {
            kind: self.kind,
            envelopes,
            hash: 0,
        };
        network.hash = network.full_hash();
        network
    }
}

impl PartialEq for Network {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.envelopes == other.envelopes
    }
}

impl Eq for Network {}

impl Hash for Network {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The sequential specification of the replicated counter, for the
/// linearizability check of client replies.
/// It is the servers' own state machine, applied sequentially.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CounterSpec(Sm);

impl SequentialSpec for CounterSpec {
    type Op = Cmd;
    type Ret = u64;

    fn invoke(&mut self, op: &Cmd) -> u64 {
        self.0.apply(op)
    }
}

/// The linearizability tester of the clients' operations.
pub type ClientHistory = LinearizabilityTester<Id, CounterSpec>;

/// Ghost state of the model (TLA+'s auxiliary variables); never read by a
/// server or a client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ghost {
    /// What the Figure 3 properties need (shared with the trace replayer's
    /// checks), shared between states.
    pub raft: Cached<History<Cmd>>,
    /// Crashes so far, over the whole execution.
    pub crashes: u8,
    /// Servers that have recovered from a crash at least once, as bits
    /// (bit `i`: server `i`).
    pub recovered: u8,
    /// Whether the step into this state was a server that had recovered
    /// from a crash granting a vote or accepting entries.
    ///
    /// This flag and the next mark the step that shows an example and are
    /// cleared by the step after it. The `Sometimes` property reading it is
    /// found in the state after that step all the same, and no other
    /// property reads them; a flag that stayed set would keep every later
    /// state apart from the same state reached without the example.
    pub rejoined: bool,
    /// Whether the step into this state was a leader learning a higher term
    /// from a response and stepping down (Fig. 2, Rules for Servers: "RPC
    /// request *or response*").
    pub stepped_down_on_response: bool,
    /// Client invocations and replies, checked for linearizability.
    /// Clients are never renamed by symmetry reduction, so this needs no
    /// rewrite.
    pub clients: Cached<ClientHistory>,
}

impl Ghost {
    /// The ghost of an execution that has not started.
    pub fn new() -> Self {
        Ghost {
            raft: Cached::new(History::default()),
            crashes: 0,
            recovered: 0,
            rejoined: false,
            stepped_down_on_response: false,
            clients: Cached::new(LinearizabilityTester::new(CounterSpec::default())),
        }
    }

    /// The servers that have recovered from a crash.
    pub fn recovered(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..8u64)
            .filter(|i| self.recovered & (1 << i) != 0)
            .map(NodeId)
    }
}

impl Default for Ghost {
    fn default() -> Self {
        Ghost::new()
    }
}

/// A state of the model.
///
/// `servers[i]` is server `n{i}` (actor `i`), the clients are actors
/// `servers.len()..`. Its `Debug` is what Stateright's Explorer shows for a
/// state: [`crate::render`] writes one line per server, client and message in
/// flight.
#[derive(Clone, PartialEq, Eq)]
pub struct State {
    /// The servers.
    pub servers: Vec<ServerSlot>,
    /// The clients, shared between states (they change only when one gets
    /// its reply).
    pub clients: Arc<Vec<ClientState>>,
    /// The messages in flight.
    pub network: Network,
    /// The ghost history.
    pub ghost: Ghost,
}

impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for slot in &self.servers {
            slot.hash_into(h);
        }
        self.clients.hash(h);
        h.write_u64(self.network.hash);
        self.ghost.hash(h);
    }
}

impl State {
    /// Server `i`, if there is one.
    pub fn server(&self, i: usize) -> Option<&Server<Sm>> {
        self.servers.get(i).map(ServerSlot::server)
    }

    /// Whether actor `i` is a server that is down.
    pub fn crashed(&self, i: usize) -> bool {
        self.servers.get(i).is_some_and(|s| s.crashed)
    }

    /// The client that is actor `i`, if it is one.
    pub fn client(&self, i: usize) -> Option<&ClientState> {
        i.checked_sub(self.servers.len())
            .and_then(|c| self.clients.get(c))
    }

    /// How many actors (servers and clients) there are.
    pub fn actors(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    /// What the safety properties see of server `i`: a live server as it
    /// is, a crashed one by what it persisted.
    pub fn view(&self, i: usize) -> Option<ServerView<'_, Cmd>> {
        let slot = self.servers.get(i)?;
        Some(if slot.crashed {
            ServerView::crashed(slot.server().id, slot.persisted())
        } else {
            ServerView::live(slot.server())
        })
    }

    /// Every server as the safety properties see it.
    pub fn views(&self) -> Vec<ServerView<'_, Cmd>> {
        (0..self.servers.len())
            .filter_map(|i| self.view(i))
            .collect()
    }
}
