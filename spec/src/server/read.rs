//! Reads (Raft thesis §6.4; Raft §8): the ways a server may answer a
//! command that only reads ([`StateMachine::read`]).
//!
//! - [`ReadMode::Log`]: the read is a command like any other, appended,
//!   committed and applied, and answered once applied (Raft §8). The
//!   paper's way and the default.
//! - [`ReadMode::ReadIndex`]: the leader answers without writing the log
//!   (thesis §6.4): (1) once it has committed an entry of its own term, it
//!   takes its commit index as the read's *read index*; (2) it confirms it
//!   still leads with a round of AppendEntries that a majority answers;
//!   (3) once it has applied the read index, it answers from its state
//!   machine. Reads that arrive while a round is out wait for the next one,
//!   which the leader starts as soon as no read waits for the one out (it
//!   is confirmed, or its reads were answered): one round serves every read
//!   that came in meanwhile.
//! - [`ReadMode::Lease`]: as ReadIndex, but a leader that holds a lease
//!   (thesis §6.4.1, [`super::lease`]) answers without waiting for a round:
//!   at once if it has applied its read index. Without
//!   [`Replication::leases`](super::Replication::leases) there
//!   is no lease, and the read is a ReadIndex read.
//! - [`ReadMode::Follower`]: the server the client asks answers from its
//!   own state machine at once, whatever its role: the seed article's
//!   follower reads, for spreading load. Not linearizable: the server may
//!   be behind, or a leader deposed without knowing.
//!
//! A round is numbered per term ([`VolatileState::read_round`]): every
//! AppendEntries a leader sends while reads wait carries the number of its
//! latest round (0 otherwise), and
//! every answer echoes the number of the request it answers, so the leader
//! learns which round each follower has seen (`read_acks`). A follower's
//! answer of the leader's term to a round started after the read arrived
//! shows that the follower had not moved to a later term when it answered,
//! so no later leader could have committed anything it had not seen
//! (Leader Completeness, §5.4): the leader's commit index at the read's
//! arrival covers every write answered before.
//!
//! Decision: a new leader does not append a no-op entry (Figure 2 has none,
//! and the model's state space would grow about tenfold: docs/model.md). A
//! ReadIndex read that reaches a leader which has not committed an entry of
//! its own term waits for one: the next write commits it.
//!
//! [`VolatileState::read_round`]: super::VolatileState::read_round

use super::{ClientReply, Effects, Occasion, Output, Role, Server};
use crate::bugs::Bug;
use crate::state_machine::StateMachine;
use crate::types::{ClientId, LogIndex, NodeId};
use serde::{Deserialize, Serialize};

/// How a client asks for a read to be served (see the module docs).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// Through the log, as a write (Raft §8).
    #[default]
    Log,
    /// By the leader, at its read index once a majority confirmed it still
    /// leads (Raft thesis §6.4).
    ReadIndex,
    /// By the leader at its read index, at once while it holds a lease
    /// (Raft thesis §6.4.1).
    Lease,
    /// By the server asked, from its own state machine at once.
    Follower,
}

impl ReadMode {
    /// Every mode, in order.
    pub const ALL: [ReadMode; 4] = [
        ReadMode::Log,
        ReadMode::ReadIndex,
        ReadMode::Lease,
        ReadMode::Follower,
    ];

    /// The mode's name, as `--read` takes it.
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Log => "log",
            ReadMode::ReadIndex => "read-index",
            ReadMode::Lease => "lease",
            ReadMode::Follower => "follower",
        }
    }

    /// The mode named `name` ([`ReadMode::name`]).
    pub fn parse(name: &str) -> Option<ReadMode> {
        ReadMode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Parses a mode's name ([`ReadMode::name`]); the error lists the names.
impl std::str::FromStr for ReadMode {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        ReadMode::parse(name).ok_or_else(|| {
            super::unknown_name("read mode", name, ReadMode::ALL.map(ReadMode::name))
        })
    }
}

/// A ReadIndex read the leader holds until it can answer it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PendingRead<C> {
    /// The client.
    pub client_id: ClientId,
    /// The client's request number.
    pub request_no: u64,
    /// The read.
    pub command: C,
    /// The round of AppendEntries that must be confirmed first: one
    /// started after the read arrived.
    pub round: u64,
    /// The read index, once the leader has committed an entry of its term
    /// (`None` until then).
    pub index: Option<LogIndex>,
}

impl<S: StateMachine> Server<S> {
    /// A client's read of `command` in `mode` (see the module docs). A
    /// command that writes, and every read in [`ReadMode::Log`], is a
    /// client request.
    pub(super) fn handle_client_read(
        &mut self,
        client_id: ClientId,
        request_no: u64,
        command: S::Command,
        mode: ReadMode,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let read = self.volatile.state_machine.read(&command);
        let (Some(value), false) = (read, mode == ReadMode::Log) else {
            return self.handle_client_request(
                client_id,
                request_no,
                command,
                Default::default(),
                fx,
            );
        };
        if mode == ReadMode::Follower {
            fx.rest.push(Output::ClientReply {
                client_id,
                request_no,
                reply: ClientReply::Ok(value),
            });
            return;
        }
        if self.volatile.role != Role::Leader {
            return self.redirect(client_id, request_no, fx);
        }
        let v = &mut self.volatile;
        // A retry of a read already waiting changes nothing.
        if v.pending_reads
            .iter()
            .any(|r| r.client_id == client_id && r.request_no == request_no)
        {
            return;
        }
        let index = self.term_committed().then_some(self.volatile.commit_index);
        // Under a lease no round is needed: round 0 is confirmed already.
        let round = if mode == ReadMode::Lease && self.lease_held() {
            0
        } else {
            self.volatile.read_round + 1
        };
        self.volatile.pending_reads.push(PendingRead {
            client_id,
            request_no,
            command,
            round,
            index,
        });
    }

    /// Whether the leader has committed an entry of its current term, so
    /// that its commit index covers every entry committed before it was
    /// elected (thesis §6.4, step 1). Under
    /// [`Bug::ReadIndexBeforeTermCommit`] and [`Bug::LocalLeaderRead`] it
    /// does not wait.
    fn term_committed(&self) -> bool {
        self.has_bug(Bug::ReadIndexBeforeTermCommit)
            || self.has_bug(Bug::LocalLeaderRead)
            || self.persistent.log.term_at(self.volatile.commit_index)
                == Some(self.persistent.current_term)
    }

    /// The round an AppendEntries carries: the latest while reads wait or
    /// a lease timer runs, 0 (none) otherwise, since an answer to it could
    /// confirm only reads that have arrived already (a later read waits for
    /// a later round), and tell a follower nothing about a lease.
    pub(super) fn current_read_round(&self) -> u64 {
        if self.volatile.pending_reads.is_empty() && self.volatile.lease.is_none() {
            0
        } else {
            self.volatile.read_round
        }
    }

    /// Whether an answer to a request of `round` from `from` would confirm
    /// anything: some read, or a lease not held yet, waits for a round at
    /// most `round`, and `from` has not answered one that late yet. It
    /// stays false once false while the server leads its term: `read_acks`
    /// only grows while reads or a lease wait, a read that arrives later
    /// waits for a later round (or, under a lease, for none), and a lease
    /// that starts later starts at a later round.
    pub fn read_ack_matters(&self, from: NodeId, round: u64) -> bool {
        let acked = self.volatile.read_acks.get(&from).copied().unwrap_or(0);
        let lease = self
            .volatile
            .lease
            .is_some_and(|l| !l.held && l.round <= round);
        // A lease read taken under the lease (round 0) waits for no answer.
        let read = |r: &PendingRead<S::Command>| r.round != 0 && r.round <= round;
        round > acked && (lease || self.volatile.pending_reads.iter().any(read))
    }

    /// A leader learns that `from` has answered an AppendEntries of `round`.
    pub(super) fn note_read_ack(&mut self, from: NodeId, round: u64) {
        if self.read_ack_matters(from, round) {
            self.volatile.read_acks.insert(from, round);
        }
    }

    /// The latest round a majority has answered (the leader counts itself
    /// for every round it started).
    fn confirmed_round(&self) -> u64 {
        let own = self.volatile.read_round;
        if self.has_bug(Bug::LocalLeaderRead) {
            return u64::MAX;
        }
        let mut rounds: Vec<u64> = self
            .peers
            .iter()
            .map(|p| self.volatile.read_acks.get(p).copied().unwrap_or(0))
            .collect();
        rounds.push(own);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        // The largest r that at least a majority has reached: the
        // majority-th largest.
        let majority = (1..=rounds.len())
            .find(|&k| self.is_majority(k))
            .unwrap_or(rounds.len());
        rounds[majority - 1]
    }

    /// Starts the next round if reads wait for it and no round is out, then
    /// answers the ReadIndex reads that can be answered; called at the end
    /// of every step of a leader with reads pending or a lease to confirm.
    pub(super) fn serve_reads(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        if self.volatile.role != Role::Leader {
            return;
        }
        if self.term_committed() {
            let commit = self.volatile.commit_index;
            for read in &mut self.volatile.pending_reads {
                read.index.get_or_insert(commit);
            }
        }
        // The next round starts once no read waits for the one out.
        let round = self.volatile.read_round;
        let v = &self.volatile;
        let waits = v.pending_reads.iter().any(|r| r.round > round);
        let out = v.pending_reads.iter().any(|r| r.round <= round);
        if waits && (!out || self.confirmed_round() >= round) {
            self.volatile.read_round += 1;
            self.lease_round_starts(self.volatile.read_round, fx);
            self.replicate(Occasion::Heartbeat, fx);
        }
        let confirmed = self.confirmed_round();
        self.lease_confirmed(confirmed);
        let applied = self.volatile.last_applied;
        let keep_acks = self.lease_unconfirmed();
        let v = &mut self.volatile;
        let mut waiting = Vec::with_capacity(v.pending_reads.len());
        for read in std::mem::take(&mut v.pending_reads) {
            let ready = read.round <= confirmed && read.index.is_some_and(|i| i <= applied);
            match ready.then(|| v.state_machine.read(&read.command)).flatten() {
                Some(value) => fx.rest.push(Output::ClientReply {
                    client_id: read.client_id,
                    request_no: read.request_no,
                    reply: ClientReply::Ok(value),
                }),
                None => waiting.push(read),
            }
        }
        if waiting.is_empty() && !keep_acks {
            // What followers answered matters to no later read.
            v.read_acks.clear();
        }
        v.pending_reads = waiting;
    }
}
