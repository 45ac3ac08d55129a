//! The model's one next-state function: what every action does to a state.
//!
//! The checker, the Explorer, counterexample rendering and the symmetry
//! search all step states through [`RaftModel::step`]. A server's step is
//! `raft_spec::Server::step`; what it outputs is carried out here, in order
//! ([`Effect`]): sends join the network, timers are set and cancelled, what
//! it persists is stored. Nothing here is a Raft rule.
//!
//! A server's step is a pure function of its state and its input, and both
//! are interned ([`super::intern`]), so each thread remembers the steps it
//! has taken ([`Reaction`]s by server and input): on the duplicating network
//! most deliveries are of messages delivered before, to servers in states
//! met before.

use super::intern::Ref;
use super::memo::{Memo, MEMO_CAPACITY};
use super::state::{
    actor_id, timer_bit, Answer, ClientHistory, ClientState, ClientStatus, Cmd, Envelope, Ghost,
    Msg, MsgRef, Network, ServerRef, ServerSlot, Sm, State, Stored, TIMERS,
};
use super::RaftModel;
use crate::config::NetworkKind;
use raft_spec::safety::History;
use raft_spec::{
    ClientId, ClientReply, CounterCommand, Input, Message, NodeId, Output, ReadMode, Role, Server,
    Timer,
};
use smallvec::SmallVec;
use stateright::actor::Id;
use stateright::semantics::ConsistencyTester;
use std::cell::RefCell;
use std::rc::Rc;

/// An action of the model.
///
/// The order of the variants (and, within one, of the fields) is the order
/// in which actions are offered, so that every search visits them the same
/// way.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// The message is lost (only on the lossy ordered network: elsewhere a
    /// lost message is one never delivered).
    Drop(Envelope),
    /// The message is delivered.
    Deliver {
        /// The sender.
        src: Id,
        /// The recipient.
        dst: Id,
        /// The message.
        msg: MsgRef,
    },
    /// A server's timer fires.
    Timeout(Id, Timer),
    /// A server crashes: it keeps what it persisted and loses the rest.
    Crash(Id),
    /// A crashed server restarts from what it persisted.
    Recover(Id),
    /// A reader sends its read to one server (the first field), of the
    /// checker's choosing (the second): to the leader, or to a server that
    /// redirects it or answers it itself.
    Invoke(Id, Id),
    /// The next entry a leader wrote in parallel with sending it
    /// (`raft_spec::Persist::parallel`) becomes durable, and the leader is
    /// told (`Input::Synced`). Its entries become durable one at a time, in
    /// log order, so a crash can lose any suffix of them.
    Sync(Id),
}

impl Action {
    /// The actor whose state the action steps, if any (a drop steps none).
    pub fn actor(&self) -> Option<usize> {
        match self {
            Action::Deliver { dst, .. } => Some(usize::from(*dst)),
            Action::Timeout(id, _)
            | Action::Crash(id)
            | Action::Recover(id)
            | Action::Sync(id)
            | Action::Invoke(id, _) => Some(usize::from(*id)),
            Action::Drop(_) => None,
        }
    }
}

/// What an actor's step does beyond its own state, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A message to an actor.
    Send(Id, MsgRef),
    /// A timer (re)started.
    SetTimer(Timer),
    /// A timer stopped.
    CancelTimer(Timer),
    /// The server's persistent state, as it is after the step, is stored.
    Save,
}

/// The effects of one step (rarely more than a handful).
pub type Effects = SmallVec<[Effect; 4]>;

/// The messages a step added to the network.
pub(crate) type Sent = SmallVec<[Envelope; 4]>;

/// What an actor does on an input: its state after (`None`: unchanged) and
/// its effects.
#[derive(Clone)]
pub struct Reaction {
    /// The server after the step, if it changed.
    pub server: Option<ServerRef>,
    /// The client after the step, if it changed.
    pub client: Option<ClientState>,
    /// What it did.
    pub effects: Effects,
}

impl Reaction {
    fn none() -> Self {
        Reaction {
            server: None,
            client: None,
            effects: Effects::new(),
        }
    }

    fn is_no_op(&self) -> bool {
        self.server.is_none() && self.client.is_none() && self.effects.is_empty()
    }
}

/// A server's outputs as effects. Persistence stores the whole persistent
/// state as it is after the step.
pub fn effects_of(outputs: Vec<Output<Cmd, u64>>) -> Effects {
    outputs
        .into_iter()
        .filter_map(|output| match output {
            // A write in parallel is not durable yet: `Action::Sync` stores
            // it.
            Output::Persist(p) if p.parallel => None,
            Output::Persist(_) => Some(Effect::Save),
            Output::Send { to, message } => {
                Some(Effect::Send(actor_id(to), Ref::new(Msg::Raft(message))))
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
                Ref::new(Msg::Reply(Answer { request_no, reply })),
            )),
        })
        .collect()
}

thread_local! {
    /// The steps this thread has taken, by server and input (see the
    /// module doc).
    static STEPS: RefCell<Memo<(u32, u64), Rc<Reaction>>> = RefCell::new(Memo::new(MEMO_CAPACITY));
    /// The ghost histories after steps this thread has recorded.
    static RECORDS: RefCell<Records> = RefCell::new(Memo::new(MEMO_CAPACITY));
}

/// Ghost histories after recorded steps, by history and the server's views
/// before and after ([`view_key`]).
type Records = Memo<(u64, u64, u64), Ref<History<Cmd>>>;

/// A step as a memo key: the server and its input (a delivery of `msg` from
/// actor `src`, or a timer).
fn step_key(server: ServerRef, input: &StepInput) -> (u32, u64) {
    let input = match *input {
        StepInput::Deliver(src, msg) => (1 << 48) | ((src as u64) << 32) | u64::from(msg.index()),
        StepInput::Timeout(timer) => (2 << 48) | u64::from(timer_bit(timer)),
        StepInput::Synced(index) => (3 << 48) | index,
    };
    (server.index(), input)
}

/// What a server steps on.
#[derive(Clone, Copy)]
enum StepInput {
    Deliver(usize, MsgRef),
    Timeout(Timer),
    /// The server's own log is durable up to this index, written in its
    /// current term.
    Synced(u64),
}

/// Steps `server` with `input`: the server after (`None` when unchanged) and
/// its effects. Remembered per thread.
fn step_server(server: ServerRef, input: StepInput) -> Rc<Reaction> {
    let key = step_key(server, &input);
    STEPS.with(|memo| {
        memo.borrow_mut()
            .get_or(key, || Rc::new(compute_step(server, input)))
    })
}

fn compute_step(server: ServerRef, input: StepInput) -> Reaction {
    let spec_input = match input {
        StepInput::Deliver(src, msg) => match msg.get() {
            Msg::Raft(m) => Input::Message {
                from: NodeId(src as u64),
                message: m.clone(),
            },
            Msg::Request { request_no, ack } => Input::ClientRequest {
                client_id: ClientId(src as u64),
                request_no: *request_no,
                command: CounterCommand::Increment,
                ack: *ack,
            },
            Msg::Read { request_no, mode } => Input::ClientRead {
                client_id: ClientId(src as u64),
                request_no: *request_no,
                command: CounterCommand::Read,
                mode: *mode,
            },
            Msg::Reply(_) => return Reaction::none(),
        },
        StepInput::Timeout(timer) => Input::timeout(timer),
        StepInput::Synced(index) => Input::Synced {
            term: server.get().current_term(),
            index: raft_spec::LogIndex(index),
        },
    };
    let before = server.get();
    let mut next = before.clone();
    let outputs = next.step(spec_input);
    let changed = next != *before;
    Reaction {
        server: changed.then(|| Ref::new(next)),
        client: None,
        effects: effects_of(outputs),
    }
}

impl RaftModel {
    /// The server restarted from `stored` as server `i`, with its outputs.
    pub(crate) fn restarted(&self, i: usize, stored: Option<Stored>) -> (Server<Sm>, Effects) {
        let peers = (0..self.config.servers).map(|k| NodeId(k as u64)).collect();
        let persistent = stored.map(|s| s.get().clone()).unwrap_or_default();
        let (server, outputs) =
            Server::restart_with_bug(NodeId(i as u64), peers, persistent, self.config.bug);
        let server = server.with_replication(self.config.replication);
        (server, effects_of(outputs))
    }

    /// Whether client `c` (counted from 0) is a reader: the writers come
    /// first.
    pub(crate) fn is_reader(&self, c: usize) -> bool {
        c >= self.config.requests
    }

    /// What client actor `i` sends when it sends its request `request_no`.
    pub(crate) fn request(&self, i: usize, request_no: u64) -> MsgRef {
        Ref::new(if self.is_reader(i - self.config.servers) {
            Msg::Read {
                request_no,
                mode: self.config.read,
            }
        } else {
            Msg::Request {
                request_no,
                ack: self.config.ack,
            }
        })
    }

    /// The initial state: every server started with nothing persisted, every
    /// writer's request sent to every server (it does not know the leader);
    /// the readers have not sent theirs ([`Action::Invoke`]).
    pub(crate) fn initial_state(&self) -> State {
        let mut state = State {
            servers: SmallVec::new(),
            clients: Ref::new(
                (0..self.config.requests + self.config.reads)
                    .map(|c| ClientState {
                        index: self.config.servers + c,
                        request_no: 1,
                        status: if self.is_reader(c) {
                            ClientStatus::Idle
                        } else {
                            ClientStatus::Pending
                        },
                    })
                    .collect(),
            ),
            network: Network::new(self.config.network),
            ghost: Ghost::new(),
        };
        for i in 0..self.config.servers {
            let (server, effects) = self.restarted(i, None);
            state.servers.push(ServerSlot {
                server: Ref::new(server),
                stored: None,
                timers: 0,
                crashed: false,
            });
            self.carry_out(&mut state, i, &effects);
        }
        for c in 0..self.config.requests {
            let i = self.config.servers + c;
            let effects = self.invocation(i);
            self.carry_out(&mut state, i, &effects);
        }
        state
    }

    /// Client actor `i` sends its request to every server.
    fn invocation(&self, i: usize) -> Effects {
        let request = self.request(i, 1);
        (0..self.config.servers)
            .map(|s| Effect::Send(Id::from(s), request))
            .collect()
    }

    /// The actions enabled in `state`, in the order [`Action`] gives.
    pub(crate) fn enabled_actions(&self, state: &State, actions: &mut Vec<Action>) {
        let network = &state.network;
        if self.config.lossy && network.kind() == NetworkKind::Ordered {
            actions.extend(network.deliverable().map(|e| Action::Drop(*e)));
        }
        actions.extend(network.deliverable().map(|e| Action::Deliver {
            src: e.src(),
            dst: e.dst(),
            msg: e.msg,
        }));
        for (i, slot) in state.servers.iter().enumerate() {
            for t in TIMERS {
                if slot.timer_set(t) && self.may_fire(state, slot, t) {
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
        if self.config.replication.parallel_write {
            for (i, slot) in state.servers.iter().enumerate() {
                if !slot.crashed && slot.unsynced() {
                    actions.push(Action::Sync(Id::from(i)));
                }
            }
        }
        // A reader sends its read once every writer has its answer: the
        // case where a stale answer shows (each client does one operation,
        // so a read concurrent with a write may return either value).
        let writes_answered = state
            .clients
            .iter()
            .all(|c| !matches!(c.status, ClientStatus::Pending));
        for c in state.clients.iter() {
            if writes_answered && c.status == ClientStatus::Idle {
                for s in 0..state.servers.len() {
                    actions.push(Action::Invoke(Id::from(c.index), Id::from(s)));
                }
            }
        }
    }

    /// Whether `slot`'s `timer` may fire now: the clock-drift bound of
    /// leases ([`raft_spec::lease`]). A quiet follower's quiet or election
    /// timer runs a minimum election timeout from the last AppendEntries it
    /// heard; a lease runs that timeout divided by the drift bound from the
    /// start of its round. So neither timer fires while a live leader's
    /// lease rests on the follower ([`Server::lease_rests_on`]). Under
    /// [`Bug::LeaseBeyondDrift`] any set timer fires.
    ///
    /// [`Bug::LeaseBeyondDrift`]: raft_spec::bugs::Bug::LeaseBeyondDrift
    pub(crate) fn may_fire(&self, state: &State, slot: &ServerSlot, timer: Timer) -> bool {
        if !matches!(timer, Timer::Quiet | Timer::Election)
            || self.config.bug == Some(raft_spec::bugs::Bug::LeaseBeyondDrift)
        {
            return true;
        }
        let follower = slot.server();
        !state
            .servers
            .iter()
            .any(|l| !l.crashed && l.server().lease_rests_on(follower))
    }

    /// What reader actor `i` sends when it sends its read to server `to`.
    fn read_invocation(&self, i: usize, to: Id) -> Effects {
        [Effect::Send(to, self.request(i, 1))].into_iter().collect()
    }

    /// What actor `i` does when `msg` from `src` is delivered to it.
    pub(crate) fn react(&self, state: &State, src: Id, i: usize, msg: MsgRef) -> Rc<Reaction> {
        if let Some(slot) = state.servers.get(i) {
            return step_server(slot.server, StepInput::Deliver(usize::from(src), msg));
        }
        let (Some(client), Msg::Reply(answer)) = (state.client(i), msg.get()) else {
            return Rc::new(Reaction::none());
        };
        if client.status != ClientStatus::Pending || client.request_no != answer.request_no {
            return Rc::new(Reaction::none());
        }
        Rc::new(match answer.reply {
            ClientReply::Ok(value) => Reaction {
                server: None,
                client: Some(ClientState {
                    status: ClientStatus::Done(value),
                    ..client.clone()
                }),
                effects: Effects::new(),
            },
            ClientReply::Accepted { term, .. } => Reaction {
                server: None,
                client: Some(ClientState {
                    status: ClientStatus::Accepted { term },
                    ..client.clone()
                }),
                effects: Effects::new(),
            },
            // A client follows a redirect to the leader it names.
            ClientReply::NotLeader {
                leader_hint: Some(leader),
            } if (leader.0 as usize) < self.config.servers => Reaction {
                server: None,
                client: None,
                effects: [Effect::Send(
                    actor_id(leader),
                    self.request(i, answer.request_no),
                )]
                .into_iter()
                .collect(),
            },
            ClientReply::NotLeader { .. } | ClientReply::Superseded { .. } => Reaction::none(),
        })
    }

    /// What the actor touched by `action` does in `state` (for rendering):
    /// its effects, in order.
    pub fn effects(&self, state: &State, action: &Action) -> Effects {
        match action {
            Action::Deliver { src, dst, msg } => self.react(state, *src, usize::from(*dst), *msg),
            Action::Timeout(id, timer) => match state.servers.get(usize::from(*id)) {
                Some(slot) => step_server(slot.server, StepInput::Timeout(*timer)),
                None => Rc::new(Reaction::none()),
            },
            Action::Recover(id) => {
                let i = usize::from(*id);
                let stored = state.servers.get(i).and_then(|s| s.stored);
                return self.restarted(i, stored).1;
            }
            Action::Sync(id) => match state.servers.get(usize::from(*id)) {
                Some(slot) => step_server(slot.server, StepInput::Synced(slot.synced_len() + 1)),
                None => Rc::new(Reaction::none()),
            },
            Action::Invoke(id, to) => return self.read_invocation(usize::from(*id), *to),
            Action::Crash(_) | Action::Drop(_) => Rc::new(Reaction::none()),
        }
        .effects
        .clone()
    }

    /// Carries out actor `i`'s effects on `state`, in order. A client's first
    /// send of its request invokes its operation in the ghost's client
    /// history (later sends are retries).
    pub(crate) fn carry_out(&self, state: &mut State, i: usize, effects: &[Effect]) -> Sent {
        let src = Id::from(i);
        let mut sent = Sent::new();
        for &effect in effects {
            match effect {
                Effect::Send(dst, msg) => {
                    let op = match msg.get() {
                        Msg::Request { .. } => Some(CounterCommand::Increment),
                        Msg::Read { .. } => Some(CounterCommand::Read),
                        Msg::Raft(_) | Msg::Reply(_) => None,
                    };
                    if let (Some(op), true) = (op, i >= self.config.servers) {
                        // An invocation while one is in flight is a retry:
                        // the tester refuses it and is left as it was.
                        let mut tester: ClientHistory = state.ghost.clients.get().clone();
                        if tester.on_invoke(src, op).is_ok() {
                            state.ghost.clients = Ref::new(tester);
                        }
                    }
                    let e = Envelope::new(src, dst, msg);
                    if state.network.insert(e) {
                        sent.push(e);
                    }
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
                        if slot.stored.is_none_or(|s| *s.get() != *persistent) {
                            slot.stored = Some(Ref::new(persistent.clone()));
                        }
                    }
                }
            }
        }
        sent
    }

    /// The one next-state function: the state after `action`, or `None` if
    /// the action is not enabled or changes nothing (a self-loop, which the
    /// checker need not follow).
    pub fn step(&self, last: &State, action: Action) -> Option<State> {
        let response_to = match &action {
            Action::Deliver { dst, msg, .. }
                if matches!(
                    msg.get().raft(),
                    Some(Message::RequestVoteResponse(_) | Message::AppendEntriesResponse(_))
                ) =>
            {
                Some(usize::from(*dst))
            }
            _ => None,
        };
        // A lease read delivered to the leader (`lease_read`), a leader's
        // CheckQuorum check (`lost_quorum`).
        let lease_read = match &action {
            Action::Deliver { src, dst, msg }
                if matches!(
                    msg.get(),
                    Msg::Read {
                        mode: ReadMode::Lease,
                        ..
                    }
                ) =>
            {
                Some((usize::from(*dst), ClientId(usize::from(*src) as u64)))
            }
            _ => None,
        };
        let check = match &action {
            Action::Timeout(id, Timer::Election) => Some(usize::from(*id)),
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
                let reaction = step_server(slot.server, StepInput::Timeout(timer));
                let mut next = last.clone();
                next.servers[i].timers &= !timer_bit(timer);
                let sent = self.apply(&mut next, i, &reaction);
                self.settle(last, next, Some(id), &sent)?
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
                let mut next = self.settle(last, next, (!last_crash).then_some(id), &[])?;
                // A crashed server is shown as it will recover: nothing reads
                // the volatile state it lost (the properties and the dead
                // message rules look at what it persisted), so crashed states
                // that differ only in it are one state.
                let (server, _) = self.restarted(i, next.servers[i].stored);
                next.servers[i].server = Ref::new(server);
                next
            }
            Action::Recover(id) => {
                let i = usize::from(id);
                let slot = last.servers.get(i)?;
                if !slot.crashed {
                    return None;
                }
                let (server, effects) = self.restarted(i, slot.stored);
                let mut next = last.clone();
                next.servers[i].server = Ref::new(server);
                next.servers[i].crashed = false;
                let sent = self.carry_out(&mut next, i, &effects);
                self.settle(last, next, Some(id), &sent)?
            }
            Action::Drop(envelope) => {
                let mut next = last.clone();
                next.network.remove(&envelope);
                self.settle(last, next, None, &[])?
            }
            Action::Invoke(id, to) => {
                let i = usize::from(id);
                let c = i.checked_sub(self.config.servers)?;
                if last.client(i)?.status != ClientStatus::Idle {
                    return None;
                }
                let mut next = last.clone();
                next.clients = next
                    .clients
                    .updated(|clients| clients[c].status = ClientStatus::Pending);
                let effects = self.read_invocation(i, to);
                let sent = self.carry_out(&mut next, i, &effects);
                self.settle(last, next, Some(id), &sent)?
            }
            Action::Sync(id) => {
                let i = usize::from(id);
                let slot = last.servers.get(i)?;
                if slot.crashed || !slot.unsynced() {
                    return None;
                }
                let index = slot.synced_len() + 1;
                let reaction = step_server(slot.server, StepInput::Synced(index));
                let mut next = last.clone();
                next.servers[i].stored = Some(slot.synced_through(index));
                let sent = self.apply(&mut next, i, &reaction);
                self.settle(last, next, Some(id), &sent)?
            }
        };
        // The examples' flags mark only the step that shows them (see
        // `Ghost::rejoined`); a step of a server sets them again below.
        next.ghost.rejoined = false;
        next.ghost.stepped_down_on_response = false;
        next.ghost.lease_read = lease_read.is_some_and(|(i, client)| {
            let leads = |s: &State| {
                s.server(i).filter(|s| s.role() == Role::Leader).map(|s| {
                    s.volatile
                        .pending_reads
                        .iter()
                        .any(|r| r.client_id == client)
                })
            };
            last.server(i)
                .is_some_and(|s| s.volatile.lease.is_some_and(|l| l.held))
                && leads(last) == Some(false)
                && leads(&next) == Some(false)
        });
        next.ghost.lost_quorum = check.is_some_and(|i| {
            last.view(i).is_some_and(|v| v.is_leader())
                && next.view(i).is_some_and(|v| !v.is_leader())
        });
        next.ghost.follower_read = false;
        if let Some(i) = stepped.filter(|&i| i < self.config.servers && !crash) {
            if recovered_now {
                next.ghost.recovered |= 1 << i;
            }
            self.record(last, &mut next, i, recovered_now);
            next.ghost.stepped_down_on_response = response_to == Some(i)
                && last.view(i).is_some_and(|v| v.is_leader())
                && next.view(i).is_some_and(|v| !v.is_leader());
            next.ghost.follower_read = self.config.read == ReadMode::FollowerReadIndex
                && self.answered_as_follower(last, &next, i);
        }
        Some(self.canonical_if_asked(next))
    }

    /// Whether server `i`, which stepped from `last` to `next` and does not
    /// lead after it, sent a client a result in it: with follower reads at
    /// the leader's read index, a forwarded read served (the `Sometimes`
    /// [`names::FOLLOWER_READ_INDEX`]).
    fn answered_as_follower(&self, last: &State, next: &State, i: usize) -> bool {
        next.view(i).is_some_and(|v| !v.is_leader())
            && next.network.envelopes().iter().any(|e| {
                usize::from(e.src) == i
                    && matches!(
                        e.msg.get(),
                        Msg::Reply(Answer {
                            reply: ClientReply::Ok(_),
                            ..
                        })
                    )
                    && !last.network.contains(e)
            })
    }

    /// Puts actor `i`'s new state and effects into `next`.
    fn apply(&self, next: &mut State, i: usize, reaction: &Reaction) -> Sent {
        if let Some(server) = reaction.server {
            next.servers[i].server = server;
        }
        if let Some(client) = &reaction.client {
            let c = i - self.config.servers;
            next.clients = next.clients.updated(|clients| clients[c] = client.clone());
        }
        self.carry_out(next, i, &reaction.effects)
    }

    /// What every step ends with: dead messages around the actor that
    /// stepped (which sent `sent`) are forgotten (`None`: anywhere), and a
    /// step that changed nothing is not a step.
    fn settle(
        &self,
        last: &State,
        mut next: State,
        stepped: Option<Id>,
        sent: &[Envelope],
    ) -> Option<State> {
        if self.collect_garbage {
            self.collect_dead_messages(last, &mut next, stepped, sent);
        }
        (next != *last).then_some(next)
    }

    /// A delivery of `msg` from `src` to `dst`.
    fn deliver(&self, last: &State, src: Id, dst: Id, msg: MsgRef) -> Option<State> {
        let i = usize::from(dst);
        if last.crashed(i) || i >= last.actors() {
            return None;
        }
        let reaction = self.react(last, src, i, msg);
        let kind = last.network.kind();
        // On the ordered network a delivery consumes the message even when
        // it changes nothing.
        if reaction.is_no_op() && kind != NetworkKind::Ordered {
            return None;
        }
        let returned = self.record_return(last, dst, msg);
        let moot = (kind == NetworkKind::UnorderedDuplicating)
            .then(|| self.changes_nothing(last, i, &reaction, returned.is_some()));
        if moot == Some(Some(true)) {
            return None;
        }
        let mut next = last.clone();
        if kind != NetworkKind::UnorderedDuplicating {
            next.network.remove(&Envelope::new(src, dst, msg));
        }
        if let Some(clients) = returned {
            next.ghost.clients = clients;
        }
        let sent = self.apply(&mut next, i, &reaction);
        if moot == Some(Some(false)) {
            // Surely a change: no need to compare.
            if self.collect_garbage {
                self.collect_dead_messages(last, &mut next, Some(dst), &sent);
            }
            return Some(next);
        }
        self.settle(last, next, Some(dst), &sent)
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
            let this = match *effect {
                Effect::Send(to, m) => {
                    if matches!(m.get(), Msg::Request { .. } | Msg::Read { .. }) {
                        None
                    } else {
                        let e = Envelope::new(Id::from(i), to, m);
                        Some(
                            last.network.contains(&e)
                                || (self.collect_garbage && self.is_dead(last, &e)),
                        )
                    }
                }
                Effect::SetTimer(t) => is_set(t).then_some(true),
                Effect::CancelTimer(t) => (!is_set(t)).then_some(true),
                Effect::Save => {
                    let after = match reaction.server {
                        Some(s) => &s.get().persistent,
                        None => &slot?.server().persistent,
                    };
                    slot.and_then(|s| s.stored)
                        .is_some_and(|s| *s.get() == *after)
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
    fn record_return(&self, last: &State, dst: Id, msg: MsgRef) -> Option<Ref<ClientHistory>> {
        let Msg::Reply(answer) = msg.get() else {
            return None;
        };
        let ClientReply::Ok(value) = answer.reply else {
            return None;
        };
        if usize::from(dst) < self.config.servers {
            return None;
        }
        let mut tester: ClientHistory = last.ghost.clients.get().clone();
        tester.on_return(dst, value).ok()?;
        Some(Ref::new(tester))
    }

    /// Records the step server `i` took from `before` to `after` in the ghost.
    fn record(&self, before: &State, after: &mut State, i: usize, recovered_now: bool) {
        let (Some(b), Some(a)) = (before.view(i), after.view(i)) else {
            return;
        };
        let raft = record_step(
            after.ghost.raft,
            &before.servers[i],
            &after.servers[i],
            &b,
            &a,
        );
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
        if !after.ghost.ack_lost && b.role != Role::Leader && a.role == Role::Leader {
            let acknowledged = after
                .clients
                .iter()
                .filter(|c| matches!(c.status, ClientStatus::Accepted { term } if term < a.current_term))
                .map(|c| (ClientId(c.index as u64), c.request_no));
            after.ghost.ack_lost = !raft_spec::safety::log_holds_writes(a.log, acknowledged);
        }
    }
}

/// What a server's view depends on, for memo keys: its state and what it
/// stored (exactly: tables hold fewer than 2^32 values), then whether it is
/// down.
pub(crate) fn view_key(slot: &ServerSlot) -> (u64, bool) {
    let stored = slot.stored.map_or(0, |s| u64::from(s.index()) + 1);
    (
        (u64::from(slot.server.index()) << 32) | stored,
        slot.crashed,
    )
}

/// `History::record_step`, remembered per thread: the history after a step
/// is a function of the history before and the server's views before and
/// after.
fn record_step(
    history: Ref<raft_spec::safety::History<Cmd>>,
    before_slot: &ServerSlot,
    after_slot: &ServerSlot,
    before: &raft_spec::safety::ServerView<'static, Cmd>,
    after: &raft_spec::safety::ServerView<'static, Cmd>,
) -> Ref<raft_spec::safety::History<Cmd>> {
    let (b, b_crashed) = view_key(before_slot);
    let (a, a_crashed) = view_key(after_slot);
    let key = (
        u64::from(history.index()) | (u64::from(b_crashed) << 32) | (u64::from(a_crashed) << 33),
        b,
        a,
    );
    RECORDS.with(|memo| {
        memo.borrow_mut()
            .get_or(key, || history.updated(|h| h.record_step(before, after)))
    })
}
