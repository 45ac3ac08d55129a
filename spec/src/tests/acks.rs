//! When a leader answers a write ([`Ack`], the seed article's consistency
//! levels): each level's point, the order against the persist, and what a
//! change of role does to the writes still waiting.

use super::helpers::*;
use crate::{
    Ack, ClientId, ClientReply, CounterCommand, Input, LogIndex, Output, Replication, Role, Term,
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
    assert_eq!(names, ["stored", "committed", "replicated", "applied"]);
    for a in Ack::ALL {
        assert_eq!(Ack::parse(a.name()), Some(a));
    }
    assert_eq!(Ack::parse("quorum"), None);
    assert_eq!(Ack::default(), Ack::Applied);
}
