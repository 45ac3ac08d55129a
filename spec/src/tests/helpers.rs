//! Builders the paper tests and the reduction's tests share: servers in a
//! given role and log, messages, and expected outputs.

use crate::{
    AppendEntries, AppendEntriesResponse, ClientId, ClientReply, Counter, CounterCommand, Entry,
    HardState, Input, Log, LogIndex, LogWrite, Message, NodeId, Output, Persist, PersistentState,
    RequestVote, RequestVoteResponse, Role, Server, Term, Timer,
};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) type Out = Output<CounterCommand, u64>;
pub(crate) type Msg = Message<CounterCommand>;

pub(crate) use super::{command, entry};

/// A log of entries without commands with the given terms at indices 1, 2, ...
pub(crate) fn log_of(terms: &[u64]) -> Log<CounterCommand> {
    Log::from_entries(terms.iter().map(|&t| entry(t)).collect())
}

/// The other servers of the cluster `1..=cluster`.
pub(crate) fn peers_of(id: u64, cluster: u64) -> Vec<NodeId> {
    (1..=cluster).filter(|&p| p != id).map(NodeId).collect()
}

/// A follower of `current_term` without a vote whose log holds entries of
/// the given terms, in a cluster of servers `1..=cluster`.
pub(crate) fn server_with_log(
    id: u64,
    cluster: u64,
    terms: &[u64],
    current_term: u64,
) -> Server<Counter> {
    let persistent = PersistentState {
        current_term: Term(current_term),
        voted_for: None,
        log: log_of(terms),
    };
    Server::restart(NodeId(id), peers_of(id, cluster), persistent).0
}

/// A candidate of `term`: a follower of `term - 1` whose election timed out.
pub(crate) fn candidate_of_term(
    id: u64,
    cluster: u64,
    terms: &[u64],
    term: u64,
) -> Server<Counter> {
    let mut s = server_with_log(id, cluster, terms, term - 1);
    s.step(Input::ElectionTimeout);
    assert_eq!(s.role(), Role::Candidate);
    assert_eq!(s.current_term(), Term(term));
    s
}

/// A leader of `term`, elected by votes of its lowest-numbered peers. Its log
/// is exactly `terms`: a new leader appends no entry on election, so it holds
/// no entry of `term` (and commits nothing) until a client request arrives.
/// Its next_index is `terms.len() + 1` and its match_index 0 for every peer.
pub(crate) fn leader_of_term(id: u64, cluster: u64, terms: &[u64], term: u64) -> Server<Counter> {
    let mut s = candidate_of_term(id, cluster, terms, term);
    for peer in s.peers.clone() {
        if s.role() == Role::Leader {
            break;
        }
        s.step(receive(peer.0, rvr(term, true)));
    }
    assert_eq!(s.role(), Role::Leader);
    assert_eq!(s.current_term(), Term(term));
    assert_eq!(s.persistent.log, log_of(terms));
    s
}

pub(crate) fn receive(from: u64, message: Msg) -> Input<CounterCommand> {
    Input::Message {
        from: NodeId(from),
        message,
    }
}

pub(crate) fn client_request(client: u64, request_no: u64) -> Input<CounterCommand> {
    Input::ClientRequest {
        client_id: ClientId(client),
        request_no,
        command: CounterCommand::Increment,
        ack: crate::Ack::Applied,
    }
}

pub(crate) fn rv(term: u64, candidate: u64, last_log_index: u64, last_log_term: u64) -> Msg {
    Message::RequestVote(RequestVote {
        term: Term(term),
        candidate_id: NodeId(candidate),
        last_log_index: LogIndex(last_log_index),
        last_log_term: Term(last_log_term),
    })
}

pub(crate) fn rvr(term: u64, vote_granted: bool) -> Msg {
    Message::RequestVoteResponse(RequestVoteResponse {
        term: Term(term),
        vote_granted,
    })
}

pub(crate) fn ae(
    term: u64,
    leader: u64,
    prev_log_index: u64,
    prev_log_term: u64,
    entries: Vec<Entry<CounterCommand>>,
    leader_commit: u64,
) -> Msg {
    Message::AppendEntries(AppendEntries {
        term: Term(term),
        leader_id: NodeId(leader),
        prev_log_index: LogIndex(prev_log_index),
        prev_log_term: Term(prev_log_term),
        entries,
        leader_commit: LogIndex(leader_commit),
        read_round: 0,
    })
}

pub(crate) fn aer(term: u64, success: bool, index: u64) -> Msg {
    Message::AppendEntriesResponse(AppendEntriesResponse {
        term: Term(term),
        success,
        index: LogIndex(index),
        last_log_index: None,
        read_round: 0,
        applied: None,
    })
}

pub(crate) fn send(to: u64, message: Msg) -> Out {
    Output::Send {
        to: NodeId(to),
        message,
    }
}

pub(crate) fn persist(
    hard_state: Option<(u64, Option<u64>)>,
    log: Option<(u64, Vec<Entry<CounterCommand>>)>,
) -> Out {
    Output::Persist(Persist {
        parallel: false,
        hard_state: hard_state.map(|(term, voted_for)| HardState {
            current_term: Term(term),
            voted_for: voted_for.map(NodeId),
        }),
        log: log.map(|(from, entries)| LogWrite {
            from: LogIndex(from),
            entries,
        }),
    })
}

pub(crate) fn persist_hard_state(term: u64, voted_for: Option<u64>) -> Out {
    persist(Some((term, voted_for)), None)
}

pub(crate) fn persist_log(from: u64, entries: Vec<Entry<CounterCommand>>) -> Out {
    persist(None, Some((from, entries)))
}

pub(crate) fn applied(index: u64, term: u64) -> Out {
    Output::Applied {
        index: LogIndex(index),
        term: Term(term),
    }
}

pub(crate) fn reply_ok(client: u64, request_no: u64, value: u64) -> Out {
    Output::ClientReply {
        client_id: ClientId(client),
        request_no,
        reply: ClientReply::Ok(value),
    }
}

pub(crate) fn not_leader(client: u64, request_no: u64, leader_hint: Option<u64>) -> Out {
    Output::ClientReply {
        client_id: ClientId(client),
        request_no,
        reply: ClientReply::NotLeader {
            leader_hint: leader_hint.map(NodeId),
        },
    }
}

pub(crate) const SET_ELECTION: Out = Output::SetTimer(Timer::Election);
pub(crate) const CANCEL_ELECTION: Out = Output::CancelTimer(Timer::Election);
pub(crate) const SET_HEARTBEAT: Out = Output::SetTimer(Timer::Heartbeat);
pub(crate) const CANCEL_HEARTBEAT: Out = Output::CancelTimer(Timer::Heartbeat);

pub(crate) fn indices(pairs: &[(u64, u64)]) -> BTreeMap<NodeId, LogIndex> {
    pairs
        .iter()
        .map(|&(n, i)| (NodeId(n), LogIndex(i)))
        .collect()
}

pub(crate) fn nodes(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

/// Server 1, leader of term 1 in a cluster of `cluster` with an empty log,
/// running `replication` since before its election (the vote of server 2
/// elected it; with 5 servers, also server 3's).
pub(crate) fn leader(cluster: u64, replication: crate::Replication) -> Server<Counter> {
    let mut s = server_with_log(1, cluster, &[], 0).with_replication(replication);
    s.step(Input::ElectionTimeout);
    for peer in 2..=cluster {
        if s.role() == Role::Leader {
            break;
        }
        s.step(receive(peer, rvr(1, true)));
    }
    assert_eq!(s.role(), Role::Leader);
    s
}
