//! When a leader answers a write ([`Ack`], the seed article's consistency
//! levels): each level's point, the order against the persist, and what a
//! change of role does to the writes still waiting.

use super::helpers::*;
use crate::{
    Ack, ClientId, ClientReply, CounterCommand, Input, LogIndex, Message, NodeId, Output,
    Replication, Role, Term,
};

fn write(client: u64, request_no: u64, ack: Ack) -> Input<CounterCommand> {
    Input::ClientRequest {
        client_id: ClientId(client),
        request_no,
        command: CounterCommand::Increment,
        ack,
    }
}

fn accepted(client: u64, request_no: u64, index: u64, term: u64) -> Out {
    Output::ClientReply {
        client_id: ClientId(client),
        request_no,
        reply: ClientReply::Accepted {
            index: LogIndex(index),
            term: Term(term),
        },
    }
}

fn replies(out: &[Out]) -> Vec<&Out> {
    out.iter()
        .filter(|o| matches!(o, Output::ClientReply { .. }))
        .collect()
}

/// Level 1: the leader answers in the step that appends the entry, after
/// its persist (the ordering contract makes the entry durable first).
#[test]
fn stored_is_answered_after_the_leaders_own_persist() {
    let mut s = leader(3, Replication::default());
    let out = s.step(write(7, 1, Ack::Stored));
    assert!(matches!(out.first(), Some(Output::Persist(p)) if !p.parallel));
    assert_eq!(out.last(), Some(&accepted(7, 1, 1, 1)));
    assert!(s.volatile.pending_acks.is_empty());
}

/// Level 1 with the leader's write in parallel: the persist is not durable
/// when the step's outputs leave, so the answer waits for the report.
#[test]
fn stored_waits_for_a_parallel_write_to_be_durable() {
    let replication = Replication {
        parallel_write: true,
        ..Replication::default()
    };
    let mut s = leader(3, replication);
    let out = s.step(write(7, 1, Ack::Stored));
    assert!(replies(&out).is_empty(), "{out:?}");
    let out = s.step(Input::Synced {
        term: Term(1),
        index: LogIndex(1),
    });
    assert_eq!(replies(&out), vec![&accepted(7, 1, 1, 1)]);
}

/// Level 2: answered once committed (the leader and one follower of three),
/// with the apply's own answer after it; level 3 waits for every server.
#[test]
fn committed_and_replicated_wait_for_a_majority_and_for_everyone() {
    let mut s = leader(3, Replication::default());
    assert!(replies(&s.step(write(7, 1, Ack::Committed))).is_empty());
    assert!(replies(&s.step(write(8, 1, Ack::Replicated))).is_empty());
    let out = s.step(receive(2, aer(1, true, 2)));
    assert_eq!(s.volatile.commit_index, LogIndex(2));
    assert_eq!(
        replies(&out),
        vec![
            &reply_ok(7, 1, 0),
            &reply_ok(8, 1, 1),
            &accepted(7, 1, 1, 1)
        ]
    );
    assert_eq!(s.volatile.pending_acks.len(), 1);
    let out = s.step(receive(3, aer(1, true, 1)));
    assert!(replies(&out).is_empty(), "server 3 lacks index 2: {out:?}");
    let out = s.step(receive(3, aer(1, true, 2)));
    assert_eq!(replies(&out), vec![&accepted(8, 1, 2, 1)]);
    assert!(s.volatile.pending_acks.is_empty());
}

/// Level 4, the paper's: no early answer; the apply answers with the result.
#[test]
fn applied_is_answered_by_the_apply_alone() {
    let mut s = leader(3, Replication::default());
    assert!(replies(&s.step(write(7, 1, Ack::Applied))).is_empty());
    assert!(s.volatile.pending_acks.is_empty());
    let out = s.step(receive(2, aer(1, true, 1)));
    assert_eq!(replies(&out), vec![&reply_ok(7, 1, 0)]);
}

/// A retry of a write already appended in the term waits for the same
/// entry; a leader that steps down forgets what it had not answered yet.
#[test]
fn a_retry_waits_for_its_entry_and_a_step_down_forgets_the_waiting() {
    let mut s = leader(3, Replication::default());
    s.step(write(7, 1, Ack::Replicated));
    let out = s.step(write(7, 1, Ack::Replicated));
    assert!(persist_of_log(&out).is_none(), "appended twice: {out:?}");
    assert_eq!(
        s.volatile.pending_acks.get(&LogIndex(1)),
        Some(&(ClientId(7), 1, Ack::Replicated))
    );
    s.step(receive(2, aer(2, false, 0)));
    assert_eq!(s.role(), Role::Follower);
    assert!(s.volatile.pending_acks.is_empty());
}

fn persist_of_log(out: &[Out]) -> Option<&Out> {
    out.iter()
        .find(|o| matches!(o, Output::Persist(p) if p.log.is_some()))
}

/// The level names `--ack` takes, each read back to its level.
#[test]
fn levels_are_named_in_order() {
    let names: Vec<&str> = Ack::ALL.iter().map(|a| a.name()).collect();
    assert_eq!(
        names,
        [
            "stored",
            "committed",
            "replicated",
            "applied",
            "quorum-applied",
            "all-applied"
        ]
    );
    for a in Ack::ALL {
        assert_eq!(Ack::parse(a.name()), Some(a));
    }
    assert_eq!(Ack::parse("quorum"), None);
    assert_eq!(Ack::default(), Ack::Applied);
}

fn reporting() -> Replication {
    Replication {
        report_applied: true,
        ..Replication::default()
    }
}

/// A success from `from` up to `index` that reports `applied`.
fn aer_applied(term: u64, index: u64, applied: u64) -> Msg {
    let mut m = aer(term, true, index);
    if let Message::AppendEntriesResponse(r) = &mut m {
        r.applied = Some(LogIndex(applied));
    }
    m
}

/// A follower that reports its applies says how far it applied once it
/// took the request's commit index.
#[test]
fn a_follower_reports_its_applied_index_in_its_success() {
    let mut f = server_with_log(2, 3, &[1, 1], 0).with_replication(reporting());
    let out = f.step(receive(1, ae(1, 1, 0, 0, vec![entry(1), entry(1)], 1)));
    assert_eq!(f.volatile.last_applied, LogIndex(1));
    assert!(out.contains(&send(1, aer_applied(1, 2, 1))), "{out:?}");
}

/// Level 5: the leader applies the write when it commits, holds the answer,
/// sends its new commit index at once, and answers with the result when a
/// follower reports the apply (with the leader, a majority of 3).
#[test]
fn quorum_applied_waits_for_a_majority_of_applies() {
    let mut s = leader(3, reporting());
    assert!(replies(&s.step(write(7, 1, Ack::QuorumApplied))).is_empty());
    let out = s.step(receive(2, aer_applied(1, 1, 0)));
    assert_eq!(s.volatile.last_applied, LogIndex(1));
    assert!(
        replies(&out).is_empty(),
        "answered before a follower applied: {out:?}"
    );
    let commits: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::Send { message: Message::AppendEntries(m), .. } if m.leader_commit == LogIndex(1)))
        .collect();
    assert_eq!(
        commits.len(),
        2,
        "the commit index is not sent at once: {out:?}"
    );
    let out = s.step(receive(3, aer_applied(1, 1, 1)));
    assert_eq!(replies(&out), vec![&reply_ok(7, 1, 0)]);
    assert!(s.volatile.pending_acks.is_empty());
    // Known already: the same report again is dead.
    assert!(s.ignores_forever(NodeId(3), &aer_applied(1, 1, 1)));
    assert!(!s.ignores_forever(NodeId(2), &aer_applied(1, 1, 1)));
}

/// Level 6: one server's apply is not enough; the answer waits for all.
#[test]
fn all_applied_waits_for_every_server() {
    let mut s = leader(3, reporting());
    s.step(write(7, 1, Ack::AllApplied));
    s.step(receive(2, aer_applied(1, 1, 0)));
    assert!(replies(&s.step(receive(2, aer_applied(1, 1, 1)))).is_empty());
    let out = s.step(receive(3, aer_applied(1, 1, 1)));
    assert_eq!(replies(&out), vec![&reply_ok(7, 1, 0)]);
}

/// Without reports the leader never learns a follower's apply: a write at
/// level 5 waits, while one at level 4 beside it is answered.
#[test]
fn without_reports_a_level_5_write_waits() {
    let mut s = leader(3, Replication::default());
    s.step(write(7, 1, Ack::QuorumApplied));
    s.step(write(8, 1, Ack::Applied));
    let out = s.step(receive(2, aer(1, true, 2)));
    assert_eq!(replies(&out), vec![&reply_ok(8, 1, 1)]);
    assert_eq!(s.volatile.pending_acks.len(), 1);
}
