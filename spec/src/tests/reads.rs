//! Reads ([`ReadMode`], Raft thesis §6.4): a follower's answer from its own
//! state, the leader's ReadIndex with its commit of the term and its round
//! of AppendEntries, rounds shared by the reads that wait together, and what
//! a change of role does to the reads still waiting.

use super::helpers::*;
use crate::{
    ClientId, CounterCommand, Input, LogIndex, Message, Output, ReadMode, Replication, Role,
    Server, Term,
};

fn read(client: u64, request_no: u64, mode: ReadMode) -> Input<CounterCommand> {
    Input::ClientRead {
        client_id: ClientId(client),
        request_no,
        command: CounterCommand::Read,
        mode,
    }
}

fn replies(out: &[Out]) -> Vec<&Out> {
    out.iter()
        .filter(|o| matches!(o, Output::ClientReply { .. }))
        .collect()
}

/// The rounds of the AppendEntries a step sends, by destination.
fn rounds(out: &[Out]) -> Vec<(u64, u64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                message: Message::AppendEntries(m),
            } => Some((to.0, m.read_round)),
            _ => None,
        })
        .collect()
}

/// A successful answer of `term` up to `index` to a request of `round`.
fn ack(term: u64, index: u64, round: u64) -> Msg {
    let mut m = aer(term, true, index);
    if let Message::AppendEntriesResponse(r) = &mut m {
        r.read_round = round;
    }
    m
}

/// Server 1, leader of term 1 of three that has committed and applied one
/// write of its own term (the count is 1).
fn leader_with_a_commit() -> Server<crate::Counter> {
    let mut s = leader(3, Replication::default());
    s.step(client_request(7, 1));
    s.step(receive(2, aer(1, true, 1)));
    assert_eq!(s.volatile.last_applied, LogIndex(1));
    s
}

/// Follower reads answer at once from the server's own state, whatever its
/// role: here a follower that has not applied the entry it holds.
#[test]
fn a_follower_read_is_answered_at_once_from_the_servers_own_state() {
    let mut f = server_with_log(2, 3, &[1], 1);
    let out = f.step(read(9, 1, ReadMode::Follower));
    assert_eq!(out, vec![reply_ok(9, 1, 0)]);
    let mut l = leader_with_a_commit();
    assert_eq!(
        l.step(read(9, 1, ReadMode::Follower)),
        vec![reply_ok(9, 1, 1)]
    );
}

/// A write sent as a read, and every read in `log` mode, goes through the
/// log as a client request.
#[test]
fn a_log_read_and_a_write_go_through_the_log() {
    let mut s = leader(1, Replication::default());
    let out = s.step(read(9, 1, ReadMode::Log));
    assert_eq!(s.log().len(), 1);
    assert_eq!(replies(&out), vec![&reply_ok(9, 1, 0)]);
    let out = s.step(Input::ClientRead {
        client_id: ClientId(8),
        request_no: 1,
        command: CounterCommand::Increment,
        mode: ReadMode::ReadIndex,
    });
    assert_eq!(s.log().len(), 2);
    assert_eq!(replies(&out), vec![&reply_ok(8, 1, 0)]);
    assert!(s.volatile.pending_reads.is_empty());
}

/// A ReadIndex read to a follower is redirected to the leader it knows.
#[test]
fn a_read_index_read_to_a_follower_is_redirected() {
    let mut f = server_with_log(2, 3, &[], 1);
    f.step(receive(1, ae(1, 1, 0, 0, vec![], 0)));
    assert_eq!(
        f.step(read(9, 1, ReadMode::ReadIndex)),
        vec![not_leader(9, 1, Some(1))]
    );
}

/// The leader starts a round: every AppendEntries carries it; an answer to
/// an earlier request (round 0) confirms nothing; one answer of the round
/// makes a majority with the leader, which answers at its read index.
#[test]
fn a_read_index_read_is_answered_once_a_majority_answers_its_round() {
    let mut s = leader_with_a_commit();
    let out = s.step(read(9, 1, ReadMode::ReadIndex));
    assert_eq!(rounds(&out), vec![(2, 1), (3, 1)]);
    assert!(replies(&out).is_empty());
    assert_eq!(s.volatile.pending_reads[0].index, Some(LogIndex(1)));
    assert!(replies(&s.step(receive(3, ack(1, 1, 0)))).is_empty());
    let out = s.step(receive(3, ack(1, 1, 1)));
    assert_eq!(replies(&out), vec![&reply_ok(9, 1, 1)]);
    assert!(s.volatile.pending_reads.is_empty());
    assert!(s.volatile.read_acks.is_empty());
    // With no read waiting, AppendEntries carry no round.
    let out = s.step(Input::HeartbeatTimeout);
    assert_eq!(rounds(&out), vec![(2, 0), (3, 0)]);
}

/// A retried read already waiting is not taken twice; reads that arrive
/// while a round is out share the next one, started once the first is
/// confirmed.
#[test]
fn reads_that_arrive_during_a_round_share_the_next() {
    let mut s = leader_with_a_commit();
    s.step(read(9, 1, ReadMode::ReadIndex));
    assert!(rounds(&s.step(read(9, 1, ReadMode::ReadIndex))).is_empty());
    assert_eq!(s.volatile.pending_reads.len(), 1);
    assert!(rounds(&s.step(read(10, 1, ReadMode::ReadIndex))).is_empty());
    assert!(rounds(&s.step(read(11, 1, ReadMode::ReadIndex))).is_empty());
    let out = s.step(receive(2, ack(1, 1, 1)));
    assert_eq!(replies(&out), vec![&reply_ok(9, 1, 1)]);
    assert_eq!(rounds(&out), vec![(2, 2), (3, 2)]);
    let out = s.step(receive(3, ack(1, 1, 2)));
    assert_eq!(
        replies(&out),
        vec![&reply_ok(10, 1, 1), &reply_ok(11, 1, 1)]
    );
}

/// A new leader that has not committed an entry of its term takes no read
/// index yet (thesis §6.4, step 1): its commit index may miss writes its
/// predecessor committed. The read is answered once its own write commits,
/// at the commit index then.
#[test]
fn a_read_waits_for_the_leaders_first_commit_of_its_term() {
    let mut s = leader_of_term(1, 3, &[1], 2);
    s.step(read(9, 1, ReadMode::ReadIndex));
    assert_eq!(s.volatile.pending_reads[0].index, None);
    assert!(replies(&s.step(receive(2, ack(2, 1, 1)))).is_empty());
    s.step(client_request(7, 1));
    let out = s.step(receive(2, ack(2, 2, 1)));
    assert_eq!(s.volatile.commit_index, LogIndex(2));
    assert_eq!(replies(&out), vec![&reply_ok(7, 1, 0), &reply_ok(9, 1, 1)]);
}

/// Under the seeded bug of etcd issue 7331 the same leader takes its stale
/// commit index (0) at once and answers the read with the count before the
/// write its predecessor committed.
#[cfg(feature = "seeded-bugs")]
#[test]
fn etcd_7331_answers_before_the_leaders_commit_of_its_term() {
    let persistent = server_with_log(1, 3, &[1], 1).persistent;
    let (mut s, _) = Server::<crate::Counter>::restart_with_bug(
        crate::NodeId(1),
        peers_of(1, 3),
        persistent,
        Some(crate::bugs::Bug::ReadIndexBeforeTermCommit),
    );
    s.step(Input::ElectionTimeout);
    s.step(receive(2, rvr(2, true)));
    assert_eq!(s.role(), Role::Leader);
    s.step(read(9, 1, ReadMode::ReadIndex));
    assert_eq!(s.volatile.pending_reads[0].index, Some(LogIndex(0)));
    let out = s.step(receive(2, ack(2, 1, 1)));
    assert_eq!(replies(&out), vec![&reply_ok(9, 1, 0)]);
}

/// A leader that steps down forgets the reads waiting and its rounds; the
/// clients retry elsewhere.
#[test]
fn stepping_down_forgets_the_reads_waiting() {
    let mut s = leader_with_a_commit();
    s.step(read(9, 1, ReadMode::ReadIndex));
    s.step(receive(2, ack(1, 1, 0)));
    s.step(receive(2, aer(2, false, 0)));
    assert_eq!(s.role(), Role::Follower);
    assert!(s.volatile.pending_reads.is_empty());
    assert_eq!(s.volatile.read_round, 0);
    assert!(s.volatile.read_acks.is_empty());
}

/// A follower echoes the round of the AppendEntries it answers, whether it
/// accepts it or not; a one-server leader confirms its rounds alone.
#[test]
fn answers_echo_the_round_and_a_single_server_confirms_alone() {
    let mut f = server_with_log(2, 3, &[], 1);
    let mut m = ae(1, 1, 0, 0, vec![], 0);
    if let Message::AppendEntries(a) = &mut m {
        a.read_round = 4;
    }
    let out = f.step(receive(1, m.clone()));
    assert!(out.contains(&send(1, ack(1, 0, 4))), "{out:?}");
    if let Message::AppendEntries(a) = &mut m {
        a.prev_log_index = LogIndex(3);
        a.prev_log_term = Term(1);
    }
    let out = f.step(receive(1, m));
    let echoed = out.iter().any(|o| {
        matches!(o, Output::Send { message: Message::AppendEntriesResponse(r), .. }
            if !r.success && r.read_round == 4)
    });
    assert!(echoed, "{out:?}");

    let mut s = leader(1, Replication::default());
    s.step(client_request(7, 1));
    assert_eq!(
        s.step(read(9, 1, ReadMode::ReadIndex)),
        vec![reply_ok(9, 1, 1)]
    );
}
