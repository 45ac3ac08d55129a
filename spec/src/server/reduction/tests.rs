//! Tests of the model checker's reduction ([`super`]): which messages a
//! server ignores, absorbs or refuses for good.

use crate::tests::helpers::*;
use crate::{Counter, Input, LogIndex, Message, NodeId, Role, Server, Term};
use std::collections::{BTreeMap, BTreeSet};

// ---- Dead messages: ignores_forever ------------------------------------------

/// Every role a server can be in, `None` standing for a crashed server.
const ROLES: [Option<Role>; 4] = [
    None,
    Some(Role::Follower),
    Some(Role::Candidate),
    Some(Role::Leader),
];

/// Both response kinds of `term`, granted and refused, successful and failed.
fn responses_of_term(term: u64) -> Vec<Msg> {
    vec![
        rvr(term, true),
        rvr(term, false),
        aer(term, true, 1),
        aer(term, false, 1),
    ]
}

/// A response of an earlier term is stale: every server ignores it, whatever
/// its role, and it can never matter again since terms only grow.
///
/// Raft §5.1 (stale messages are discarded)
#[test]
fn stale_responses_are_ignored_forever_by_any_role() {
    for role in ROLES {
        for stale_term in [0, 2] {
            for message in responses_of_term(stale_term) {
                assert!(
                    crate::reduction::ignores_forever(Term(3), role, &message),
                    "{role:?} {message:?}"
                );
            }
        }
    }
}

/// A RequestVoteResponse of the current term matters only to a candidate of
/// that term, and only if it grants the vote: a follower or leader of the
/// term never becomes its candidate, and a refusal changes nothing even for
/// the candidate.
///
/// Fig. 2 (Candidates rule 2), Raft §5.2
#[test]
fn request_vote_response_of_current_term_matters_only_to_candidate_if_granted() {
    for role in ROLES {
        let candidate = role == Some(Role::Candidate);
        assert_eq!(
            crate::reduction::ignores_forever(Term(3), role, &rvr(3, true)),
            !candidate,
            "{role:?}"
        );
        assert!(
            crate::reduction::ignores_forever(Term(3), role, &rvr(3, false)),
            "{role:?}"
        );
    }
}

/// An AppendEntriesResponse of the current term, successful or not, is
/// ignored forever by a follower of that term (which never leads it) and
/// matters to the leader of the term.
///
/// Fig. 2 (Leaders rule 3), Raft §5.3
#[test]
fn append_entries_response_of_current_term_matters_to_leader() {
    for message in [aer(3, true, 1), aer(3, false, 1)] {
        assert!(
            crate::reduction::ignores_forever(Term(3), Some(Role::Follower), &message),
            "{message:?}"
        );
        assert!(
            !crate::reduction::ignores_forever(Term(3), Some(Role::Leader), &message),
            "{message:?}"
        );
    }
}

/// A candidate of term 2 may still become the leader of term 2, so an
/// AppendEntriesResponse of term 2 that reaches it is not dead: here it is a
/// rejection, sent with term 2 by a follower that had moved to term 2, of
/// an AppendEntries the server sent as leader of term 1 before it crashed.
/// Delivered once the candidate has won, it makes the leader back off
/// next_index and retry.
///
/// Raft §5.2 (a candidate of a term becomes its leader), Raft §5.3
#[test]
fn candidate_does_not_ignore_forever_append_entries_response_of_its_term() {
    let late_rejection = aer(2, false, 1);
    let mut s = candidate_of_term(1, 3, &[1, 1], 2);

    let claim = s.ignores_forever(NodeId(3), &late_rejection);
    s.step(receive(2, rvr(2, true)));
    assert_eq!(s.role(), Role::Leader);
    let before = s.clone();
    let out = s.step(receive(3, late_rejection.clone()));

    assert_eq!(
        out,
        vec![send(3, ae(2, 1, 0, 0, vec![entry(1), entry(1)], 0))]
    );
    assert_ne!(s, before);
    assert!(
        !claim,
        "ignores_forever(Candidate, {late_rejection:?}) is true, but the leader it becomes acts on it"
    );
}

/// A live server also ignores forever what it has already taken into
/// account: a candidate, a granted vote from a server whose vote it counted;
/// a leader, a success or rejection at or below the sender's match_index, and
/// a rejection whose back-off would not lower the sender's next_index. The
/// same response from another sender, or above match_index, still matters.
///
/// Fig. 2 (Candidates rule 2, Leaders rule 3), Raft §5.3
#[test]
fn responses_already_taken_into_account_are_ignored_forever() {
    let mut c = candidate_of_term(1, 5, &[], 2);
    c.step(receive(2, rvr(2, true)));
    assert_eq!(c.role(), Role::Candidate);
    assert!(c.ignores_forever(NodeId(2), &rvr(2, true)));
    assert!(!c.ignores_forever(NodeId(3), &rvr(2, true)));

    let mut l = leader_of_term(1, 3, &[1, 1], 2);
    l.step(receive(2, aer(2, true, 2)));
    l.step(receive(3, aer(2, false, 2)));
    assert_eq!(l.volatile.next_index, indices(&[(2, 3), (3, 2)]));
    for index in [0, 1, 2] {
        assert!(
            l.ignores_forever(NodeId(2), &aer(2, true, index)),
            "{index}"
        );
        assert!(
            l.ignores_forever(NodeId(2), &aer(2, false, index)),
            "{index}"
        );
    }
    assert!(!l.ignores_forever(NodeId(2), &aer(2, true, 3)));
    // n2's next_index is 3 = match_index + 1: no rejection can lower it.
    assert!(l.ignores_forever(NodeId(2), &aer(2, false, 3)));
    // n3's next_index is 2 and its match_index 0: a rejection at 2 or above
    // cannot lower next_index, one at 1 can; a success at 1 raises match_index.
    assert!(l.ignores_forever(NodeId(3), &aer(2, false, 2)));
    assert!(l.ignores_forever(NodeId(3), &aer(2, false, 3)));
    assert!(!l.ignores_forever(NodeId(3), &aer(2, false, 1)));
    assert!(!l.ignores_forever(NodeId(3), &aer(2, true, 1)));
}

/// A request of an earlier term is only refused: delivering it changes
/// nothing and the one output is a refusal carrying the receiver's term. A
/// request of the current term, and any response, is not `only_refuses`.
///
/// Fig. 2 (RequestVote and AppendEntries, receiver rule 1), Raft §5.1
#[test]
fn requests_of_an_earlier_term_are_only_refused() {
    let s = server_with_log(1, 3, &[1, 1], 3);
    let stale = [
        (rv(2, 2, 5, 2), rvr(3, false)),
        (ae(2, 2, 0, 0, vec![entry(2)], 0), aer(3, false, 0)),
    ];
    for (request, refusal) in stale {
        assert!(
            crate::reduction::only_refuses(Term(3), &request),
            "{request:?}"
        );
        assert!(crate::reduction::refuses_forever(
            Term(3),
            None,
            &request,
            None
        ));
        assert_eq!(
            crate::reduction::refusal(Term(3), &request).as_ref(),
            Some(&refusal)
        );
        let mut delivered = s.clone();
        let out = delivered.step(receive(2, request.clone()));
        assert_eq!(out, vec![send(2, refusal)], "{request:?}");
        assert_eq!(delivered, s, "{request:?}");
    }
    for message in [
        rv(3, 2, 5, 2),
        ae(3, 2, 0, 0, vec![], 0),
        rvr(2, false),
        aer(2, false, 0),
    ] {
        assert!(
            !crate::reduction::only_refuses(Term(3), &message),
            "{message:?}"
        );
    }
}

/// A server that voted for one candidate in its current term refuses every
/// other candidate's RequestVote of that term, and keeps refusing it once the
/// term moves on (then it is of an earlier term); the refusal is
/// `refusal(term)`. A request it could still grant (no vote yet, or its vote
/// is for that candidate) is not refused for good, nor is an AppendEntries of
/// its term, nor, under the two seeded bugs that lose a vote, any request of
/// its term.
///
/// Fig. 2 (RequestVote receiver rules 1 and 2), Raft §5.2
#[test]
fn a_vote_given_refuses_other_candidates_for_good() {
    let mut s = server_with_log(1, 3, &[1], 3);
    s.persistent.voted_for = Some(NodeId(2));
    let other = rv(3, 3, 5, 3);
    assert!(crate::reduction::refuses_forever(
        Term(3),
        Some(NodeId(2)),
        &other,
        None
    ));
    assert!(crate::reduction::refuses_forever(
        Term(4),
        None,
        &other,
        None
    ));
    let mut delivered = s.clone();
    let out = delivered.step(receive(3, other.clone()));
    assert_eq!(out, vec![send(3, rvr(3, false))]);
    assert_eq!(
        crate::reduction::refusal(Term(3), &other),
        Some(rvr(3, false))
    );
    assert_eq!(delivered, s);

    let same = rv(3, 2, 5, 3);
    assert!(!crate::reduction::refuses_forever(
        Term(3),
        Some(NodeId(2)),
        &same,
        None
    ));
    assert!(!crate::reduction::refuses_forever(
        Term(3),
        None,
        &other,
        None
    ));
    assert!(!crate::reduction::refuses_forever(
        Term(3),
        Some(NodeId(2)),
        &ae(3, 2, 0, 0, vec![], 0),
        None
    ));
    for bug in [
        crate::bugs::Bug::StepDownForgetsVote,
        crate::bugs::Bug::VoteNotPersisted,
    ] {
        assert!(!crate::reduction::refuses_forever(
            Term(3),
            Some(NodeId(2)),
            &other,
            Some(bug)
        ));
    }
    assert_eq!(crate::reduction::refusal(Term(3), &rvr(3, true)), None);
}

/// A crashed server restarts as a follower of its persisted term, which is
/// neither candidate nor leader of that term: it ignores every response of
/// its current term.
///
/// Fig. 2 (volatile state is reinitialized after a restart), Raft §5.1
#[test]
fn crashed_server_ignores_responses_of_its_current_term() {
    for message in responses_of_term(3) {
        assert!(
            crate::reduction::ignores_forever(Term(3), None, &message),
            "{message:?}"
        );
    }
}

/// A response of a later term makes any server adopt that term, so it is
/// never ignored.
///
/// Fig. 2 (Rules for Servers, All Servers rule 2)
#[test]
fn responses_of_a_later_term_are_not_ignored() {
    for role in ROLES {
        for message in responses_of_term(4) {
            assert!(
                !crate::reduction::ignores_forever(Term(3), role, &message),
                "{role:?} {message:?}"
            );
        }
    }
}

/// Requests always get a reply (a refusal at least), so RequestVote and
/// AppendEntries are never ignored, whatever their term and the receiver's
/// role.
///
/// Fig. 2 (RequestVote RPC and AppendEntries RPC, receiver rule 1)
#[test]
fn requests_are_never_ignored() {
    for role in ROLES {
        for term in [0, 2, 3, 4] {
            for message in [
                rv(term, 2, 0, 0),
                rv(term, 2, 5, term),
                ae(term, 2, 0, 0, vec![], 0),
                ae(term, 2, 1, 1, vec![entry(term)], 1),
            ] {
                assert!(
                    !crate::reduction::ignores_forever(Term(3), role, &message),
                    "{role:?} {message:?}"
                );
            }
        }
    }
}

/// The states of server 1 of a 3-server cluster along a run that goes
/// through every role: it votes, follows, runs an election that it wins,
/// replicates and commits, steps down, runs a second election and follows
/// the winner of a later term.
fn driven_trace() -> Vec<Server<Counter>> {
    let (s, _) = Server::<Counter>::new(NodeId(1), peers_of(1, 3));
    let inputs = vec![
        receive(2, rv(1, 2, 0, 0)),
        receive(2, ae(1, 2, 0, 0, vec![command(1, 7, 1)], 0)),
        Input::ElectionTimeout,
        receive(2, rvr(2, false)),
        receive(3, rvr(2, true)),
        client_request(7, 1),
        receive(2, aer(2, false, 1)),
        receive(2, aer(2, true, 2)),
        Input::HeartbeatTimeout,
        client_request(8, 1),
        receive(3, aer(3, false, 0)),
        Input::ElectionTimeout,
        receive(2, rvr(4, true)),
        receive(3, ae(5, 3, 3, 2, vec![], 3)),
    ];
    let mut trace = vec![s.clone()];
    let mut s = s;
    for input in inputs {
        s.step(input);
        trace.push(s.clone());
    }
    let roles: BTreeSet<Role> = trace.iter().map(Server::role).collect();
    assert_eq!(
        roles,
        BTreeSet::from([Role::Follower, Role::Candidate, Role::Leader])
    );
    trace
}

/// Every response of terms 0 to 6 from server 2 or 3, with indices 0 to 3.
fn all_responses() -> Vec<(u64, Msg)> {
    let mut messages = Vec::new();
    for from in [2, 3] {
        for term in 0..=6 {
            for granted in [true, false] {
                messages.push((from, rvr(term, granted)));
            }
            for success in [true, false] {
                for index in 0..=3 {
                    messages.push((from, aer(term, success, index)));
                }
            }
        }
    }
    messages
}

/// Whenever a server claims to ignore a message forever, delivering it sends
/// nothing and changes nothing: checked on every state of a driven run (and
/// of a single-server leader, and of each state restarted after a crash, which
/// `ignores_forever` with role `None` describes) for every response of terms
/// 0 to 6. The claim covers cases in every role, so the check is not vacuous.
///
/// Raft §5.1 (stale messages are discarded), Fig. 2 (Rules for Servers)
#[test]
fn ignored_messages_change_nothing_when_delivered() {
    let mut states = driven_trace();
    let (mut single, _) = Server::<Counter>::new(NodeId(1), vec![]);
    single.step(Input::ElectionTimeout);
    single.step(client_request(7, 1));
    states.push(single);

    let mut ignored_per_role: BTreeMap<Option<Role>, usize> = BTreeMap::new();
    for state in &states {
        let (restarted, _) =
            Server::<Counter>::restart(state.id, state.peers.clone(), state.persistent.clone());
        for (from, message) in all_responses() {
            if crate::reduction::ignores_forever(state.current_term(), None, &message) {
                *ignored_per_role.entry(None).or_default() += 1;
                assert!(
                    restarted.ignores_forever(NodeId(from), &message),
                    "{message:?}"
                );
            }
            for server in [state, &restarted] {
                if !server.ignores_forever(NodeId(from), &message) {
                    continue;
                }
                *ignored_per_role.entry(Some(server.role())).or_default() += 1;
                let mut delivered = server.clone();
                let out = delivered.step(receive(from, message.clone()));
                assert_eq!(out, vec![], "{message:?} to {server:?}");
                assert_eq!(&delivered, server, "{message:?}");
            }
        }
    }
    for role in ROLES {
        assert!(
            ignored_per_role.get(&role).copied().unwrap_or(0) > 0,
            "no ignored message for {role:?}"
        );
    }
}

/// "Forever": along a run, a message that a state ignores is ignored by every
/// later state as well (terms only grow, and a server is candidate or leader
/// of a term at most once).
///
/// Raft §5.1, §5.2
#[test]
fn ignored_messages_stay_ignored_in_later_states() {
    let trace = driven_trace();
    for (from, message) in all_responses() {
        for (i, earlier) in trace.iter().enumerate() {
            if !earlier.ignores_forever(NodeId(from), &message) {
                continue;
            }
            for (j, later) in trace.iter().enumerate().skip(i + 1) {
                assert!(
                    later.ignores_forever(NodeId(from), &message),
                    "{message:?} from {from}: ignored at state {i} ({:?}, term {:?}) \
                     but not at state {j} ({:?}, term {:?})",
                    earlier.role(),
                    earlier.current_term(),
                    later.role(),
                    later.current_term(),
                );
            }
        }
    }
}

/// A follower that holds every entry of an AppendEntries from the leader it
/// knows, and has committed as far as the request allows, absorbs it:
/// delivering it again changes nothing and only resets the election timer
/// and answers `acceptance`. A request that would append, truncate, commit
/// further or name another leader is not absorbed, nor one of another term,
/// nor one delivered to a candidate, nor any other message.
///
/// Fig. 2 (AppendEntries receiver rules 2 to 5)
#[test]
fn a_follower_absorbs_append_entries_it_holds() {
    let mut s = server_with_log(1, 3, &[1, 3, 3], 3);
    let request = ae(3, 2, 1, 1, vec![entry(3), entry(3)], 2);
    // Not yet: it would commit up to 2 and learn its leader.
    assert!(!s.absorbs(&request));
    s.step(receive(2, request.clone()));
    assert_eq!(s.volatile.commit_index, LogIndex(2));
    assert!(s.absorbs(&request));
    let mut delivered = s.clone();
    let out = delivered.step(receive(2, request.clone()));
    assert_eq!(out, vec![SET_ELECTION, send(2, aer(3, true, 3))]);
    let Message::AppendEntries(m) = &request else {
        unreachable!("ae builds an AppendEntries")
    };
    assert_eq!(crate::reduction::acceptance(m), aer(3, true, 3));
    assert_eq!(delivered, s);

    // A heartbeat at the end of the log, committing no further.
    assert!(s.absorbs(&ae(3, 2, 3, 3, vec![], 2)));
    assert!(s.absorbs(&ae(3, 2, 0, 0, vec![entry(1)], 5)));
    // It would commit index 3, append, truncate, or fail the check.
    for request in [
        ae(3, 2, 3, 3, vec![], 3),
        ae(3, 2, 3, 3, vec![entry(3)], 2),
        ae(3, 2, 1, 1, vec![entry(2)], 0),
        ae(3, 2, 2, 1, vec![], 0),
        // Another leader, or another term.
        ae(3, 3, 3, 3, vec![], 2),
        ae(4, 2, 3, 3, vec![], 2),
        ae(2, 2, 3, 3, vec![], 2),
        // Not an AppendEntries.
        rv(3, 2, 3, 3),
        aer(3, true, 3),
    ] {
        assert!(!s.absorbs(&request), "{request:?}");
    }
    assert!(!candidate_of_term(1, 3, &[1], 2).absorbs(&ae(2, 2, 1, 1, vec![], 0)));
}
