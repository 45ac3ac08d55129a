//! One Raft server as a pure state machine: `(state, input) -> outputs`.
//!
//! Every rule cites the paper: *In Search of an Understandable Consensus
//! Algorithm (Extended Version)*, Ongaro & Ousterhout, 2014.

use crate::bugs::Bug;
use crate::message::{
    AppendEntries, AppendEntriesResponse, Message, RequestVote, RequestVoteResponse,
};
use crate::state_machine::StateMachine;
use crate::types::{ClientId, Entry, Log, LogIndex, NodeId, Payload, Term};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub mod flow;
pub mod reduction;

pub use flow::{Progress, Replication};

/// The three roles of Raft §5.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Passive: answers leaders and candidates.
    Follower,
    /// Running an election.
    Candidate,
    /// Handles clients and replicates the log.
    Leader,
}

/// The two timers of a server. Time is an input: the runtime (or the model
/// checker) decides when a timer fires, the protocol only sets and cancels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Timer {
    /// Followers and candidates start an election when it fires (Raft §5.2).
    Election,
    /// Leaders send AppendEntries to every peer when it fires (Raft §5.2).
    Heartbeat,
}

/// `current_term` and `voted_for`: the part of the persistent state that is
/// overwritten in place (etcd calls it the hard state).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct HardState {
    /// Latest term the server has seen.
    pub current_term: Term,
    /// Candidate that received this server's vote in `current_term`.
    pub voted_for: Option<NodeId>,
}

/// State that survives a crash (Fig. 2, "Persistent state on all servers").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PersistentState<C> {
    /// Latest term the server has seen (initialised to 0, increases monotonically).
    pub current_term: Term,
    /// Candidate that received this server's vote in the current term, if any.
    pub voted_for: Option<NodeId>,
    /// Log entries; each holds a command and the term when the leader received it.
    pub log: Log<C>,
}

impl<C> Default for PersistentState<C> {
    fn default() -> Self {
        PersistentState {
            current_term: Term(0),
            voted_for: None,
            log: Log::new(),
        }
    }
}

impl<C> PersistentState<C> {
    /// The hard state part.
    pub fn hard_state(&self) -> HardState {
        HardState {
            current_term: self.current_term,
            voted_for: self.voted_for,
        }
    }

    /// Rewrites node and client ids (used for symmetry reduction).
    #[must_use]
    pub fn map_ids(
        &self,
        nodes: &dyn Fn(NodeId) -> NodeId,
        clients: &dyn Fn(ClientId) -> ClientId,
    ) -> Self
    where
        C: Clone,
    {
        PersistentState {
            current_term: self.current_term,
            voted_for: self.voted_for.map(nodes),
            log: self.log.map_client_ids(clients),
        }
    }

    /// Carries out a [`Persist`] output on this persistent state: what a
    /// storage engine does on disk, done in memory.
    pub fn apply_persist(&mut self, persist: &Persist<C>)
    where
        C: Clone,
    {
        if let Some(hs) = persist.hard_state {
            self.current_term = hs.current_term;
            self.voted_for = hs.voted_for;
        }
        if let Some(write) = &persist.log {
            self.log.truncate_from(write.from);
            for e in &write.entries {
                self.log.push(e.clone());
            }
        }
    }
}

/// A client's answer for one request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ClientReply<R> {
    /// The command was committed and applied; this is what it returned.
    Ok(R),
    /// This server is not the leader; try the leader it knows of, if any
    /// (Raft §8: "a follower rejects the request and supplies the leader").
    NotLeader {
        /// The leader of the server's current term, if known.
        leader_hint: Option<NodeId>,
    },
    /// A later request of this client (number `applied`) has been applied:
    /// the session table keeps only each client's latest answer (Raft §8),
    /// so this older request's answer is gone, and it is not applied again.
    /// A client that numbers its requests in order and waits for each
    /// answer never gets it; one that does learns that its retry came too
    /// late, instead of hearing nothing.
    Superseded {
        /// The number of the client's latest applied request.
        applied: u64,
    },
}

/// Where a client's request stands against its session, which keeps the
/// number of the client's latest applied request (Raft §8: "the state
/// machine tracks the latest serial number processed for each client").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// Not applied yet: apply it.
    New,
    /// The latest applied request: answer it from the session, do not
    /// apply it again.
    Applied,
    /// Older than the latest applied request (`applied`): its answer is
    /// gone, and it is not applied.
    Superseded {
        /// The latest applied request's number.
        applied: u64,
    },
}

impl Session {
    /// Request `request_no` of a client whose latest applied request is
    /// `latest` (`None`: none yet).
    pub fn of(latest: Option<u64>, request_no: u64) -> Session {
        match latest {
            Some(applied) if applied == request_no => Session::Applied,
            Some(applied) if applied > request_no => Session::Superseded { applied },
            _ => Session::New,
        }
    }
}

/// One input to [`Server::step`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Input<C> {
    /// A message from a peer.
    Message {
        /// The sending server.
        from: NodeId,
        /// The message.
        message: Message<C>,
    },
    /// A client submits a command (Raft §8).
    ClientRequest {
        /// The client session.
        client_id: ClientId,
        /// The client's request number, starting at 1.
        request_no: u64,
        /// The command to replicate and apply.
        command: C,
    },
    /// The election timer fired.
    ElectionTimeout,
    /// The heartbeat timer fired.
    HeartbeatTimeout,
    /// The runtime made this server's log durable up to `index`, written
    /// while it led `term`: the answer to a [`Persist::parallel`] write
    /// (Raft thesis §10.2.1). Only the leader of `term` takes note; any
    /// other server, and the leader of another term, ignores it.
    Synced {
        /// The term in which the server wrote the entries, as leader.
        term: Term,
        /// The last index now durable.
        index: LogIndex,
    },
}

impl<C> Input<C> {
    /// The input a timer's firing is.
    pub fn timeout(timer: Timer) -> Self {
        match timer {
            Timer::Election => Input::ElectionTimeout,
            Timer::Heartbeat => Input::HeartbeatTimeout,
        }
    }

    /// A short name: the message's name as in the paper, or the input's
    /// (`ClientRequest`, `ElectionTimeout`, `HeartbeatTimeout`).
    pub fn name(&self) -> &'static str {
        match self {
            Input::Message { message, .. } => message.name(),
            Input::ClientRequest { .. } => "ClientRequest",
            Input::ElectionTimeout => "ElectionTimeout",
            Input::HeartbeatTimeout => "HeartbeatTimeout",
            Input::Synced { .. } => "Synced",
        }
    }
}

/// A write to the log: delete every entry from `from` on, then append
/// `entries` starting at `from`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogWrite<C> {
    /// The first index replaced.
    pub from: LogIndex,
    /// The new entries at `from`, `from + 1`, ...
    pub entries: Vec<Entry<C>>,
}

impl<C> LogWrite<C> {
    /// The index of the write's last entry; `from - 1` when it only
    /// deletes (the log then ends there).
    pub fn last_index(&self) -> LogIndex {
        LogIndex((self.from.0 + self.entries.len() as u64).saturating_sub(1))
    }
}

impl<C: PartialEq> LogWrite<C> {
    /// Whether this write, applied to `log`, deletes or changes an entry
    /// `log` holds: the log after it does not extend `log` (what
    /// [`crate::safety::History::record_step_with`] asks), answered in time
    /// proportional to the write.
    pub fn rewrites(&self, log: &Log<C>) -> bool {
        let old = log.entries_from(self.from);
        old.len() > self.entries.len() || old.iter().zip(&self.entries).any(|(a, b)| a != b)
    }
}

/// What must be made durable before anything else of the step takes effect.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Persist<C> {
    /// A new `current_term` / `voted_for`, if either changed.
    pub hard_state: Option<HardState>,
    /// A change to the log, if any.
    pub log: Option<LogWrite<C>>,
    /// Whether this is a leader's write of its own new entries, which may
    /// become durable in parallel with the step's sends (Raft thesis
    /// §10.2.1; [`Replication::parallel_write`]): then it holds a log
    /// write and no hard state, and the runtime answers it with
    /// [`Input::Synced`] once it is durable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parallel: bool,
}

/// One effect of a step.
///
/// # Ordering contract
/// The outputs of a step are carried out **in order**, and a
/// [`Output::Persist`] — when present it is always the first output — must be
/// **durable** (written and fsynced) before any [`Output::Send`] or
/// [`Output::ClientReply`] of the same step leaves the node: a vote or an
/// acknowledgement that is sent but not durable can be forgotten by a crash,
/// which breaks Election Safety and State Machine Safety (Raft §5.2, Fig. 2
/// "Updated on stable storage before responding to RPCs"). A runtime may batch
/// the persistence of several steps under one fsync (group commit) as long as
/// the sends of those steps wait for it.
///
/// One exception, [`Persist::parallel`]: a leader's write of its own new
/// entries need not be durable before the step's sends leave (Raft thesis
/// §10.2.1). The leader does not count itself toward a majority for those
/// entries until the runtime reports them durable ([`Input::Synced`]), so
/// nothing is committed on the strength of a write a crash can undo.
/// Votes, responses and terms are still durable before they are sent. Since
/// a log is written in order, a later persist that is not parallel is
/// durable only once every earlier write is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Output<C, R> {
    /// Make this durable first.
    Persist(Persist<C>),
    /// Send a message to a peer.
    Send {
        /// The destination server.
        to: NodeId,
        /// The message.
        message: Message<C>,
    },
    /// (Re)start a timer with a fresh duration (randomized for elections).
    SetTimer(Timer),
    /// Stop a timer.
    CancelTimer(Timer),
    /// The entry at `index` was applied to the state machine.
    Applied {
        /// The index of the applied entry.
        index: LogIndex,
        /// The term of the applied entry.
        term: Term,
    },
    /// Answer a client request.
    ClientReply {
        /// The client session.
        client_id: ClientId,
        /// The request answered.
        request_no: u64,
        /// The answer.
        reply: ClientReply<R>,
    },
}

/// The state that a crash loses (Fig. 2, "Volatile state").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct VolatileState<S: StateMachine> {
    /// Follower, candidate or leader.
    pub role: Role,
    /// Index of the highest log entry known to be committed.
    ///
    /// Invariant: `last_applied <= commit_index <= log.last_index()`.
    pub commit_index: LogIndex,
    /// Index of the highest log entry applied to the state machine.
    pub last_applied: LogIndex,
    /// The leader of `current_term`, once known; used to redirect clients.
    pub leader_hint: Option<NodeId>,
    /// Candidate only: the servers that granted their vote this term (self included).
    pub votes_granted: BTreeSet<NodeId>,
    /// Leader only: for each peer, index of the next log entry to send.
    pub next_index: BTreeMap<NodeId, LogIndex>,
    /// Leader only: for each peer, index of the highest entry known to be replicated on it.
    ///
    /// Invariant: never decreases within a term.
    pub match_index: BTreeMap<NodeId, LogIndex>,
    /// The replicated state machine, fed by committed entries.
    pub state_machine: S,
    /// For each client, the last request applied and what it returned (Raft §8).
    pub sessions: BTreeMap<ClientId, (u64, S::Output)>,
    /// Leader with a [`Replication::window`] only: each peer's flow-control
    /// state (see [`flow`]); empty otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub progress: BTreeMap<NodeId, Progress>,
    /// Leader with [`Replication::parallel_write`] only: the last index of
    /// its own log known durable; it counts itself toward a majority only up
    /// to here (Raft thesis §10.2.1). `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_index: Option<LogIndex>,
}

/// A Raft server: identity, persistent and volatile state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Server<S: StateMachine> {
    /// This server's id.
    pub id: NodeId,
    /// The other servers of the cluster, sorted.
    pub peers: Vec<NodeId>,
    /// What survives a crash.
    pub persistent: PersistentState<S::Command>,
    /// What a crash loses.
    pub volatile: VolatileState<S>,
    /// The seeded bug this server runs with (checking only; see
    /// [`crate::bugs`]), set through `Server::restart_with_bug`. The field
    /// exists only with the crate feature `seeded-bugs`: a production
    /// server carries no bug at all, and every bug hook ([`Server::bug`])
    /// is then a constant `None`.
    #[cfg(feature = "seeded-bugs")]
    #[serde(skip)]
    bug: Option<Bug>,
    /// How this server paces AppendEntries as leader; see
    /// [`Server::with_replication`].
    #[serde(default, skip_serializing_if = "Replication::is_figure_2")]
    replication: Replication,
}

/// Why a leader sends AppendEntries ([`Server::replicate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Occasion {
    /// It has just been elected.
    Election,
    /// It has appended entries to its log.
    Append,
    /// Its heartbeat timer fired.
    Heartbeat,
}

/// The outputs of a step, in the order they must be carried out.
pub type Outputs<S> = Vec<Output<<S as StateMachine>::Command, <S as StateMachine>::Output>>;

/// Collects the effects of one step; the persistence is computed at the end.
struct Effects<C, R> {
    hard_state_dirty: bool,
    log_dirty_from: Option<LogIndex>,
    /// The log changed only by the leader appending to it.
    own_append: bool,
    rest: Vec<Output<C, R>>,
}

impl<C, R> Effects<C, R> {
    fn new() -> Self {
        Effects {
            hard_state_dirty: false,
            log_dirty_from: None,
            own_append: false,
            rest: Vec::new(),
        }
    }

    fn log_changed_from(&mut self, index: LogIndex) {
        self.log_dirty_from = Some(self.log_dirty_from.map_or(index, |i| i.min(index)));
    }
}

impl<S: StateMachine> Server<S> {
    /// A server with empty persistent state, as on first boot.
    pub fn new(id: NodeId, peers: Vec<NodeId>) -> (Self, Outputs<S>) {
        Self::restart(id, peers, PersistentState::default())
    }

    /// Starts (or restarts after a crash) from what was persisted: a
    /// follower with empty volatile state whose election timer runs
    /// (Fig. 2: volatile state is reinitialized after a restart).
    pub fn restart(
        id: NodeId,
        peers: Vec<NodeId>,
        persistent: PersistentState<S::Command>,
    ) -> (Self, Outputs<S>) {
        Self::start(id, peers, persistent, None)
    }

    /// [`Server::restart`] with a seeded bug switched on (`None`: exactly
    /// `restart`). For model checking only: this function exists only with
    /// the crate feature `seeded-bugs`, which `raft-node` never enables.
    #[cfg(feature = "seeded-bugs")]
    pub fn restart_with_bug(
        id: NodeId,
        peers: Vec<NodeId>,
        persistent: PersistentState<S::Command>,
        bug: Option<Bug>,
    ) -> (Self, Outputs<S>) {
        Self::start(id, peers, persistent, bug)
    }

    fn start(
        id: NodeId,
        mut peers: Vec<NodeId>,
        mut persistent: PersistentState<S::Command>,
        bug: Option<Bug>,
    ) -> (Self, Outputs<S>) {
        if bug == Some(Bug::VoteNotPersisted) {
            // Seeded bug: the vote was never made durable.
            persistent.voted_for = None;
        }
        peers.retain(|p| *p != id);
        peers.sort();
        peers.dedup();
        let server = Server {
            id,
            peers,
            persistent,
            volatile: VolatileState {
                role: Role::Follower,
                commit_index: LogIndex(0),
                last_applied: LogIndex(0),
                leader_hint: None,
                votes_granted: BTreeSet::new(),
                next_index: BTreeMap::new(),
                match_index: BTreeMap::new(),
                state_machine: S::default(),
                sessions: BTreeMap::new(),
                progress: BTreeMap::new(),
                durable_index: None,
            },
            #[cfg(feature = "seeded-bugs")]
            bug,
            replication: Replication::default(),
        };
        (server, vec![Output::SetTimer(Timer::Election)])
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.volatile.role
    }

    /// The current term.
    pub fn current_term(&self) -> Term {
        self.persistent.current_term
    }

    /// The log.
    pub fn log(&self) -> &Log<S::Command> {
        &self.persistent.log
    }

    /// The number of servers in the cluster.
    pub fn cluster_size(&self) -> usize {
        self.peers.len() + 1
    }

    /// The seeded bug this server runs with, if any (see [`crate::bugs`]):
    /// the one seam through which the handlers consult a bug. Always `None`
    /// without the crate feature `seeded-bugs`.
    pub fn bug(&self) -> Option<Bug> {
        #[cfg(feature = "seeded-bugs")]
        return self.bug;
        #[cfg(not(feature = "seeded-bugs"))]
        None
    }

    fn has_bug(&self, bug: Bug) -> bool {
        self.bug() == Some(bug)
    }

    /// Whether `count` servers form a majority of the cluster (Raft §5.2).
    pub fn is_majority(&self, count: usize) -> bool {
        if self.has_bug(Bug::EvenQuorum) {
            return 2 * count >= self.cluster_size();
        }
        2 * count > self.cluster_size()
    }

    /// Takes one input and returns the outputs, in the order they must be
    /// carried out (see [`Output`] for the ordering contract).
    pub fn step(&mut self, input: Input<S::Command>) -> Outputs<S> {
        let mut fx = Effects::new();
        match input {
            Input::Message { from, message } => self.handle_message(from, message, &mut fx),
            Input::ClientRequest {
                client_id,
                request_no,
                command,
            } => self.handle_client_request(client_id, request_no, command, &mut fx),
            Input::ElectionTimeout => self.handle_election_timeout(&mut fx),
            Input::HeartbeatTimeout => self.handle_heartbeat_timeout(&mut fx),
            Input::Synced { term, index } => self.handle_synced(term, index, &mut fx),
        }
        self.finish(fx)
    }

    fn finish(&self, fx: Effects<S::Command, S::Output>) -> Outputs<S> {
        let hard_state = fx.hard_state_dirty.then(|| self.persistent.hard_state());
        let log = fx.log_dirty_from.map(|from| LogWrite {
            from,
            entries: self.persistent.log.entries_from(from).to_vec(),
        });
        if hard_state.is_none() && log.is_none() {
            return fx.rest;
        }
        // Only a leader appends to its own log, and only entries of its own
        // term; its hard state does not change while it leads.
        let parallel = fx.own_append
            && self.replication.parallel_write
            && hard_state.is_none()
            && self.volatile.role == Role::Leader;
        let mut out = Vec::with_capacity(fx.rest.len() + 1);
        out.push(Output::Persist(Persist {
            hard_state,
            log,
            parallel,
        }));
        out.extend(fx.rest);
        out
    }

    // ---- Terms and roles -------------------------------------------------

    /// Fig. 2 (Rules for Servers, all servers): "If RPC request or response
    /// contains term T > currentTerm: set currentTerm = T, convert to
    /// follower". A new term starts without a vote and without a known leader.
    fn become_follower(&mut self, term: Term, fx: &mut Effects<S::Command, S::Output>) {
        if term > self.persistent.current_term {
            self.persistent.current_term = term;
            self.persistent.voted_for = None;
            self.volatile.leader_hint = None;
            fx.hard_state_dirty = true;
        }
        if self.volatile.role == Role::Leader {
            fx.rest.push(Output::CancelTimer(Timer::Heartbeat));
            fx.rest.push(Output::SetTimer(Timer::Election));
        }
        self.volatile.role = Role::Follower;
        self.volatile.votes_granted.clear();
        self.volatile.next_index.clear();
        self.volatile.match_index.clear();
        self.volatile.progress.clear();
        self.volatile.durable_index = None;
    }

    /// Fig. 2 (Candidates): on conversion to candidate, increment
    /// `current_term`, vote for self, reset the election timer, send
    /// RequestVote to all other servers (Raft §5.2).
    fn become_candidate(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        self.persistent.current_term = self.persistent.current_term.next();
        self.persistent.voted_for = Some(self.id);
        fx.hard_state_dirty = true;
        self.volatile.role = Role::Candidate;
        self.volatile.leader_hint = None;
        self.volatile.votes_granted.clear();
        self.volatile.votes_granted.insert(self.id);
        fx.rest.push(Output::SetTimer(Timer::Election));
        let request = RequestVote {
            term: self.persistent.current_term,
            candidate_id: self.id,
            last_log_index: self.persistent.log.last_index(),
            last_log_term: self.persistent.log.last_term(),
        };
        for &peer in &self.peers {
            fx.rest.push(Output::Send {
                to: peer,
                message: Message::RequestVote(request.clone()),
            });
        }
        if self.is_majority(self.volatile.votes_granted.len()) {
            self.become_leader(fx);
        }
    }

    /// Fig. 2 (Leaders): upon election, initialise `next_index` to the last
    /// log index + 1 and `match_index` to 0 for every peer, and send
    /// AppendEntries to each server.
    ///
    /// Decision: no no-op entry on election. Figure 2 has none; Raft §8 adds
    /// one for read-only queries, which this spec serves through the log.
    /// Entries of earlier terms are committed indirectly, once an entry of the
    /// current term is (Raft §5.4.2): a client's retry provides one, because
    /// a retried request is appended again unless the log already holds it in
    /// the current term (see `handle_client_request`), and the session table
    /// applies the second copy as a duplicate. A no-op per election would
    /// multiply the checked state space by about ten (docs/model.md,
    /// "No no-op on election").
    fn become_leader(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        self.volatile.role = Role::Leader;
        self.volatile.leader_hint = Some(self.id);
        self.volatile.votes_granted.clear();
        let next = self.persistent.log.last_index().next();
        self.volatile.next_index = self.peers.iter().map(|&p| (p, next)).collect();
        self.volatile.match_index = self.peers.iter().map(|&p| (p, LogIndex(0))).collect();
        if self.replication.window.is_some() {
            self.volatile.progress = self.peers.iter().map(|&p| (p, Progress::Probe)).collect();
        }
        if self.replication.parallel_write {
            // Its log is durable: becoming a candidate persisted its term,
            // and a log is written in order, so every earlier write too.
            self.volatile.durable_index = Some(self.persistent.log.last_index());
        }
        fx.rest.push(Output::CancelTimer(Timer::Election));
        fx.rest.push(Output::SetTimer(Timer::Heartbeat));
        self.replicate(Occasion::Election, fx);
        self.advance_commit_index(fx);
    }

    fn append_to_own_log(
        &mut self,
        payload: Payload<S::Command>,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let index = self.persistent.log.last_index().next();
        self.persistent.log.push(Entry {
            term: self.persistent.current_term,
            payload,
        });
        if fx.log_dirty_from.is_none() {
            fx.own_append = true;
        }
        fx.log_changed_from(index);
    }

    /// Raft thesis §10.2.1: the leader's own write is durable up to
    /// `index`, so it now counts itself toward a majority up to there. A
    /// report for another term, or to a server that no longer leads, is
    /// late and changes nothing: everything it covers was made durable by
    /// the persist of the term change since, which a log writes after it.
    fn handle_synced(
        &mut self,
        term: Term,
        index: LogIndex,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        if self.volatile.role != Role::Leader || term != self.persistent.current_term {
            return;
        }
        let Some(durable) = self.volatile.durable_index else {
            return;
        };
        let index = index.min(self.persistent.log.last_index());
        if index > durable {
            self.volatile.durable_index = Some(index);
            self.advance_commit_index(fx);
        }
    }

    // ---- Inputs ----------------------------------------------------------

    fn handle_message(
        &mut self,
        from: NodeId,
        message: Message<S::Command>,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        // Fig. 2 (All servers): a higher term makes this server a follower of that term.
        let seeded_skip = match &message {
            Message::RequestVote(_) => self.has_bug(Bug::NoTermAdoptionOnVoteRequest),
            Message::RequestVoteResponse(_) | Message::AppendEntriesResponse(_) => {
                self.has_bug(Bug::LeaderIgnoresHigherTerm) && self.volatile.role == Role::Leader
            }
            Message::AppendEntries(_) => false,
        };
        if message.term() > self.persistent.current_term && !seeded_skip {
            self.become_follower(message.term(), fx);
        }
        match message {
            Message::RequestVote(m) => self.handle_request_vote(from, m, fx),
            Message::RequestVoteResponse(m) => self.handle_request_vote_response(from, m, fx),
            Message::AppendEntries(m) => self.handle_append_entries(from, m, fx),
            Message::AppendEntriesResponse(m) => self.handle_append_entries_response(from, m, fx),
        }
    }

    /// Fig. 2 (RequestVote RPC, receiver implementation):
    /// 1. reply false if `term < current_term` (Raft §5.1);
    /// 2. if `voted_for` is null or `candidate_id`, and the candidate's log is
    ///    at least as up-to-date as the receiver's log, grant the vote
    ///    (Raft §5.2, §5.4). A granted vote resets the election timer
    ///    (Fig. 2, Followers) and is persisted before the reply leaves.
    fn handle_request_vote(
        &mut self,
        from: NodeId,
        m: RequestVote,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let term = self.persistent.current_term;
        let vote_granted = m.term == term
            && self
                .persistent
                .voted_for
                .is_none_or(|v| v == m.candidate_id)
            && (self.candidate_log_is_up_to_date(m.last_log_index, m.last_log_term)
                || self.has_bug(Bug::NoUpToDateCheck));
        if vote_granted && self.persistent.voted_for.is_none() {
            self.persistent.voted_for = Some(m.candidate_id);
            fx.hard_state_dirty = true;
        }
        if vote_granted {
            fx.rest.push(Output::SetTimer(Timer::Election));
        }
        fx.rest.push(Output::Send {
            to: from,
            message: Message::RequestVoteResponse(RequestVoteResponse { term, vote_granted }),
        });
    }

    /// Raft §5.4.1: the candidate's log is at least as up-to-date as this
    /// server's ([`Log::up_to_date`]).
    fn candidate_log_is_up_to_date(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        (last_log_term, last_log_index) >= self.persistent.log.up_to_date()
    }

    /// Fig. 2 (Candidates): "If votes received from majority of servers:
    /// become leader". A response of an earlier term is stale and ignored
    /// (Raft §5.1: stale messages are discarded).
    fn handle_request_vote_response(
        &mut self,
        from: NodeId,
        m: RequestVoteResponse,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let stale = if self.has_bug(Bug::StaleVoteResponse) {
            m.term > self.persistent.current_term
        } else {
            m.term != self.persistent.current_term
        };
        if stale || self.volatile.role != Role::Candidate || !m.vote_granted {
            return;
        }
        self.volatile.votes_granted.insert(from);
        if self.is_majority(self.volatile.votes_granted.len()) {
            self.become_leader(fx);
        }
    }

    /// Fig. 2 (AppendEntries RPC, receiver implementation):
    /// 1. reply false if `term < current_term` (Raft §5.1);
    /// 2. reply false if the log has no entry at `prev_log_index` whose term
    ///    matches `prev_log_term` (Raft §5.3);
    /// 3. if an existing entry conflicts with a new one (same index, different
    ///    term), delete it and all that follow (Raft §5.3); an entry that
    ///    matches is kept, and so is everything after it;
    /// 4. append any new entries not already in the log;
    /// 5. if `leader_commit > commit_index`, set `commit_index =
    ///    min(leader_commit, index of last new entry)`.
    ///
    /// A candidate that receives AppendEntries from a leader of its own term
    /// returns to follower (Fig. 2, Candidates; Raft §5.2) and keeps its vote.
    fn handle_append_entries(
        &mut self,
        from: NodeId,
        m: AppendEntries<S::Command>,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let term = self.persistent.current_term;
        if m.term < term {
            fx.rest.push(Output::Send {
                to: from,
                message: rejection(term, m.prev_log_index),
            });
            return;
        }
        match self.volatile.role {
            Role::Candidate => {
                self.become_follower(term, fx);
                if self.has_bug(Bug::StepDownForgetsVote) {
                    self.persistent.voted_for = None;
                    fx.hard_state_dirty = true;
                }
            }
            Role::Follower => {}
            // Two leaders of one term contradict Election Safety; the checker
            // reports that through the property, so the step changes nothing.
            Role::Leader => return,
        }
        self.volatile.leader_hint = Some(m.leader_id);
        fx.rest.push(Output::SetTimer(Timer::Election));

        if self.persistent.log.term_at(m.prev_log_index) != Some(m.prev_log_term) {
            let mut message = rejection(term, m.prev_log_index);
            if let Message::AppendEntriesResponse(r) = &mut message {
                // With a window the leader probes from this server's end of
                // log (and repairs it if it fell back): see `flow`.
                r.last_log_index = self
                    .replication
                    .window
                    .map(|_| self.persistent.log.last_index());
            }
            fx.rest.push(Output::Send { to: from, message });
            return;
        }

        let mut entries = m.entries;
        if self.has_bug(Bug::EntriesTakeLeaderTerm) {
            for entry in &mut entries {
                entry.term = m.term;
            }
        }
        if self.has_bug(Bug::TruncateOnMatch) && self.persistent.log.last_index() > m.prev_log_index
        {
            self.persistent.log.truncate_from(m.prev_log_index.next());
            fx.log_changed_from(m.prev_log_index.next());
        }
        let mut index = m.prev_log_index;
        for entry in entries {
            index = index.next();
            match self.persistent.log.term_at(index) {
                Some(t) if t == entry.term => continue,
                Some(_) => {
                    self.persistent.log.truncate_from(index);
                    self.persistent.log.push(entry);
                    fx.log_changed_from(index);
                }
                None => {
                    self.persistent.log.push(entry);
                    fx.log_changed_from(index);
                }
            }
        }
        let last_new_entry = index;

        if m.leader_commit > self.volatile.commit_index {
            let new_commit = self.follower_commit(m.leader_commit, last_new_entry);
            if new_commit > self.volatile.commit_index {
                self.volatile.commit_index = new_commit;
                self.apply_committed(fx);
            }
        }
        fx.rest.push(Output::Send {
            to: from,
            message: accepted(
                term,
                if self.has_bug(Bug::AckOwnLastIndex) {
                    self.persistent.log.last_index()
                } else {
                    last_new_entry
                },
            ),
        });
    }

    /// Fig. 2, AppendEntries receiver rule 5: the commit index a follower
    /// may take from a leader, `min(leader_commit, index of last new entry)`
    /// (`leader_commit` alone under [`Bug::CommitWithoutMin`]).
    fn follower_commit(&self, leader_commit: LogIndex, last_new_entry: LogIndex) -> LogIndex {
        if self.has_bug(Bug::CommitWithoutMin) {
            leader_commit
        } else {
            leader_commit.min(last_new_entry)
        }
    }

    /// Fig. 2 (Leaders): on success update `next_index` and `match_index` for
    /// the follower; on a failed consistency check decrement `next_index` and
    /// retry (Raft §5.3). Responses are matched by their `index`, so a stale or
    /// duplicated response never moves `match_index` backwards.
    ///
    /// Decision: a rejection at an index the follower has since acknowledged
    /// (`index <= match_index`) is stale and ignored, as etcd-io/raft's
    /// `Progress::MaybeDecrTo` ignores it: the follower's log matched there
    /// when it acknowledged, and a retry from below `match_index + 1` would
    /// only resend entries it holds. So `next_index > match_index` always,
    /// and a response the leader has already taken into account stays
    /// without effect for the rest of its term ([`Server::ignores_forever`]).
    fn handle_append_entries_response(
        &mut self,
        from: NodeId,
        m: AppendEntriesResponse,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        if m.term != self.persistent.current_term || self.volatile.role != Role::Leader {
            return;
        }
        if !self.peers.contains(&from) {
            return;
        }
        if m.success {
            let regress = self.has_bug(Bug::MatchIndexRegress);
            let matched = self.volatile.match_index.entry(from).or_default();
            if m.index > *matched || regress {
                *matched = m.index;
            }
            if self.replication.window.is_some() {
                self.advance_commit_index(fx);
                self.paced_ack(from, m.index, fx);
                return;
            }
            let next = self.volatile.next_index.entry(from).or_insert(LogIndex(1));
            let advanced = m.index.next() > *next;
            if advanced || regress {
                *next = m.index.next();
            }
            self.advance_commit_index(fx);
            // With a cap, the entries past the acknowledged batch were never
            // sent: send the next batch now rather than at the next heartbeat.
            // Without one, every entry was sent when it was appended.
            let capped = self.replication.max_append_entries.is_some()
                || self.replication.max_append_bytes.is_some();
            if advanced && capped && m.index < self.persistent.log.last_index() {
                self.send_append_entries(from, fx);
            }
        } else if self.replication.window.is_some() {
            self.paced_reject(from, m.index, m.last_log_index, fx);
        } else {
            if m.index
                <= self
                    .volatile
                    .match_index
                    .get(&from)
                    .copied()
                    .unwrap_or_default()
            {
                return;
            }
            // The entry at `m.index` does not match: the next probe starts
            // there at the latest. Never below 1, never above what it was.
            let next = self.volatile.next_index.entry(from).or_insert(LogIndex(1));
            let backed_off = (*next).min(m.index).max(LogIndex(1));
            if backed_off < *next {
                *next = backed_off;
                self.send_append_entries(from, fx);
            }
        }
    }

    /// Raft §8: a leader appends the command and replies once it is committed
    /// and applied; other servers redirect the client to the leader they know.
    /// A request already applied is answered from the session table (an
    /// older one than the client's latest applied is answered
    /// [`ClientReply::Superseded`]), and one already appended in the current
    /// term is not appended twice.
    fn handle_client_request(
        &mut self,
        client_id: ClientId,
        request_no: u64,
        command: S::Command,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        if self.volatile.role != Role::Leader {
            fx.rest.push(Output::ClientReply {
                client_id,
                request_no,
                reply: ClientReply::NotLeader {
                    leader_hint: self.volatile.leader_hint,
                },
            });
            return;
        }
        let session = self.volatile.sessions.get(&client_id);
        let reply = match Session::of(session.map(|(n, _)| *n), request_no) {
            Session::New => None,
            Session::Applied => session.map(|(_, output)| ClientReply::Ok(output.clone())),
            Session::Superseded { applied } => Some(ClientReply::Superseded { applied }),
        };
        if let Some(reply) = reply {
            fx.rest.push(Output::ClientReply {
                client_id,
                request_no,
                reply,
            });
            return;
        }
        // Already appended in this term: it will be answered once applied.
        // A copy from an earlier term is not enough, since only an entry of
        // the current term can commit it (Raft §5.4.2).
        let term = self.persistent.current_term;
        let pending = self
            .persistent
            .log
            .entries_from(self.volatile.last_applied.next())
            .iter()
            .any(|e| {
                e.term == term
                    && matches!(&e.payload, Payload::Command { client_id: c, request_no: r, .. }
                    if *c == client_id && *r == request_no)
            });
        if pending {
            return;
        }
        self.append_to_own_log(
            Payload::Command {
                client_id,
                request_no,
                command,
            },
            fx,
        );
        self.replicate(Occasion::Append, fx);
        self.advance_commit_index(fx);
    }

    /// Fig. 2 (Followers, Candidates): "If election timeout elapses without
    /// receiving AppendEntries RPC from current leader or granting vote to
    /// candidate: convert to candidate", and a candidate whose election times
    /// out starts a new one. A leader has no election timer.
    fn handle_election_timeout(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        if self.volatile.role == Role::Leader {
            return;
        }
        self.become_candidate(fx);
    }

    /// Fig. 2 (Leaders): send AppendEntries to each server during idle periods
    /// to prevent election timeouts (Raft §5.2), carrying the entries from the
    /// follower's `next_index` on, or as [`Replication`] paces them.
    fn handle_heartbeat_timeout(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        if self.volatile.role != Role::Leader {
            return;
        }
        fx.rest.push(Output::SetTimer(Timer::Heartbeat));
        self.replicate(Occasion::Heartbeat, fx);
    }

    // ---- Replication and commitment ------------------------------------

    /// AppendEntries to every peer on `occasion`: with a window, as the
    /// peer's [`Progress`] paces it ([`flow`]); without, Figure 2's pacing
    /// ([`Server::send`]): every message carries the entries from the peer's
    /// `next_index` on, but for heartbeats with
    /// [`Replication::empty_heartbeats`].
    fn replicate(&mut self, occasion: Occasion, fx: &mut Effects<S::Command, S::Output>) {
        for i in 0..self.peers.len() {
            let peer = self.peers[i];
            if self.replication.window.is_some() {
                self.pace(peer, occasion != Occasion::Append, fx);
            } else {
                let empty = occasion == Occasion::Heartbeat && self.replication.empty_heartbeats;
                self.send(peer, !empty, fx);
            }
        }
    }

    fn send_append_entries(&self, peer: NodeId, fx: &mut Effects<S::Command, S::Output>) {
        self.send(peer, true, fx);
    }

    /// AppendEntries to `peer` from its `next_index`: with the entries from
    /// there on (at most one batch, [`Replication`]), or none if
    /// `with_entries` is false (an empty heartbeat).
    fn send(&self, peer: NodeId, with_entries: bool, fx: &mut Effects<S::Command, S::Output>) {
        let next = self.next_of(peer);
        let entries = if with_entries {
            self.batch_from(next)
        } else {
            Vec::new()
        };
        fx.rest.push(Output::Send {
            to: peer,
            message: self.append_entries(next, entries),
        });
    }

    /// Fig. 2 (Leaders): "If there exists an N such that N > commitIndex, a
    /// majority of matchIndex[i] ≥ N, and log[N].term == currentTerm: set
    /// commitIndex = N". Only entries of the current term are committed by
    /// counting replicas (Raft §5.4.2, Figure 8); earlier ones follow.
    fn advance_commit_index(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        let log = &self.persistent.log;
        let mut n = log.last_index();
        while n > self.volatile.commit_index {
            if log.term_at(n) != Some(self.persistent.current_term) && !self.has_bug(Bug::Figure8) {
                break;
            }
            // The leader counts itself once its own copy is durable (Raft
            // thesis §10.2.1); without a parallel write it always is.
            let own = match self.volatile.durable_index {
                Some(durable) if !self.has_bug(Bug::CountsUnsyncedEntry) => durable >= n,
                _ => true,
            };
            let replicas = usize::from(own)
                + self
                    .volatile
                    .match_index
                    .values()
                    .filter(|&&m| m >= n)
                    .count();
            if self.is_majority(replicas) {
                self.volatile.commit_index = n;
                self.apply_committed(fx);
                return;
            }
            n = n.prev();
        }
    }

    /// Fig. 2 (All servers): "If commitIndex > lastApplied: increment
    /// lastApplied, apply log[lastApplied] to state machine". A command whose
    /// (client id, request number) was applied before is not applied again
    /// (Raft §8). The leader answers the client.
    fn apply_committed(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        while self.volatile.last_applied < self.volatile.commit_index {
            let index = self.volatile.last_applied.next();
            let Some(entry) = self.persistent.log.get(index) else {
                // commit_index never passes the end of the log (see the
                // invariant on `commit_index`), so this cannot happen.
                break;
            };
            self.volatile.last_applied = index;
            fx.rest.push(Output::Applied {
                index,
                term: entry.term,
            });
            let Payload::Command {
                client_id,
                request_no,
                command,
            } = &entry.payload
            else {
                continue;
            };
            let session = self.volatile.sessions.get(client_id);
            let output = match (Session::of(session.map(|(n, _)| *n), *request_no), session) {
                (Session::Applied, Some((_, output))) => output.clone(),
                (Session::Superseded { .. }, _) => continue,
                _ => {
                    let output = self.volatile.state_machine.apply(command);
                    self.volatile
                        .sessions
                        .insert(*client_id, (*request_no, output.clone()));
                    output
                }
            };
            if self.volatile.role == Role::Leader {
                fx.rest.push(Output::ClientReply {
                    client_id: *client_id,
                    request_no: *request_no,
                    reply: ClientReply::Ok(output),
                });
            }
        }
    }

    /// Rewrites node and client ids everywhere in the state (used for symmetry
    /// reduction by the model checker). `nodes` must be a permutation.
    #[must_use]
    pub fn map_ids(
        &self,
        nodes: &dyn Fn(NodeId) -> NodeId,
        clients: &dyn Fn(ClientId) -> ClientId,
    ) -> Self {
        let mut peers: Vec<NodeId> = self.peers.iter().map(|&p| nodes(p)).collect();
        peers.sort();
        let v = &self.volatile;
        Server {
            id: nodes(self.id),
            peers,
            persistent: self.persistent.map_ids(nodes, clients),
            volatile: VolatileState {
                role: v.role,
                commit_index: v.commit_index,
                last_applied: v.last_applied,
                leader_hint: v.leader_hint.map(nodes),
                votes_granted: v.votes_granted.iter().map(|&n| nodes(n)).collect(),
                next_index: v.next_index.iter().map(|(&n, &i)| (nodes(n), i)).collect(),
                match_index: v.match_index.iter().map(|(&n, &i)| (nodes(n), i)).collect(),
                progress: v
                    .progress
                    .iter()
                    .map(|(&n, p)| (nodes(n), p.clone()))
                    .collect(),
                durable_index: v.durable_index,
                state_machine: v.state_machine.clone(),
                sessions: v
                    .sessions
                    .iter()
                    .map(|(&c, o)| (clients(c), o.clone()))
                    .collect(),
            },
            #[cfg(feature = "seeded-bugs")]
            bug: self.bug,
            replication: self.replication,
        }
    }
}

/// An AppendEntries success of `term` up to `index`.
fn accepted<C>(term: Term, index: LogIndex) -> Message<C> {
    Message::AppendEntriesResponse(AppendEntriesResponse {
        term,
        success: true,
        index,
        last_log_index: None,
    })
}

/// An AppendEntries rejection of `term` at `prev_log_index`: the answer to a
/// request of an earlier term and to one that fails the consistency check
/// (Fig. 2, AppendEntries receiver rules 1 and 2).
fn rejection<C>(term: Term, prev_log_index: LogIndex) -> Message<C> {
    Message::AppendEntriesResponse(AppendEntriesResponse {
        term,
        success: false,
        index: prev_log_index,
        last_log_index: None,
    })
}
