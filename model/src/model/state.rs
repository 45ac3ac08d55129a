//! The model's state: one type designed for checking.
//!
//! Every state the checker generates is built from the state before it,
//! hashed (its fingerprint) and usually found to have been seen already. So
//! a state is made of small integers: each server, what it stored, each
//! message in flight, the clients and the ghost history are kept once in a
//! process-wide table and referred to by a 32-bit [`Ref`] ([`super::intern`]).
//! Building a state from another copies a few hundred bytes and allocates
//! nothing (the servers and the usual messages in flight are inline); hashing
//! it writes a few words per server and one for the network, whose hash is
//! kept up to date as messages come and go (the sum of the envelopes' hashes,
//! so it does not depend on their order: [`Network`]).

use super::intern::{interned, Ref};
use crate::config::NetworkKind;
use raft_spec::safety::{History, ServerView};
use raft_spec::{
    Ack, ClientReply, Counter, CounterCommand, Message, NodeId, PersistentState, ReadMode, Server,
    StateMachine, Term, Timer,
};
use smallvec::SmallVec;
use stateright::actor::Id;
use stateright::semantics::{LinearizabilityTester, SequentialSpec};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

/// The state machine the model replicates.
pub type Sm = Counter;
/// The command the model's clients submit.
pub type Cmd = CounterCommand;

/// Converts a server's actor id into its Raft id (they are equal).
pub fn node_id(id: Id) -> NodeId {
    NodeId(usize::from(id) as u64)
}

/// Converts a Raft id into the actor id.
pub fn actor_id(node: NodeId) -> Id {
    Id::from(node.0 as usize)
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
    Raft(Message<Cmd>),
    /// A client asks a server to apply its request (the client is the sender).
    Request {
        /// The client's request number.
        request_no: u64,
        /// When the leader answers it (the configuration's level).
        ack: Ack,
    },
    /// A server answers a client.
    Reply(Answer),
    /// A client asks a server to read the counter (the client is the
    /// sender).
    Read {
        /// The client's request number.
        request_no: u64,
        /// How the read is to be served (the configuration's mode).
        mode: ReadMode,
    },
}

interned!(Msg);
interned!(Server<Sm>);
interned!(PersistentState<Cmd>);
interned!(History<Cmd>);
interned!(Vec<ClientState>);
interned!(ClientHistory);

/// A message in flight.
pub type MsgRef = Ref<Msg>;
/// A server's state.
pub type ServerRef = Ref<Server<Sm>>;
/// What a server keeps across a crash: the spec's persistent state, as it
/// was after the server's last `Persist` output.
pub type Stored = Ref<PersistentState<Cmd>>;

impl Msg {
    /// The message with its server ids renamed by `nodes` (clients are never
    /// renamed).
    pub fn renamed(&self, nodes: &dyn Fn(NodeId) -> NodeId) -> Msg {
        match self {
            Msg::Raft(m) => Msg::Raft(m.map_ids(nodes, &|c| c)),
            Msg::Request { .. } | Msg::Read { .. } => self.clone(),
            Msg::Reply(answer) => match answer.reply {
                ClientReply::NotLeader {
                    leader_hint: Some(leader),
                } => Msg::Reply(Answer {
                    request_no: answer.request_no,
                    reply: ClientReply::NotLeader {
                        leader_hint: Some(nodes(leader)),
                    },
                }),
                _ => self.clone(),
            },
        }
    }

    /// The Raft message, if it is one.
    pub fn raft(&self) -> Option<&Message<Cmd>> {
        match self {
            Msg::Raft(m) => Some(m),
            _ => None,
        }
    }
}

/// The bit of a timer in [`ServerSlot::timers`].
pub const fn timer_bit(timer: Timer) -> u8 {
    match timer {
        Timer::Election => 1,
        Timer::Heartbeat => 2,
        Timer::Lease => 4,
        Timer::Quiet => 8,
    }
}

/// Every timer, in the order timeouts are offered.
pub const TIMERS: [Timer; 4] = [
    Timer::Election,
    Timer::Heartbeat,
    Timer::Lease,
    Timer::Quiet,
];

/// One server of a state: its state, what it persisted, its timers, and
/// whether it is down.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ServerSlot {
    /// The server; while it is down, the state it will recover in (built
    /// from `stored` as a restart does), which is what the Explorer shows.
    pub server: ServerRef,
    /// What it persisted (`None`: nothing yet).
    pub stored: Option<Stored>,
    /// The timers that are set, as bits ([`timer_bit`]).
    pub timers: u8,
    /// Whether the server is down.
    pub crashed: bool,
}

impl ServerSlot {
    /// The Raft server.
    pub fn server(&self) -> &'static Server<Sm> {
        self.server.get()
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
    pub fn persisted(&self) -> &'static PersistentState<Cmd> {
        match self.stored {
            Some(stored) => stored.get(),
            None => nothing_persisted(),
        }
    }

    /// The length of its stored log.
    pub fn synced_len(&self) -> u64 {
        self.persisted().log.len() as u64
    }

    /// Whether its log holds entries it wrote in parallel
    /// (`raft_spec::Persist::parallel`) that are not durable yet. Only a
    /// leader has them: any other persist is stored whole, and a log is
    /// written in order, so the stored log is then a prefix of its log and
    /// the hard state is the same.
    pub fn unsynced(&self) -> bool {
        self.server().log().len() as u64 > self.synced_len()
    }

    /// What it stores once its log is durable through `index`: its hard
    /// state and the first `index` entries of its log.
    pub fn synced_through(&self, index: u64) -> Stored {
        let server = self.server();
        let mut persistent = server.persistent.clone();
        persistent
            .log
            .truncate_from(raft_spec::LogIndex(index).next());
        Ref::new(persistent)
    }

    fn hash_into<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.server.hash_value());
        h.write_u64(self.stored.map_or(0, Ref::hash_value));
        h.write_u8(self.timers | (u8::from(self.crashed) << 7));
    }
}

impl fmt::Debug for ServerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSlot")
            .field("server", &self.server)
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
    /// Answered: the counter's value before this request's increment (a
    /// write), or the value read (a read).
    Done(u64),
    /// Answered before it was applied ([`raft_spec::Ack`] below `applied`):
    /// the write is acknowledged, its result unknown. The ghost's history
    /// keeps the operation open: it may have taken effect or not.
    Accepted {
        /// The term of the leader that answered.
        term: Term,
    },
    /// A reader that has not sent its read yet.
    Idle,
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

/// A message in flight: sender, receiver, the message.
///
/// Ordered by sender, receiver, then the message by its hash (the high 32
/// bits are kept here, so that most comparisons stay inside the envelope)
/// and its content: the same order in every run. Deliveries are offered in
/// this order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Envelope {
    /// The sender's actor index.
    pub src: u8,
    /// The receiver's actor index.
    pub dst: u8,
    key: u32,
    /// The message.
    pub msg: MsgRef,
}

impl Envelope {
    /// An envelope.
    pub fn new(src: Id, dst: Id, msg: MsgRef) -> Self {
        Envelope {
            src: usize::from(src) as u8,
            dst: usize::from(dst) as u8,
            key: (msg.hash_value() >> 32) as u32,
            msg,
        }
    }

    /// The sender.
    pub fn src(&self) -> Id {
        Id::from(usize::from(self.src))
    }

    /// The receiver.
    pub fn dst(&self) -> Id {
        Id::from(usize::from(self.dst))
    }

    fn hash_value(&self) -> u64 {
        let mut h = ahash::RandomState::with_seeds(5, 7, 11, 13).build_hasher();
        h.write_u8(self.src);
        h.write_u8(self.dst);
        h.write_u64(self.msg.hash_value());
        h.finish()
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {} : {:?}", self.src, self.dst, self.msg)
    }
}

/// The messages in flight.
///
/// On the unordered networks, a set of envelopes kept sorted; the
/// non-duplicating network consumes a message it delivers, and holds at most
/// one copy of identical messages ([`Network::insert`]). On the ordered
/// network, the envelopes are grouped by channel (sender, then receiver)
/// and, within one, in delivery order.
///
/// `hash` is kept equal to what `full_hash` computes: on the unordered
/// networks the wrapping sum of the envelopes' hashes, updated by each
/// insertion and removal; on the ordered network, where order matters, a
/// hash of the sequence, recomputed after a change (the ordered network is
/// checked on small configurations only).
#[derive(Clone, PartialEq, Eq)]
pub struct Network {
    kind: NetworkKind,
    envelopes: SmallVec<[Envelope; 16]>,
    hash: u64,
}

impl Network {
    /// An empty network of a kind.
    pub fn new(kind: NetworkKind) -> Self {
        Network {
            kind,
            envelopes: SmallVec::new(),
            hash: 0,
        }
    }

    /// The kind of network.
    pub fn kind(&self) -> NetworkKind {
        self.kind
    }

    /// The envelopes in flight, sorted (unordered) or by channel in delivery
    /// order (ordered).
    pub fn envelopes(&self) -> &[Envelope] {
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
                h.write_u64(e.hash_value());
            }
            h.finish()
        } else {
            self.envelopes
                .iter()
                .fold(0u64, |sum, e| sum.wrapping_add(e.hash_value()))
        }
    }

    /// Whether `e` is in flight.
    pub fn contains(&self, e: &Envelope) -> bool {
        if self.ordered() {
            self.envelopes.contains(e)
        } else {
            self.envelopes.binary_search(e).is_ok()
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
    /// of times anyway. Whether `e` was added.
    pub fn insert(&mut self, e: Envelope) -> bool {
        if self.ordered() {
            let channel = (e.src, e.dst);
            let start = self.envelopes.partition_point(|x| (x.src, x.dst) < channel);
            let end = start
                + self.envelopes[start..]
                    .iter()
                    .take_while(|x| (x.src, x.dst) == channel)
                    .count();
            if self.envelopes[start..end].iter().any(|x| x.msg == e.msg) {
                return false;
            }
            self.envelopes.insert(end, e);
            self.hash = self.full_hash();
            true
        } else if let Err(at) = self.envelopes.binary_search(&e) {
            self.hash = self.hash.wrapping_add(e.hash_value());
            self.envelopes.insert(at, e);
            true
        } else {
            false
        }
    }

    /// Removes `e` if it is in flight (on the ordered network, from wherever
    /// it is in its channel).
    pub fn remove(&mut self, e: &Envelope) {
        let at = if self.ordered() {
            self.envelopes.iter().position(|x| x == e)
        } else {
            self.envelopes.binary_search(e).ok()
        };
        if let Some(at) = at {
            self.remove_positions(&[at]);
        }
    }

    /// Removes the envelopes at the positions given, in increasing order.
    pub fn remove_positions(&mut self, positions: &[usize]) {
        for &at in positions.iter().rev() {
            if at < self.envelopes.len() {
                let e = self.envelopes.remove(at);
                if !self.ordered() {
                    self.hash = self.hash.wrapping_sub(e.hash_value());
                }
            }
        }
        if self.ordered() {
            self.hash = self.full_hash();
        }
    }

    /// The envelopes that can be delivered (or lost) now: all of them on an
    /// unordered network, the first of each channel on the ordered one.
    pub fn deliverable(&self) -> impl Iterator<Item = &Envelope> + '_ {
        let ordered = self.ordered();
        self.envelopes
            .iter()
            .enumerate()
            .filter_map(move |(at, e)| {
                let head = !ordered
                    || at == 0
                    || (self.envelopes[at - 1].src, self.envelopes[at - 1].dst) != (e.src, e.dst);
                head.then_some(e)
            })
    }

    /// The network with every actor renamed by `actors` and every message
    /// by `messages`.
    pub fn renamed(&self, actors: &dyn Fn(u8) -> u8, messages: &dyn Fn(MsgRef) -> MsgRef) -> Self {
        let mut envelopes: SmallVec<[Envelope; 16]> = self
            .envelopes
            .iter()
            .map(|e| {
                let msg = messages(e.msg);
                Envelope::new(
                    Id::from(usize::from(actors(e.src))),
                    Id::from(usize::from(actors(e.dst))),
                    msg,
                )
            })
            .collect();
        if self.ordered() {
            // Channels are renamed as a whole; within one, the order stays.
            envelopes.sort_by_key(|e| (e.src, e.dst));
        } else {
            envelopes.sort();
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ghost {
    /// What the Figure 3 properties need (shared with the trace replayer's
    /// checks).
    pub raft: Ref<History<Cmd>>,
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
    /// Whether the step into this state was a leader answering a lease read
    /// at once, under its lease.
    pub lease_read: bool,
    /// Whether the step into this state was a leader stepping down at its
    /// CheckQuorum check.
    pub lost_quorum: bool,
    /// Whether the step into this state was a server that does not lead
    /// answering a read at its leader's read index.
    pub follower_read: bool,
    /// Whether a server became leader without a write a client had been
    /// told was written (Acknowledged Writes Survive fails from then on).
    pub ack_lost: bool,
    /// Client invocations and replies, checked for linearizability.
    /// Clients are never renamed by symmetry reduction, so this needs no
    /// rewrite.
    pub clients: Ref<ClientHistory>,
}

impl Ghost {
    /// The ghost of an execution that has not started.
    pub fn new() -> Self {
        Ghost {
            raft: Ref::new(History::default()),
            crashes: 0,
            recovered: 0,
            rejoined: false,
            stepped_down_on_response: false,
            lease_read: false,
            lost_quorum: false,
            follower_read: false,
            ack_lost: false,
            clients: Ref::new(LinearizabilityTester::new(CounterSpec::default())),
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
    pub servers: SmallVec<[ServerSlot; 5]>,
    /// The clients.
    pub clients: Ref<Vec<ClientState>>,
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
        self.network.hash(h);
        self.ghost.hash(h);
    }
}

impl State {
    /// Server `i`, if there is one.
    pub fn server(&self, i: usize) -> Option<&'static Server<Sm>> {
        self.servers.get(i).map(ServerSlot::server)
    }

    /// Whether actor `i` is a server that is down.
    pub fn crashed(&self, i: usize) -> bool {
        self.servers.get(i).is_some_and(|s| s.crashed)
    }

    /// The client that is actor `i`, if it is one.
    pub fn client(&self, i: usize) -> Option<&'static ClientState> {
        i.checked_sub(self.servers.len())
            .and_then(|c| self.clients.get().get(c))
    }

    /// How many actors (servers and clients) there are.
    pub fn actors(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    /// What the safety properties see of server `i`: a live server as it
    /// is, a crashed one by what it persisted.
    pub fn view(&self, i: usize) -> Option<ServerView<'static, Cmd>> {
        let slot = self.servers.get(i)?;
        Some(if slot.crashed {
            ServerView::crashed(slot.server().id, slot.persisted())
        } else {
            ServerView::live(slot.server())
        })
    }

    /// Every server as the safety properties see it.
    pub fn views(&self) -> Vec<ServerView<'static, Cmd>> {
        (0..self.servers.len())
            .filter_map(|i| self.view(i))
            .collect()
    }
}
