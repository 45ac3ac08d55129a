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
//! - [`ReadMode::FollowerReadIndex`]: the follower asked serves the read
//!   from its own state machine, at a read index it gets from its leader
//!   (thesis §6.4): it sends [`ReadIndexRequest`]; the leader takes the
//!   request as a ReadIndex read and, once its round is confirmed and it
//!   has the read index, answers with [`ReadIndexResponse`] instead of
//!   reading its own state machine; the follower answers the client once
//!   it has applied that index ([`ForwardedRead`]). A leader asked serves
//!   the read as a ReadIndex read; a follower that knows no leader, or
//!   whose leader turns out not to lead, redirects the client; a change of
//!   term gives up the reads whose index has not come (their leader, if
//!   it stepped down, forgot them).
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
use crate::message::{Message, ReadIndexRequest, ReadIndexResponse};
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
    /// By the follower asked, from its own state machine once it has
    /// applied the read index its leader gave it (Raft thesis §6.4).
    FollowerReadIndex,
}

impl ReadMode {
    /// Every mode, in order.
    pub const ALL: [ReadMode; 5] = [
        ReadMode::Log,
        ReadMode::ReadIndex,
        ReadMode::Lease,
        ReadMode::Follower,
        ReadMode::FollowerReadIndex,
    ];

    /// The mode's name, as `--read` takes it.
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Log => "log",
            ReadMode::ReadIndex => "read-index",
            ReadMode::Lease => "lease",
            ReadMode::Follower => "follower",
            ReadMode::FollowerReadIndex => "follower-read-index",
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
    /// What the leader answers once the read can be served.
    pub answer: ReadAnswer<C>,
    /// The round of AppendEntries that must be confirmed first: one
    /// started after the read arrived.
    pub round: u64,
    /// The read index, once the leader has committed an entry of its term
    /// (`None` until then).
    pub index: Option<LogIndex>,
}

/// What a leader does with a [`PendingRead`] it can serve.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReadAnswer<C> {
    /// A client's own read: once the leader has applied the read index, it
    /// answers the client with this command's result on its state machine.
    Value(C),
    /// A follower's request ([`ReadMode::FollowerReadIndex`]): the leader
    /// sends this follower the read index, which the follower applies
    /// before it answers its client.
    Index(NodeId),
}

/// A [`ReadMode::FollowerReadIndex`] read a follower holds: until its
/// leader sends the read index, then until it has applied that index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ForwardedRead<C> {
    /// The client.
    pub client_id: ClientId,
    /// The client's request number.
    pub request_no: u64,
    /// The read.
    pub command: C,
    /// The read index the leader sent (`None` until it comes).
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
        if mode == ReadMode::FollowerReadIndex && self.volatile.role != Role::Leader {
            return self.forward_read(client_id, request_no, command, fx);
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
            answer: ReadAnswer::Value(command),
            round,
            index,
        });
    }

    /// A follower asks the leader it knows for a read index; it redirects
    /// the client if it knows none (or is a candidate). A retry asks again.
    fn forward_read(
        &mut self,
        client_id: ClientId,
        request_no: u64,
        command: S::Command,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let Some(leader) = self
            .volatile
            .leader_hint
            .filter(|_| self.volatile.role == Role::Follower)
        else {
            return self.redirect(client_id, request_no, fx);
        };
        let v = &mut self.volatile;
        let waiting = v
            .forwarded_reads
            .iter()
            .find(|r| r.client_id == client_id && r.request_no == request_no);
        match waiting {
            Some(r) if r.index.is_some() => return,
            Some(_) => {}
            None => v.forwarded_reads.push(ForwardedRead {
                client_id,
                request_no,
                command,
                index: None,
            }),
        }
        fx.rest.push(Output::Send {
            to: leader,
            message: Message::ReadIndex(ReadIndexRequest {
                term: self.persistent.current_term,
                client_id,
                request_no,
            }),
        });
    }

    /// A follower's request for a read index: the leader holds it as a
    /// ReadIndex read answered to the follower ([`Server::serve_reads`]);
    /// a server that does not lead says so at once.
    pub(super) fn handle_read_index_request(
        &mut self,
        from: NodeId,
        m: ReadIndexRequest,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        if self.volatile.role != Role::Leader {
            fx.rest.push(Output::Send {
                to: from,
                message: read_index_response(
                    self.persistent.current_term,
                    m.client_id,
                    m.request_no,
                    None,
                ),
            });
            return;
        }
        let v = &self.volatile;
        // A request delivered again while its first copy waits.
        if v.pending_reads.iter().any(|r| {
            r.answer == ReadAnswer::Index(from)
                && r.client_id == m.client_id
                && r.request_no == m.request_no
        }) {
            return;
        }
        let index = self.term_committed().then_some(v.commit_index);
        self.volatile.pending_reads.push(PendingRead {
            client_id: m.client_id,
            request_no: m.request_no,
            answer: ReadAnswer::Index(from),
            round: self.volatile.read_round + 1,
            index,
        });
    }

    /// The leader's answer to a forwarded read: the follower takes the
    /// read index, or, if the server asked does not lead, redirects the
    /// client. An answer for no read waiting for one changes nothing.
    pub(super) fn handle_read_index_response(
        &mut self,
        m: ReadIndexResponse,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let v = &mut self.volatile;
        let Some(at) = v.forwarded_reads.iter().position(|r| {
            r.client_id == m.client_id && r.request_no == m.request_no && r.index.is_none()
        }) else {
            return;
        };
        match m.index {
            Some(index) => v.forwarded_reads[at].index = Some(index),
            None => {
                let r = v.forwarded_reads.remove(at);
                self.redirect(r.client_id, r.request_no, fx);
            }
        }
    }

    /// The forwarded reads whose index this server has applied are
    /// answered from its state machine (at once under
    /// [`Bug::FollowerReadBeforeApply`]); called at the end of every step
    /// of a server holding forwarded reads.
    pub(super) fn serve_forwarded_reads(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        let applied = self.volatile.last_applied;
        let early = self.has_bug(Bug::FollowerReadBeforeApply);
        let v = &mut self.volatile;
        let mut waiting = Vec::with_capacity(v.forwarded_reads.len());
        for read in std::mem::take(&mut v.forwarded_reads) {
            let ready = read.index.is_some_and(|i| i <= applied || early);
            match ready.then(|| v.state_machine.read(&read.command)).flatten() {
                Some(value) => fx.rest.push(Output::ClientReply {
                    client_id: read.client_id,
                    request_no: read.request_no,
                    reply: ClientReply::Ok(value),
                }),
                None => waiting.push(read),
            }
        }
        v.forwarded_reads = waiting;
    }

    /// The term changes: the forwarded reads still waiting for their index
    /// are given up (their clients redirected), since the leader asked may
    /// have stepped down and forgotten them.
    pub(super) fn give_up_forwarded_reads(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        if self
            .volatile
            .forwarded_reads
            .iter()
            .all(|r| r.index.is_some())
        {
            return;
        }
        let (waiting, given_up) = std::mem::take(&mut self.volatile.forwarded_reads)
            .into_iter()
            .partition(|r| r.index.is_some());
        self.volatile.forwarded_reads = waiting;
        for r in given_up {
            self.redirect(r.client_id, r.request_no, fx);
        }
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
        let term = self.persistent.current_term;
        let v = &mut self.volatile;
        let mut waiting = Vec::with_capacity(v.pending_reads.len());
        for read in std::mem::take(&mut v.pending_reads) {
            let (true, Some(index)) = (read.round <= confirmed, read.index) else {
                waiting.push(read);
                continue;
            };
            match &read.answer {
                // The follower applies the index itself.
                ReadAnswer::Index(follower) => fx.rest.push(Output::Send {
                    to: *follower,
                    message: read_index_response(
                        term,
                        read.client_id,
                        read.request_no,
                        Some(index),
                    ),
                }),
                ReadAnswer::Value(command) => {
                    match (index <= applied)
                        .then(|| v.state_machine.read(command))
                        .flatten()
                    {
                        Some(value) => fx.rest.push(Output::ClientReply {
                            client_id: read.client_id,
                            request_no: read.request_no,
                            reply: ClientReply::Ok(value),
                        }),
                        None => waiting.push(read),
                    }
                }
            }
        }
        if waiting.is_empty() && !keep_acks {
            // What followers answered matters to no later read.
            v.read_acks.clear();
        }
        v.pending_reads = waiting;
    }
}

/// The answer of a server at `term` to a follower's [`ReadIndexRequest`]
/// for `client_id`'s read `request_no`: the read index, or `None` from a
/// server that does not lead.
fn read_index_response<C>(
    term: crate::types::Term,
    client_id: ClientId,
    request_no: u64,
    index: Option<LogIndex>,
) -> Message<C> {
    Message::ReadIndexResponse(ReadIndexResponse {
        term,
        client_id,
        request_no,
        index,
    })
}
