//! Follower reads at the leader's read index
//! ([`ReadMode::FollowerReadIndex`], Raft thesis §6.4): the follower's
//! request, the leader's round and answer, the follower's wait for its
//! apply, and what a leader that does not lead, or a change of term, does
//! to the reads still waiting.

use super::helpers::*;
use crate::{
    ClientId, CounterCommand, Input, LogIndex, Message, Output, ReadAnswer, ReadIndexRequest,
    ReadIndexResponse, ReadMode, Replication, Role, Server, Term,
};

fn read(client: u64, request_no: u64) -> Input<CounterCommand> {
    Input::ClientRead {
        client_id: ClientId(client),
        request_no,
        command: CounterCommand::Read,
        mode: ReadMode::FollowerReadIndex,
    }
}

fn request(term: u64, client: u64, request_no: u64) -> Msg {
    Message::ReadIndex(ReadIndexRequest {
        term: Term(term),
        client_id: ClientId(client),
        request_no,
    })
}

fn response(term: u64, client: u64, request_no: u64, index: Option<u64>) -> Msg {
    Message::ReadIndexResponse(ReadIndexResponse {
        term: Term(term),
        client_id: ClientId(client),
        request_no,
        index: index.map(LogIndex),
    })
}

fn replies(out: &[Out]) -> Vec<&Out> {
    out.iter()
        .filter(|o| matches!(o, Output::ClientReply { .. }))
        .collect()
}

/// Server 2 of three, a follower of term 1 that holds the leader's entry
/// at index 1 but has not learnt it is committed.
fn follower_behind() -> Server<crate::Counter> {
    let mut f = server_with_log(2, 3, &[], 1);
    f.step(receive(1, ae(1, 1, 0, 0, vec![command(1, 7, 1)], 0)));
    assert_eq!(f.volatile.leader_hint, Some(crate::NodeId(1)));
    assert_eq!(f.volatile.last_applied, LogIndex(0));
    f
}

/// The follower asks the leader it knows, holds the read, and answers only
/// once it has applied the index the leader sent, from its own state.
#[test]
fn a_follower_answers_once_it_has_applied_its_leaders_read_index() {
    let mut f = follower_behind();
    let out = f.step(read(9, 1));
    assert_eq!(out, vec![send(1, request(1, 9, 1))]);
    assert_eq!(f.volatile.forwarded_reads.len(), 1);
    // A retry asks again; the read is held once.
    assert_eq!(f.step(read(9, 1)), vec![send(1, request(1, 9, 1))]);
    assert_eq!(f.volatile.forwarded_reads.len(), 1);

    let out = f.step(receive(1, response(1, 9, 1, Some(1))));
    assert!(
        replies(&out).is_empty(),
        "answered before applying: {out:?}"
    );
    let out = f.step(receive(1, ae(1, 1, 1, 1, vec![], 1)));
    assert_eq!(replies(&out), vec![&reply_ok(9, 1, 1)]);
    assert!(f.volatile.forwarded_reads.is_empty());
}

/// The leader takes the request as a ReadIndex read of its own: a round
/// a majority confirms, then the read index goes to the follower, which
/// applies it itself (the leader reads nothing and answers no client).
#[test]
fn the_leader_confirms_a_round_and_sends_the_read_index() {
    let mut l = leader(3, Replication::default());
    l.step(client_request(7, 1));
    l.step(receive(2, aer(1, true, 1)));
    assert_eq!(l.volatile.commit_index, LogIndex(1));

    let out = l.step(receive(3, request(1, 9, 1)));
    assert_eq!(l.volatile.pending_reads.len(), 1);
    assert_eq!(
        l.volatile.pending_reads[0].answer,
        ReadAnswer::Index(crate::NodeId(3))
    );
    let round = l.volatile.read_round;
    assert!(round > 0, "no round started: {out:?}");
    // The same request again is the read already waiting.
    l.step(receive(3, request(1, 9, 1)));
    assert_eq!(l.volatile.pending_reads.len(), 1);

    let mut confirm = aer(1, true, 1);
    if let Message::AppendEntriesResponse(r) = &mut confirm {
        r.read_round = round;
    }
    let out = l.step(receive(2, confirm));
    assert!(replies(&out).is_empty(), "{out:?}");
    assert!(
        out.contains(&send(3, response(1, 9, 1, Some(1)))),
        "{out:?}"
    );
    assert!(l.volatile.pending_reads.is_empty());
}

/// A server that does not lead says so; the follower then redirects the
/// client to the leader it knows. A follower that knows no leader
/// redirects at once.
#[test]
fn a_server_that_does_not_lead_answers_none_and_the_client_is_redirected() {
    let mut other = server_with_log(3, 3, &[], 1);
    let out = other.step(receive(2, request(1, 9, 1)));
    assert_eq!(out, vec![send(2, response(1, 9, 1, None))]);

    let mut f = follower_behind();
    f.step(read(9, 1));
    let out = f.step(receive(1, response(1, 9, 1, None)));
    assert_eq!(out, vec![not_leader(9, 1, Some(1))]);
    assert!(f.volatile.forwarded_reads.is_empty());

    let mut lost = server_with_log(2, 3, &[], 1);
    assert_eq!(lost.step(read(9, 1)), vec![not_leader(9, 1, None)]);
}

/// A new term gives up the reads still waiting for their index (the leader
/// asked may have stepped down and forgotten them), but keeps one whose
/// index came: it is served once applied, whoever leads.
#[test]
fn a_new_term_gives_up_the_reads_without_an_index() {
    let mut f = follower_behind();
    f.step(read(9, 1));
    f.step(read(8, 1));
    f.step(receive(1, response(1, 8, 1, Some(1))));
    let out = f.step(Input::ElectionTimeout);
    assert_eq!(f.role(), Role::Candidate);
    assert_eq!(replies(&out), vec![&not_leader(9, 1, None)]);
    assert_eq!(f.volatile.forwarded_reads.len(), 1);
    let out = f.step(receive(3, ae(2, 3, 1, 1, vec![], 1)));
    assert_eq!(replies(&out), vec![&reply_ok(8, 1, 1)]);
}

/// A leader asked by a client serves the read as a ReadIndex read.
#[test]
fn a_leader_asked_serves_it_as_a_read_index_read() {
    let mut l = leader(3, Replication::default());
    l.step(read(9, 1));
    assert_eq!(l.volatile.pending_reads.len(), 1);
    assert!(matches!(
        l.volatile.pending_reads[0].answer,
        ReadAnswer::Value(CounterCommand::Read)
    ));
}
