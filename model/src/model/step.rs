//! The model's one next-state function: what every action does to a state.
//!
//! The checker, the Explorer, counterexample rendering and the symmetry
//! search all step states through [`RaftModel::step`]. A server's step is
//! `raft_spec::Server::step`; what it outputs is carried out here, in order
//! ([`Effect`]): sends join the network, timers are set and cancelled, what
//! it persists is stored. Nothing here is a Raft rule.

use super::state::{
    actor_id, node_id, timer_bit, Answer, Cached, ClientHistory, ClientState, ClientStatus, Cmd,
    Ghost, Msg, Network, ServerSlot, ServerState, State, Stored, TIMERS,
};
use super::RaftModel;
use crate::actors::RaftMsg;
use crate::config::NetworkKind;
use raft_spec::{
    ClientId, ClientReply, Increment, Input, Message, NodeId, Output, Role, Server, Timer,
};
use stateright::actor::{Envelope, Id};
use stateright::semantics::ConsistencyTester;
use std::sync::Arc;

/// An action of the model.
///
/// The order of the variants (and, within one, of the fields) is the order
/// in which actions are offered, so that every search visits them the same
/// way.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// The message is lost (only on the lossy ordered network: elsewhere a
    /// lost message is one never delivered).
    Drop(Envelope<Msg>),
    /// The message is delivered.
    Deliver {
        /// The sender.
        src: Id,
        /// The recipient.
        dst: Id,
        /// The message.
        msg: Msg,
    },
    /// A server's timer fires.
    Timeout(Id, Timer),
    /// A server crashes: it keeps what it persisted and loses the rest.
    Crash(Id),
    /// A crashed server restarts from what it persisted.
    Recover(Id),
}

impl Action {
    /// The actor whose state the action steps, if any (a drop steps none).
    pub fn actor(&self) -> Option<usize> {
        match self {
            Action::Deliver { dst, .. } => Some(usize::from(*dst)),
            Action::Timeout(id, _) | Action::Crash(id) | Action::Recover(id) => {
                Some(usize::from(*id))
            }
            Action::Drop(_) => None,
        }
    }
}

/// What an actor's step does beyond its own state, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A message to an actor.
    Send(Id, Msg),
    /// A timer (re)started.
    SetTimer(Timer),
    /// A timer stopped.
    CancelTimer(Timer),
    /// The server's persistent state, as it is after the step, is stored.
    Save,
}

/// What an actor does on an input: its state after (`None`: unchanged) and
/// its effects.
pub struct Reaction {
    /// The server after the step, if it changed.
    pub server: Option<Server<super::state::Sm>>,
    /// The client after the step, if it changed.
    pub client: Option<ClientState>,
    /// What it did.
    pub effects: Vec<Effect>,
}

impl Reaction {
    fn none() -> Self {
        Reaction {
            server: None,
            client: None,
            effects: Vec::new(),
        }
    }

    fn is_no_op(&self) -> bool {
        self.server.is_none() && self.client.is_none() && self.effects.is_empty()
    }
}

/// A server's outputs as effects. Persistence stores the whole persistent
/// state as it is after the step.
pub fn effects_of(outputs: Vec<Output<Cmd, u64>>) -> Vec<Effect> {
    outputs
        .into_iter()
        .filter_map(|output| match output {
            Output::Persist(_) => Some(Effect::Save),
            Output::Send { to, message } => {
                Some(Effect::Send(actor_id(to), Msg::Raft(RaftMsg::new(message))))
            }
            Output::SetTimer(t) => Some(Effect::SetTimer(t)),
            Output::CancelTimer(t) => Some(Effect::CancelTimer(t)),
            Output::Applied { .. } => None,
            Output::ClientReply {
                client_id,
                request_no,
                reply,
            } => Some(Effect::Send(
                Id::from(client_id.0 as usize),
                Msg::Reply(Arc::new(Answer { request_no, reply })),
            )),
        })
        .collect()
}

/// Steps `server` with `input`: the server after (`None` when unchanged) and
/// its effects.
fn step_server(server: &Server<super::state::Sm>, input: Input<Cmd>) -> Reaction {
    let mut next = server.clone();
    let outputs = next.step(input);
    let changed = next != *server;
    Reaction {
        server: changed.then_some(next),
        client: None,
        effects: effects_of(outputs),
    }
}

impl RaftModel {
    /// The server restarted from what slot `i` persisted, with its outputs.
    pub(crate) fn restarted(
        &self,
        i: usize,
        stored: Option<&Stored>,
    ) -> (Server<super::state::Sm>, Vec<Effect>) {
        let peers = (0..self.config.servers).map(|k| NodeId(k as u64)).collect();
        let persistent = stored.map(|s| (**s).clone()).unwrap_or_default();
        let (server, outputs) =
            Server::restart_with_bug(NodeId(i as u64), peers, persistent, self.config.bug);
        let server = server
            .with_max_append_entries(self.config.max_append_entries)
            .with_empty_heartbeats(self.config.empty_heartbeats);
        (server, effects_of(outputs))
    }

    /// The initial state: every server started with nothing persisted, every
    /// client's request sent to every server (it does not know the leader).
    pub(crate) fn initial_state(&self) -> State {
        let mut state = State {
            servers: Vec::with_capacity(self.config.servers),
            clients: Arc::new(
                (0..self.config.requests)
                    .map(|c| ClientState {
                        index: self.config.servers + c,
                        request_no: 1,
                        status: ClientStatus::Pending,
                    })
                    .collect(),
            ),
            network: Network::new(self.config.network),
            ghost: Ghost::new(),
        };
        for i in 0..self.config.servers {
            let (server, effects) = self.restarted(i, None);
            state.servers.push(ServerSlot {
                state: Arc::new(ServerState::new(server)),
                stored: None,
                timers: 0,
                crashed: false,
            });
            self.carry_out(&mut state, i, effects);
        }
        for c in 0..self.config.requests {
            let effects = (0..self.config.servers)
                .map(|s| Effect::Send(Id::from(s), Msg::Request { request_no: 1 }))
                .collect();
            self.carry_out(&mut state, self.config.servers + c, effects);
        }
        state
    }

    /// The actions enabled in `state`, in the order [`Action`] gives.
    pub(crate) fn enabled_actions(&self, state: &State, actions: &mut Vec<Action>) {
        let network = &state.network;
        // On the ordered network only the first message of a channel can
        // be delivered or lost.
        let heads = || {
            network
                .envelopes()
                .iter()
                .enumerate()
                .filter(|&(at, _)| network.is_head(at))
                .map(|(_, e)| e)
        };
        if self.config.lossy && network.kind() == NetworkKind::Ordered {
            actions.extend(heads().map(|e| Action::Drop(e.clone())));
        }
        let first = actions.len();
        actions.extend(heads().map(|e| Action::Deliver {
            src: e.src,
            dst: e.dst,
            msg: e.msg.clone(),
        }));
        // Offered in `Action`'s order, whatever the network's storage order.
        actions[first..].sort_unstable();
        for (i, slot) in state.servers.iter().enumerate() {
            for t in TIMERS {
                if slot.timer_set(t) {
                    actions.push(Action::Timeout(Id::from(i), t));
                }
            }
        }
        // Only servers crash, and at most `crashes` times in all.
        if usize::from(state.ghost.crashes) < self.config.crashes {
            for (i, slot) in state.servers.iter().enumerate() {
                if !slot.crashed {
                    actions.push(Action::Crash(Id::from(i)));
                }
            }
        }
        for (i, slot) in state.servers.iter().enumerate() {
            if slot.crashed {
                actions.push(Action::Recover(Id::from(i)));
            }
        }
    }

    /// What actor `i` does when `msg` from `src` is delivered to it.
    pub(crate) fn react(&self, state: &State, src: Id, i: usize, msg: &Msg) -> Reaction {
        if let Some(slot) = state.servers.get(i) {
            let input = match msg {
                Msg::Raft(m) => Input::Message {
                    from: node_id(src),
                    message: (**m).clone(),
                },
                Msg::Request { request_no } => Input::ClientRequest {
                    client_id: ClientId(usize::from(src) as u64),
                    request_no: *request_no,
                    command: Increment,
                },
                Msg::Reply(_) => return Reaction::none(),
            };
            return step_server(slot.server(), input);
        }
        let (Some(client), Msg::Reply(answer)) = (state.client(i), msg) else {
            return Reaction::none();
        };
        if client.status != ClientStatus::Pending || client.request_no != answer.request_no {
            return Reaction::none();
        }
        match answer.reply {
            ClientReply::Ok(value) => Reaction {
                server: None,
                client: Some(ClientState {
                    status: ClientStatus::Done(value),
                    ..client.clone()
                }),
                effects: Vec::new(),
            },
            // A client follows a redirect to the leader it names.
            ClientReply::NotLeader {
                leader_hint: Some(leader),
            } if (leader.0 as usize) < self.config.servers => Reaction {
                server: None,
                client: None,
                effects: vec![Effect::Send(
                    actor_id(leader),
                    Msg::Request {
                        request_no: answer.request_no,
                    },
                )],
            },
            ClientReply::NotLeader { .. } => Reaction::none(),
        }
    }

    /// What the actor touched by `action` does in `state` (for rendering):
    /// its effects, in order.
    pub fn effects(&self, state: &State, action: &Action) -> Vec<Effect> {
        match action {
            Action::Deliver { src, dst, msg } => self.react(state, *src, usize::from(*dst), msg),
            Action::Timeout(id, timer) => match state.server(usize::from(*id)) {
                Some(server) => step_server(server, Input::timeout(*timer)),
                None => Reaction::none(),
            },
            Action::Recover(id) => {
                let i = usize::from(*id);
                let stored = state.servers.get(i).and_then(|s| s.stored.as_ref());
                return self.restarted(i, stored).1;
            }
            Action::Crash(_) | Action::Drop(_) => Reaction::none(),
        }
        .effects
    }

    /// Carries out actor `i`'s effects on `state`, in order. A client's first
    /// send of its request invokes its operation in the ghost's client
    /// history (later sends are retries).
    pub(crate) fn carry_out(&self, state: &mut State, i: usize, effects: Vec<Effect>) {
        let src = Id::from(i);
        for effect in effects {
            match effect {
                Effect::Send(dst, msg) => {
                    if matches!(msg, Msg::Request { .. }) && i >= self.config.servers {
                        // An invocation while one is in flight is a retry:
                        // the tester refuses it and is left as it was.
                        let mut tester = (*state.ghost.clients).clone();
                        if tester.on_invoke(src, Increment).is_ok() {
                            state.ghost.clients = Cached::new(tester);
                        }
                    }
                    state.network.insert(Envelope { src, dst, msg });
                }
                Effect::SetTimer(t) => {
                    if let Some(slot) = state.servers.get_mut(i) {
                        slot.timers |= timer_bit(t);
                    }
                }
                Effect::CancelTimer(t) => {
                    if let Some(slot) = state.servers.get_mut(i) {
                        slot.timers &= !timer_bit(t);
                    }
                }
                Effect::Save => {
                    if let Some(slot) = state.servers.get_mut(i) {
                        let persistent = &slot.server().persistent;
                        if slot.stored.as_ref().is_none_or(|s| **s != *persistent) {
                            slot.stored = Some(Stored::new(persistent.clone()));
                        }
                    }
                }
            }
        }
    }

    /// The one next-state function: the state after `action`, or `None` if
    /// the action is not enabled or changes nothing (a self-loop, which the
    /// checker need not follow).
    pub fn step(&self, last: &State, action: Action) -> Option<State> {
        let response_to = match &action {
            Action::Deliver {
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
        let stepped = action.actor();
        let (recovered_now, crash) = (
            matches!(action, Action::Recover(_)),
            matches!(action, Action::Crash(_)),
        );
        let mut next = match action {
            Action::Deliver { src, dst, msg } => self.deliver(last, src, dst, msg)?,
            Action::Timeout(id, timer) => {
                let i = usize::from(id);
                let slot = last.servers.get(i)?;
                let reaction = step_server(slot.server(), Input::timeout(timer));
                let mut next = last.clone();
                next.servers[i].timers &= !timer_bit(timer);
                self.apply(&mut next, i, reaction);
                self.settle(last, next, Some(id))?
            }
            Action::Crash(id) => {
                let i = usize::from(id);
                let mut next = last.clone();
                let slot = next.servers.get_mut(i)?;
                slot.timers = 0;
                slot.crashed = true;
                next.ghost.crashes += 1;
                // The last crash the bound allows can make AppendEntries
                // between any two servers dead (`absorbed_for_good`).
                let last_crash = usize::from(next.ghost.crashes) == self.config.crashes;
                let mut next = self.settle(last, next, (!last_crash).then_some(id))?;
                // A crashed server is shown as it will recover: nothing reads
                // the volatile state it lost (the properties and the dead
                // message rules look at what it persisted), so crashed states
                // that differ only in it are one state.
                let stored = next.servers[i].stored.clone();
                let (server, _) = self.restarted(i, stored.as_ref());
                next.servers[i].state = Arc::new(ServerState::new(server));
                next
            }
            Action::Recover(id) => {
                let i = usize::from(id);
                let slot = last.servers.get(i)?;
                if !slot.crashed {
                    return None;
                }
                let (server, effects) = self.restarted(i, slot.stored.as_ref());
                let mut next = last.clone();
                next.servers[i].state = Arc::new(ServerState::new(server));
                next.servers[i].crashed = false;
                self.carry_out(&mut next, i, effects);
                self.settle(last, next, Some(id))?
            }
            Action::Drop(envelope) => {
                let mut next = last.clone();
                next.network.remove(&envelope);
                self.settle(last, next, None)?
            }
        };
        // The examples' flags mark only the step that shows them (see
        // `Ghost::rejoined`); a step of a server sets them again below.
        next.ghost.rejoined = false;
        next.ghost.stepped_down_on_response = false;
        if let Some(i) = stepped.filter(|&i| i < self.config.servers && !crash) {
            if recovered_now {
                next.ghost.recovered |= 1 << i;
            }
            self.record(last, &mut next, i, recovered_now);
            next.ghost.stepped_down_on_response = response_to == Some(i)
                && last.view(i).is_some_and(|v| v.is_leader())
                && next.view(i).is_some_and(|v| !v.is_leader());
        }
        Some(self.canonical_if_asked(next))
    }

    /// Puts actor `i`'s new state and effects into `next`.
    fn apply(&self, next: &mut State, i: usize, reaction: Reaction) {
        if let Some(server) = reaction.server {
            next.servers[i].state = Arc::new(ServerState::new(server));
        }
        if let Some(client) = reaction.client {
            let c = i - self.config.servers;
            Arc::make_mut(&mut next.clients)[c] = client;
        }
        self.carry_out(next, i, reaction.effects);
    }

    /// What every step ends with: dead messages around the actor that
    /// stepped are forgotten (`None`: anywhere), and a step that changed
    /// nothing is not a step.
    fn settle(&self, last: &State, mut next: State, stepped: Option<Id>) -> Option<State> {
        if self.collect_garbage {
            self.collect_dead_messages(&mut next, stepped);
        }
        (next != *last).then_some(next)
    }

    /// A delivery of `msg` from `src` to `dst`.
    fn deliver(&self, last: &State, src: Id, dst: Id, msg: Msg) -> Option<State> {
        let i = usize::from(dst);
        if last.crashed(i) || i >= last.actors() {
            return None;
        }
        let reaction = self.react(last, src, i, &msg);
        let kind = last.network.kind();
        // On the ordered network a delivery consumes the message even when
        // it changes nothing.
        if reaction.is_no_op() && kind != NetworkKind::Ordered {
            return None;
        }
        let returned = self.record_return(last, dst, &msg);
        let moot = (kind == NetworkKind::UnorderedDuplicating)
            .then(|| self.changes_nothing(last, i, &reaction, returned.is_some()));
        if moot == Some(Some(true)) {
            return None;
        }
        let mut next = last.clone();
        if kind != NetworkKind::UnorderedDuplicating {
            next.network.remove(&Envelope { src, dst, msg });
        }
        if let Some(clients) = returned {
            next.ghost.clients = clients;
        }
        self.apply(&mut next, i, reaction);
        if moot == Some(Some(false)) {
            // Surely a change: no need to compare.
            if self.collect_garbage {
                self.collect_dead_messages(&mut next, Some(dst));
            }
            return Some(next);
        }
        self.settle(last, next, Some(dst))
    }

    /// On the duplicating network most deliveries are of messages delivered
    /// before: the recipient's state does not change and what it sends is
    /// already in flight (or dead). Such a step is recognised from its
    /// effects alone, without building the state after it: `Some(true)` if
    /// it surely changes nothing, `Some(false)` if it surely changes
    /// something, `None` if only the state after can tell (a client request,
    /// whose invocation the ghost may record, a client reply the ghost
    /// records, a timer or storage that a later effect could undo).
    fn changes_nothing(
        &self,
        last: &State,
        i: usize,
        reaction: &Reaction,
        returned: bool,
    ) -> Option<bool> {
        let changed = reaction.server.is_some() || reaction.client.is_some();
        let mut moot = Some(!changed);
        if returned {
            moot = None;
        }
        let slot = last.servers.get(i);
        let is_set = |t: Timer| slot.is_some_and(|s| s.timer_set(t));
        for effect in &reaction.effects {
            if moot == Some(false) {
                break;
            }
            let this = match effect {
                Effect::Send(_, Msg::Request { .. }) => None,
                Effect::Send(to, m) => {
                    let e = Envelope {
                        src: Id::from(i),
                        dst: *to,
                        msg: m.clone(),
                    };
                    Some(
                        last.network.contains(&e)
                            || (self.collect_garbage && self.is_dead(last, e.src, e.dst, m)),
                    )
                }
                Effect::SetTimer(t) => is_set(*t).then_some(true),
                Effect::CancelTimer(t) => (!is_set(*t)).then_some(true),
                Effect::Save => {
                    let after = match &reaction.server {
                        Some(s) => &s.persistent,
                        None => &slot?.server().persistent,
                    };
                    slot.and_then(|s| s.stored.as_ref())
                        .is_some_and(|s| **s == *after)
                        .then_some(true)
                }
            };
            moot = match (moot, this) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
        }
        moot
    }

    /// The ghost's client history after `msg` reaches actor `dst`, if it
    /// records a return: a client's first successful reply.
    fn record_return(&self, last: &State, dst: Id, msg: &Msg) -> Option<Cached<ClientHistory>> {
        let Msg::Reply(answer) = msg else {
            return None;
        };
        let ClientReply::Ok(value) = answer.reply else {
            return None;
        };
        if usize::from(dst) < self.config.servers {
            return None;
        }
        let mut tester = (*last.ghost.clients).clone();
        tester.on_return(dst, value).ok()?;
        Some(Cached::new(tester))
    }

    /// Records the step server `i` took from `before` to `after` in the ghost.
    fn record(&self, before: &State, after: &mut State, i: usize, recovered_now: bool) {
        let (Some(b), Some(a)) = (before.view(i), after.view(i)) else {
            return;
        };
        let raft = after.ghost.raft.updated(|h| h.record_step(&b, &a));
        let mut rejoined = false;
        let id = a.id;
        if after.ghost.recovered & (1 << i) != 0 && !recovered_now {
            if let (Some(sb), Some(sa)) = (before.server(i), after.server(i)) {
                let voted = sa.persistent.voted_for.is_some_and(|v| v != id)
                    && sa.persistent.voted_for != sb.persistent.voted_for;
                let accepted = sa.role() == Role::Follower && sa.log().len() > sb.log().len();
                rejoined = voted || accepted;
            }
        }
        after.ghost.raft = raft;
        after.ghost.rejoined = rejoined;
    }
}
