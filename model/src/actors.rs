//! Shared message wrapper ([`RaftMsg`]) and the adapter the trace replayer's
//! Stateright actor uses to run a `raft-spec` server: it translates the
//! spec's `Output`s into Stateright commands. It contains no Raft rule.

use crate::model::state::Cmd;
pub use crate::model::state::{actor_id, node_id};
use raft_spec::{
    ClientId, ClientReply, Input, Message, Output, Outputs, PersistentState, Server, StateMachine,
    Timer,
};
use stateright::actor::{
    model_timeout, Actor, ActorModelState, Command, Envelope, Id, Network, Out,
};
use std::cmp::Ordering;
use std::hash::Hash;
use std::sync::Arc;

/// A Raft message shared between states, with its hash computed once.
///
/// The trace replayer ([`crate::replay`]) hashes every message of its
/// network for every state; caching the hash (a pure function of the
/// content, with fixed keys, so identical across runs) keeps that cheap.
/// Equality and order still compare the content. One pointer wide (the hash
/// sits next to the message, behind it).
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
pub(crate) fn fixed_hash<T: Hash>(value: &T) -> u64 {
    ahash::RandomState::with_seeds(0x5241_4654, 1, 2, 3).hash_one(value)
}

impl<C: Hash> RaftMsg<C> {
    /// Wraps a message.
    pub fn new(message: Message<C>) -> Self {
        RaftMsg(Arc::new(Hashed {
            hash: Self::hash_of(&message),
            message,
        }))
    }

    /// The hash a wrapped `message` has.
    pub fn hash_of(message: &Message<C>) -> u64 {
        fixed_hash(message)
    }
}

impl<C> RaftMsg<C> {
    /// The message's cached hash.
    pub fn hash_value(&self) -> u64 {
        self.0.hash
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

/// How an actor that runs a `raft-spec` server turns the server's outputs
/// into Stateright commands: the trace replayer's actor ([`crate::replay`]),
/// which runs the runtime's Kv state machine.
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
