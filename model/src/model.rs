//! The Stateright model: an `ActorModel` of servers and clients, plus the
//! ghost history the Figure 3 properties need.
//!
//! Stateright's `ActorModel` updates its history only from messages. The
//! properties need more (who led which term, what was applied where), so
//! [`RaftModel`] wraps the `ActorModel`: it delegates every action to it and,
//! after each step of a server, records the step in the ghost
//! [`raft_spec::safety::History`] by calling `History::record_step` on the
//! server's state before and after. It also counts crashes, because
//! Stateright's `max_crashes` bounds only the number of servers down *at the
//! same time*.

use crate::actors::{
    apply_commands, node_id, rewrite_client, rewrite_node, ActorState, ClientStatus, Cmd, Msg,
    RaftActor, RaftMsg, Sm,
};
use crate::config::{ModelConfig, NetworkKind};
use raft_spec::safety::{self, History, ServerView};
use raft_spec::{
    acceptance, ignores_forever_with_bug, refusal, refuses_forever, ClientReply, LogIndex, Message,
    NodeId, PersistentState, Role, Server, StateMachine, Timer,
};
use stateright::actor::{
    Actor, ActorModel, ActorModelAction, ActorModelState, Command, Envelope, Id, LossyNetwork,
    Network, Out,
};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};
use stateright::util::DenseNatMap;
use stateright::{Model, Path, Property, Representative, Rewrite, RewritePlan};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

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

/// Ghost state of the model (TLA+'s auxiliary variables); never read by an actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ghost {
    /// What the Figure 3 properties need (shared with the trace replayer).
    pub raft: History<Cmd>,
    /// Crashes so far, over the whole execution.
    pub crashes: usize,
    /// Servers that have recovered from a crash at least once.
    pub recovered: BTreeSet<NodeId>,
    /// Whether the step into this state was a server that had recovered
    /// from a crash granting a vote or accepting entries.
    ///
    /// This flag and the next mark the step that shows an example and are
    /// cleared by the step after it. The `Sometimes` property reading it is
    /// found in the state after that step all the same, and no other
    /// property reads them; a flag that stayed set would keep every later
    /// state apart from the same state reached without the example (1.2x
    /// more states on 3 servers / 2 terms / 1 request, and on the default
    /// configuration).
    pub rejoined: bool,
    /// Whether the step into this state was a leader learning a higher term
    /// from a response and stepping down (Fig. 2, Rules for Servers: "RPC
    /// request *or response*").
    pub stepped_down_on_response: bool,
    /// Client invocations and replies, checked for linearizability.
    /// Clients are never permuted by symmetry reduction, so this needs no rewrite.
    /// Shared between states (it changes only when a client sends its request
    /// or gets its reply), so copying a state does not copy it.
    pub clients: Arc<LinearizabilityTester<Id, CounterSpec>>,
}

impl Rewrite<Id> for Ghost {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        let nodes = rewrite_node(plan);
        let clients = rewrite_client(plan);
        Ghost {
            raft: self.raft.map_ids(&nodes, &clients),
            crashes: self.crashes,
            recovered: self.recovered.iter().map(|&n| nodes(n)).collect(),
            rejoined: self.rejoined,
            stepped_down_on_response: self.stepped_down_on_response,
            clients: self.clients.clone(),
        }
    }
}

/// A state of the model: Stateright's `ActorModelState` of the actors and
/// the ghost history.
///
/// A newtype only for its `Debug`, which is what Stateright's Explorer shows
/// for a state: [`crate::render`] writes one line per server, client and
/// message in flight instead of a raw dump. `Hash` and `Eq` are the wrapped
/// state's (the derived `Hash` of a one-field struct hashes just that field),
/// so fingerprints and the checked state space are exactly those of the
/// `ActorModelState`; `Debug` is never hashed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct State(pub ActorModelState<RaftActor, Ghost>);

impl std::ops::Deref for State {
    type Target = ActorModelState<RaftActor, Ghost>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for State {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Representative for State {
    /// Stateright's representative (actors sorted by state, every id
    /// rewritten), except that a state whose actors are already in order is
    /// its own representative and is not rewritten. The successors of a
    /// representative often are (a step changes one actor), and the rewrite
    /// rebuilds every server, message and the ghost.
    fn representative(&self) -> Self {
        let plan = RewritePlan::<Id, _>::from_values_to_sort(&self.actor_states);
        if plan.get_state().iter().all(|(from, &to)| from == to) {
            return self.clone();
        }
        self.rewritten(&plan)
    }
}

impl State {
    /// The state with its actors renamed by `plan`: Stateright's
    /// `ActorModelState::representative` for any plan, except for the random
    /// choices, which the model keeps empty (see `init_states`).
    fn rewritten(&self, plan: &RewritePlan<Id, DenseNatMap<Id, Id>>) -> State {
        State(ActorModelState {
            actor_states: plan.reindex(&self.actor_states),
            network: self.network.rewrite(plan),
            timers_set: plan.reindex(&self.timers_set),
            random_choices: Vec::new(),
            crashed: plan.reindex(&self.crashed),
            actor_storages: plan.reindex(&self.actor_storages),
            history: self.history.rewrite(plan),
        })
    }
}
/// An action of the model.
pub type Action = ActorModelAction<Msg, Timer, ()>;

/// Property names beyond Figure 3.
pub mod names {
    /// Client replies are linearizable with respect to the counter.
    pub const LINEARIZABILITY: &str = "Linearizability";
    /// Sometimes: a leader is elected.
    pub const LEADER_ELECTED: &str = "a leader is elected";
    /// Sometimes: an entry is committed.
    pub const ENTRY_COMMITTED: &str = "an entry is committed";
    /// Sometimes: a leader of a higher term replaces an earlier one.
    pub const LEADER_REPLACED: &str = "a leader of a higher term replaces an earlier one";
    /// Sometimes: a follower's conflicting entry is overwritten.
    pub const CONFLICT_OVERWRITTEN: &str = "a follower's conflicting entry is overwritten";
    /// Sometimes: a leader learns of a higher term from a response (not a
    /// request) and steps down.
    pub const LEADER_STEPS_DOWN_ON_RESPONSE: &str =
        "a leader steps down on a response with a higher term";
    /// Sometimes: a client gets a reply.
    pub const CLIENT_REPLY: &str = "a client gets a reply";
    /// Sometimes (with crashes): a server that crashed and recovered later
    /// votes or accepts entries.
    pub const CRASHED_SERVER_REJOINS: &str =
        "a crashed server recovers and later votes or accepts entries";
}

/// The Raft model for one bounded configuration.
pub struct RaftModel {
    /// The configuration.
    pub config: ModelConfig,
    /// Whether dead messages are forgotten (on by default; see
    /// [`RaftModel::without_garbage_collection`]).
    pub collect_garbage: bool,
    /// Whether every state is replaced by its representative under server
    /// renaming (see [`RaftModel::with_canonical_states`]).
    pub canonical: bool,
    /// Once set, no state has a successor (see [`RaftModel::with_stop`]).
    stop: Option<Arc<AtomicBool>>,
    inner: ActorModel<RaftActor, ModelConfig, Ghost>,
}

fn nothing_persisted() -> &'static PersistentState<Cmd> {
    static EMPTY: OnceLock<PersistentState<Cmd>> = OnceLock::new();
    EMPTY.get_or_init(PersistentState::default)
}

impl RaftModel {
    /// Builds the model for a configuration (which must be valid).
    pub fn new(config: ModelConfig) -> Self {
        let network = match config.network {
            NetworkKind::UnorderedDuplicating => Network::new_unordered_duplicating([]),
            NetworkKind::UnorderedNonDuplicating => Network::new_unordered_nonduplicating([]),
            NetworkKind::Ordered => Network::new_ordered([]),
        };
        let ghost = Ghost {
            raft: History::default(),
            crashes: 0,
            recovered: BTreeSet::new(),
            rejoined: false,
            stepped_down_on_response: false,
            clients: Arc::new(LinearizabilityTester::new(CounterSpec::default())),
        };
        let inner = ActorModel::new(config, ghost)
            .actors((0..config.servers).map(|_| RaftActor::Server {
                servers: config.servers,
                bug: config.bug,
                max_append_entries: config.max_append_entries,
                empty_heartbeats: config.empty_heartbeats,
            }))
            .actors((0..config.requests).map(|_| RaftActor::Client {
                servers: config.servers,
            }))
            .init_network(network)
            .lossy_network(if config.lossy && config.network == NetworkKind::Ordered {
                LossyNetwork::Yes
            } else {
                LossyNetwork::No
            })
            .max_crashes(config.crashes.min(config.servers))
            .record_msg_out(record_invocation)
            .record_msg_in(record_return);
        RaftModel {
            config,
            // Dead-message collection follows the rules the servers run,
            // seeded bug included (`ignores_forever_with_bug`).
            collect_garbage: true,
            canonical: false,
            stop: None,
            inner,
        }
    }

    /// The same model, keeping dead messages in the network (for checking
    /// that the reduction changes no verdict and no reachable server state).
    pub fn without_garbage_collection(mut self) -> Self {
        self.collect_garbage = false;
        self
    }

    /// The same model with every state replaced by its representative
    /// under server renaming (servers sorted by state, ids rewritten; clients
    /// stay).
    ///
    /// This is symmetry reduction for the breadth-first checker, which
    /// Stateright 0.31 offers only for depth-first search: the search walks
    /// one state per class of states equal up to server names, and its
    /// breadth-first order still gives shortest counterexamples, since renaming
    /// servers maps a path to a path of the same length. Sound because every
    /// property is blind to server names and all servers run the same code.
    /// The paths it finds step between representatives; [`Self::concrete_path`]
    /// turns them into paths of the plain model, which the Explorer replays.
    pub fn with_canonical_states(mut self) -> Self {
        self.canonical = true;
        self
    }

    /// The same model, whose states have no successors once `stop` is set.
    ///
    /// This is how a search is cut short from outside (the checker's time
    /// limit): Stateright 0.31's own timeout ends a search exactly as its
    /// completion does, so a search stopped by it could not be told from a
    /// finished one. With the flag, whoever sets it knows the search was
    /// stopped, and the checker's threads still end promptly: they only
    /// empty their queues.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Whether `x` and `y` are equal up to a renaming of servers.
    pub fn same_up_to_renaming(&self, x: &State, y: &State) -> bool {
        fn permutations(n: usize) -> Vec<Vec<usize>> {
            if n == 0 {
                return vec![Vec::new()];
            }
            let mut all = Vec::new();
            for rest in permutations(n - 1) {
                for at in 0..n {
                    let mut p = rest.clone();
                    p.insert(at, n - 1);
                    all.push(p);
                }
            }
            all
        }
        let actors = x.actor_states.len();
        permutations(self.config.servers).into_iter().any(|p| {
            // Actor i moves to position key[i]: servers by the permutation,
            // clients to where they are.
            let key: Vec<usize> = (0..actors)
                .map(|i| p.get(i).copied().unwrap_or(i))
                .collect();
            x.rewritten(&RewritePlan::<Id, _>::from_values_to_sort(&key)) == *y
        })
    }

    /// The path of this (plain) model that a path of the canonical model
    /// ([`Self::with_canonical_states`]) stands for: the same steps, with the
    /// servers under the names they have from the initial state on. None if
    /// some step has no counterpart (it always has one when the model is
    /// symmetric, which the canonical search assumes).
    pub fn concrete_path(&self, path: &Path<State, Action>) -> Option<Path<State, Action>> {
        let targets = path.clone().into_states();
        let (first, rest) = targets.split_first()?;
        let init = self
            .init_states()
            .into_iter()
            .find(|s| self.same_up_to_renaming(s, first))?;
        let mut current = init.clone();
        let mut steps = Vec::new();
        let mut actions = Vec::new();
        for target in rest {
            actions.clear();
            self.actions(&current, &mut actions);
            let (action, next) = actions.drain(..).find_map(|a| {
                let next = self.next_state(&current, a.clone())?;
                self.same_up_to_renaming(&next, target).then_some((a, next))
            })?;
            steps.push(action);
            current = next;
        }
        Path::from_actions(self, init, steps.iter())
    }

    /// The wrapped Stateright `ActorModel`.
    pub fn actor_model(&self) -> &ActorModel<RaftActor, ModelConfig, Ghost> {
        &self.inner
    }

    /// The Raft server at index `i` of a state (its last state if crashed).
    pub fn server(state: &State, i: usize) -> Option<&Server<Sm>> {
        state.actor_states.get(i).and_then(|a| a.server())
    }

    /// The snapshot the safety properties look at: every server, crashed
    /// ones by their persisted state.
    pub fn views<'a>(&self, state: &'a State) -> Vec<ServerView<'a, Cmd>> {
        (0..self.config.servers)
            .filter_map(|i| Self::view(state, i))
            .collect()
    }

    fn view(state: &State, i: usize) -> Option<ServerView<'_, Cmd>> {
        let server = Self::server(state, i)?;
        if state.crashed.get(i).copied().unwrap_or(false) {
            let stored = state.actor_storages.get(i).and_then(|s| s.as_ref());
            Some(ServerView::crashed(
                server.id,
                stored.map_or(nothing_persisted(), |s| &*s.0),
            ))
        } else {
            Some(ServerView::live(server))
        }
    }

    /// Whether delivering `msg` from `src` to `dst` can never change
    /// anything, in this state or any later one: it changes no actor and
    /// sends nothing that is not itself dead.
    fn is_dead(&self, state: &State, src: Id, dst: Id, msg: &Msg) -> bool {
        let i = usize::from(dst);
        match (state.actor_states.get(i).map(|a| &**a), msg) {
            (Some(ActorState::Client(c)), Msg::Reply(answer)) => {
                let done = matches!(c.status, ClientStatus::Done(_));
                // A redirect only makes the client resend its request to the
                // hinted leader. On a duplicating network that request is
                // already deliverable (the client sent it to every server at
                // start; a copy that was dropped is indistinguishable from one
                // that is delayed), so the redirect adds no behaviour.
                let redirect_is_moot = match answer.reply {
                    ClientReply::NotLeader { leader_hint: None } => true,
                    ClientReply::NotLeader { .. } => {
                        self.config.network == NetworkKind::UnorderedDuplicating
                    }
                    ClientReply::Ok(_) => false,
                };
                done || redirect_is_moot
            }
            (Some(ActorState::Server(_)), Msg::Raft(m)) => {
                self.ignores_forever(state, i, node_id(src), m)
                    || self.answer_teaches_nothing(state, src, i, m)
                    || self.absorbed_for_good(state, src, i, m)
            }
            _ => false,
        }
    }

    /// Whether server `i` ignores `message` from `from` now and forever: a
    /// live server as [`Server::ignores_forever`] says, a crashed one as
    /// [`ignores_forever_with_bug`] says of its persisted term (it restarts
    /// as a follower of that term).
    fn ignores_forever(
        &self,
        state: &State,
        i: usize,
        from: NodeId,
        message: &Message<Cmd>,
    ) -> bool {
        if state.crashed.get(i).copied().unwrap_or(false) {
            Self::view(state, i).is_some_and(|v| {
                ignores_forever_with_bug(v.current_term, None, message, self.config.bug)
            })
        } else {
            Self::server(state, i).is_some_and(|s| s.ignores_forever(from, message))
        }
    }

    /// Whether `m` is a request (RequestVote or AppendEntries) whose only
    /// effect, now and later, is a refusal that is already in flight or that
    /// its sender ignores.
    ///
    /// Its recipient refuses it for good ([`refuses_forever`]: the request is
    /// of an older term, or asks for a vote the recipient has given to
    /// another candidate in that term), answering with a [`refusal`] of its
    /// term at the time. A recipient at the highest term the bounds allow
    /// stays there, so its refusal is always the same message; if that is in
    /// flight on the duplicating network ([`Self::in_flight_for_good`]), a
    /// delivery changes nothing, whatever the sender's term. Otherwise the
    /// sender must be at the highest term: then no answer can be of a higher
    /// term than its own (no explored state has a term above the bound), an
    /// answer of an older term is stale, and the sender is asked whether it
    /// ignores, now and forever, the answer of its own term
    /// ([`Server::ignores_forever`]; for a crashed sender,
    /// [`ignores_forever_with_bug`] of its persisted term). A refused vote is
    /// always ignored; a rejected AppendEntries is ignored by a follower, and
    /// by a leader for which it is stale. Each of these lasts, and a step
    /// that sends only such a dead answer is a step that sends nothing. The
    /// Raft rules are raft-spec's; what is added here is the bound.
    fn answer_teaches_nothing(&self, state: &State, src: Id, dst: usize, m: &Message<Cmd>) -> bool {
        let (Some(recipient), Some(sender)) =
            (Self::view(state, dst), Self::view(state, usize::from(src)))
        else {
            return false;
        };
        if !refuses_forever(
            recipient.current_term,
            recipient.voted_for,
            m,
            self.config.bug,
        ) {
            return false;
        }
        let ignored = sender.current_term.0 >= self.config.max_term
            && refusal(sender.current_term, m).is_some_and(|answer| {
                self.ignores_forever(state, usize::from(src), recipient.id, &answer)
            });
        // At the bound the recipient's refusal is one message forever. The
        // network is looked up last: it costs a message built and hashed.
        ignored
            || (recipient.current_term.0 >= self.config.max_term
                && refusal(recipient.current_term, m).is_some_and(|answer| {
                    Self::in_flight_for_good(state, Id::from(dst), src, answer)
                }))
    }

    /// Whether `m` is an AppendEntries that its recipient has absorbed for
    /// good and whose answers its sender ignores.
    ///
    /// The recipient is a live follower that absorbs `m` ([`Server::absorbs`]:
    /// it holds the entries and has committed as far as `m` allows) and has
    /// its election timer set already, so delivering `m` changes nothing
    /// there and only answers [`acceptance`]. That lasts while it stays a
    /// follower of `m`'s term, given that it never restarts: so no crash may
    /// be left in the bound, since a restart loses the commit index and the
    /// leader it knew. It also rests on the safety properties holding until
    /// then; a path that breaks one does so first in a state reached without
    /// such a delivery (none of them changes a server), so the checker still
    /// reports it.
    ///
    /// The sender must ignore the acceptance forever, or the acceptance must
    /// be in flight on the duplicating network already
    /// ([`Self::in_flight_for_good`]). Once the recipient
    /// moves to a later term, `m` is refused ([`refusal`]) with that term;
    /// when `m`'s term is below the bound, the sender must therefore be at
    /// the bound already and ignore a refusal of its own term, as in
    /// [`Self::answer_teaches_nothing`] (a refusal of a lower term is stale).
    /// Seeded bugs that break the argument turn it off ([`Server::absorbs`]).
    fn absorbed_for_good(&self, state: &State, src: Id, dst: usize, m: &Message<Cmd>) -> bool {
        let Message::AppendEntries(request) = m else {
            return false;
        };
        if state.history.crashes < self.config.crashes
            || state.crashed.get(dst).copied().unwrap_or(true)
        {
            return false;
        }
        let timer_set = state
            .timers_set
            .get(dst)
            .is_some_and(|t| t.iter().any(|t| *t == Timer::Election));
        let (Some(recipient), Some(sender)) = (
            Self::server(state, dst),
            Self::view(state, usize::from(src)),
        ) else {
            return false;
        };
        if !timer_set || !recipient.absorbs(m) {
            return false;
        }
        let ignores = |answer: &Message<Cmd>| {
            self.ignores_forever(state, usize::from(src), recipient.id, answer)
        };
        let answer = acceptance(request);
        if !ignores(&answer) && !Self::in_flight_for_good(state, Id::from(dst), src, answer) {
            return false;
        }
        m.term().0 >= self.config.max_term
            || (sender.current_term.0 >= self.config.max_term
                && refusal(sender.current_term, m).is_some_and(|answer| ignores(&answer)))
    }

    /// Whether `message` from `src` to `dst` is in flight on the duplicating
    /// network, where it stays deliverable until it is dead (a delivery does
    /// not consume it, and loss is explored as delay): sending it again then
    /// changes nothing, now or later.
    fn in_flight_for_good(state: &State, src: Id, dst: Id, message: Message<Cmd>) -> bool {
        match &state.network {
            Network::UnorderedDuplicating(set, _) => set.contains(&Envelope {
                src,
                dst,
                msg: Msg::Raft(RaftMsg::new(message)),
            }),
            Network::UnorderedNonDuplicating(_) | Network::Ordered(_) => false,
        }
    }

    /// Forgets messages that no actor will ever act on (see [`Self::is_dead`]).
    ///
    /// This is a sound reduction: a dead message's delivery changes no actor
    /// and sends nothing, so removing it is the same as delaying it forever,
    /// which every network semantics allows (on an ordered channel, the same
    /// as delivering it at once). The set of reachable server, client and
    /// ghost states is unchanged; only states that differ in dead messages are
    /// merged. `tests/model_check.rs` checks this on small configurations.
    ///
    /// Whether a message is dead depends only on the states of its recipient
    /// and its sender ([`Self::is_dead`]), and a step changes the state of
    /// one actor only (the one that received, timed out, crashed or
    /// recovered). Every state this model produces has had its dead messages
    /// removed, and the initial states hold none (client requests are never
    /// dead), so after a step of actor `stepped` only the messages to or from
    /// it can be newly dead: the others are not looked at. `None` looks at
    /// every message.
    fn collect_dead_messages(&self, state: &mut State, stepped: Option<Id>) {
        let involved = |src: Id, dst: Id| stepped.is_none_or(|a| a == src || a == dst);
        // Stateright 0.31's `Network::iter_all` never ends on an ordered
        // network, so each variant is walked here directly.
        let shared: &State = state;
        let dead: Vec<Envelope<Msg>> = match &shared.network {
            Network::UnorderedDuplicating(set, _) => set
                .iter()
                .filter(|e| involved(e.src, e.dst) && self.is_dead(shared, e.src, e.dst, &e.msg))
                .cloned()
                .collect(),
            Network::UnorderedNonDuplicating(multiset) => multiset
                .keys()
                .filter(|e| involved(e.src, e.dst) && self.is_dead(shared, e.src, e.dst, &e.msg))
                .cloned()
                .collect(),
            Network::Ordered(flows) => flows
                .iter()
                .filter(|(&(src, dst), _)| involved(src, dst))
                .flat_map(|(&(src, dst), flow)| {
                    flow.iter()
                        .filter(move |m| self.is_dead(shared, src, dst, m))
                        .map(move |m| Envelope {
                            src,
                            dst,
                            msg: m.clone(),
                        })
                })
                .collect(),
        };
        if dead.is_empty() {
            return;
        }
        match &mut state.network {
            Network::UnorderedDuplicating(set, _) => {
                for e in dead {
                    set.remove(&e);
                }
            }
            Network::UnorderedNonDuplicating(multiset) => {
                for e in dead {
                    multiset.remove(&e);
                }
            }
            Network::Ordered(flows) => {
                for e in dead {
                    if let Some(flow) = flows.get_mut(&(e.src, e.dst)) {
                        flow.retain(|m| m != &e.msg);
                        if flow.is_empty() {
                            flows.remove(&(e.src, e.dst));
                        }
                    }
                }
            }
        }
    }

    /// `ActorModel::next_state` for a delivery on the duplicating network,
    /// followed by what [`Model::next_state`] does to every state (forget the
    /// last delivered message, collect dead messages, skip self-loops), with
    /// the same result, but without copying the state when the delivery turns
    /// out to be a self-loop.
    ///
    /// On this network most deliveries are of messages delivered before: the
    /// recipient's state does not change and what it sends is already in
    /// flight (or dead). Such a step is recognised from the actor's outputs
    /// alone. Only when that cannot be decided from the outputs (a client
    /// request, whose invocation the ghost may record, or a reply to a
    /// client) is the copy compared with the state before.
    fn deliver_on_duplicating(&self, last: &State, src: Id, dst: Id, msg: Msg) -> Option<State> {
        let index = usize::from(dst);
        let last_actor = last.actor_states.get(index)?;
        if last.crashed.get(index).copied().unwrap_or(false) {
            return None;
        }
        let actor = self.inner.actors.get(index)?;
        let mut actor_state = Cow::Borrowed(&**last_actor);
        let mut out = Out::new();
        actor.on_msg(dst, &mut actor_state, src, msg.clone(), &mut out);
        let changed = match &actor_state {
            Cow::Borrowed(_) => false,
            Cow::Owned(s) => s != &**last_actor,
        };
        if !changed && out.is_empty() {
            return None;
        }
        let Network::UnorderedDuplicating(in_flight, _) = &last.network else {
            return None;
        };
        let envelope_in = Envelope {
            src,
            dst,
            msg: &msg,
        };
        let history_in = record_return(&self.config, &last.history, envelope_in);
        // Whether the outputs surely change nothing (`Some(true)`), surely
        // change something (`Some(false)`), or cannot tell (`None`).
        let mut moot = Some(!changed);
        if history_in.is_some() {
            moot = None;
        }
        let timers = last.timers_set.get(index);
        let is_set = |t: &Timer| timers.is_some_and(|ts| ts.iter().any(|x| x == t));
        for command in out.iter() {
            if moot == Some(false) {
                break;
            }
            let this = match command {
                Command::Send(to, m) => match m {
                    Msg::Request { .. } => None,
                    _ => {
                        let e = Envelope {
                            src: dst,
                            dst: *to,
                            msg: m.clone(),
                        };
                        Some(
                            in_flight.contains(&e)
                                || (self.collect_garbage && self.is_dead(last, dst, *to, m)),
                        )
                    }
                },
                // A timer set or cancelled, or a storage saved, may be undone
                // by a later command of the same step: unknown, not a change.
                Command::SetTimer(t, _) => is_set(t).then_some(true),
                Command::CancelTimer(t) => (!is_set(t)).then_some(true),
                Command::Save(stored) => last
                    .actor_storages
                    .get(index)
                    .is_some_and(|s| s.as_ref() == Some(stored))
                    .then_some(true),
                Command::ChooseRandom(..) => Some(false),
            };
            moot = match (moot, this) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
        }
        if moot == Some(true) {
            return None;
        }
        let mut next = last.clone();
        if let (true, Cow::Owned(s)) = (changed, actor_state) {
            next.actor_states[index] = Arc::new(s);
        }
        if let Some(history) = history_in {
            next.history = history;
        }
        apply_commands(&mut next.0, dst, out, |history, e| {
            if let Some(h) = record_invocation(&self.config, history, e) {
                *history = h;
            }
        });
        if let Network::UnorderedDuplicating(_, last_delivered) = &mut next.network {
            *last_delivered = None;
        }
        if self.collect_garbage {
            self.collect_dead_messages(&mut next, Some(dst));
        }
        if moot.is_none() && next == *last {
            return None;
        }
        Some(next)
    }

    /// Replaces the state of crashed actor `id` by the one it will recover
    /// in (what `Recover` builds from its storage).
    ///
    /// Stateright keeps a crashed actor's last state until it recovers,
    /// although nothing reads it: the properties look at a crashed server's
    /// storage ([`Self::views`]), dead messages are judged by its persisted
    /// term ([`Self::is_dead`]), and `Recover` starts it afresh from its
    /// storage. Crashed states that differ only in the volatile state the
    /// crash lost (role, commit index, votes, next and match indices, state
    /// machine) are therefore one state, and the Explorer shows a crashed
    /// server as it will come back.
    /// Stateright's crash step: the server's timers are cancelled and it is
    /// marked crashed (its state stays until `forget_volatile_state`).
    fn canonical_if_asked(&self, state: State) -> State {
        if self.canonical {
            state.representative()
        } else {
            state
        }
    }

    fn crash(last: &State, id: Id) -> Option<State> {
        let index = usize::from(id);
        let mut next = last.clone();
        next.timers_set.get_mut(index)?.cancel_all();
        *next.crashed.get_mut(index)? = true;
        Some(next)
    }

    fn forget_volatile_state(&self, state: &mut State, id: Id) {
        let index = usize::from(id);
        let (Some(actor), Some(storage)) = (
            self.inner.actors.get(index),
            state.actor_storages.get(index),
        ) else {
            return;
        };
        let restarted = actor.on_start(id, storage, &mut Out::new());
        if let Some(slot) = state.actor_states.get_mut(index) {
            *slot = Arc::new(restarted);
        }
    }

    /// Records the step server `i` took from `before` to `after` in the ghost.
    fn record(&self, before: &State, after: &mut State, i: usize, recovered_now: bool) {
        if Self::view(before, i).is_none() || Self::view(after, i).is_none() {
            return;
        }
        // Recorded in place: the history is taken out of `after` while the
        // views borrow its servers, then put back.
        let mut raft = std::mem::take(&mut after.history.raft);
        let mut rejoined = false;
        if let (Some(b), Some(a)) = (Self::view(before, i), Self::view(after, i)) {
            raft.record_step(&b, &a);
            let id = a.id;
            if after.history.recovered.contains(&id) && !recovered_now {
                if let (Some(sb), Some(sa)) = (Self::server(before, i), Self::server(after, i)) {
                    let voted = sa.persistent.voted_for.is_some_and(|v| v != id)
                        && sa.persistent.voted_for != sb.persistent.voted_for;
                    let accepted = sa.role() == Role::Follower && sa.log().len() > sb.log().len();
                    rejoined = voted || accepted;
                }
            }
        }
        after.history.raft = raft;
        after.history.rejoined = rejoined;
    }
}

/// Keeps at most one copy of identical messages in flight on a channel.
///
/// Deviation (bounding): without it a non-duplicating or ordered network
/// grows without bound, since a leader's heartbeat timer can fire forever,
/// each time sending the same AppendEntries again. A second copy of an
/// identical message in flight is coalesced with the first, as a transport
/// that deduplicates retransmissions would; the duplicating network (the
/// default) needs no such bound.
fn coalesce_identical_messages(network: &mut Network<Msg>) {
    match network {
        Network::UnorderedDuplicating(..) => {}
        Network::UnorderedNonDuplicating(multiset) => {
            if multiset.values().any(|&n| n > 1) {
                for n in multiset.values_mut() {
                    *n = (*n).min(1);
                }
            }
        }
        Network::Ordered(flows) => {
            for flow in flows.values_mut() {
                let mut k = 1;
                while k < flow.len() {
                    if flow.iter().take(k).any(|m| *m == flow[k]) {
                        flow.remove(k);
                    } else {
                        k += 1;
                    }
                }
            }
        }
    }
}

fn record_invocation(_cfg: &ModelConfig, ghost: &Ghost, env: Envelope<&Msg>) -> Option<Ghost> {
    if !matches!(env.msg, Msg::Request { .. }) {
        return None;
    }
    let mut next = ghost.clone();
    // A client sends its request to several servers; only the first send
    // invokes the operation, later ones are retries.
    Arc::make_mut(&mut next.clients)
        .on_invoke(env.src, raft_spec::Increment)
        .ok()?;
    Some(next)
}

fn record_return(cfg: &ModelConfig, ghost: &Ghost, env: Envelope<&Msg>) -> Option<Ghost> {
    let Msg::Reply(answer) = env.msg else {
        return None;
    };
    let raft_spec::ClientReply::Ok(value) = answer.reply else {
        return None;
    };
    if usize::from(env.dst) < cfg.servers {
        return None;
    }
    let mut next = ghost.clone();
    Arc::make_mut(&mut next.clients)
        .on_return(env.dst, value)
        .ok()?;
    Some(next)
}

// ---- Properties -----------------------------------------------------------

fn prop_election_safety(_: &RaftModel, s: &State) -> bool {
    safety::election_safety(&s.history.raft)
}
fn prop_leader_append_only(_: &RaftModel, s: &State) -> bool {
    safety::leader_append_only(&s.history.raft)
}
fn prop_log_matching(m: &RaftModel, s: &State) -> bool {
    safety::log_matching(&m.views(s))
}
fn prop_leader_completeness(m: &RaftModel, s: &State) -> bool {
    safety::leader_completeness(&m.views(s), &s.history.raft)
}
fn prop_state_machine_safety(m: &RaftModel, s: &State) -> bool {
    safety::state_machine_safety(&m.views(s), &s.history.raft)
}
fn prop_one_vote_per_term(_: &RaftModel, s: &State) -> bool {
    safety::one_vote_per_term(&s.history.raft)
}
fn prop_match_index_monotonic(_: &RaftModel, s: &State) -> bool {
    safety::match_index_monotonic(&s.history.raft)
}
fn prop_committed_entries_survive_elections(m: &RaftModel, s: &State) -> bool {
    safety::committed_entries_survive_elections(&m.views(s), &s.history.raft)
}
fn prop_linearizability(_: &RaftModel, s: &State) -> bool {
    s.history.clients.serialized_history().is_some()
}
fn some_leader_elected(_: &RaftModel, s: &State) -> bool {
    !s.history.raft.leaders.is_empty()
}
fn some_entry_committed(m: &RaftModel, s: &State) -> bool {
    m.views(s).iter().any(|v| v.commit_index > LogIndex(0))
}
fn some_leader_replaced(_: &RaftModel, s: &State) -> bool {
    let terms: BTreeSet<_> = s.history.raft.leaders.iter().map(|(t, _)| *t).collect();
    terms.len() >= 2
}
fn some_conflict_overwritten(_: &RaftModel, s: &State) -> bool {
    s.history.raft.conflict_overwritten
}
fn some_leader_stepped_down_on_response(_: &RaftModel, s: &State) -> bool {
    s.history.stepped_down_on_response
}
fn some_client_reply(_: &RaftModel, s: &State) -> bool {
    s.actor_states
        .iter()
        .any(|a| matches!(&**a, ActorState::Client(c) if matches!(c.status, ClientStatus::Done(_))))
}
fn some_crashed_server_rejoins(_: &RaftModel, s: &State) -> bool {
    s.history.rejoined
}

impl Model for RaftModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.inner
            .init_states()
            .into_iter()
            .map(|mut s| {
                // No actor chooses at random. Stateright keeps an empty map
                // of choices per actor all the same, which every state would
                // copy (a quarter of a kilobyte on three servers): the model
                // keeps none, and crashes a server itself (`crash`), the one
                // step of Stateright's that would index them.
                s.random_choices = Vec::new();
                self.canonical_if_asked(State(s))
            })
            .collect()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if self
            .stop
            .as_ref()
            .is_some_and(|stop| stop.load(Ordering::Relaxed))
        {
            return;
        }
        self.inner.actions(state, actions);
        // Only servers crash, and at most `crashes` times in all.
        let budget_left = state.history.crashes < self.config.crashes;
        let servers = self.config.servers;
        actions.retain(|a| match a {
            ActorModelAction::Crash(id) => budget_left && usize::from(*id) < servers,
            _ => true,
        });
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let response_to = match &action {
            ActorModelAction::Deliver {
                dst,
                msg: Msg::Raft(m),
                ..
            } if matches!(
                **m,
                Message::RequestVoteResponse(_) | Message::AppendEntriesResponse(_)
            ) =>
            {
                Some(usize::from(*dst))
            }
            _ => None,
        };
        let step_of = match &action {
            ActorModelAction::Deliver { dst, .. } => Some((usize::from(*dst), false)),
            ActorModelAction::Timeout(id, _) => Some((usize::from(*id), false)),
            ActorModelAction::Recover(id) => Some((usize::from(*id), true)),
            _ => None,
        };
        let crash = matches!(action, ActorModelAction::Crash(_));
        let stepped = match &action {
            ActorModelAction::Deliver { dst, .. } => Some(*dst),
            ActorModelAction::Timeout(id, _)
            | ActorModelAction::Crash(id)
            | ActorModelAction::Recover(id) => Some(*id),
            ActorModelAction::Drop(_) | ActorModelAction::SelectRandom { .. } => None,
        };
        let mut next = match action {
            ActorModelAction::Deliver { src, dst, msg }
                if matches!(last.network, Network::UnorderedDuplicating(..)) =>
            {
                self.deliver_on_duplicating(last, src, dst, msg)?
            }
            action => {
                let mut next = match action {
                    ActorModelAction::Crash(id) => Self::crash(last, id)?,
                    action => State(self.inner.next_state(last, action)?),
                };
                // Stateright remembers the last message delivered on a
                // duplicating network only so that a delivery that changes
                // nothing still yields a new fingerprint. Nothing reads it;
                // keeping it would multiply every state by the number of
                // messages that could have been delivered last.
                if let Network::UnorderedDuplicating(_, last_delivered) = &mut next.network {
                    *last_delivered = None;
                }
                if crash {
                    next.history.crashes += 1;
                }
                if self.collect_garbage {
                    // The last crash the bound allows can make AppendEntries
                    // between any two servers dead (`absorbed_for_good`).
                    let last_crash = crash && next.history.crashes == self.config.crashes;
                    self.collect_dead_messages(&mut next, stepped.filter(|_| !last_crash));
                }
                coalesce_identical_messages(&mut next.network);
                // A step that changes nothing (typically a message delivered
                // again) is a self-loop: skipping it saves the checker a
                // fingerprint and a lookup without changing what is reachable.
                if next == *last {
                    return None;
                }
                next
            }
        };
        // The examples' flags mark only the step that shows them (see
        // `Ghost::rejoined`); a step of a server sets them again below.
        next.history.rejoined = false;
        next.history.stepped_down_on_response = false;
        if crash {
            if let Some(id) = stepped {
                self.forget_volatile_state(&mut next, id);
            }
        }
        if let Some((i, recovered_now)) = step_of {
            if i < self.config.servers {
                if recovered_now {
                    next.history.recovered.insert(NodeId(i as u64));
                }
                self.record(last, &mut next, i, recovered_now);
                next.history.stepped_down_on_response = response_to == Some(i)
                    && Self::view(last, i).is_some_and(|v| v.is_leader())
                    && Self::view(&next, i).is_some_and(|v| !v.is_leader());
            }
        }
        Some(self.canonical_if_asked(next))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut props = vec![
            Property::always(safety::ELECTION_SAFETY, prop_election_safety),
            Property::always(safety::LEADER_APPEND_ONLY, prop_leader_append_only),
            Property::always(safety::LOG_MATCHING, prop_log_matching),
            Property::always(safety::LEADER_COMPLETENESS, prop_leader_completeness),
            Property::always(safety::STATE_MACHINE_SAFETY, prop_state_machine_safety),
            Property::always(safety::ONE_VOTE_PER_TERM, prop_one_vote_per_term),
            Property::always(safety::MATCH_INDEX_MONOTONIC, prop_match_index_monotonic),
            Property::always(
                safety::COMMITTED_ENTRIES_SURVIVE_ELECTIONS,
                prop_committed_entries_survive_elections,
            ),
            Property::always(names::LINEARIZABILITY, prop_linearizability),
            Property::sometimes(names::LEADER_ELECTED, some_leader_elected),
            // Registered even without client requests: then no entry can
            // exist, and the missing example tells the user the check is vacuous.
            Property::sometimes(names::ENTRY_COMMITTED, some_entry_committed),
        ];
        let cfg = &self.config;
        if cfg.max_term >= 2 && (cfg.servers >= 2 || cfg.crashes > 0) {
            props.push(Property::sometimes(
                names::LEADER_REPLACED,
                some_leader_replaced,
            ));
        }
        if cfg.max_term >= 2 && cfg.servers >= 2 {
            props.push(Property::sometimes(
                names::LEADER_STEPS_DOWN_ON_RESPONSE,
                some_leader_stepped_down_on_response,
            ));
        }
        if cfg.max_term >= 2 && cfg.servers >= 3 {
            props.push(Property::sometimes(
                names::CONFLICT_OVERWRITTEN,
                some_conflict_overwritten,
            ));
        }
        if self.config.requests > 0 {
            props.push(Property::sometimes(names::CLIENT_REPLY, some_client_reply));
        }
        if self.config.crashes > 0 && self.config.servers >= 2 {
            props.push(Property::sometimes(
                names::CRASHED_SERVER_REJOINS,
                some_crashed_server_rejoins,
            ));
        }
        props
    }

    fn within_boundary(&self, state: &State) -> bool {
        state
            .actor_states
            .iter()
            .filter_map(|a| a.server())
            .all(|s| s.current_term().0 <= self.config.max_term)
    }

    fn format_action(&self, action: &Action) -> String {
        crate::render::action(action)
    }

    fn format_step(&self, last_state: &State, action: Action) -> Option<String> {
        Some(crate::render::step(self, last_state, &action))
    }

    fn as_svg(&self, path: Path<State, Action>) -> Option<String> {
        crate::render::sequence_diagram(self, path)
    }
}
