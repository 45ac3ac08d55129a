//! The two RPCs of Figure 2 and their responses, and the follower's
//! request for its leader's read index (Raft thesis §6.4).

use crate::types::{ClientId, Entry, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// Invoked by candidates to gather votes (Fig. 2, RequestVote RPC).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestVote {
    /// Candidate's term.
    pub term: Term,
    /// Candidate requesting the vote.
    pub candidate_id: NodeId,
    /// Index of the candidate's last log entry (Raft §5.4).
    pub last_log_index: LogIndex,
    /// Term of the candidate's last log entry (Raft §5.4).
    pub last_log_term: Term,
}

/// Reply to [`RequestVote`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestVoteResponse {
    /// The voter's current term, for the candidate to update itself.
    pub term: Term,
    /// True means the candidate received the vote.
    pub vote_granted: bool,
}

/// Invoked by the leader to replicate log entries; also the heartbeat
/// (Fig. 2, AppendEntries RPC).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppendEntries<C> {
    /// Leader's term.
    pub term: Term,
    /// So the follower can redirect clients.
    pub leader_id: NodeId,
    /// Index of the log entry immediately preceding the new ones.
    pub prev_log_index: LogIndex,
    /// Term of the entry at `prev_log_index`.
    pub prev_log_term: Term,
    /// Entries to store (empty for a heartbeat).
    pub entries: Vec<Entry<C>>,
    /// Leader's `commit_index`.
    pub leader_commit: LogIndex,
    /// The leader's latest round for ReadIndex reads (Raft thesis §6.4;
    /// [`crate::ReadMode::ReadIndex`]), 0 if none: a deviation from the
    /// paper's message, which only reads use.
    #[serde(default)]
    pub read_round: u64,
}

impl<C> AppendEntries<C> {
    /// The index of the last entry the request covers: `prev_log_index +
    /// entries.len()` (`prev_log_index` for a heartbeat).
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.prev_log_index.0 + self.entries.len() as u64)
    }
}

/// Reply to [`AppendEntries`].
///
/// Deviation: the paper's response carries only `term` and `success`. Over a
/// network that reorders and duplicates messages the leader cannot tell which
/// request a response answers, so, like the TLA+ specification's
/// `mmatchIndex`, the response says which prefix it is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    /// The follower's current term, for the leader to update itself.
    pub term: Term,
    /// True if the follower held an entry matching `prev_log_index` and
    /// `prev_log_term` (and now holds the request's entries).
    pub success: bool,
    /// On success: the index of the last entry the request covered
    /// (`prev_log_index + entries.len()`), which now matches the leader's log.
    /// On failure: the `prev_log_index` that failed the consistency check.
    pub index: LogIndex,
    /// On a failed consistency check, with a [`Replication::window`]: the
    /// follower's last log index, from which the leader probes again (as
    /// etcd-io/raft's `RejectHint`). `None` otherwise. Another deviation
    /// from the paper's response, for flow control only.
    ///
    /// [`Replication::window`]: crate::Replication::window
    #[serde(default)]
    pub last_log_index: Option<LogIndex>,
    /// The `read_round` of the AppendEntries this answers, which tells the
    /// leader which round of reads the follower has seen.
    #[serde(default)]
    pub read_round: u64,
    /// A success's follower's last applied index after the request, with
    /// [`Replication::report_applied`]; `None` otherwise. For the
    /// acknowledgement levels that count followers' applies
    /// ([`crate::Ack::QuorumApplied`], [`crate::Ack::AllApplied`]).
    ///
    /// [`Replication::report_applied`]: crate::Replication::report_applied
    #[serde(default)]
    pub applied: Option<LogIndex>,
}

// The two messages hash their fields in order, as a derived `Hash` does,
// and the read round (and applied index) only when there is one: messages
// without reads hash as they do without the field, so the model checker's
// order of exploration (and with it what a depth-first search with symmetry keeps)
// does not depend on reads existing.
impl<C: Hash> Hash for AppendEntries<C> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.term.hash(state);
        self.leader_id.hash(state);
        self.prev_log_index.hash(state);
        self.prev_log_term.hash(state);
        self.entries.hash(state);
        self.leader_commit.hash(state);
        if self.read_round != 0 {
            self.read_round.hash(state);
        }
    }
}

impl Hash for AppendEntriesResponse {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.term.hash(state);
        self.success.hash(state);
        self.index.hash(state);
        self.last_log_index.hash(state);
        if self.read_round != 0 {
            self.read_round.hash(state);
        }
        if let Some(applied) = self.applied {
            applied.hash(state);
        }
    }
}

/// A follower asks its leader for a read index on behalf of a client's
/// read ([`crate::ReadMode::FollowerReadIndex`], Raft thesis §6.4: "the
/// follower could issue a request to the leader to obtain a current read
/// index"). Not in Figure 2.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadIndexRequest {
    /// The follower's current term.
    pub term: Term,
    /// The client whose read this is.
    pub client_id: ClientId,
    /// The client's request number.
    pub request_no: u64,
}

/// Reply to [`ReadIndexRequest`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    /// The sender's current term.
    pub term: Term,
    /// The client of the request answered.
    pub client_id: ClientId,
    /// The client's request number.
    pub request_no: u64,
    /// The read index: the leader's commit index once it had committed an
    /// entry of its term, confirmed by a round a majority answered after
    /// the request came. `None`: the sender does not lead.
    pub index: Option<LogIndex>,
}

/// A message between servers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Message<C> {
    /// See [`RequestVote`].
    RequestVote(RequestVote),
    /// See [`RequestVoteResponse`].
    RequestVoteResponse(RequestVoteResponse),
    /// See [`AppendEntries`].
    AppendEntries(AppendEntries<C>),
    /// See [`AppendEntriesResponse`].
    AppendEntriesResponse(AppendEntriesResponse),
    /// See [`ReadIndexRequest`].
    ReadIndex(ReadIndexRequest),
    /// See [`ReadIndexResponse`].
    ReadIndexResponse(ReadIndexResponse),
}

impl<C> Message<C> {
    /// The sender's term carried by every RPC and response.
    pub fn term(&self) -> Term {
        match self {
            Message::RequestVote(m) => m.term,
            Message::RequestVoteResponse(m) => m.term,
            Message::AppendEntries(m) => m.term,
            Message::AppendEntriesResponse(m) => m.term,
            Message::ReadIndex(m) => m.term,
            Message::ReadIndexResponse(m) => m.term,
        }
    }

    /// The message's name as in the paper.
    pub fn name(&self) -> &'static str {
        match self {
            Message::RequestVote(_) => "RequestVote",
            Message::RequestVoteResponse(_) => "RequestVoteResponse",
            Message::AppendEntries(_) => "AppendEntries",
            Message::AppendEntriesResponse(_) => "AppendEntriesResponse",
            Message::ReadIndex(_) => "ReadIndex",
            Message::ReadIndexResponse(_) => "ReadIndexResponse",
        }
    }

    /// Rewrites node and client ids (used for symmetry reduction).
    #[must_use]
    pub fn map_ids(
        &self,
        nodes: &dyn Fn(NodeId) -> NodeId,
        clients: &dyn Fn(crate::ClientId) -> crate::ClientId,
    ) -> Self
    where
        C: Clone,
    {
        match self {
            Message::RequestVote(m) => Message::RequestVote(RequestVote {
                candidate_id: nodes(m.candidate_id),
                ..m.clone()
            }),
            Message::RequestVoteResponse(m) => Message::RequestVoteResponse(m.clone()),
            Message::AppendEntries(m) => Message::AppendEntries(AppendEntries {
                term: m.term,
                leader_id: nodes(m.leader_id),
                prev_log_index: m.prev_log_index,
                prev_log_term: m.prev_log_term,
                entries: m
                    .entries
                    .iter()
                    .map(|e| e.map_client_ids(clients))
                    .collect(),
                leader_commit: m.leader_commit,
                read_round: m.read_round,
            }),
            Message::AppendEntriesResponse(m) => Message::AppendEntriesResponse(m.clone()),
            Message::ReadIndex(m) => Message::ReadIndex(ReadIndexRequest {
                client_id: clients(m.client_id),
                ..m.clone()
            }),
            Message::ReadIndexResponse(m) => Message::ReadIndexResponse(ReadIndexResponse {
                client_id: clients(m.client_id),
                ..m.clone()
            }),
        }
    }
}
