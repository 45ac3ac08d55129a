//! Leader election (Raft §5.2): a follower's timeout starts an election,
//! RequestVote asks for votes under the election restriction (§5.4.1), and a
//! candidate that wins a majority becomes leader.

use super::{Effects, Occasion, Output, Progress, Role, Server, Timer};
use crate::bugs::Bug;
use crate::message::{Message, RequestVote, RequestVoteResponse};
use crate::state_machine::StateMachine;
use crate::types::{LogIndex, NodeId, Term};

impl<S: StateMachine> Server<S> {
    /// Fig. 2 (Candidates): on conversion to candidate, increment
    /// `current_term`, vote for self, reset the election timer, send
    /// RequestVote to all other servers (Raft §5.2).
    pub(super) fn become_candidate(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        self.persistent.current_term = self.persistent.current_term.next();
        self.persistent.voted_for = Some(self.id);
        fx.hard_state_dirty = true;
        self.volatile.role = Role::Candidate;
        self.volatile.leader_hint = None;
        self.volatile.quiet = None;
        self.give_up_forwarded_reads(fx);
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
    pub(super) fn become_leader(&mut self, fx: &mut Effects<S::Command, S::Output>) {
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
        // With CheckQuorum the election timer times the checks.
        if self.check_quorum() {
            self.volatile.recent_active.clear();
            fx.rest.push(Output::SetTimer(Timer::Election));
        } else {
            fx.rest.push(Output::CancelTimer(Timer::Election));
        }
        fx.rest.push(Output::SetTimer(Timer::Heartbeat));
        if self.leases() {
            // The election's AppendEntries are the term's first round: the
            // lease starts with them.
            self.volatile.read_round = 1;
            self.lease_round_starts(1, fx);
        }
        self.replicate(Occasion::Election, fx);
        self.advance_commit_index(fx);
    }

    /// Fig. 2 (RequestVote RPC, receiver implementation):
    /// 1. reply false if `term < current_term` (Raft §5.1);
    /// 2. if `voted_for` is null or `candidate_id`, and the candidate's log is
    ///    at least as up-to-date as the receiver's log, grant the vote
    ///    (Raft §5.2, §5.4). A granted vote resets the election timer
    ///    (Fig. 2, Followers) and is persisted before the reply leaves.
    pub(super) fn handle_request_vote(
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
    pub(super) fn candidate_log_is_up_to_date(
        &self,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) -> bool {
        (last_log_term, last_log_index) >= self.persistent.log.up_to_date()
    }

    /// Fig. 2 (Candidates): "If votes received from majority of servers:
    /// become leader". A response of an earlier term is stale and ignored
    /// (Raft §5.1: stale messages are discarded).
    pub(super) fn handle_request_vote_response(
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

    /// Fig. 2 (Followers, Candidates): "If election timeout elapses without
    /// receiving AppendEntries RPC from current leader or granting vote to
    /// candidate: convert to candidate", and a candidate whose election times
    /// out starts a new one. A leader has no election timer, but with
    /// CheckQuorum, where it times the leader's checks
    /// ([`super::lease`]).
    pub(super) fn handle_election_timeout(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        if self.volatile.role == Role::Leader {
            if self.check_quorum() {
                self.check_quorum_timeout(fx);
            }
            return;
        }
        self.become_candidate(fx);
    }
}
