//! The leader's own write in parallel with replicating it (Raft thesis
//! §10.2.1, `Replication::parallel_write`): what it marks, when it counts
//! itself, and what a report of durability does.

use super::command;
use super::helpers::*;
use crate::{Input, LogIndex, Output, Persist, Replication, Role, Term};

fn parallel() -> Replication {
    Replication {
        parallel_write: true,
        ..Replication::default()
    }
}

fn synced(term: u64, index: u64) -> Input<crate::CounterCommand> {
    Input::Synced {
        term: Term(term),
        index: LogIndex(index),
    }
}

fn persist_of(out: &[Out]) -> Option<&Persist<crate::CounterCommand>> {
    out.iter().find_map(|o| match o {
        Output::Persist(p) => Some(p),
        _ => None,
    })
}

/// A leader's append is marked parallel, comes first, and its AppendEntries
/// follow in the same step; the leader's log counts as durable up to where
/// it was at its election.
#[test]
fn a_leaders_append_is_a_write_in_parallel() {
    let mut s = leader(3, parallel());
    assert_eq!(s.volatile.durable_index, Some(LogIndex(0)));
    let out = s.step(client_request(7, 1));
    let Some(Output::Persist(p)) = out.first() else {
        panic!("no persist first: {out:?}");
    };
    assert!(p.parallel && p.hard_state.is_none());
    assert_eq!(p.log.as_ref().map(|w| w.from), Some(LogIndex(1)));
    let appends = [2, 3].map(|to| send(to, ae(1, 1, 0, 0, vec![command(1, 7, 1)], 0)));
    for a in &appends {
        assert!(out.contains(a), "{out:?}");
    }
    assert_eq!(s.volatile.durable_index, Some(LogIndex(0)));
}

/// Figure 2 (no parallel write): the same append must be durable first, and
/// no durable index is kept.
#[test]
fn without_parallel_write_every_persist_is_durable_first() {
    let mut s = leader(3, Replication::default());
    assert_eq!(s.volatile.durable_index, None);
    let out = s.step(client_request(7, 1));
    assert!(persist_of(&out).is_some_and(|p| !p.parallel));
    // One follower's acknowledgement and the leader's own copy: committed.
    let out = s.step(receive(2, aer(1, true, 1)));
    assert_eq!(s.volatile.commit_index, LogIndex(1));
    assert!(out.contains(&reply_ok(7, 1, 0)), "{out:?}");
}

/// The leader counts itself only once its write is durable: one follower's
/// acknowledgement is not a majority of 3 until the report comes, and then
/// the entry commits, is applied and answered.
#[test]
fn the_leader_counts_itself_once_its_write_is_durable() {
    let mut s = leader(3, parallel());
    s.step(client_request(7, 1));
    let out = s.step(receive(2, aer(1, true, 1)));
    assert_eq!(s.volatile.commit_index, LogIndex(0), "{out:?}");
    assert!(!out.contains(&reply_ok(7, 1, 0)));
    let out = s.step(synced(1, 1));
    assert_eq!(s.volatile.durable_index, Some(LogIndex(1)));
    assert_eq!(s.volatile.commit_index, LogIndex(1));
    assert_eq!(out, vec![applied(1, 1), reply_ok(7, 1, 0)]);
}

/// The followers' copies alone can be a majority: the entry commits before
/// the leader's own write is durable.
#[test]
fn followers_copies_commit_without_the_leaders() {
    let mut s = leader(3, parallel());
    s.step(client_request(7, 1));
    s.step(receive(2, aer(1, true, 1)));
    let out = s.step(receive(3, aer(1, true, 1)));
    assert_eq!(s.volatile.commit_index, LogIndex(1));
    assert_eq!(s.volatile.durable_index, Some(LogIndex(0)));
    assert!(out.contains(&reply_ok(7, 1, 0)), "{out:?}");
    // The late report moves the durable index and nothing else.
    let out = s.step(synced(1, 1));
    assert_eq!(out, vec![]);
    assert_eq!(s.volatile.durable_index, Some(LogIndex(1)));
}

/// A report counts only up to the leader's log, only for the leader of its
/// term; to anyone else it changes nothing. A report never moves the durable
/// index back.
#[test]
fn a_report_for_another_term_or_server_changes_nothing() {
    let mut s = leader(5, parallel());
    s.step(client_request(7, 1));
    let before = s.clone();
    assert_eq!(s.step(synced(2, 1)), vec![]);
    assert_eq!(s, before, "a report of another term");
    s.step(synced(1, 9));
    assert_eq!(
        s.volatile.durable_index,
        Some(LogIndex(1)),
        "clamped to the log"
    );
    s.step(synced(1, 0));
    assert_eq!(s.volatile.durable_index, Some(LogIndex(1)), "never back");

    let mut follower = server_with_log(2, 3, &[1], 1).with_replication(parallel());
    let before = follower.clone();
    assert_eq!(follower.step(synced(1, 1)), vec![]);
    assert_eq!(follower, before);
}

/// Stepping down is a change of term, persisted before anything is sent
/// (not in parallel), and the durable index goes with the leadership; a
/// new leadership starts from the whole log, durable by then.
#[test]
fn stepping_down_persists_first_and_forgets_the_durable_index() {
    let mut s = leader(3, parallel());
    s.step(client_request(7, 1));
    let out = s.step(receive(2, rv(2, 2, 0, 0)));
    assert_eq!(s.role(), Role::Follower);
    assert!(persist_of(&out).is_some_and(|p| !p.parallel && p.hard_state.is_some()));
    assert_eq!(s.volatile.durable_index, None);
    // Elected again in term 3 (server 2's vote was its own in term 2).
    s.step(Input::ElectionTimeout);
    s.step(receive(3, rvr(3, true)));
    assert_eq!(s.role(), Role::Leader);
    assert_eq!(s.volatile.durable_index, Some(LogIndex(1)));
}
