//! The replay's model: a cluster of the runtime's servers ([`Kv`]), the
//! messages in flight between them, and the one step function
//! ([`ReplayModel::step`]) that the replayer, the Explorer's window
//! ([`super::explorer`]) and the two-way conformance test all step it with.
//!
//! The state is made for one long execution rather than for a search: a
//! step changes the stepped server and its storage in place (each behind an
//! `Arc`, so that a state kept for the Explorer is copied only where a later
//! step writes), and time and memory follow what the step changes, not the
//! logs. The checker's state ([`crate::model::State`]) makes the other
//! choice, interning every server state it meets: along a trace whose logs
//! grow to thousands of entries that would copy the log at every step and
//! keep every copy. Both run `raft_spec::Server::step` and carry out its
//! outputs the same way (sends join an unordered, duplicating network;
//! timers are bits; what a server persists is stored); neither holds a Raft
//! rule.

use crate::model::intern::{content_hash, FixedState};
use crate::model::state::{timer_bit, TIMERS};
use raft_spec::trace::{Emitted, LogDigest};
use raft_spec::{Ack, ReadMode, Replication};
use raft_spec::{
    ClientId, Input, Kv, KvCommand, KvOutput, LogIndex, Message, NodeId, Output, PersistentState,
    Role, Server, Term, Timer,
};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A Raft message shared between states, with its hash computed once (the
/// network hashes its messages on every insertion and lookup). Equality and
/// order compare the content.
#[derive(Clone, Debug)]
pub struct RaftMsg(Arc<(u64, Message<KvCommand>)>);

impl RaftMsg {
    /// Wraps a message.
    pub fn new(message: Message<KvCommand>) -> Self {
        RaftMsg(Arc::new((content_hash(&message), message)))
    }

    /// The hash of its content, computed once.
    pub fn content_hash(&self) -> u64 {
        self.0 .0
    }
}

impl std::ops::Deref for RaftMsg {
    type Target = Message<KvCommand>;
    fn deref(&self) -> &Message<KvCommand> {
        &self.0 .1
    }
}

impl PartialEq for RaftMsg {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0 .0 == other.0 .0 && self.0 .1 == other.0 .1)
    }
}

impl Eq for RaftMsg {}

impl Hash for RaftMsg {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0 .0);
    }
}

impl PartialOrd for RaftMsg {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RaftMsg {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0 .1.cmp(&other.0 .1)
    }
}

/// What is delivered to a server.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReplayMsg {
    /// A Raft RPC or response from another server.
    Raft {
        /// The sender.
        from: NodeId,
        /// The message.
        message: RaftMsg,
    },
    /// A client request, sent by the environment (clients are outside the
    /// model: their replies leave it).
    Request {
        /// The client session.
        client_id: ClientId,
        /// The client's request number.
        request_no: u64,
        /// The command.
        command: KvCommand,
        /// When the leader answers it.
        ack: Ack,
        /// How it is served, if it is a read ([`Input::ClientRead`]).
        read: Option<ReadMode>,
    },
}

impl ReplayMsg {
    /// A Raft message from `from`.
    pub fn raft(from: NodeId, message: Message<KvCommand>) -> Self {
        ReplayMsg::Raft {
            from,
            message: RaftMsg::new(message),
        }
    }

    /// The server input that delivering this message is.
    fn input(&self) -> Input<KvCommand> {
        match self {
            ReplayMsg::Raft { from, message } => Input::Message {
                from: *from,
                message: (**message).clone(),
            },
            ReplayMsg::Request {
                client_id,
                request_no,
                command,
                ack,
                read,
            } => match read {
                Some(mode) => Input::ClientRead {
                    client_id: *client_id,
                    request_no: *request_no,
                    command: command.clone(),
                    mode: *mode,
                },
                None => Input::ClientRequest {
                    client_id: *client_id,
                    request_no: *request_no,
                    command: command.clone(),
                    ack: *ack,
                },
            },
        }
    }
}

impl ReplayMsg {
    /// Who sent it (`1`, `client 7`) and the message on one line
    /// (`AppendEntries t1 from n1 prev 342@1 1 entries commit 342`; entries
    /// are counted, not listed: a replayed log can be long).
    fn parts(&self) -> (String, String) {
        match self {
            ReplayMsg::Raft { from, message } => (
                from.0.to_string(),
                crate::render::raft_message_with(message, |e, _| format!("{} entries", e.len())),
            ),
            ReplayMsg::Request {
                client_id,
                request_no,
                command,
                ..
            } => (
                format!("client {}", client_id.0),
                format!("ClientRequest #{request_no} {command:?}"),
            ),
        }
    }
}

/// One line: `1 → AppendEntries t1 ...`, `client 7 → ClientRequest #1 ...`.
impl fmt::Debug for ReplayMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (from, message) = self.parts();
        write!(f, "{from} → {message}")
    }
}

/// A message in flight: to `dst`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Envelope {
    /// The receiver.
    pub dst: NodeId,
    /// The message (with its sender).
    pub msg: ReplayMsg,
}

/// One line, as the Explorer names a delivery: `1 → 2 : AppendEntries t1
/// from n1 prev 342@1 1 entries commit 342`.
impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (from, message) = self.msg.parts();
        write!(f, "{from} → {} : {message}", self.dst.0)
    }
}

/// An action of the replay model.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReplayAction {
    /// A message is delivered (a Raft message must be in flight; a client
    /// request is the environment's and always can be).
    Deliver(Envelope),
    /// A server's timer fires.
    Timeout(NodeId, Timer),
    /// A server crashes: it keeps what it persisted.
    Crash(NodeId),
    /// A crashed server restarts from what it persisted.
    Recover(NodeId),
    /// The leader's own log is durable through `index`, written in `term`
    /// (`Input::Synced`, the answer to its writes in parallel).
    Synced {
        /// The server.
        node: NodeId,
        /// The term the entries were written in.
        term: Term,
        /// The last index now durable.
        index: LogIndex,
    },
    /// A crashed server's writes in parallel past `keep` are lost: they
    /// had not become durable when it went down (`Persist::parallel`).
    LoseUnsynced(NodeId, LogIndex),
}

impl ReplayAction {
    /// The server the action steps.
    pub fn server(&self) -> NodeId {
        match self {
            ReplayAction::Deliver(e) => e.dst,
            ReplayAction::Timeout(n, _)
            | ReplayAction::Crash(n)
            | ReplayAction::Recover(n)
            | ReplayAction::Synced { node: n, .. }
            | ReplayAction::LoseUnsynced(n, _) => *n,
        }
    }
}

/// One line, as the Explorer names an action.
impl fmt::Debug for ReplayAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayAction::Deliver(e) => write!(f, "{e:?}"),
            ReplayAction::Timeout(n, t) => write!(f, "{} {t:?} timeout", n.0),
            ReplayAction::Crash(n) => write!(f, "{} crashes", n.0),
            ReplayAction::Recover(n) => write!(f, "{} recovers", n.0),
            ReplayAction::Synced { node, term, index } => write!(
                f,
                "{} synced its log through {} (term {})",
                node.0, index.0, term.0
            ),
            ReplayAction::LoseUnsynced(n, keep) => {
                write!(f, "{} loses its unsynced writes after {}", n.0, keep.0)
            }
        }
    }
}

/// One server of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    /// The server (while it is down, as it was when it crashed).
    pub server: Arc<Server<Kv>>,
    /// What it persisted.
    pub stored: Arc<PersistentState<KvCommand>>,
    /// Its timers that are set ([`timer_bit`]).
    pub timers: u8,
    /// Whether it is down.
    pub crashed: bool,
    /// The first index of the writes in parallel (`Persist::parallel`) not
    /// known durable yet, if any: a crash may lose the stored log from here
    /// on. Any other persist makes every earlier write durable (a log is
    /// written in order).
    pub unsynced_from: Option<LogIndex>,
}

impl Slot {
    /// Whether `timer` is set.
    pub fn timer_set(&self, timer: Timer) -> bool {
        self.timers & timer_bit(timer) != 0
    }
}

/// The messages in flight, with fixed-key hashing.
pub type InFlight = HashSet<Envelope, FixedState>;

/// A state of the replay model: every server, in node-id order, and the
/// messages in flight. The network is unordered and duplicating: a message
/// may be delivered late, more than once, or never.
#[derive(Clone, PartialEq, Eq)]
pub struct Cluster {
    ids: Arc<[NodeId]>,
    slots: Vec<Slot>,
    network: InFlight,
}

impl Hash for Cluster {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.slots.hash(state);
        // The network in an order-independent way.
        let sum = self
            .network
            .iter()
            .fold(0u64, |acc, e| acc.wrapping_add(content_hash(e)));
        state.write_usize(self.network.len());
        state.write_u64(sum);
    }
}

impl Cluster {
    /// The servers' ids, sorted.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Server `node`'s slot.
    pub fn slot(&self, node: NodeId) -> Option<&Slot> {
        let i = self.ids.binary_search(&node).ok()?;
        self.slots.get(i)
    }

    /// Server `node` (while it is down, as it was when it crashed).
    pub fn server(&self, node: NodeId) -> Option<&Server<Kv>> {
        self.slot(node).map(|s| &*s.server)
    }

    /// Every slot, in node-id order.
    pub fn slots(&self) -> impl Iterator<Item = (NodeId, &Slot)> {
        self.ids.iter().copied().zip(&self.slots)
    }

    /// The messages in flight.
    pub fn network(&self) -> &InFlight {
        &self.network
    }

    /// Whether `message` from `from` to `to` is in flight.
    pub fn in_flight(&self, from: NodeId, to: NodeId, message: &Message<KvCommand>) -> bool {
        self.in_flight_msg(from, to, &RaftMsg::new(message.clone()))
    }

    /// [`Cluster::in_flight`] of a message already wrapped.
    pub fn in_flight_msg(&self, from: NodeId, to: NodeId, message: &RaftMsg) -> bool {
        self.network.contains(&Envelope {
            dst: to,
            msg: ReplayMsg::Raft {
                from,
                message: message.clone(),
            },
        })
    }

    /// Puts a message in flight (the environment's client requests).
    pub fn send(&mut self, envelope: Envelope) {
        self.network.insert(envelope);
    }

    /// Takes a message out of flight: one the network can no longer
    /// deliver (a replay over links in order).
    pub fn forget(&mut self, envelope: &Envelope) {
        self.network.remove(envelope);
    }

    /// Forgets the responses no server will ever act on
    /// ([`Server::ignores_forever`], the checker's own reduction): delivering
    /// one changes nothing, in this state or any later one.
    pub fn forget_dead(&mut self) {
        let Cluster {
            ids,
            slots,
            network,
            ..
        } = self;
        network.retain(|e| {
            let ReplayMsg::Raft { from, message } = &e.msg else {
                return true;
            };
            let server = ids
                .binary_search(&e.dst)
                .ok()
                .and_then(|i| slots.get(i))
                .map(|s| &s.server);
            !server.is_some_and(|s| s.ignores_forever(*from, message))
        });
    }

    fn index(&self, node: NodeId) -> Option<usize> {
        self.ids.binary_search(&node).ok()
    }
}

/// A server's state before a step, as the ghost history reads it.
pub struct BeforeStep {
    /// Its role.
    pub role: Role,
    /// Its term.
    pub current_term: Term,
    /// Its vote.
    pub voted_for: Option<NodeId>,
    /// The last entry it applied.
    pub last_applied: LogIndex,
    /// A leader's match indices.
    pub match_index: Option<BTreeMap<NodeId, LogIndex>>,
}

impl BeforeStep {
    pub(crate) fn of(server: &Server<Kv>) -> Self {
        let leader = server.role() == Role::Leader;
        BeforeStep {
            role: server.role(),
            current_term: server.current_term(),
            voted_for: server.persistent.voted_for,
            last_applied: server.volatile.last_applied,
            match_index: leader.then(|| server.volatile.match_index.clone()),
        }
    }

    /// The view [`raft_spec::safety::IncrementalSafety`] takes.
    pub fn view(&self) -> raft_spec::safety::Before<'_> {
        raft_spec::safety::Before {
            crashed: false,
            role: self.role,
            current_term: self.current_term,
            voted_for: self.voted_for,
            last_applied: self.last_applied,
            match_index: self.match_index.as_ref(),
        }
    }
}

/// One output of a step, as a version-3 trace records it.
#[derive(Clone, Debug)]
pub struct Emit {
    /// The record.
    pub item: Emitted<KvOutput>,
    /// Whether it is the send of an AppendEntries (the release rule,
    /// [`raft_spec::trace::released_sends`], needs to know).
    pub append: bool,
    /// For a send, its message's [`RaftMsg::content_hash`] (0 otherwise).
    pub content: u64,
    /// For a send, the message as put in flight.
    pub envelope: Option<Envelope>,
}

/// What a step emitted, in order.
pub type Emits = Vec<Emit>;

/// What a step did to the stepped server.
pub struct Stepped {
    /// The server before the step.
    pub before: BeforeStep,
    /// The first log index written, if the log changed.
    pub from: Option<LogIndex>,
    /// Whether an entry held before the step was deleted or replaced.
    pub rewritten: bool,
}

/// The replay model of one cluster: its servers' ids and configuration,
/// and the state its executions start in. It is a Stateright model (for the
/// Explorer and the conformance test): the actions of a state are every
/// delivery of a message in flight, every timer set, and a crash or a
/// recovery of every server.
#[derive(Clone)]
pub struct ReplayModel {
    ids: Arc<[NodeId]>,
    replication: Replication,
    init: Cluster,
}

impl ReplayModel {
    /// The model of a cluster whose servers pace AppendEntries as
    /// `replication` says ([`Server::with_replication`]), as the trace
    /// headers record. It starts with every server started with nothing
    /// persisted and no message in flight.
    pub fn new(servers: &[NodeId], replication: Replication) -> Self {
        let mut sorted = servers.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let ids: Arc<[NodeId]> = sorted.into();
        let mut init = Cluster {
            ids: Arc::clone(&ids),
            slots: Vec::with_capacity(ids.len()),
            network: InFlight::default(),
        };
        let mut model = ReplayModel {
            ids,
            replication,
            init: init.clone(),
        };
        for &id in model.ids.iter() {
            let (server, outputs) = model.restarted(id, PersistentState::default());
            init.slots.push(Slot {
                server: Arc::new(server),
                stored: Arc::new(PersistentState::default()),
                timers: 0,
                crashed: false,
                unsynced_from: None,
            });
            let i = init.slots.len() - 1;
            carry_out(&mut init, i, outputs, None, None);
        }
        model.init = init;
        model
    }

    /// The replication settings its servers run.
    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// The same model, starting in `init` instead.
    pub fn starting_in(&self, init: Cluster) -> Self {
        ReplayModel {
            init,
            ..self.clone()
        }
    }

    /// The state its executions start in.
    pub fn init(&self) -> &Cluster {
        &self.init
    }

    /// What server `id` emits when it starts with nothing persisted, as a
    /// version-3 trace records it: the expected outputs of a trace's first
    /// step (the model's initial state carried them out).
    pub fn start_emits(&self, id: NodeId) -> Emits {
        let (_, outputs) = self.restarted(id, PersistentState::default());
        outputs
            .iter()
            .filter_map(|o| {
                Emitted::of(o, &LogDigest::default()).map(|item| Emit {
                    item,
                    append: false,
                    content: 0,
                    envelope: None,
                })
            })
            .collect()
    }

    /// Server `id` restarted from `persistent`, with its outputs. The
    /// replication settings are configuration, not persisted state: applied
    /// at every start.
    fn restarted(
        &self,
        id: NodeId,
        persistent: PersistentState<KvCommand>,
    ) -> (Server<Kv>, Vec<Output<KvCommand, raft_spec::KvOutput>>) {
        let (server, outputs) = Server::restart(id, self.ids.to_vec(), persistent);
        (server.with_replication(self.replication), outputs)
    }

    /// The one step function: carries out `action` on `cluster` in place.
    /// `None` (and `cluster` as it was) if the action is not enabled: a
    /// server that is not one of the cluster's, or is down; a Raft message
    /// not in flight; a timer not set; a crash of a server that is down, or
    /// a recovery of one that is up. `digest`, if given, is the stepped
    /// server's chained log digest, brought up to date with what the step
    /// writes.
    ///
    /// A delivery or a timeout steps the server with
    /// [`Server::step`] (a timeout first clears its timer) and carries out
    /// its outputs in order: sends join the network (a delivered message
    /// stays: the network duplicates), timers are set and cancelled, and
    /// the storage takes each [`raft_spec::Persist`] as a disk does (the
    /// spec's contract: every change to the persistent state is persisted
    /// in its step). Client replies and applied commands leave the model. A
    /// crash keeps the server as it was and clears its timers; a recovery
    /// is [`Server::restart`] from the storage, whose log is then compared
    /// with the one before (time proportional to the log, as the runtime's
    /// reload).
    pub fn step(
        &self,
        cluster: &mut Cluster,
        action: &ReplayAction,
        digest: Option<&mut LogDigest>,
    ) -> Option<Stepped> {
        self.step_recording(cluster, action, digest, None)
    }

    /// [`ReplayModel::step`], also collecting in `emitted`, if given, what
    /// the step emitted as a version-3 trace records it
    /// ([`Emitted::all`]; a crash emits nothing, a recovery what the
    /// restart emits).
    pub fn step_recording(
        &self,
        cluster: &mut Cluster,
        action: &ReplayAction,
        digest: Option<&mut LogDigest>,
        emitted: Option<&mut Emits>,
    ) -> Option<Stepped> {
        let i = cluster.index(action.server())?;
        let slot = &cluster.slots[i];
        let input = match action {
            ReplayAction::Deliver(envelope) => {
                if slot.crashed
                    || (matches!(envelope.msg, ReplayMsg::Raft { .. })
                        && !cluster.network.contains(envelope))
                {
                    return None;
                }
                envelope.msg.input()
            }
            ReplayAction::Timeout(_, timer) => {
                if slot.crashed || !slot.timer_set(*timer) {
                    return None;
                }
                cluster.slots[i].timers &= !timer_bit(*timer);
                Input::timeout(*timer)
            }
            ReplayAction::Synced { term, index, .. } => {
                if slot.crashed {
                    return None;
                }
                let slot = &mut cluster.slots[i];
                if slot.unsynced_from.is_some_and(|from| from <= *index) {
                    let next = index.next();
                    slot.unsynced_from = (next <= slot.stored.log.last_index()).then_some(next);
                }
                Input::Synced {
                    term: *term,
                    index: *index,
                }
            }
            ReplayAction::LoseUnsynced(_, keep) => {
                let from = slot.unsynced_from?;
                if !slot.crashed || keep.next() < from || *keep >= slot.stored.log.last_index() {
                    return None;
                }
                let slot = &mut cluster.slots[i];
                Arc::make_mut(&mut slot.stored)
                    .log
                    .truncate_from(keep.next());
                slot.unsynced_from = None;
                return Some(Stepped::nothing_to(&slot.server));
            }
            ReplayAction::Crash(_) => {
                if slot.crashed {
                    return None;
                }
                let slot = &mut cluster.slots[i];
                slot.crashed = true;
                slot.timers = 0;
                return Some(Stepped::nothing_to(&slot.server));
            }
            ReplayAction::Recover(id) => {
                if !slot.crashed {
                    return None;
                }
                let (server, outputs) = self.restarted(*id, PersistentState::clone(&slot.stored));
                let mut stepped = Stepped::nothing_to(&slot.server);
                let (old, new) = (slot.server.log().entries(), server.log().entries());
                let common = old.iter().zip(new).take_while(|(a, b)| a == b).count();
                if common != old.len() || common != new.len() {
                    stepped.from = Some(LogIndex(common as u64 + 1));
                    stepped.rewritten = common < old.len();
                    if let Some(d) = digest {
                        *d = LogDigest::of(server.log());
                    }
                }
                let slot = &mut cluster.slots[i];
                slot.server = Arc::new(server);
                slot.crashed = false;
                carry_out(cluster, i, outputs, None, emitted);
                return Some(stepped);
            }
        };
        let server = Arc::make_mut(&mut cluster.slots[i].server);
        let before = BeforeStep::of(server);
        let outputs = server.step(input);
        let (from, rewritten) = carry_out(cluster, i, outputs, digest, emitted);
        Some(Stepped {
            before,
            from,
            rewritten,
        })
    }

    /// The state after `action`, or `None` if it is not enabled or changes
    /// nothing (the Explorer offers no transition that leaves the state as
    /// it is: a response already counted, a late dead response).
    pub fn next(&self, cluster: &Cluster, action: &ReplayAction) -> Option<Cluster> {
        let mut next = cluster.clone();
        self.step(&mut next, action, None)?;
        (next != *cluster).then_some(next)
    }

    /// The actions offered in `cluster`: every delivery of a message in
    /// flight (by receiver, then message), every timer set, then a crash of
    /// every server that is up and a recovery of every server that is down.
    pub fn actions_of(&self, cluster: &Cluster) -> Vec<ReplayAction> {
        let mut deliveries: Vec<&Envelope> = cluster
            .network
            .iter()
            .filter(|e| cluster.slot(e.dst).is_some_and(|s| !s.crashed))
            .collect();
        deliveries.sort_unstable();
        let mut actions: Vec<ReplayAction> = deliveries
            .into_iter()
            .map(|e| ReplayAction::Deliver(e.clone()))
            .collect();
        for (id, slot) in cluster.slots() {
            for t in TIMERS {
                if !slot.crashed && slot.timer_set(t) {
                    actions.push(ReplayAction::Timeout(id, t));
                }
            }
        }
        for (id, slot) in cluster.slots() {
            actions.push(if slot.crashed {
                ReplayAction::Recover(id)
            } else {
                ReplayAction::Crash(id)
            });
        }
        for (id, slot) in cluster.slots() {
            if let Some(from) = slot.unsynced_from {
                actions.push(if slot.crashed {
                    ReplayAction::LoseUnsynced(id, from.prev())
                } else {
                    ReplayAction::Synced {
                        node: id,
                        term: slot.server.current_term(),
                        index: slot.stored.log.last_index(),
                    }
                });
            }
        }
        actions
    }
}

impl Stepped {
    fn nothing_to(server: &Server<Kv>) -> Self {
        Stepped {
            before: BeforeStep::of(server),
            from: None,
            rewritten: false,
        }
    }
}

/// Carries out slot `i`'s outputs on `cluster`, in order: the first log
/// index written, if any, and whether an entry held before was deleted or
/// replaced.
fn carry_out(
    cluster: &mut Cluster,
    i: usize,
    outputs: Vec<Output<KvCommand, KvOutput>>,
    mut digest: Option<&mut LogDigest>,
    mut emitted: Option<&mut Emits>,
) -> (Option<LogIndex>, bool) {
    let (mut first, mut rewritten) = (None, false);
    let from = cluster.ids[i];
    let Cluster { slots, network, .. } = cluster;
    let slot = &mut slots[i];
    // Without the caller's log digest (the Explorer, the conformance test
    // ask for no record), one is computed if a record is asked for.
    let computed = match (&emitted, &digest) {
        (Some(_), None) => Some(LogDigest::of(slot.server.log())),
        _ => None,
    };
    for output in outputs {
        if let Some(e) = emitted.as_deref_mut() {
            // The step's persist, first of its outputs, has brought the log
            // digest up to date by the time a send reads it.
            let log = digest.as_deref().or(computed.as_ref());
            if let Some(item) = log.and_then(|log| Emitted::of(&output, log)) {
                let append = matches!(
                    output,
                    Output::Send {
                        message: Message::AppendEntries(_),
                        ..
                    }
                );
                // A send's content hash is filled in below, where its
                // message is wrapped (and hashed) once for the network.
                e.push(Emit {
                    item,
                    append,
                    content: 0,
                    envelope: None,
                });
            }
        }
        match output {
            Output::Persist(persist) => {
                slot.unsynced_from = match (&persist.log, persist.parallel) {
                    (Some(write), true) => {
                        Some(slot.unsynced_from.map_or(write.from, |f| f.min(write.from)))
                    }
                    (_, true) => slot.unsynced_from,
                    (_, false) => None,
                };
                let stored = Arc::make_mut(&mut slot.stored);
                if let Some(write) = &persist.log {
                    // The stored log is the log before the step.
                    rewritten |= write.rewrites(&stored.log);
                    first = Some(first.map_or(write.from, |f: LogIndex| f.min(write.from)));
                    if let Some(d) = digest.as_deref_mut() {
                        d.apply(write);
                    }
                }
                stored.apply_persist(&persist);
            }
            Output::Send { to, message } => {
                let message = RaftMsg::new(message);
                let content = message.content_hash();
                let envelope = Envelope {
                    dst: to,
                    msg: ReplayMsg::Raft { from, message },
                };
                // This send's record, pushed just above.
                if let Some(record) = emitted.as_deref_mut().and_then(|e| e.last_mut()) {
                    record.content = content;
                    record.envelope = Some(envelope.clone());
                }
                network.insert(envelope);
            }
            Output::SetTimer(t) => slot.timers |= timer_bit(t),
            Output::CancelTimer(t) => slot.timers &= !timer_bit(t),
            Output::Applied { .. } | Output::ClientReply { .. } => {}
        }
    }
    (first, rewritten)
}

impl stateright::Model for ReplayModel {
    type State = Cluster;
    type Action = ReplayAction;

    fn init_states(&self) -> Vec<Cluster> {
        vec![self.init.clone()]
    }

    fn actions(&self, state: &Cluster, actions: &mut Vec<ReplayAction>) {
        actions.extend(self.actions_of(state));
    }

    fn next_state(&self, state: &Cluster, action: ReplayAction) -> Option<Cluster> {
        self.next(state, &action)
    }

    fn format_action(&self, action: &ReplayAction) -> String {
        format!("{action:?}")
    }

    /// The stepped server before and after, and what it sent.
    fn format_step(&self, state: &Cluster, action: ReplayAction) -> Option<String> {
        let node = action.server();
        let next = self.next(state, &action)?;
        let line = |c: &Cluster| c.server(node).map_or_else(|| "-".to_string(), server_line);
        let mut out = format!(
            "step: {action:?}\n  before: {}\n  after:  {}\n",
            line(state),
            line(&next)
        );
        let mut sent: Vec<&Envelope> = next
            .network
            .iter()
            .filter(|e| !state.network.contains(e))
            .collect();
        sent.sort_unstable();
        for e in sent {
            out.push_str(&format!("  sends {e:?}\n"));
        }
        Some(out)
    }
}

/// A state in a few lines (the Explorer shows it): each server on one line
/// with its timers, then the number of messages in flight (the messages
/// themselves are the delivery actions offered).
impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (_, slot) in self.slots() {
            let timers: Vec<String> = TIMERS
                .into_iter()
                .filter(|&t| slot.timer_set(t))
                .map(|t| format!("{t:?}"))
                .collect();
            writeln!(
                f,
                "{}{}, timers: [{}]",
                server_line(&slot.server),
                if slot.crashed { " (crashed)" } else { "" },
                timers.join(", ")
            )?;
        }
        write!(f, "network: {} messages in flight", self.network.len())
    }
}

/// One line about a replayed server, e.g. `n1 Leader t1 voted n1 log 343
/// (last term 1) commit 342 applied 342`.
pub fn server_line(s: &Server<Kv>) -> String {
    format!(
        "{} {:?} t{} voted {} log {} (last term {}) commit {} applied {}",
        s.id,
        s.role(),
        s.current_term().0,
        s.persistent
            .voted_for
            .map_or_else(|| "-".to_string(), |n| n.to_string()),
        s.log().len(),
        s.log().last_term().0,
        s.volatile.commit_index.0,
        s.volatile.last_applied.0
    )
}
