//! Log replication (Raft §5.3): AppendEntries and its answers, the
//! consistency check, the leader's own writes (with the thesis's parallel
//! write, §10.2.1), heartbeats, and commitment by majority (§5.4.2). How
//! much each AppendEntries carries and when is [`super::flow`]'s.

use super::{Effects, Occasion, Output, Role, Server, Timer};
use crate::bugs::Bug;
use crate::message::{AppendEntries, AppendEntriesResponse, Message};
use crate::state_machine::StateMachine;
use crate::types::{Entry, LogIndex, NodeId, Payload, Term};

impl<S: StateMachine> Server<S> {
    /// A leader appends an entry of its term to its own log (Fig. 2,
    /// Leaders: "If command received from client: append entry to local
    /// log"); the step's persist writes it.
    pub(super) fn append_to_own_log(
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
    pub(super) fn handle_synced(
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
    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        m: AppendEntries<S::Command>,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let term = self.persistent.current_term;
        if m.term < term {
            fx.rest.push(Output::Send {
                to: from,
                message: rejection(term, m.prev_log_index, m.read_round),
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
        self.hear_leader(m.read_round, fx);

        if self.persistent.log.term_at(m.prev_log_index) != Some(m.prev_log_term) {
            let mut message = rejection(term, m.prev_log_index, m.read_round);
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
        let read_round = m.read_round;

        if m.leader_commit > self.volatile.commit_index {
            let new_commit = self.follower_commit(m.leader_commit, last_new_entry);
            if new_commit > self.volatile.commit_index {
                self.volatile.commit_index = new_commit;
                self.apply_committed(fx);
            }
        }
        let mut message = accepted(
            term,
            if self.has_bug(Bug::AckOwnLastIndex) {
                self.persistent.log.last_index()
            } else {
                last_new_entry
            },
            read_round,
        );
        if let Message::AppendEntriesResponse(r) = &mut message {
            r.applied = self
                .replication
                .report_applied
                .then_some(self.volatile.last_applied);
        }
        fx.rest.push(Output::Send { to: from, message });
    }

    /// Fig. 2, AppendEntries receiver rule 5: the commit index a follower
    /// may take from a leader, `min(leader_commit, index of last new entry)`
    /// (`leader_commit` alone under [`Bug::CommitWithoutMin`]).
    pub(super) fn follower_commit(
        &self,
        leader_commit: LogIndex,
        last_new_entry: LogIndex,
    ) -> LogIndex {
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
    pub(super) fn handle_append_entries_response(
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
        self.note_read_ack(from, m.read_round);
        self.note_active(from);
        if let Some(applied) = m.applied {
            if applied
                > self
                    .volatile
                    .applied_index
                    .get(&from)
                    .copied()
                    .unwrap_or_default()
            {
                self.volatile.applied_index.insert(from, applied);
            }
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

    /// Fig. 2 (Leaders): send AppendEntries to each server during idle periods
    /// to prevent election timeouts (Raft §5.2), carrying the entries from the
    /// follower's `next_index` on, or as [`Replication`] paces them.
    pub(super) fn handle_heartbeat_timeout(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        if self.volatile.role != Role::Leader {
            return;
        }
        fx.rest.push(Output::SetTimer(Timer::Heartbeat));
        self.replicate(Occasion::Heartbeat, fx);
    }

    /// AppendEntries to every peer on `occasion`: with a window, as the
    /// peer's [`Progress`] paces it ([`flow`]); without, Figure 2's pacing
    /// ([`Server::send`]): every message carries the entries from the peer's
    /// `next_index` on, but for heartbeats with
    /// [`Replication::empty_heartbeats`].
    pub(super) fn replicate(
        &mut self,
        occasion: Occasion,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
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

    pub(super) fn send_append_entries(
        &self,
        peer: NodeId,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        self.send(peer, true, fx);
    }

    /// AppendEntries to `peer` from its `next_index`: with the entries from
    /// there on (at most one batch, [`Replication`]), or none if
    /// `with_entries` is false (an empty heartbeat).
    pub(super) fn send(
        &self,
        peer: NodeId,
        with_entries: bool,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
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
    pub(super) fn advance_commit_index(&mut self, fx: &mut Effects<S::Command, S::Output>) {
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
                // A write waiting for followers' applies: they learn the
                // new commit index now, not at the next heartbeat.
                if self.awaits_applies(n) {
                    self.replicate(Occasion::Heartbeat, fx);
                }
                return;
            }
            n = n.prev();
        }
    }
}

/// An AppendEntries success of `term` up to `index`, answering a request
/// of `read_round`.
pub(super) fn accepted<C>(term: Term, index: LogIndex, read_round: u64) -> Message<C> {
    Message::AppendEntriesResponse(AppendEntriesResponse {
        term,
        success: true,
        index,
        last_log_index: None,
        read_round,
        applied: None,
    })
}

/// An AppendEntries rejection of `term` at `prev_log_index` (answering a
/// request of `read_round`): the answer to a
/// request of an earlier term and to one that fails the consistency check
/// (Fig. 2, AppendEntries receiver rules 1 and 2).
pub(super) fn rejection<C>(term: Term, prev_log_index: LogIndex, read_round: u64) -> Message<C> {
    Message::AppendEntriesResponse(AppendEntriesResponse {
        term,
        success: false,
        index: prev_log_index,
        last_log_index: None,
        read_round,
        applied: None,
    })
}
