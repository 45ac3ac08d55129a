//! The model checker's reduction: which messages can no longer matter.
//!
//! On a duplicating network every message stays deliverable forever, so a
//! model that remembered every message ever sent would never close its
//! state space. These predicates say when delivering a message changes
//! nothing, now and in every later state: a response its recipient ignores
//! for good ([`ignores_forever`], [`Server::ignores_forever`]), a request it
//! refuses for good ([`refuses_forever`], answered by [`refusal`]), an
//! AppendEntries a follower has already absorbed ([`Server::absorbs`],
//! answered by [`acceptance`]). Each comes with the argument for why it
//! lasts, from Figure 2's rules and the safety properties; the model
//! (`raft-model`, model/src/model/dead.rs) decides from them which messages
//! to forget. Under a seeded bug ([`crate::bugs`]) the predicates take the
//! bug into account where it breaks their argument: each says which bugs
//! it tolerates.
//!
//! Nothing here is a rule a server runs: `Server::step` never calls these.

use super::replication::{accepted, rejection};
use super::Server;
use crate::bugs::Bug;
use crate::message::{AppendEntries, RequestVoteResponse};
use crate::{LogIndex, Message, NodeId, Role, StateMachine, Term};

impl<S: StateMachine> Server<S> {
    /// Whether this server, in its current state and in every later one,
    /// ignores `message` from `from` (delivering it changes nothing and sends
    /// nothing). Beyond what the term and role decide ([`ignores_forever`],
    /// and [`ignores_forever_with_bug`] for a server running a seeded bug),
    /// a live server knows what it has already taken into account:
    ///
    /// - a candidate has counted a granted vote from `from` of its term: the
    ///   set of votes only grows while it stays candidate of that term, and
    ///   it already checked that set for a majority;
    /// - a leader has `match_index[from] >= index` for a successful
    ///   AppendEntriesResponse of its term: `match_index` and `next_index`
    ///   only grow while it leads the term (`next_index > match_index`
    ///   always), and the commit index it would compute again depends only on
    ///   `match_index` and its append-only log;
    /// - a leader ignores a rejection at an index at most `match_index[from]`
    ///   (stale), and one whose back-off target is not below `next_index[from]`
    ///   stays so: `next_index[from]` can only grow past that index together
    ///   with `match_index[from]`.
    ///
    /// With a [`Replication::window`](crate::Replication::window)
    /// ([`crate::flow`]) an AppendEntriesResponse is dead once its index is
    /// below `match_index[from]`: a success there pops no batch from the
    /// window (every batch in it ends past `match_index`) and cannot move
    /// `next_index` (always above `match_index`, as in Figure 2's pacing), and
    /// a rejection there is stale, for a repair answers only a rejection at
    /// `next_index - 1 >= match_index`. One at `match_index` may still answer
    /// a probe, and one above it may still send the peer back to probe once
    /// the window has moved `next_index` past it.
    ///
    /// An AppendEntriesResponse reporting an applied index above the one the
    /// leader knows of the sender
    /// ([`crate::VolatileState::applied_index`], which only grows while it
    /// leads) still matters.
    ///
    /// With [`Bug::MatchIndexRegress`] `match_index` can fall back, so only
    /// the term and role decide.
    pub fn ignores_forever(&self, from: NodeId, message: &Message<S::Command>) -> bool {
        let term = self.persistent.current_term;
        let role = self.volatile.role;
        if ignores_forever_with_bug(term, Some(role), message, self.bug()) {
            return true;
        }
        match message {
            Message::RequestVoteResponse(r) => {
                self.bug() != Some(Bug::StaleVoteResponse)
                    && role == Role::Candidate
                    && r.term == term
                    && self.volatile.votes_granted.contains(&from)
            }
            Message::AppendEntriesResponse(r)
                if role == Role::Leader
                    && r.term == term
                    && self.bug() != Some(Bug::MatchIndexRegress) =>
            {
                // It may still confirm a read ([`Server::read_ack_matters`]),
                // count for CheckQuorum, or raise the applied index known of
                // the sender (which only grows while the server leads).
                if self.read_ack_matters(from, r.read_round)
                    || self.activity_matters()
                    || r.applied.is_some_and(|a| {
                        a > self
                            .volatile
                            .applied_index
                            .get(&from)
                            .copied()
                            .unwrap_or_default()
                    })
                {
                    return false;
                }
                let matched = self.volatile.match_index.get(&from).copied();
                let next = self.volatile.next_index.get(&from).copied();
                if self.replication.window.is_some() {
                    return matched.is_some_and(|m| r.index < m);
                }
                match (matched, next) {
                    (Some(matched), _) if r.index <= matched => true,
                    (_, Some(next)) => !r.success && r.index.max(LogIndex(1)) >= next,
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// Whether this server has already absorbed `message`, an AppendEntries:
    /// delivering it changes nothing here, and its outputs are only the reset
    /// of the election timer and [`acceptance`] of the request. That is so
    /// when the server is a follower of the request's term that knows its
    /// `leader_id` as leader, holds an entry of the same term at
    /// `prev_log_index` and at each index the request carries (so nothing is
    /// appended or truncated), and has committed at least
    /// `min(leader_commit, prev_log_index + entries.len())` (Fig. 2,
    /// AppendEntries receiver rules 2 to 5).
    ///
    /// It stays so while the server stays a follower of that term and does
    /// not restart, as long as the safety properties hold: the term has one
    /// leader (Election Safety), whose later AppendEntries carry a log that
    /// only grew (Leader Append-Only) and, by Log Matching, agrees with this
    /// server's log up to the last entry of the request; so nothing truncates
    /// that prefix, `leader_hint` keeps naming that leader, and
    /// `commit_index` only grows. A restart loses `commit_index` and
    /// `leader_hint`, and in a later term the request is of an earlier one
    /// ([`only_refuses`]). The model checker uses this to forget
    /// AppendEntries that are absorbed for good. False for any other message,
    /// and under every seeded bug that changes these rules or the properties
    /// the argument rests on, that is every one but [`Bug::CommitWithoutMin`],
    /// whose commit rule it asks (`follower_commit`), and [`Bug::Figure8`],
    /// which changes only the leader's commit rule (it breaks Leader
    /// Completeness, on which the argument does not rest).
    pub fn absorbs(&self, message: &Message<S::Command>) -> bool {
        let v = &self.volatile;
        let p = &self.persistent;
        // With leases every AppendEntries restarts the quiet period; with
        // reported applies the answer carries the applied index, which
        // `acceptance` does not know.
        if v.role != Role::Follower
            || self.replication().leases
            || self.replication().report_applied
            || message.term() != p.current_term
            || !matches!(
                self.bug(),
                None | Some(Bug::CommitWithoutMin | Bug::Figure8)
            )
        {
            return false;
        }
        let Message::AppendEntries(m) = message else {
            return false;
        };
        v.leader_hint == Some(m.leader_id)
            && v.commit_index >= self.follower_commit(m.leader_commit, m.last_index())
            && p.log.term_at(m.prev_log_index) == Some(m.prev_log_term)
            && (m.prev_log_index.0..)
                .zip(&m.entries)
                .all(|(i, e)| p.log.term_at(LogIndex(i + 1)) == Some(e.term))
    }
}

/// Whether a server with `current_term` and `role` (`None`: crashed; it will
/// restart as a follower of its persisted term) ignores `message` now and
/// forever. Terms only grow, and a server is candidate or leader of a term at
/// most once, so:
///
/// - a response of an earlier term is stale and discarded (Raft §5.1);
/// - a RequestVoteResponse of the current term matters only to a candidate of
///   that term, and a server that is not one now never will be; a refused
///   vote of the current term changes nothing even for the candidate;
/// - an AppendEntriesResponse of the current term matters only to the leader
///   of that term, and a follower of that term never becomes its leader (a
///   candidate may: it can receive the rejection of an AppendEntries it sent
///   as leader of an earlier term, from a server that has since moved on).
///
/// Requests (RequestVote, AppendEntries) always get a reply, so they are never
/// ignored. The model checker uses this to forget dead messages, which does not
/// change what servers can do (see `raft-model`).
pub fn ignores_forever<C>(current_term: Term, role: Option<Role>, message: &Message<C>) -> bool {
    ignores_forever_with_bug(current_term, role, message, None)
}

/// Whether a server at `current_term` does nothing with `message` but
/// refuse it: a RequestVote or AppendEntries of an earlier term changes
/// nothing at the server and is answered with a refusal carrying
/// `current_term` (Fig. 2, rule 1 of both RPCs; Raft §5.1). No seeded bug
/// changes this.
pub fn only_refuses<C>(current_term: Term, message: &Message<C>) -> bool {
    match message {
        Message::RequestVote(m) => m.term < current_term,
        Message::AppendEntries(m) => m.term < current_term,
        // A leader serves a follower's ReadIndex whatever its term.
        Message::RequestVoteResponse(_)
        | Message::AppendEntriesResponse(_)
        | Message::ReadIndex(_)
        | Message::ReadIndexResponse(_) => false,
    }
}

/// Whether a server whose persistent state holds `current_term` and
/// `voted_for` refuses `message` now and in every later state: delivering it
/// changes nothing and the one output is [`refusal`] of the server's term at
/// the time. Beyond [`only_refuses`] (a request of an earlier term, refused
/// at every later term too), a RequestVote of the current term is refused
/// for good once the server has voted for another candidate in that term:
/// the vote is persistent and given at most once per term (Fig. 2,
/// RequestVote receiver rule 2), and when the term moves on the request is of
/// an earlier term. Two seeded bugs lose a vote ([`Bug::StepDownForgetsVote`]
/// clears it, [`Bug::VoteNotPersisted`] forgets it across a restart), so under
/// them only [`only_refuses`] decides.
pub fn refuses_forever<C>(
    current_term: Term,
    voted_for: Option<NodeId>,
    message: &Message<C>,
    bug: Option<Bug>,
) -> bool {
    if only_refuses(current_term, message) {
        return true;
    }
    match message {
        Message::RequestVote(m) => {
            !matches!(bug, Some(Bug::StepDownForgetsVote | Bug::VoteNotPersisted))
                && m.term == current_term
                && voted_for.is_some_and(|v| v != m.candidate_id)
        }
        _ => false,
    }
}

/// The answer of a server at `current_term` that refuses `message` (see
/// [`refuses_forever`]): a RequestVoteResponse not granting the vote, or an
/// AppendEntriesResponse failing at the request's `prev_log_index`, both of
/// `current_term`. `None` for a response, which gets no answer.
pub fn refusal<C>(current_term: Term, message: &Message<C>) -> Option<Message<C>> {
    match message {
        Message::RequestVote(_) => Some(Message::RequestVoteResponse(RequestVoteResponse {
            term: current_term,
            vote_granted: false,
        })),
        Message::AppendEntries(m) => Some(rejection(current_term, m.prev_log_index, m.read_round)),
        Message::RequestVoteResponse(_)
        | Message::AppendEntriesResponse(_)
        | Message::ReadIndex(_)
        | Message::ReadIndexResponse(_) => None,
    }
}

/// The answer of a follower that accepts `m`: success at the last index `m`
/// covers (`prev_log_index + entries.len()`), of `m.term` (Fig. 2,
/// AppendEntries receiver; see
/// [`AppendEntriesResponse::index`](crate::AppendEntriesResponse::index)).
pub fn acceptance<C>(m: &AppendEntries<C>) -> Message<C> {
    accepted(m.term, m.last_index(), m.read_round)
}

/// [`ignores_forever`] for a server running the seeded bug `bug` (`None`:
/// the correct rules). Only [`Bug::StaleVoteResponse`] changes which
/// messages matter: a granted vote of any earlier term may still be counted
/// by a later candidacy, so it is never dead. Every other bug leaves the
/// argument above intact (none lets a server act on a stale response or
/// become candidate or leader of a term it already holds).
pub fn ignores_forever_with_bug<C>(
    current_term: Term,
    role: Option<Role>,
    message: &Message<C>,
    bug: Option<Bug>,
) -> bool {
    if let (Some(Bug::StaleVoteResponse), Message::RequestVoteResponse(r)) = (bug, message) {
        return !r.vote_granted && r.term <= current_term;
    }
    match message {
        Message::RequestVoteResponse(r) => {
            r.term < current_term
                || (r.term == current_term && (!r.vote_granted || role != Some(Role::Candidate)))
        }
        Message::AppendEntriesResponse(r) => {
            r.term < current_term
                || (r.term == current_term && matches!(role, Some(Role::Follower) | None))
        }
        // A follower's read-index exchange is never dead: the reduction
        // does not reason about it.
        Message::RequestVote(_)
        | Message::AppendEntries(_)
        | Message::ReadIndex(_)
        | Message::ReadIndexResponse(_) => false,
    }
}

#[cfg(test)]
mod tests;
