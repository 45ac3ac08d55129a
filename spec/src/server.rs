//! One Raft server as a pure state machine: `(state, input) -> outputs`.
//!
//! Every rule cites the paper: *In Search of an Understandable Consensus
//! Algorithm (Extended Version)*, Ongaro & Ousterhout, 2014.
//!
//! This file holds the server's state, its inputs and outputs with their
//! ordering contract, and the dispatch of each input. The handlers live by
//! the part of the protocol they serve: `election.rs` (RequestVote,
//! candidates and leaders, Raft §5.2), `replication.rs` (AppendEntries and
//! commitment, §5.3–§5.4), `client.rs` (client requests and the apply loop,
//! §8), [`flow`] (how much each AppendEntries carries and when) and, apart
//! from the protocol, [`reduction`] (what the model checker may drop).

use crate::bugs::Bug;
use crate::message::Message;
use crate::state_machine::StateMachine;
use crate::types::{ClientId, Entry, Log, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

mod client;
mod election;
pub mod flow;
pub mod lease;
mod read;
pub mod reduction;
mod replication;

pub use flow::{Progress, Replication};
pub use lease::{Lease, QUIET_AT_BOOT};
pub use read::{ForwardedRead, PendingRead, ReadAnswer, ReadMode};

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
    /// With [`Replication::leases`], a leader's lease: set when a
    /// round of AppendEntries starts, it lasts the minimum election timeout
    /// divided by the clock-drift bound, and the lease ends when it fires
    /// (Raft thesis §6.4.1; see [`lease`]).
    Lease,
    /// With [`Replication::leases`], a follower's minimum election
    /// timeout since it last heard from its leader: until it fires, the
    /// follower takes no message of a later term but an AppendEntries
    /// (Raft thesis §4.2.3; see [`lease`]).
    Quiet,
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

/// When a leader answers a write: the points of the seed article's
/// consistency levels (一貫性レベル) at which the leader may acknowledge it.
/// [`Ack::Applied`] is the paper's (Raft §8) and the default. An earlier
/// point answers sooner but not with the command's result
/// ([`ClientReply::Accepted`]); whether the write then survives a change
/// of leader is what the model checker decides for each level.
///
/// The levels that count followers' applied entries (a quorum, or every
/// server, applied it) need what Figure 2's messages do not say: a
/// follower's applied index, which its AppendEntriesResponse carries with
/// [`Replication::report_applied`]. Without that setting such a write is
/// never answered.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Ack {
    /// Level 1: the entry is durable in the leader's own log.
    Stored,
    /// Level 2: the entry is committed (a majority stores it, Raft §5.3).
    Committed,
    /// Level 3: every server of the cluster stores the entry.
    Replicated,
    /// Level 4: the leader applied the entry; the reply carries the result.
    #[default]
    Applied,
    /// Level 5: a majority of the servers applied the entry (the leader
    /// among them); the reply carries the result.
    QuorumApplied,
    /// Level 6: every server of the cluster applied the entry; the reply
    /// carries the result.
    AllApplied,
}

impl Ack {
    /// Every level, in order.
    pub const ALL: [Ack; 6] = [
        Ack::Stored,
        Ack::Committed,
        Ack::Replicated,
        Ack::Applied,
        Ack::QuorumApplied,
        Ack::AllApplied,
    ];

    /// The level's name, as `--ack` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Ack::Stored => "stored",
            Ack::Committed => "committed",
            Ack::Replicated => "replicated",
            Ack::Applied => "applied",
            Ack::QuorumApplied => "quorum-applied",
            Ack::AllApplied => "all-applied",
        }
    }

    /// The level named `name` ([`Ack::name`]).
    pub fn parse(name: &str) -> Option<Ack> {
        Ack::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether this is the default, [`Ack::Applied`].
    pub fn is_applied(&self) -> bool {
        *self == Ack::Applied
    }

    /// Whether the level counts followers' applied entries (levels 5 and
    /// 6): the leader holds the answer past its own apply.
    pub fn counts_applied(self) -> bool {
        matches!(self, Ack::QuorumApplied | Ack::AllApplied)
    }
}

/// Parses a level's name ([`Ack::name`]); the error lists the names.
impl std::str::FromStr for Ack {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Ack::parse(name).ok_or_else(|| unknown_name("level", name, Ack::ALL.map(Ack::name)))
    }
}

/// The error of a name that is none of `names`.
pub(crate) fn unknown_name(
    what: &str,
    name: &str,
    names: impl IntoIterator<Item = &'static str>,
) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    format!(
        "unknown {what} '{name}' (expected one of: {})",
        names.join(", ")
    )
}

/// A client's answer for one request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ClientReply<R> {
    /// The command was committed and applied; this is what it returned.
    Ok(R),
    /// The write reached the point its [`Ack`] names, before it was
    /// applied: it is at `index` of the log of the leader of `term`, and its
    /// result is not known yet.
    Accepted {
        /// Where the leader appended it.
        index: LogIndex,
        /// The term of the leader that answered.
        term: Term,
    },
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
        /// When the leader answers ([`Ack::Applied`] unless the client asks
        /// for an earlier point; a trace leaves the default out).
        #[serde(default, skip_serializing_if = "Ack::is_applied")]
        ack: Ack,
    },
    /// A client reads: `command` is a read ([`StateMachine::read`]),
    /// served as `mode` says (see [`ReadMode`]). A command that writes goes
    /// through the log whatever the mode.
    ClientRead {
        /// The client session.
        client_id: ClientId,
        /// The client's request number.
        request_no: u64,
        /// The read.
        command: C,
        /// How it is served.
        mode: ReadMode,
    },
    /// The election timer fired.
    ElectionTimeout,
    /// The heartbeat timer fired.
    HeartbeatTimeout,
    /// The lease timer fired ([`Timer::Lease`]).
    LeaseTimeout,
    /// The quiet timer fired ([`Timer::Quiet`]).
    QuietTimeout,
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
            Timer::Lease => Input::LeaseTimeout,
            Timer::Quiet => Input::QuietTimeout,
        }
    }

    /// A short name: the message's name as in the paper, or the input's
    /// (`ClientRequest`, `ElectionTimeout`, `HeartbeatTimeout`).
    pub fn name(&self) -> &'static str {
        match self {
            Input::Message { message, .. } => message.name(),
            Input::ClientRequest { .. } => "ClientRequest",
            Input::ClientRead { .. } => "ClientRead",
            Input::ElectionTimeout => "ElectionTimeout",
            Input::HeartbeatTimeout => "HeartbeatTimeout",
            Input::LeaseTimeout => "LeaseTimeout",
            Input::QuietTimeout => "QuietTimeout",
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
    /// Leader only: the writes it answers before applying them, by their
    /// index: the client, its request number and the [`Ack`] asked for.
    /// Empty unless a client asked for an earlier point than
    /// [`Ack::Applied`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending_acks: BTreeMap<LogIndex, (ClientId, u64, Ack)>,
    /// Leader with [`Replication::report_applied`] only: the highest
    /// applied index each peer has reported in this term
    /// ([`AppendEntriesResponse::applied`]), for [`Ack::QuorumApplied`] and
    /// [`Ack::AllApplied`].
    ///
    /// [`AppendEntriesResponse::applied`]: crate::AppendEntriesResponse::applied
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied_index: BTreeMap<NodeId, LogIndex>,
    /// Leader only: the number of its latest round of AppendEntries for
    /// ReadIndex reads in this term (0: none yet); every AppendEntries it
    /// sends carries it ([`ReadMode::ReadIndex`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub read_round: u64,
    /// Leader only: for each peer, the latest round it has answered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub read_acks: BTreeMap<NodeId, u64>,
    /// Leader only: the ReadIndex reads it has not answered yet, in the
    /// order they came.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_reads: Vec<PendingRead<S::Command>>,
    /// Follower only: its [`ReadMode::FollowerReadIndex`] reads, waiting
    /// for the leader's read index or for their apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwarded_reads: Vec<ForwardedRead<S::Command>>,
    /// Leader with [`Replication::leases`] only: its lease, while its
    /// [`Timer::Lease`] runs ([`ReadMode::Lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Leader with [`Replication::check_quorum`] only: the peers that have
    /// answered an AppendEntries of its term since its last check that a
    /// majority is in touch (CheckQuorum).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub recent_active: BTreeSet<NodeId>,
    /// Follower with [`Replication::leases`] only, while its
    /// [`Timer::Quiet`] runs: the latest read round of an AppendEntries it
    /// accepted from its leader ([`QUIET_AT_BOOT`] after a restart). While
    /// set, it takes no message of a later term but an AppendEntries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
                pending_acks: BTreeMap::new(),
                applied_index: BTreeMap::new(),
                read_round: 0,
                read_acks: BTreeMap::new(),
                pending_reads: Vec::new(),
                forwarded_reads: Vec::new(),
                lease: None,
                recent_active: BTreeSet::new(),
                quiet: None,
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
                ack,
            } => self.handle_client_request(client_id, request_no, command, ack, &mut fx),
            Input::ClientRead {
                client_id,
                request_no,
                command,
                mode,
            } => self.handle_client_read(client_id, request_no, command, mode, &mut fx),
            Input::ElectionTimeout => self.handle_election_timeout(&mut fx),
            Input::HeartbeatTimeout => self.handle_heartbeat_timeout(&mut fx),
            Input::LeaseTimeout => self.handle_lease_timeout(),
            Input::QuietTimeout => self.volatile.quiet = None,
            Input::Synced { term, index } => self.handle_synced(term, index, &mut fx),
        }
        if !self.volatile.pending_acks.is_empty() {
            self.answer_early_acks(&mut fx);
        }
        if !self.volatile.pending_reads.is_empty() || self.lease_unconfirmed() {
            self.serve_reads(&mut fx);
        }
        if !self.volatile.forwarded_reads.is_empty() {
            self.serve_forwarded_reads(&mut fx);
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

    // ---- Terms and roles (election.rs: candidates and leaders) ------------

    /// Fig. 2 (Rules for Servers, all servers): "If RPC request or response
    /// contains term T > currentTerm: set currentTerm = T, convert to
    /// follower". A new term starts without a vote and without a known leader.
    fn become_follower(&mut self, term: Term, fx: &mut Effects<S::Command, S::Output>) {
        if term > self.persistent.current_term {
            self.persistent.current_term = term;
            self.persistent.voted_for = None;
            self.volatile.leader_hint = None;
            self.volatile.quiet = None;
            fx.hard_state_dirty = true;
            self.give_up_forwarded_reads(fx);
        }
        if self.volatile.role == Role::Leader {
            fx.rest.push(Output::CancelTimer(Timer::Heartbeat));
            if self.volatile.lease.take().is_some() {
                fx.rest.push(Output::CancelTimer(Timer::Lease));
            }
            fx.rest.push(Output::SetTimer(Timer::Election));
        }
        self.volatile.role = Role::Follower;
        self.volatile.votes_granted.clear();
        self.volatile.next_index.clear();
        self.volatile.match_index.clear();
        self.volatile.progress.clear();
        self.volatile.durable_index = None;
        self.volatile.pending_acks.clear();
        self.volatile.applied_index.clear();
        self.volatile.read_round = 0;
        self.volatile.read_acks.clear();
        self.volatile.pending_reads.clear();
        self.volatile.recent_active.clear();
    }

    // ---- Messages (election.rs: RequestVote; replication.rs: AppendEntries;
    // client.rs: client requests and the apply loop) -----------------------

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
            Message::AppendEntries(_) | Message::ReadIndex(_) | Message::ReadIndexResponse(_) => {
                false
            }
        };
        if message.term() > self.persistent.current_term && self.stays_quiet(&message) {
            return;
        }
        if message.term() > self.persistent.current_term && !seeded_skip {
            self.become_follower(message.term(), fx);
        }
        match message {
            Message::RequestVote(m) => self.handle_request_vote(from, m, fx),
            Message::RequestVoteResponse(m) => self.handle_request_vote_response(from, m, fx),
            Message::AppendEntries(m) => self.handle_append_entries(from, m, fx),
            Message::AppendEntriesResponse(m) => self.handle_append_entries_response(from, m, fx),
            Message::ReadIndex(m) => self.handle_read_index_request(from, m, fx),
            Message::ReadIndexResponse(m) => self.handle_read_index_response(m, fx),
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
                pending_acks: v
                    .pending_acks
                    .iter()
                    .map(|(&i, &(c, n, ack))| (i, (clients(c), n, ack)))
                    .collect(),
                applied_index: v
                    .applied_index
                    .iter()
                    .map(|(&n, &i)| (nodes(n), i))
                    .collect(),
                read_round: v.read_round,
                read_acks: v.read_acks.iter().map(|(&n, &r)| (nodes(n), r)).collect(),
                lease: v.lease,
                recent_active: v.recent_active.iter().map(|&n| nodes(n)).collect(),
                quiet: v.quiet,
                pending_reads: v
                    .pending_reads
                    .iter()
                    .map(|r| PendingRead {
                        client_id: clients(r.client_id),
                        answer: match &r.answer {
                            ReadAnswer::Index(f) => ReadAnswer::Index(nodes(*f)),
                            value => value.clone(),
                        },
                        ..r.clone()
                    })
                    .collect(),
                forwarded_reads: v
                    .forwarded_reads
                    .iter()
                    .map(|r| ForwardedRead {
                        client_id: clients(r.client_id),
                        ..r.clone()
                    })
                    .collect(),
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
