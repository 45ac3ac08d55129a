//! Paper tests for [`Server::step`]: one test per rule of Figure 2 and §5 of
//! *In Search of an Understandable Consensus Algorithm (Extended Version)*,
//! in the style of etcd's `raft_paper_test.go` and raft-rs's
//! `test_raft_paper.rs`.
//!
//! Every test asserts the whole output vector of the step under test and the
//! state fields the rule talks about; its doc comment ends with the rule it
//! checks. The model checker's reduction has its tests beside it
//! (`server/reduction/tests.rs`).

use crate::{
    ClientId, Counter, Input, Log, LogIndex, Message, NodeId, Output, Replication, Role, Server,
    Term,
};
use std::collections::BTreeMap;

use super::helpers::*;

// ---- RequestVote: granting votes -----------------------------------------

/// A follower that has not voted in the term grants its vote to the first
/// candidate whose log is up to date; the vote is persisted before the
/// response leaves and resets the election timer.
///
/// Fig. 2 (RequestVote RPC, receiver rule 2)
#[test]
fn vote_granted_to_first_candidate_of_term() {
    let mut s = server_with_log(1, 3, &[], 1);

    let out = s.step(receive(2, rv(1, 2, 0, 0)));

    assert_eq!(
        out,
        vec![
            persist_hard_state(1, Some(2)),
            SET_ELECTION,
            send(2, rvr(1, true)),
        ]
    );
    assert_eq!(s.persistent.voted_for, Some(NodeId(2)));
    assert_eq!(s.current_term(), Term(1));
    assert_eq!(s.role(), Role::Follower);
}

/// Once it voted in a term, a server refuses any other candidate of that term,
/// without persisting anything or resetting its election timer.
///
/// ("Each server will vote for at most one candidate in a given term".)
///
/// Raft §5.2
#[test]
fn vote_refused_to_second_candidate_in_same_term() {
    let mut s = server_with_log(1, 3, &[], 1);
    s.step(receive(2, rv(1, 2, 0, 0)));

    let out = s.step(receive(3, rv(1, 3, 0, 0)));

    assert_eq!(out, vec![send(3, rvr(1, false))]);
    assert_eq!(s.persistent.voted_for, Some(NodeId(2)));
    assert_eq!(s.current_term(), Term(1));
}

/// A duplicated RequestVote from the candidate already voted for is granted
/// again; nothing new needs persisting.
///
/// Fig. 2 (RequestVote RPC, receiver rule 2: "votedFor is null or candidateId")
#[test]
fn vote_regranted_to_same_candidate_is_idempotent() {
    let mut s = server_with_log(1, 3, &[], 1);
    s.step(receive(2, rv(1, 2, 0, 0)));

    let out = s.step(receive(2, rv(1, 2, 0, 0)));

    assert_eq!(out, vec![SET_ELECTION, send(2, rvr(1, true))]);
    assert_eq!(s.persistent.voted_for, Some(NodeId(2)));
}

/// A candidate has voted for itself and refuses other candidates of its term.
///
/// Fig. 2 (Candidates: "Vote for self"), Raft §5.2
#[test]
fn candidate_refuses_vote_to_other_candidate_of_its_term() {
    let mut s = candidate_of_term(1, 3, &[], 2);

    let out = s.step(receive(2, rv(2, 2, 5, 1)));

    assert_eq!(out, vec![send(2, rvr(2, false))]);
    assert_eq!(s.persistent.voted_for, Some(NodeId(1)));
    assert_eq!(s.role(), Role::Candidate);
}

/// A leader refuses a RequestVote of its own term (it voted for itself) and
/// stays leader.
///
/// Raft §5.2
#[test]
fn leader_refuses_vote_in_its_own_term() {
    let mut s = leader_of_term(1, 3, &[], 2);

    let out = s.step(receive(3, rv(2, 3, 9, 2)));

    assert_eq!(out, vec![send(3, rvr(2, false))]);
    assert_eq!(s.role(), Role::Leader);
    assert_eq!(s.persistent.voted_for, Some(NodeId(1)));
}

/// The election restriction, as a table: a follower of term 2 with log
/// terms [1, 2, 2] receives a RequestVote of term 3 from server 2 whose log
/// ends at the given index and term. It grants the vote (persisting it,
/// resetting its election timer) exactly when the candidate's log is at
/// least as up to date: a higher last term, or the same last term and a log
/// at least as long. Either way it adopts term 3.
///
/// Raft §5.4.1
#[test]
fn votes_follow_the_election_restriction() {
    // (candidate's last log index, last log term, granted, why)
    let cases = [
        (10, 1, false, "a lower last term, however long the log"),
        (2, 2, false, "the same last term but a shorter log"),
        (3, 2, true, "the same last term and the same length"),
        (4, 2, true, "the same last term and a longer log"),
        (1, 3, true, "a higher last term, even with a shorter log"),
    ];
    for (last_log_index, last_log_term, granted, why) in cases {
        let mut s = server_with_log(1, 3, &[1, 2, 2], 2);
        let out = s.step(receive(2, rv(3, 2, last_log_index, last_log_term)));
        let expected = if granted {
            vec![
                persist_hard_state(3, Some(2)),
                SET_ELECTION,
                send(2, rvr(3, true)),
            ]
        } else {
            vec![persist_hard_state(3, None), send(2, rvr(3, false))]
        };
        assert_eq!(out, expected, "{why}");
        assert_eq!(s.current_term(), Term(3), "{why}");
        assert_eq!(
            s.persistent.voted_for,
            granted.then_some(NodeId(2)),
            "{why}"
        );
    }
}

// ---- Stale terms -----------------------------------------------------------

/// A RequestVote of an earlier term is refused with the receiver's term, even
/// when the receiver has not voted and the candidate's log is up to date.
///
/// Fig. 2 (RequestVote RPC, receiver rule 1)
#[test]
fn request_vote_with_stale_term_is_refused() {
    let mut s = server_with_log(1, 3, &[], 3);

    let out = s.step(receive(2, rv(2, 2, 10, 2)));

    assert_eq!(out, vec![send(2, rvr(3, false))]);
    assert_eq!(s.current_term(), Term(3));
    assert_eq!(s.persistent.voted_for, None);
}

/// An AppendEntries of an earlier term is rejected with the receiver's term;
/// it neither resets the election timer, nor changes the leader hint, the log
/// or the commit index.
///
/// Fig. 2 (AppendEntries RPC, receiver rule 1)
#[test]
fn append_entries_with_stale_term_is_rejected() {
    let mut s = server_with_log(1, 3, &[1, 3], 3);
    s.volatile.leader_hint = Some(NodeId(3));

    let out = s.step(receive(2, ae(2, 2, 1, 1, vec![entry(2)], 2)));

    assert_eq!(out, vec![send(2, aer(3, false, 1))]);
    assert_eq!(s.volatile.leader_hint, Some(NodeId(3)));
    assert_eq!(s.persistent.log, log_of(&[1, 3]));
    assert_eq!(s.volatile.commit_index, LogIndex(0));
    assert_eq!(s.current_term(), Term(3));
    assert_eq!(s.role(), Role::Follower);
}

/// A vote granted in an earlier term does not count: the response is
/// ignored (it would otherwise complete a majority here).
///
/// Stale responses are discarded like stale requests ("If a server receives a
/// request with a stale term number, it rejects the request").
///
/// Raft §5.1
#[test]
fn stale_request_vote_response_is_ignored() {
    let mut s = candidate_of_term(1, 3, &[], 3);
    let before = s.clone();

    let out = s.step(receive(2, rvr(2, true)));

    assert_eq!(out, vec![]);
    assert_eq!(s, before);
    assert_eq!(s.volatile.votes_granted, nodes(&[1]));
}

/// AppendEntries responses of an earlier term, successful or not, are
/// ignored by a leader.
///
/// Raft §5.1
#[test]
fn stale_append_entries_response_is_ignored() {
    let mut s = leader_of_term(1, 3, &[], 3);
    let before = s.clone();

    let out = s.step(receive(2, aer(2, true, 1)));
    assert_eq!(out, vec![]);
    assert_eq!(s, before);

    let out = s.step(receive(2, aer(2, false, 1)));
    assert_eq!(out, vec![]);
    assert_eq!(s, before);
}

// ---- Higher terms: stepping down --------------------------------------------

/// The four message kinds, each of term 3 and sent by server 2, with the
/// outputs expected of a follower or candidate of term 2 with log [1]. The
/// RequestVote comes from a candidate with an empty log, so it is refused.
fn higher_term_messages_for_follower() -> Vec<(Msg, Vec<Out>)> {
    vec![
        (
            rv(3, 2, 0, 0),
            vec![persist_hard_state(3, None), send(2, rvr(3, false))],
        ),
        (rvr(3, false), vec![persist_hard_state(3, None)]),
        (
            ae(3, 2, 1, 1, vec![], 0),
            vec![
                persist_hard_state(3, None),
                SET_ELECTION,
                send(2, aer(3, true, 1)),
            ],
        ),
        (aer(3, false, 1), vec![persist_hard_state(3, None)]),
    ]
}

/// A follower adopts a higher term seen in any message, forgets its vote of
/// the old term and persists both.
///
/// Fig. 2 (Rules for Servers, All Servers rule 2), Raft §5.1
#[test]
fn follower_adopts_higher_term_from_any_message() {
    for (message, expected) in higher_term_messages_for_follower() {
        let mut s = server_with_log(1, 3, &[1], 2);
        s.persistent.voted_for = Some(NodeId(3));
        s.volatile.leader_hint = Some(NodeId(3));

        let out = s.step(receive(2, message.clone()));

        assert_eq!(out, expected, "{}", message.name());
        assert_eq!(s.current_term(), Term(3), "{}", message.name());
        assert_eq!(s.persistent.voted_for, None, "{}", message.name());
        assert_eq!(s.role(), Role::Follower, "{}", message.name());
        let hint = matches!(message, Message::AppendEntries(_)).then_some(NodeId(2));
        assert_eq!(s.volatile.leader_hint, hint, "{}", message.name());
    }
}

/// A candidate seeing a higher term in any message becomes a follower of that
/// term without a vote and drops the votes it collected.
///
/// Fig. 2 (Rules for Servers, All Servers rule 2), Raft §5.1
#[test]
fn candidate_steps_down_on_higher_term_from_any_message() {
    for (message, expected) in higher_term_messages_for_follower() {
        let mut s = candidate_of_term(1, 3, &[1], 2);
        assert_eq!(s.persistent.voted_for, Some(NodeId(1)));

        let out = s.step(receive(2, message.clone()));

        assert_eq!(out, expected, "{}", message.name());
        assert_eq!(s.current_term(), Term(3), "{}", message.name());
        assert_eq!(s.persistent.voted_for, None, "{}", message.name());
        assert_eq!(s.role(), Role::Follower, "{}", message.name());
        assert!(s.volatile.votes_granted.is_empty(), "{}", message.name());
    }
}

/// A leader seeing a higher term in any message becomes a follower of that
/// term without a vote: it cancels its heartbeat timer, starts its election
/// timer and forgets its replication state. Its log (here [1]: the leader of
/// term 2 has no entry of its term yet) is kept.
///
/// Fig. 2 (Rules for Servers, All Servers rule 2), Raft §5.1
#[test]
fn leader_steps_down_on_higher_term_from_any_message() {
    let step_down = || vec![persist_hard_state(3, None), CANCEL_HEARTBEAT, SET_ELECTION];
    let cases: Vec<(Msg, Vec<Out>)> = vec![
        (
            rv(3, 2, 0, 0),
            [step_down(), vec![send(2, rvr(3, false))]].concat(),
        ),
        (rvr(3, false), step_down()),
        (
            // The follower's own AppendEntries handling resets the election
            // timer once more.
            ae(3, 2, 1, 1, vec![], 0),
            [step_down(), vec![SET_ELECTION, send(2, aer(3, true, 1))]].concat(),
        ),
        (aer(3, false, 1), step_down()),
    ];
    for (message, expected) in cases {
        let mut s = leader_of_term(1, 3, &[1], 2);

        let out = s.step(receive(2, message.clone()));

        assert_eq!(out, expected, "{}", message.name());
        assert_eq!(s.current_term(), Term(3), "{}", message.name());
        assert_eq!(s.persistent.voted_for, None, "{}", message.name());
        assert_eq!(s.role(), Role::Follower, "{}", message.name());
        assert!(s.volatile.next_index.is_empty(), "{}", message.name());
        assert!(s.volatile.match_index.is_empty(), "{}", message.name());
        assert_eq!(s.persistent.log, log_of(&[1]), "{}", message.name());
    }
}

/// A candidate that hears from a leader of its own term returns to follower,
/// keeps its vote (for itself), records the leader and accepts the entries.
///
/// Fig. 2 (Candidates: "If AppendEntries RPC received from new leader: convert to follower"), Raft §5.2
#[test]
fn candidate_receiving_append_entries_of_its_term_becomes_follower() {
    let mut s = candidate_of_term(1, 3, &[], 2);

    let out = s.step(receive(2, ae(2, 2, 0, 0, vec![entry(2)], 0)));

    assert_eq!(
        out,
        vec![
            persist_log(1, vec![entry(2)]),
            SET_ELECTION,
            send(2, aer(2, true, 1)),
        ]
    );
    assert_eq!(s.role(), Role::Follower);
    assert_eq!(s.current_term(), Term(2));
    assert_eq!(s.persistent.voted_for, Some(NodeId(1)));
    assert_eq!(s.volatile.leader_hint, Some(NodeId(2)));
    assert_eq!(s.persistent.log, log_of(&[2]));
    assert!(s.volatile.votes_granted.is_empty());
}

// ---- Elections --------------------------------------------------------------

/// A follower whose election timer fires becomes a candidate: it increments
/// its term, votes for itself, persists that, restarts its election timer and
/// asks every peer for a vote with its last log index and term.
///
/// Fig. 2 (Followers rule 2; Candidates rule 1), Raft §5.2
#[test]
fn follower_election_timeout_starts_election() {
    let mut s = server_with_log(1, 3, &[1, 1], 1);
    s.volatile.leader_hint = Some(NodeId(2));

    let out = s.step(Input::ElectionTimeout);

    assert_eq!(
        out,
        vec![
            persist_hard_state(2, Some(1)),
            SET_ELECTION,
            send(2, rv(2, 1, 2, 1)),
            send(3, rv(2, 1, 2, 1)),
        ]
    );
    assert_eq!(s.role(), Role::Candidate);
    assert_eq!(s.current_term(), Term(2));
    assert_eq!(s.persistent.voted_for, Some(NodeId(1)));
    assert_eq!(s.volatile.votes_granted, nodes(&[1]));
    assert_eq!(s.volatile.leader_hint, None);
}

/// A candidate whose election times out starts a new election in the next
/// term; the votes of the old term are dropped.
///
/// Fig. 2 (Candidates rule 4: "If election timeout elapses: start new election")
#[test]
fn candidate_election_timeout_starts_new_election() {
    let mut s = candidate_of_term(1, 5, &[], 2);
    s.step(receive(2, rvr(2, true)));
    assert_eq!(s.volatile.votes_granted, nodes(&[1, 2]));

    let out = s.step(Input::ElectionTimeout);

    assert_eq!(
        out,
        vec![
            persist_hard_state(3, Some(1)),
            SET_ELECTION,
            send(2, rv(3, 1, 0, 0)),
            send(3, rv(3, 1, 0, 0)),
            send(4, rv(3, 1, 0, 0)),
            send(5, rv(3, 1, 0, 0)),
        ]
    );
    assert_eq!(s.role(), Role::Candidate);
    assert_eq!(s.current_term(), Term(3));
    assert_eq!(s.volatile.votes_granted, nodes(&[1]));

    // Server 2's vote of term 2 is gone: one more vote of term 3 is not enough.
    assert_eq!(s.step(receive(3, rvr(3, true))), vec![]);
    assert_eq!(s.role(), Role::Candidate);
}

/// A leader has no election timer; a late election timeout changes nothing.
///
/// Fig. 2 (Rules for Servers: only followers and candidates act on election timeouts), Raft §5.2
#[test]
fn leader_ignores_election_timeout() {
    let mut s = leader_of_term(1, 3, &[], 2);
    let before = s.clone();

    let out = s.step(Input::ElectionTimeout);

    assert_eq!(out, vec![]);
    assert_eq!(s, before);
}

/// A candidate that receives votes from a majority becomes leader: it
/// initialises next_index to its last log index + 1 and match_index to 0,
/// stops its election timer, starts its heartbeat timer and sends every peer
/// an empty AppendEntries (heartbeat) that follows its last entry. Nothing is
/// persisted: the log is unchanged.
///
/// Fig. 2 (Candidates rule 2; Leaders rule 1; State: nextIndex, matchIndex), Raft §5.2
#[test]
fn candidate_with_majority_of_votes_becomes_leader() {
    let mut s = candidate_of_term(1, 3, &[1], 2);

    let out = s.step(receive(2, rvr(2, true)));

    let heartbeat = ae(2, 1, 1, 1, vec![], 0);
    assert_eq!(
        out,
        vec![
            CANCEL_ELECTION,
            SET_HEARTBEAT,
            send(2, heartbeat.clone()),
            send(3, heartbeat),
        ]
    );
    assert_eq!(s.role(), Role::Leader);
    assert_eq!(s.current_term(), Term(2));
    assert_eq!(s.volatile.leader_hint, Some(NodeId(1)));
    assert_eq!(s.persistent.log, log_of(&[1]));
    assert_eq!(s.volatile.next_index, indices(&[(2, 2), (3, 2)]));
    assert_eq!(s.volatile.match_index, indices(&[(2, 0), (3, 0)]));
    assert_eq!(s.volatile.commit_index, LogIndex(0));
    assert!(s.volatile.votes_granted.is_empty());
}

/// A new leader appends no entry on election (no no-op): it persists
/// nothing, its log and commit index are unchanged, and its heartbeat carries
/// no entry and follows its last entry. The entries of earlier terms it holds
/// are not committed even once a majority stores them: they wait for an entry
/// of the leader's term (the next client request).
///
/// Fig. 2 (Leaders rule 1: "send initial empty AppendEntries RPCs
/// (heartbeat) to each server"), Raft §5.4.2; decision in `become_leader`
#[test]
fn new_leader_appends_no_entry_on_election() {
    let mut s = candidate_of_term(1, 3, &[1, 2], 3);

    let out = s.step(receive(3, rvr(3, true)));

    let heartbeat = ae(3, 1, 2, 2, vec![], 0);
    assert_eq!(
        out,
        vec![
            CANCEL_ELECTION,
            SET_HEARTBEAT,
            send(2, heartbeat.clone()),
            send(3, heartbeat),
        ]
    );
    assert_eq!(s.role(), Role::Leader);
    assert_eq!(s.persistent.log, log_of(&[1, 2]));
    assert_eq!(s.volatile.next_index, indices(&[(2, 3), (3, 3)]));
    assert_eq!(s.volatile.match_index, indices(&[(2, 0), (3, 0)]));
    assert_eq!(s.volatile.commit_index, LogIndex(0));

    // Both peers acknowledge the heartbeat: entries 1 and 2 are on every
    // server, yet none is of term 3, so nothing commits.
    assert_eq!(s.step(receive(2, aer(3, true, 2))), vec![]);
    assert_eq!(s.step(receive(3, aer(3, true, 2))), vec![]);
    assert_eq!(s.volatile.match_index, indices(&[(2, 2), (3, 2)]));
    assert_eq!(s.volatile.commit_index, LogIndex(0));
    assert_eq!(s.persistent.log, log_of(&[1, 2]));
}

/// Votes from a minority, a duplicated vote and a refusal do not make a
/// candidate leader; the vote that completes the majority does.
///
/// ("A candidate wins an election if it receives votes from a majority of
/// the servers".)
///
/// Raft §5.2
#[test]
fn candidate_with_minority_of_votes_stays_candidate() {
    let mut s = candidate_of_term(1, 5, &[], 2);

    assert_eq!(s.step(receive(2, rvr(2, true))), vec![]);
    assert_eq!(s.step(receive(2, rvr(2, true))), vec![]);
    assert_eq!(s.step(receive(3, rvr(2, false))), vec![]);
    assert_eq!(s.role(), Role::Candidate);
    assert_eq!(s.volatile.votes_granted, nodes(&[1, 2]));

    let out = s.step(receive(4, rvr(2, true)));

    let heartbeat = ae(2, 1, 0, 0, vec![], 0);
    assert_eq!(
        out,
        vec![
            CANCEL_ELECTION,
            SET_HEARTBEAT,
            send(2, heartbeat.clone()),
            send(3, heartbeat.clone()),
            send(4, heartbeat.clone()),
            send(5, heartbeat),
        ]
    );
    assert_eq!(s.role(), Role::Leader);
}

/// In a one-server cluster the candidate's own vote is a majority: it becomes
/// leader in the same step. It has no entry of its term, so it commits
/// nothing; a client command is then committed, applied and answered in the
/// step that appends it.
///
/// Raft §5.2, Fig. 2 (Leaders rule 4)
#[test]
fn single_server_becomes_leader_on_election_timeout() {
    let (mut s, out) = Server::<Counter>::new(NodeId(1), vec![]);
    assert_eq!(out, vec![SET_ELECTION]);

    let out = s.step(Input::ElectionTimeout);

    assert_eq!(
        out,
        vec![
            persist_hard_state(1, Some(1)),
            SET_ELECTION,
            CANCEL_ELECTION,
            SET_HEARTBEAT,
        ]
    );
    assert_eq!(s.role(), Role::Leader);
    assert_eq!(s.current_term(), Term(1));
    assert_eq!(s.persistent.voted_for, Some(NodeId(1)));
    assert!(s.persistent.log.is_empty());
    assert_eq!(s.volatile.commit_index, LogIndex(0));
    assert_eq!(s.volatile.last_applied, LogIndex(0));

    let out = s.step(client_request(7, 1));

    assert_eq!(
        out,
        vec![
            persist_log(1, vec![command(1, 7, 1)]),
            applied(1, 1),
            reply_ok(7, 1, 0),
        ]
    );
    assert_eq!(s.volatile.commit_index, LogIndex(1));
    assert_eq!(s.volatile.last_applied, LogIndex(1));
}

/// `leader` (server 1 of 3, leading term 2 with a log `[1]`) appends a
/// client command and commits it with server 2's acknowledgement; server 3
/// still lacks both entries.
fn with_peer_3_behind(mut leader: Server<Counter>) -> Server<Counter> {
    leader.step(client_request(7, 1));
    leader.step(receive(2, aer(2, true, 2)));
    assert_eq!(leader.volatile.commit_index, LogIndex(2));
    assert_eq!(leader.volatile.next_index, indices(&[(2, 3), (3, 2)]));
    leader
}

/// When its heartbeat timer fires, a leader restarts it and sends every peer
/// an AppendEntries with the entries from its next_index on (empty when the
/// peer is up to date) and its commit index.
///
/// Fig. 2 (Leaders rule 1: "repeat during idle periods to prevent election timeouts"), Raft §5.2
#[test]
fn leader_heartbeat_timeout_sends_append_entries_to_every_peer() {
    let mut s = with_peer_3_behind(leader_of_term(1, 3, &[1], 2));

    let out = s.step(Input::HeartbeatTimeout);

    assert_eq!(
        out,
        vec![
            SET_HEARTBEAT,
            send(2, ae(2, 1, 2, 2, vec![], 2)),
            send(3, ae(2, 1, 1, 1, vec![command(2, 7, 1)], 2)),
        ]
    );
}

/// With empty heartbeats (Figure 2's "empty AppendEntries RPCs"), a
/// heartbeat carries `prev_log_index = next_index - 1` and no entries, even
/// to a peer that lacks some; the commit index is the leader's.
///
/// Fig. 2 (Leaders rule 1: "send initial empty AppendEntries RPCs (heartbeat) to each server")
#[test]
fn empty_heartbeats_carry_no_entries() {
    let mut s = with_peer_3_behind(leader_of_term(1, 3, &[1], 2).with_replication(Replication {
        empty_heartbeats: true,
        ..Replication::default()
    }));

    let out = s.step(Input::HeartbeatTimeout);

    assert_eq!(
        out,
        vec![
            SET_HEARTBEAT,
            send(2, ae(2, 1, 2, 2, vec![], 2)),
            send(3, ae(2, 1, 1, 1, vec![], 2)),
        ]
    );
    // A new entry still travels at once, with what the peer lacks.
    let out = s.step(client_request(7, 2));
    assert!(out.contains(&send(
        3,
        ae(2, 1, 1, 1, vec![command(2, 7, 1), command(2, 7, 2)], 2)
    )));
}

/// An empty heartbeat is why a follower's commit index takes the `min`
/// with its last new entry: this follower holds an entry of term 1 at index
/// 1 that the leader of term 2 has replaced and committed; the heartbeat's
/// consistency check at index 0 passes, and the follower must not commit its
/// own entry.
///
/// Fig. 2 (AppendEntries RPC, receiver rule 5: commitIndex = min(leaderCommit, index of last new entry))
#[test]
fn empty_heartbeat_does_not_commit_entries_the_follower_was_not_sent() {
    let mut s = server_with_log(1, 3, &[1], 1);

    let out = s.step(receive(2, ae(2, 2, 0, 0, vec![], 1)));

    assert_eq!(
        out,
        vec![
            persist_hard_state(2, None),
            SET_ELECTION,
            send(2, aer(2, true, 0))
        ]
    );
    assert_eq!(s.volatile.commit_index, LogIndex(0));
    assert_eq!(s.volatile.last_applied, LogIndex(0));
}

/// With a cap on entries per AppendEntries, a leader sends at most that many
/// from `next_index`, and sends the next batch as soon as one is
/// acknowledged; a duplicate of that acknowledgement sends nothing more.
///
/// Fig. 2 (Leaders rule 3: "send AppendEntries RPC with log entries starting at nextIndex")
#[test]
fn capped_append_entries_carry_one_batch_and_the_ack_sends_the_next() {
    let cap = std::num::NonZeroUsize::new(1);
    let replication = Replication {
        max_append_entries: cap,
        ..Replication::default()
    };
    let mut s = leader_of_term(1, 3, &[1, 1], 2).with_replication(replication);
    assert_eq!(s.replication(), replication);
    s.step(receive(2, aer(2, false, 2)));
    let out = s.step(receive(2, aer(2, false, 1)));
    assert_eq!(out, vec![send(2, ae(2, 1, 0, 0, vec![entry(1)], 0))]);

    let out = s.step(receive(2, aer(2, true, 1)));

    assert_eq!(out, vec![send(2, ae(2, 1, 1, 1, vec![entry(1)], 0))]);
    assert_eq!(s.volatile.next_index, indices(&[(2, 2), (3, 3)]));
    assert_eq!(s.step(receive(2, aer(2, true, 1))), vec![]);
    // The last batch: nothing follows it.
    assert_eq!(s.step(receive(2, aer(2, true, 2))), vec![]);
    assert_eq!(s.volatile.match_index, indices(&[(2, 2), (3, 0)]));
}

/// Followers and candidates have no heartbeat timer.
///
/// Fig. 2 (Leaders rule 1)
#[test]
fn non_leaders_ignore_heartbeat_timeout() {
    let mut follower = server_with_log(1, 3, &[1], 1);
    let before = follower.clone();
    assert_eq!(follower.step(Input::HeartbeatTimeout), vec![]);
    assert_eq!(follower, before);

    let mut candidate = candidate_of_term(1, 3, &[1], 2);
    let before = candidate.clone();
    assert_eq!(candidate.step(Input::HeartbeatTimeout), vec![]);
    assert_eq!(candidate, before);
}

// ---- AppendEntries: consistency check and conflicts ---------------------------

/// The AppendEntries receiver's log rules, as a table: a follower of server
/// 2 with the given log terms receives an AppendEntries from server 2 (the
/// leader of its current term or a later one) and answers. It rejects when
/// it has no entry at `prev_log_index` or one of another term, naming the
/// rejected `prev_log_index` and keeping its log; otherwise it deletes the
/// first conflicting entry and all that follow, appends what it lacks,
/// persists that before it answers, and names the last entry the request
/// covered. Either way the request comes from the current leader: the
/// election timer is reset and the leader recorded.
///
/// Fig. 2 (AppendEntries RPC, receiver rules 2, 3 and 4), Raft §5.3
#[test]
fn append_entries_receiver_checks_and_repairs_the_log() {
    /// Log terms are listed from index 1; the request is from server 2.
    struct Case {
        why: &'static str,
        /// The follower's log and term.
        log: &'static [u64],
        term: u64,
        /// The request: its term, prev_log_index, prev_log_term, entries.
        request: (u64, u64, u64, &'static [u64]),
        /// What it persists (first index, entries), and its answer
        /// (success, index).
        persists: Option<(u64, &'static [u64])>,
        answer: (bool, u64),
        after: &'static [u64],
    }
    let cases = [
        Case {
            why: "no entry at prev_log_index",
            log: &[1, 1],
            term: 2,
            request: (2, 3, 1, &[2]),
            persists: None,
            answer: (false, 3),
            after: &[1, 1],
        },
        Case {
            why: "another term at prev_log_index",
            log: &[1, 1],
            term: 2,
            request: (2, 2, 2, &[2]),
            persists: None,
            answer: (false, 2),
            after: &[1, 1],
        },
        Case {
            why: "the entry at prev_log_index matches",
            log: &[1, 1],
            term: 2,
            request: (2, 2, 1, &[2, 2]),
            persists: Some((3, &[2, 2])),
            answer: (true, 4),
            after: &[1, 1, 2, 2],
        },
        Case {
            why: "a conflicting entry and all that follow are replaced",
            log: &[1, 1, 2, 2],
            term: 3,
            request: (3, 2, 1, &[3]),
            persists: Some((3, &[3])),
            answer: (true, 3),
            after: &[1, 1, 3],
        },
        Case {
            why: "the log is rewritten only from the first conflict",
            log: &[1, 1, 2, 2],
            term: 3,
            request: (3, 1, 1, &[1, 3]),
            persists: Some((3, &[3])),
            answer: (true, 3),
            after: &[1, 1, 3],
        },
    ];
    let entries = |terms: &[u64]| terms.iter().map(|&t| entry(t)).collect::<Vec<_>>();
    for c in cases {
        let (term, prev_index, prev_term, sent) = c.request;
        let mut s = server_with_log(1, 3, c.log, c.term);

        let out = s.step(receive(
            2,
            ae(term, 2, prev_index, prev_term, entries(sent), 0),
        ));

        let mut expected = Vec::new();
        expected.extend(
            c.persists
                .map(|(from, terms)| persist_log(from, entries(terms))),
        );
        expected.push(SET_ELECTION);
        expected.push(send(2, aer(term, c.answer.0, c.answer.1)));
        assert_eq!(out, expected, "{}", c.why);
        assert_eq!(s.persistent.log, log_of(c.after), "{}", c.why);
        assert_eq!(s.volatile.leader_hint, Some(NodeId(2)), "{}", c.why);
    }
}

/// An AppendEntries whose entries all match existing ones changes nothing: a
/// stale, shorter request arriving after a longer one must not delete the
/// later entries, and nothing is persisted.
///
/// Fig. 2 (AppendEntries RPC, receiver rule 3: truncate only "if an existing entry conflicts with a new one")
#[test]
fn append_entries_whose_entries_all_match_never_truncates() {
    let mut s = server_with_log(1, 3, &[], 1);
    let long = ae(1, 2, 0, 0, vec![command(1, 7, 1), command(1, 7, 2)], 0);
    let short = ae(1, 2, 0, 0, vec![command(1, 7, 1)], 0);
    s.step(receive(2, long));
    let full = Log::from_entries(vec![command(1, 7, 1), command(1, 7, 2)]);
    assert_eq!(s.persistent.log, full);

    let out = s.step(receive(2, short));

    assert_eq!(out, vec![SET_ELECTION, send(2, aer(1, true, 1))]);
    assert_eq!(s.persistent.log, full);

    // A heartbeat pointing into the middle of the log truncates nothing either.
    let out = s.step(receive(2, ae(1, 2, 1, 1, vec![], 0)));

    assert_eq!(out, vec![SET_ELECTION, send(2, aer(1, true, 1))]);
    assert_eq!(s.persistent.log, full);
}

// ---- AppendEntries: commit index ---------------------------------------------

/// The follower's commit index follows the leader's up to the last new
/// entry of the request, and the newly committed entries are applied in
/// order before the answer: a table of `leader_commit` for a request
/// carrying two entries of term 1 to an empty follower.
///
/// Fig. 2 (AppendEntries RPC, receiver rule 5: commitIndex =
/// min(leaderCommit, index of last new entry); All Servers rule 1)
#[test]
fn follower_commit_follows_leader_commit_up_to_the_last_new_entry() {
    // (leader_commit, the follower's commit index after, why)
    let cases = [
        (0, 0, "nothing committed yet"),
        (1, 1, "the leader's commit index"),
        (2, 2, "the leader's commit index, the whole request"),
        (5, 2, "capped by the last new entry"),
    ];
    for (leader_commit, commit, why) in cases {
        let mut s = server_with_log(1, 3, &[], 1);

        let out = s.step(receive(
            2,
            ae(1, 2, 0, 0, vec![entry(1), entry(1)], leader_commit),
        ));

        let mut expected = vec![persist_log(1, vec![entry(1), entry(1)]), SET_ELECTION];
        expected.extend((1..=commit).map(|i| applied(i, 1)));
        expected.push(send(2, aer(1, true, 2)));
        assert_eq!(out, expected, "{why}");
        assert_eq!(s.volatile.commit_index, LogIndex(commit), "{why}");
        assert_eq!(s.volatile.last_applied, LogIndex(commit), "{why}");
    }
}

/// Entries that the follower holds beyond the last new entry of the request
/// are not known to match the leader, so the commit index must not reach
/// them, even if leader_commit does.
///
/// Fig. 2 (AppendEntries RPC, receiver rule 5: commitIndex = min(leaderCommit, index of last new entry))
#[test]
fn follower_commit_does_not_reach_entries_beyond_last_new_entry() {
    let mut s = server_with_log(1, 3, &[1, 1, 1], 1);

    let out = s.step(receive(2, ae(1, 2, 0, 0, vec![entry(1)], 3)));

    assert_eq!(
        out,
        vec![SET_ELECTION, applied(1, 1), send(2, aer(1, true, 1))]
    );
    assert_eq!(s.volatile.commit_index, LogIndex(1));
    assert_eq!(s.persistent.log, log_of(&[1, 1, 1]));

    // A heartbeat with prev_log_index 1: the last new entry is still index 1.
    let out = s.step(receive(2, ae(1, 2, 1, 1, vec![], 3)));

    assert_eq!(out, vec![SET_ELECTION, send(2, aer(1, true, 1))]);
    assert_eq!(s.volatile.commit_index, LogIndex(1));
}

/// A lower leader_commit (e.g. a reordered request) never lowers the
/// follower's commit index.
///
/// Fig. 2 (AppendEntries RPC, receiver rule 5: "If leaderCommit > commitIndex")
#[test]
fn follower_commit_index_never_decreases() {
    let mut s = server_with_log(1, 3, &[], 1);
    s.step(receive(2, ae(1, 2, 0, 0, vec![entry(1), entry(1)], 2)));
    assert_eq!(s.volatile.commit_index, LogIndex(2));

    let out = s.step(receive(2, ae(1, 2, 2, 1, vec![], 1)));

    assert_eq!(out, vec![SET_ELECTION, send(2, aer(1, true, 2))]);
    assert_eq!(s.volatile.commit_index, LogIndex(2));
    assert_eq!(s.volatile.last_applied, LogIndex(2));
}

// ---- Leader: commitment ------------------------------------------------------

/// Figure 8: an entry of an earlier term stored on a majority is not
/// committed by counting replicas; once an entry of the leader's term is on a
/// majority, both are committed. Without a no-op on election, that entry of
/// the leader's term is the next client command.
///
/// Raft §5.4.2 (Figure 8), Fig. 2 (Leaders rule 4)
#[test]
fn leader_commits_only_entries_of_its_term_by_counting_replicas() {
    // Server 1 led term 2 and wrote an entry of term 2 at index 2; it is
    // re-elected in term 4 and appends nothing on election.
    let mut s = leader_of_term(1, 5, &[1, 2], 4);

    // Index 2 (term 2) reaches servers 1, 2 and 3: a majority of 5.
    assert_eq!(s.step(receive(2, aer(4, true, 2))), vec![]);
    assert_eq!(s.step(receive(3, aer(4, true, 2))), vec![]);
    assert_eq!(
        s.volatile.match_index,
        indices(&[(2, 2), (3, 2), (4, 0), (5, 0)])
    );
    assert_eq!(s.volatile.commit_index, LogIndex(0));

    // A client command of term 4 goes to index 3; every peer's next_index is
    // 3 (initialised to last log index + 1, or advanced by the responses).
    let out = s.step(client_request(7, 1));

    let request = ae(4, 1, 2, 2, vec![command(4, 7, 1)], 0);
    assert_eq!(
        out,
        vec![
            persist_log(3, vec![command(4, 7, 1)]),
            send(2, request.clone()),
            send(3, request.clone()),
            send(4, request.clone()),
            send(5, request),
        ]
    );
    assert_eq!(s.volatile.commit_index, LogIndex(0));

    // Index 3 (term 4) on servers 1 and 2 only: still nothing committed.
    assert_eq!(s.step(receive(2, aer(4, true, 3))), vec![]);
    assert_eq!(s.volatile.commit_index, LogIndex(0));

    // Index 3 on a majority: it commits, and the earlier entries with it.
    let out = s.step(receive(3, aer(4, true, 3)));

    assert_eq!(
        out,
        vec![
            applied(1, 1),
            applied(2, 2),
            applied(3, 4),
            reply_ok(7, 1, 0),
        ]
    );
    assert_eq!(s.volatile.commit_index, LogIndex(3));
    assert_eq!(s.volatile.last_applied, LogIndex(3));
}

// ---- Leader: next_index / match_index ------------------------------------------

/// A failed consistency check makes the leader decrement next_index and retry
/// at once with the earlier prev_log_index and the entries from there on.
///
/// Raft §5.3, Fig. 2 (Leaders rule 3.2)
#[test]
fn failure_response_decrements_next_index_and_retries() {
    let mut s = leader_of_term(1, 3, &[1, 1], 2);
    assert_eq!(s.volatile.next_index, indices(&[(2, 3), (3, 3)]));

    let out = s.step(receive(2, aer(2, false, 2)));

    assert_eq!(out, vec![send(2, ae(2, 1, 1, 1, vec![entry(1)], 0))]);
    assert_eq!(s.volatile.next_index, indices(&[(2, 2), (3, 3)]));
    assert_eq!(s.volatile.match_index, indices(&[(2, 0), (3, 0)]));

    let out = s.step(receive(2, aer(2, false, 1)));

    assert_eq!(
        out,
        vec![send(2, ae(2, 1, 0, 0, vec![entry(1), entry(1)], 0))]
    );
    assert_eq!(s.volatile.next_index, indices(&[(2, 1), (3, 3)]));
}

/// A duplicated (stale) failure response does not move next_index further
/// back, and sends nothing.
///
/// Raft §5.3
#[test]
fn stale_duplicate_failure_response_does_not_move_next_index() {
    let mut s = leader_of_term(1, 3, &[1, 1], 2);
    s.step(receive(2, aer(2, false, 2)));
    let before = s.clone();

    let out = s.step(receive(2, aer(2, false, 2)));

    assert_eq!(out, vec![]);
    assert_eq!(s, before);
    assert_eq!(s.volatile.next_index, indices(&[(2, 2), (3, 3)]));
}

/// A success response sets match_index to the index it covers and next_index
/// just after it (committing what is now on a majority); a stale success with
/// a lower index never moves match_index or next_index backwards.
///
/// Fig. 2 (Leaders rule 3.1), Raft §5.3
#[test]
fn success_response_sets_match_index_which_never_moves_backwards() {
    let mut s = leader_of_term(1, 3, &[1, 1], 2);
    s.step(client_request(7, 1));
    s.step(receive(2, aer(2, false, 2)));
    assert_eq!(s.volatile.next_index, indices(&[(2, 2), (3, 3)]));

    let out = s.step(receive(2, aer(2, true, 3)));

    assert_eq!(
        out,
        vec![
            applied(1, 1),
            applied(2, 1),
            applied(3, 2),
            reply_ok(7, 1, 0),
        ]
    );
    assert_eq!(s.volatile.match_index, indices(&[(2, 3), (3, 0)]));
    assert_eq!(s.volatile.next_index, indices(&[(2, 4), (3, 3)]));
    assert_eq!(s.volatile.commit_index, LogIndex(3));

    let before = s.clone();
    let out = s.step(receive(2, aer(2, true, 1)));

    assert_eq!(out, vec![]);
    assert_eq!(s, before);
    assert_eq!(s.volatile.match_index, indices(&[(2, 3), (3, 0)]));
    assert_eq!(s.volatile.next_index, indices(&[(2, 4), (3, 3)]));
}

/// A rejection at an index the follower has since acknowledged is stale (it
/// was sent before the follower caught up) and is ignored, as etcd-io/raft's
/// `MaybeDecrTo` ignores it: next_index never falls to match_index or below.
/// A rejection above match_index still backs off.
///
/// Raft §5.3 (decision in `handle_append_entries_response`)
#[test]
fn stale_rejection_at_or_below_match_index_is_ignored() {
    let mut s = leader_of_term(1, 3, &[1, 1], 2);
    s.step(receive(2, aer(2, true, 2)));
    assert_eq!(s.volatile.match_index, indices(&[(2, 2), (3, 0)]));
    assert_eq!(s.volatile.next_index, indices(&[(2, 3), (3, 3)]));
    let before = s.clone();

    for index in [0, 1, 2] {
        let out = s.step(receive(2, aer(2, false, index)));
        assert_eq!(out, vec![], "rejection at {index}");
        assert_eq!(s, before, "rejection at {index}");
    }

    let out = s.step(receive(3, aer(2, false, 1)));
    assert_eq!(
        out,
        vec![send(3, ae(2, 1, 0, 0, vec![entry(1), entry(1)], 0))]
    );
    assert_eq!(s.volatile.next_index, indices(&[(2, 3), (3, 1)]));
}

// ---- Clients -----------------------------------------------------------------

/// A follower rejects client requests and supplies the leader it knows: none
/// before it heard from a leader, the sender of AppendEntries afterwards.
///
/// ("If the client contacts a follower, the follower will reject its request
/// and supply information about the most recent leader it has heard from".)
///
/// Raft §8
#[test]
fn follower_redirects_client_with_leader_hint() {
    let (mut s, _) = Server::<Counter>::new(NodeId(1), peers_of(1, 3));

    let out = s.step(client_request(7, 1));

    assert_eq!(out, vec![not_leader(7, 1, None)]);

    s.step(receive(2, ae(1, 2, 0, 0, vec![], 0)));
    let out = s.step(client_request(7, 1));

    assert_eq!(out, vec![not_leader(7, 1, Some(2))]);
    assert!(s.persistent.log.is_empty());
}

/// A candidate knows no leader of its term.
///
/// Raft §8
#[test]
fn candidate_redirects_client_without_leader_hint() {
    let mut s = candidate_of_term(1, 3, &[], 2);

    let out = s.step(client_request(7, 1));

    assert_eq!(out, vec![not_leader(7, 1, None)]);
    assert!(s.persistent.log.is_empty());
}

/// The leader appends the command to its log, persists it, sends it to every
/// peer, and answers the client only once the entry is committed and applied.
///
/// Fig. 2 (Leaders rule 2: "respond after entry applied to state machine"), Raft §8
#[test]
fn leader_appends_client_command_and_replies_once_applied() {
    let mut s = leader_of_term(1, 3, &[], 1);

    let out = s.step(client_request(7, 1));

    let request = ae(1, 1, 0, 0, vec![command(1, 7, 1)], 0);
    assert_eq!(
        out,
        vec![
            persist_log(1, vec![command(1, 7, 1)]),
            send(2, request.clone()),
            send(3, request),
        ]
    );
    assert_eq!(s.persistent.log, Log::from_entries(vec![command(1, 7, 1)]));
    assert_eq!(s.volatile.commit_index, LogIndex(0));

    let out = s.step(receive(2, aer(1, true, 1)));

    assert_eq!(out, vec![applied(1, 1), reply_ok(7, 1, 0)]);
    assert_eq!(s.volatile.commit_index, LogIndex(1));
    assert_eq!(s.volatile.state_machine, Counter(1));
    assert_eq!(s.volatile.sessions, BTreeMap::from([(ClientId(7), (1, 0))]));
}

/// A retried request whose entry this leader already appended in its current
/// term (not yet applied) is not appended a second time; the reply comes
/// when that entry applies. (A copy from an earlier term is appended again:
/// see [`retried_request_from_earlier_term_is_appended_again_and_applied_once`].)
///
/// Raft §8
#[test]
fn retried_request_already_in_log_is_not_appended_twice() {
    let mut s = leader_of_term(1, 3, &[1], 2);
    s.step(client_request(7, 1));
    assert_eq!(
        s.persistent.log,
        Log::from_entries(vec![entry(1), command(2, 7, 1)])
    );
    let before = s.clone();

    let out = s.step(client_request(7, 1));

    assert_eq!(out, vec![]);
    assert_eq!(s, before);

    let out = s.step(receive(2, aer(2, true, 2)));

    assert_eq!(out, vec![applied(1, 1), applied(2, 2), reply_ok(7, 1, 0)]);
    assert_eq!(s.volatile.state_machine, Counter(1));
    assert_eq!(s.persistent.log.len(), 2);
}

/// A new leader whose log holds an uncommitted copy of a request from an
/// earlier term cannot commit that copy by counting replicas, so a retry of
/// the request appends it again in the current term (a copy of the current
/// term is then pending and a further retry appends nothing). Once the new
/// copy commits, both copies are applied: the command runs once (the second
/// copy is a duplicate for the session table) and the client gets one Ok
/// reply per applied copy, both with the same value.
///
/// Raft §8 (sessions), Raft §5.4.2
#[test]
fn retried_request_from_earlier_term_is_appended_again_and_applied_once() {
    // Server 1 leads term 1 and appends request (7, 1) at index 1, then loses
    // leadership to a candidate of term 2 before the entry commits.
    let mut s = leader_of_term(1, 3, &[], 1);
    s.step(client_request(7, 1));
    s.step(receive(2, rv(2, 2, 0, 0)));
    assert_eq!(s.role(), Role::Follower);
    assert_eq!(s.volatile.commit_index, LogIndex(0));

    // It wins term 3 with the vote of server 3.
    s.step(Input::ElectionTimeout);
    s.step(receive(3, rvr(3, true)));
    assert_eq!(s.role(), Role::Leader);
    assert_eq!(s.current_term(), Term(3));
    assert_eq!(s.persistent.log, Log::from_entries(vec![command(1, 7, 1)]));

    // The copy of term 1 reaches a majority but does not commit.
    assert_eq!(s.step(receive(2, aer(3, true, 1))), vec![]);
    assert_eq!(s.volatile.commit_index, LogIndex(0));

    // The client retries: the request is appended again, in term 3.
    let out = s.step(client_request(7, 1));

    assert_eq!(
        out,
        vec![
            persist_log(2, vec![command(3, 7, 1)]),
            send(2, ae(3, 1, 1, 1, vec![command(3, 7, 1)], 0)),
            send(3, ae(3, 1, 1, 1, vec![command(3, 7, 1)], 0)),
        ]
    );
    assert_eq!(
        s.persistent.log,
        Log::from_entries(vec![command(1, 7, 1), command(3, 7, 1)])
    );

    // A second retry finds the copy of term 3 pending.
    let before = s.clone();
    assert_eq!(s.step(client_request(7, 1)), vec![]);
    assert_eq!(s, before);

    // The copy of term 3 reaches a majority: both entries commit and apply.
    let out = s.step(receive(3, aer(3, true, 2)));

    assert_eq!(
        out,
        vec![
            applied(1, 1),
            reply_ok(7, 1, 0),
            applied(2, 3),
            reply_ok(7, 1, 0),
        ]
    );
    assert_eq!(s.volatile.commit_index, LogIndex(2));
    assert_eq!(s.volatile.last_applied, LogIndex(2));
    assert_eq!(s.volatile.state_machine, Counter(1));
    assert_eq!(s.volatile.sessions, BTreeMap::from([(ClientId(7), (1, 0))]));
}

/// A retried request that was already applied is answered from the session
/// table, without a new entry; an older request is dropped; a new request
/// number is appended.
///
/// ("If it receives a command whose serial number has already been executed,
/// it responds immediately without re-executing the request".) One older
/// than the latest executed gets [`crate::ClientReply::Superseded`]: the
/// session keeps only the latest answer.
///
/// Raft §8
#[test]
fn retried_request_already_applied_is_answered_from_session() {
    let mut s = leader_of_term(1, 3, &[], 1);
    s.step(client_request(7, 1));
    s.step(receive(2, aer(1, true, 1)));
    s.step(client_request(7, 2));
    s.step(receive(2, aer(1, true, 2)));
    assert_eq!(s.volatile.state_machine, Counter(2));
    let before = s.clone();

    let out = s.step(client_request(7, 2));

    assert_eq!(out, vec![reply_ok(7, 2, 1)]);
    assert_eq!(s, before);

    // An older request than the latest applied: its answer is gone, and
    // the client is told so rather than left without an answer.
    let out = s.step(client_request(7, 1));

    assert_eq!(
        out,
        vec![crate::Output::ClientReply {
            client_id: crate::ClientId(7),
            request_no: 1,
            reply: crate::ClientReply::Superseded { applied: 2 },
        }]
    );
    assert_eq!(s, before);

    let out = s.step(client_request(7, 3));

    let request = ae(1, 1, 2, 1, vec![command(1, 7, 3)], 2);
    let all = vec![command(1, 7, 1), command(1, 7, 2), command(1, 7, 3)];
    assert_eq!(
        out,
        vec![
            persist_log(3, vec![command(1, 7, 3)]),
            send(2, request),
            send(3, ae(1, 1, 0, 0, all.clone(), 2)),
        ]
    );
    assert_eq!(s.persistent.log, Log::from_entries(all));
}

/// A log holding the same (client, request number) twice — a retry appended
/// by two different leaders — applies the command once; both entries are
/// applied as log entries.
///
/// (The state machine "tracks the latest serial number processed for each
/// client".)
///
/// Raft §8
#[test]
fn duplicate_command_in_log_is_applied_once() {
    let mut s = server_with_log(1, 3, &[], 1);
    let entries = vec![command(1, 7, 1), command(1, 7, 1), command(1, 7, 2)];

    let out = s.step(receive(2, ae(1, 2, 0, 0, entries.clone(), 3)));

    assert_eq!(
        out,
        vec![
            persist_log(1, entries),
            SET_ELECTION,
            applied(1, 1),
            applied(2, 1),
            applied(3, 1),
            send(2, aer(1, true, 3)),
        ]
    );
    assert_eq!(s.volatile.state_machine, Counter(2));
    assert_eq!(s.volatile.sessions, BTreeMap::from([(ClientId(7), (2, 1))]));
    assert_eq!(s.volatile.last_applied, LogIndex(3));
}

/// A late retry of an older request, appended after a newer request of the
/// same client was applied, is not applied either: the session remembers the
/// latest request applied for each client.
///
/// Raft §8
#[test]
fn older_request_in_log_after_newer_one_is_not_applied() {
    let mut s = server_with_log(1, 3, &[], 1);
    let entries = vec![command(1, 7, 1), command(1, 7, 2), command(1, 7, 1)];

    let out = s.step(receive(2, ae(1, 2, 0, 0, entries.clone(), 3)));

    assert_eq!(
        out,
        vec![
            persist_log(1, entries),
            SET_ELECTION,
            applied(1, 1),
            applied(2, 1),
            applied(3, 1),
            send(2, aer(1, true, 3)),
        ]
    );
    assert_eq!(s.volatile.state_machine, Counter(2));
    assert_eq!(s.volatile.sessions, BTreeMap::from([(ClientId(7), (2, 1))]));
}

// ---- Persistence and restart ---------------------------------------------------

/// A restarted server keeps its term, vote and log, and starts as a follower
/// with empty volatile state and a running election timer.
///
/// Fig. 2 (State: persistent state on all servers; volatile state is lost)
#[test]
fn restart_keeps_persistent_state_and_resets_volatile_state() {
    let mut leader = leader_of_term(1, 3, &[1], 5);
    leader.step(client_request(7, 1));
    leader.step(receive(2, aer(5, true, 2)));
    assert_eq!(leader.volatile.commit_index, LogIndex(2));
    let persistent = leader.persistent.clone();

    let (s, out) = Server::<Counter>::restart(NodeId(1), peers_of(1, 3), persistent.clone());

    assert_eq!(out, vec![SET_ELECTION]);
    assert_eq!(s.persistent, persistent);
    assert_eq!(s.current_term(), Term(5));
    assert_eq!(s.persistent.voted_for, Some(NodeId(1)));
    assert_eq!(s.role(), Role::Follower);
    assert_eq!(s.volatile.commit_index, LogIndex(0));
    assert_eq!(s.volatile.last_applied, LogIndex(0));
    assert_eq!(s.volatile.leader_hint, None);
    assert!(s.volatile.votes_granted.is_empty());
    assert!(s.volatile.next_index.is_empty());
    assert!(s.volatile.match_index.is_empty());
    assert_eq!(s.volatile.state_machine, Counter(0));
    assert!(s.volatile.sessions.is_empty());
    assert_eq!(s.peers, peers_of(1, 3));
}

/// Replaying the Persist outputs of every step on a copy of the persistent
/// state reproduces the server's persistent state, and a Persist is always
/// the first output of its step.
///
/// Fig. 2 ("Updated on stable storage before responding to RPCs")
#[test]
fn persist_outputs_describe_every_change_to_persistent_state() {
    let mut s = server_with_log(1, 3, &[1, 1, 1], 1);
    let mut disk = s.persistent.clone();
    let inputs = vec![
        receive(2, rv(2, 2, 3, 1)),
        receive(2, ae(2, 2, 1, 1, vec![entry(2)], 1)),
        receive(2, ae(2, 2, 2, 2, vec![entry(2), entry(2)], 2)),
        Input::ElectionTimeout,
        receive(3, rvr(3, true)),
        client_request(7, 1),
        receive(2, aer(3, true, 5)),
        client_request(7, 2),
        // Server 3 won term 4 with the first five entries; its first client
        // command replaces the uncommitted entry of request 2 at index 6.
        receive(3, ae(4, 3, 5, 3, vec![command(4, 8, 1)], 5)),
    ];
    for input in inputs {
        let out = s.step(input.clone());
        for (i, o) in out.iter().enumerate() {
            if let Output::Persist(p) = o {
                assert_eq!(i, 0, "Persist not first for {input:?}");
                disk.apply_persist(p);
            }
        }
        assert_eq!(disk, s.persistent, "after {input:?}");
    }
    assert_eq!(
        s.persistent.log,
        Log::from_entries(vec![
            entry(1),
            entry(2),
            entry(2),
            entry(2),
            command(3, 7, 1),
            command(4, 8, 1),
        ])
    );
    assert_eq!(s.volatile.commit_index, LogIndex(5));
    assert_eq!(s.current_term(), Term(4));
}
