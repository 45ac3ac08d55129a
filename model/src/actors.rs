//! Stateright actors: Raft servers (adapters around `raft-spec`) and clients.
//!
//! A server actor translates Stateright events into `raft_spec::Input`s and
//! the spec's `Output`s into Stateright commands. It contains no Raft rule.

use raft_spec::bugs::Bug;
use raft_spec::{
    ClientId, ClientReply, Counter, Increment, Input, Message, NodeId, Output, Outputs,
    PersistentState, Server, StateMachine, Timer,
};
use stateright::actor::{
    model_timeout, Actor, ActorModelState, Command, Envelope, Id, Network, Out,
};
use stateright::{Rewrite, RewritePlan};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// The state machine the model replicates.
pub type Sm = Counter;
/// The command the model's clients submit.
pub type Cmd = Increment;

/// Converts a server's Stateright id into its Raft id (they are equal).
pub fn node_id(id: Id) -> NodeId {
    NodeId(usize::from(id) as u64)
}

/// Converts a Raft id into the Stateright id.
pub fn actor_id(node: NodeId) -> Id {
    Id::from(node.0 as usize)
}

/// A Raft message shared between states, with its hash computed once.
///
/// The checker hashes every message of the network for every state it
/// generates; caching the hash (a pure function of the content, with fixed
/// keys, so identical across runs) keeps that cheap. Equality and order still
/// compare the content. Generic over the command so that the trace replayer
/// ([`crate::replay`]) carries the runtime's Kv commands in the same wrapper.
///
/// One pointer wide (the hash sits next to the message, behind it), so that
/// [`Msg`] is two words and an envelope four: every state copies the set of
/// envelopes in flight.
#[derive(Clone, Debug)]
pub struct RaftMsg<C = Cmd>(Arc<Hashed<C>>);

#[derive(Debug, Clone)]
struct Hashed<C> {
    hash: u64,
    message: Message<C>,
}

/// A hash with fixed keys (the same in every run), cached in values the
/// checker hashes again and again: several times faster than std's SipHash
/// on these small inputs.
fn fixed_hash<T: Hash>(value: &T) -> u64 {
    ahash::RandomState::with_seeds(0x5241_4654, 1, 2, 3).hash_one(value)
}

impl<C: Hash> RaftMsg<C> {
    /// Wraps a message.
    pub fn new(message: Message<C>) -> Self {
        RaftMsg(Arc::new(Hashed {
            hash: fixed_hash(&message),
            message,
        }))
    }
}

impl<C: Clone> RaftMsg<C> {
    /// The message, cloned out if shared.
    pub fn into_inner(self) -> Message<C> {
        Arc::unwrap_or_clone(self.0).message
    }
}

impl<C> std::ops::Deref for RaftMsg<C> {
    type Target = Message<C>;
    fn deref(&self) -> &Message<C> {
        &self.0.message
    }
}

impl<C: PartialEq> PartialEq for RaftMsg<C> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.message == other.0.message)
    }
}

impl<C: Eq> Eq for RaftMsg<C> {}

impl<C> Hash for RaftMsg<C> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl<C: Ord> PartialOrd for RaftMsg<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<C: Ord> Ord for RaftMsg<C> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.message.cmp(&other.0.message)
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

pub(crate) fn rewrite_node<S>(plan: &RewritePlan<Id, S>) -> impl Fn(NodeId) -> NodeId + '_ {
    move |n| node_id(plan.rewrite(&actor_id(n)))
}

pub(crate) fn rewrite_client<S>(plan: &RewritePlan<Id, S>) -> impl Fn(ClientId) -> ClientId + '_ {
    move |c| ClientId(usize::from(plan.rewrite(&Id::from(c.0 as usize))) as u64)
}

impl Rewrite<Id> for Msg {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        match self {
            Msg::Raft(m) => {
                let mapped = m.map_ids(&rewrite_node(plan), &rewrite_client(plan));
                // A message the rewrite leaves as it was (a response, which
                // names no server, or a request whose ids map to themselves)
                // keeps its shared copy and cached hash.
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
                } => Msg::Reply(Arc::new(Answer {
                    request_no: answer.request_no,
                    reply: ClientReply::NotLeader {
                        leader_hint: Some(rewrite_node(plan)(leader)),
                    },
                })),
                _ => self.clone(),
            },
        }
    }
}

/// A server's state in the model: the spec's server, unchanged, with its
/// hash.
///
/// The checker hashes every state it generates, and a step changes one
/// server: the others are shared with the state before (behind an `Arc`) and
/// would be hashed again, log and all. So the hash is computed once, when the
/// server state is made (it cannot change after: the server is reachable
/// only through [`ServerState::server`]), and `Hash` writes just that, as
/// [`RaftMsg`] does for messages. Equality compares the hashes first, then
/// the servers.
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
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
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

/// What a client has seen of its request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientStatus {
    /// Sent, not answered yet.
    Pending,
    /// Answered: the counter's value before this request's increment.
    Done(u64),
}

/// A client's state. The client's own index comes first, so that symmetry
/// reduction never permutes clients (only servers are interchangeable).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientState {
    /// The client's actor index.
    pub index: usize,
    /// The request number it sent (each client sends one request).
    pub request_no: u64,
    /// Its progress.
    pub status: ClientStatus,
}

/// The state of one actor. Servers sort before clients.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActorState {
    /// A Raft server.
    Server(ServerState),
    /// A client.
    Client(ClientState),
}

impl ActorState {
    /// The server, if this is one.
    pub fn server(&self) -> Option<&Server<Sm>> {
        match self {
            ActorState::Server(s) => Some(&s.server),
            ActorState::Client(_) => None,
        }
    }
}

impl Rewrite<Id> for ActorState {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        match self {
            ActorState::Server(s) => ActorState::Server(ServerState::new(
                s.server.map_ids(&rewrite_node(plan), &rewrite_client(plan)),
            )),
            ActorState::Client(c) => ActorState::Client(c.clone()),
        }
    }
}

/// What a server keeps across a crash: the spec's persistent state.
///
/// Shared between the states that hold the same one (every state is copied
/// for each step, and most steps do not write storage); `Hash` and `Eq` are
/// those of the persistent state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stored(pub Arc<PersistentState<Cmd>>);

impl Rewrite<Id> for Stored {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        let mapped = self.0.map_ids(&rewrite_node(plan), &rewrite_client(plan));
        if mapped == *self.0 {
            self.clone()
        } else {
            Stored(Arc::new(mapped))
        }
    }
}

/// An actor of the model.
#[derive(Clone, Debug)]
pub enum RaftActor {
    /// A server of a cluster of `servers` servers with ids `0..servers`.
    Server {
        /// Cluster size.
        servers: usize,
        /// The seeded bug the server runs with, if any.
        bug: Option<Bug>,
        /// The most entries one AppendEntries carries (`None`: no limit).
        max_append_entries: Option<NonZeroUsize>,
        /// Whether heartbeats carry no entries.
        empty_heartbeats: bool,
    },
    /// A client that sends request number 1 to every server (it does not know
    /// the leader) and follows `NotLeader` redirects.
    Client {
        /// Cluster size.
        servers: usize,
    },
}

impl RaftActor {
    fn server_step(&self, state: &mut Cow<ActorState>, input: Input<Cmd>, o: &mut Out<Self>) {
        let ActorState::Server(current) = state.as_ref() else {
            return;
        };
        if let Some(next) = step_server(&current.server, input, o) {
            *state = Cow::Owned(ActorState::Server(ServerState::new(next)));
        }
    }
}

/// How an actor that runs a `raft-spec` server turns the server's outputs
/// into Stateright commands: the model's server adapter, shared by the
/// checker's [`RaftActor`] and the trace replayer's actor
/// ([`crate::replay`]), which runs the runtime's Kv state machine.
pub trait ServerAdapter: Actor<Timer = Timer> {
    /// The replicated state machine.
    type Sm: StateMachine;

    /// The actor message that carries a Raft message.
    fn raft_message(message: Message<<Self::Sm as StateMachine>::Command>) -> Self::Msg;

    /// Where and how a client reply goes; `None`: it leaves the model.
    fn client_reply(
        client_id: ClientId,
        request_no: u64,
        reply: ClientReply<<Self::Sm as StateMachine>::Output>,
    ) -> Option<(Id, Self::Msg)>;

    /// What the actor saves for a `Persist` output: the whole persistent
    /// state, as it is after the step.
    fn stored(persistent: &PersistentState<<Self::Sm as StateMachine>::Command>) -> Self::Storage;
}

/// Steps `current` with `input` and carries out the outputs on `o`; the
/// server after the step, or `None` when the step changed nothing and output
/// nothing (Stateright's no-op).
pub fn step_server<A: ServerAdapter>(
    current: &Server<A::Sm>,
    input: Input<<A::Sm as StateMachine>::Command>,
    o: &mut Out<A>,
) -> Option<Server<A::Sm>> {
    let mut next = current.clone();
    let outputs = next.step(input);
    if outputs.is_empty() && next == *current {
        return None;
    }
    carry_out(&next, outputs, o);
    Some(next)
}

/// Carries out a step's outputs in order. Persistence goes to Stateright's
/// storage (the whole persistent state, as it is after the step).
pub fn carry_out<A: ServerAdapter>(
    server: &Server<A::Sm>,
    outputs: Outputs<A::Sm>,
    o: &mut Out<A>,
) {
    for output in outputs {
        match output {
            Output::Persist(_) => o.save(A::stored(&server.persistent)),
            Output::Send { to, message } => o.send(actor_id(to), A::raft_message(message)),
            Output::SetTimer(timer) => o.set_timer(timer, model_timeout()),
            Output::CancelTimer(timer) => o.cancel_timer(timer),
            Output::Applied { .. } => {}
            Output::ClientReply {
                client_id,
                request_no,
                reply,
            } => {
                if let Some((dst, msg)) = A::client_reply(client_id, request_no, reply) {
                    o.send(dst, msg);
                }
            }
        }
    }
}

/// Carries out actor `id`'s commands on a model state, as Stateright's
/// `ActorModel::next_state` does after a delivery or a timeout (its own
/// `process_commands` is private): sends join the network, timers are set
/// and cancelled, storage is saved, random choices are recorded.
/// `on_send` sees each send first, as the model's `record_msg_out` does.
pub fn apply_commands<A: Actor, H>(
    state: &mut ActorModelState<A, H>,
    id: Id,
    out: Out<A>,
    mut on_send: impl FnMut(&mut H, Envelope<&A::Msg>),
) {
    let index = usize::from(id);
    for command in out {
        match command {
            Command::Send(dst, msg) => {
                on_send(
                    &mut state.history,
                    Envelope {
                        src: id,
                        dst,
                        msg: &msg,
                    },
                );
                match &mut state.network {
                    Network::UnorderedDuplicating(set, _) => {
                        set.insert(Envelope { src: id, dst, msg });
                    }
                    Network::UnorderedNonDuplicating(multiset) => {
                        *multiset.entry(Envelope { src: id, dst, msg }).or_insert(0) += 1;
                    }
                    Network::Ordered(flows) => flows.entry((id, dst)).or_default().push_back(msg),
                }
            }
            Command::SetTimer(timer, _) => {
                if state.timers_set.len() <= index {
                    state.timers_set.resize_with(index + 1, Default::default);
                }
                state.timers_set[index].set(timer);
            }
            Command::CancelTimer(timer) => {
                if let Some(timers) = state.timers_set.get_mut(index) {
                    timers.cancel(&timer);
                }
            }
            Command::Save(storage) => {
                if state.actor_storages.len() <= index {
                    state
                        .actor_storages
                        .resize_with(index + 1, Default::default);
                }
                state.actor_storages[index] = Some(storage);
            }
            Command::ChooseRandom(key, random) => {
                if let Some(choices) = state.random_choices.get_mut(index) {
                    if random.is_empty() {
                        choices.remove(&key);
                    } else {
                        choices.insert(key, random);
                    }
                }
            }
        }
    }
}

impl ServerAdapter for RaftActor {
    type Sm = Sm;

    fn raft_message(message: Message<Cmd>) -> Msg {
        Msg::Raft(RaftMsg::new(message))
    }

    fn client_reply(
        client_id: ClientId,
        request_no: u64,
        reply: ClientReply<u64>,
    ) -> Option<(Id, Msg)> {
        Some((
            Id::from(client_id.0 as usize),
            Msg::Reply(Arc::new(Answer { request_no, reply })),
        ))
    }

    fn stored(persistent: &PersistentState<Cmd>) -> Stored {
        Stored(Arc::new(persistent.clone()))
    }
}

impl Actor for RaftActor {
    type Msg = Msg;
    type Timer = Timer;
    type State = ActorState;
    type Storage = Stored;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<Stored>, o: &mut Out<Self>) -> ActorState {
        match self {
            RaftActor::Server {
                servers,
                bug,
                max_append_entries,
                empty_heartbeats,
            } => {
                let peers = (0..*servers).map(|i| NodeId(i as u64)).collect();
                let persistent = storage
                    .as_ref()
                    .map(|s| PersistentState::clone(&s.0))
                    .unwrap_or_default();
                let (server, outputs) =
                    Server::restart_with_bug(node_id(id), peers, persistent, *bug);
                let server = server
                    .with_max_append_entries(*max_append_entries)
                    .with_empty_heartbeats(*empty_heartbeats);
                carry_out(&server, outputs, o);
                ActorState::Server(ServerState::new(server))
            }
            RaftActor::Client { servers } => {
                for s in 0..*servers {
                    o.send(Id::from(s), Msg::Request { request_no: 1 });
                }
                ActorState::Client(ClientState {
                    index: usize::from(id),
                    request_no: 1,
                    status: ClientStatus::Pending,
                })
            }
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<ActorState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, msg) {
            (RaftActor::Server { .. }, Msg::Raft(message)) => {
                let input = Input::Message {
                    from: node_id(src),
                    message: message.into_inner(),
                };
                self.server_step(state, input, o);
            }
            (RaftActor::Server { .. }, Msg::Request { request_no }) => {
                let input = Input::ClientRequest {
                    client_id: ClientId(usize::from(src) as u64),
                    request_no,
                    command: Increment,
                };
                self.server_step(state, input, o);
            }
            (RaftActor::Client { servers }, Msg::Reply(answer)) => {
                let Answer { request_no, reply } = Arc::unwrap_or_clone(answer);
                let ActorState::Client(client) = state.as_ref() else {
                    return;
                };
                if client.status != ClientStatus::Pending || client.request_no != request_no {
                    return;
                }
                match reply {
                    ClientReply::Ok(value) => {
                        let mut next = client.clone();
                        next.status = ClientStatus::Done(value);
                        *state = Cow::Owned(ActorState::Client(next));
                    }
                    ClientReply::NotLeader {
                        leader_hint: Some(leader),
                    } if (leader.0 as usize) < *servers => {
                        o.send(actor_id(leader), Msg::Request { request_no });
                    }
                    ClientReply::NotLeader { .. } => {}
                }
            }
            _ => {}
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<ActorState>, timer: &Timer, o: &mut Out<Self>) {
        self.server_step(state, Input::timeout(*timer), o);
    }

    fn name(&self) -> String {
        match self {
            RaftActor::Server { .. } => "server".to_string(),
            RaftActor::Client { .. } => "client".to_string(),
        }
    }
}
