//! Flow control (`crate::flow`): bounded batches, probe and replicate,
//! the window, and the repair of a follower that fell back.

use super::helpers::*;
use crate::flow::ENTRY_OVERHEAD;
use crate::{Counter, Input, LogIndex, Message, NodeId, Progress, Replication, Role, Server};
use std::collections::VecDeque;
use std::num::{NonZeroU64, NonZeroUsize};

fn windowed(window: usize, max_entries: Option<usize>) -> Replication {
    Replication {
        max_append_entries: max_entries.and_then(NonZeroUsize::new),
        max_append_bytes: None,
        window: NonZeroUsize::new(window),
        ..Replication::default()
    }
}

/// Server 1, leader of `term` in a cluster of 3 whose log holds `terms`,
/// running `replication` since before its election.
fn leader(terms: &[u64], term: u64, replication: Replication) -> Server<Counter> {
    let mut s = server_with_log(1, 3, terms, term - 1).with_replication(replication);
    s.step(Input::ElectionTimeout);
    s.step(receive(2, rvr(term, true)));
    assert_eq!(s.role(), Role::Leader);
    s
}

/// Server 1, leader of term 1 with an empty log running `replication`,
/// whose peer 2 answered the first probe (so is in replicate), after
/// `requests` client requests of client 7.
fn replicating(replication: Replication, requests: u64) -> Server<Counter> {
    let mut s = leader(&[], 1, replication);
    s.step(receive(2, aer(1, true, 0)));
    for n in 1..=requests {
        s.step(client_request(7, n));
    }
    s
}

fn rejection(term: u64, index: u64, last_log_index: u64) -> Msg {
    Message::AppendEntriesResponse(crate::AppendEntriesResponse {
        term: crate::Term(term),
        success: false,
        index: LogIndex(index),
        last_log_index: Some(LogIndex(last_log_index)),
        read_round: 0,
        applied: None,
    })
}

fn sends(out: &[Out]) -> Vec<Out> {
    out.iter()
        .filter(|o| matches!(o, crate::Output::Send { .. }))
        .cloned()
        .collect()
}

fn replicate(inflight: &[u64]) -> Progress {
    Progress::Replicate {
        inflight: inflight
            .iter()
            .map(|&i| LogIndex(i))
            .collect::<VecDeque<_>>(),
    }
}

/// A byte cap takes entries while their bytes fit, and at least one: an
/// entry larger than the cap travels alone. Figure 2's pacing otherwise.
#[test]
fn a_byte_cap_bounds_each_batch_and_lets_a_large_entry_through_alone() {
    let two_entries = Replication {
        max_append_bytes: NonZeroU64::new(2 * ENTRY_OVERHEAD),
        ..Replication::default()
    };
    let mut s = leader(&[1, 1, 1], 2, two_entries);
    s.volatile.next_index.insert(NodeId(2), LogIndex(1));
    let out = s.step(Input::HeartbeatTimeout);
    assert!(out.contains(&send(2, ae(2, 1, 0, 0, vec![entry(1), entry(1)], 0))));

    let tiny = Replication {
        max_append_bytes: NonZeroU64::new(1),
        ..Replication::default()
    };
    let mut s = leader(&[1, 1, 1], 2, tiny);
    s.volatile.next_index.insert(NodeId(2), LogIndex(1));
    let out = s.step(Input::HeartbeatTimeout);
    assert!(out.contains(&send(2, ae(2, 1, 0, 0, vec![entry(1)], 0))));
}

/// A new leader probes every follower; an append sends nothing to a
/// follower in probe; the answer to the probe switches it to replicate and
/// sends it what it lacks, moving next_index past it at once.
#[test]
fn a_probe_answered_switches_to_replicate_and_sends_the_backlog() {
    let mut s = leader(&[1], 2, windowed(4, None));
    assert_eq!(s.volatile.progress.get(&NodeId(2)), Some(&Progress::Probe));

    let out = s.step(client_request(7, 1));
    assert_eq!(sends(&out), vec![], "nothing to followers in probe");

    let out = s.step(receive(2, aer(2, true, 1)));
    assert_eq!(
        sends(&out),
        vec![send(2, ae(2, 1, 1, 1, vec![command(2, 7, 1)], 0))]
    );
    assert_eq!(s.volatile.progress.get(&NodeId(2)), Some(&replicate(&[2])));
    assert_eq!(s.volatile.next_index.get(&NodeId(2)), Some(&LogIndex(3)));
    assert_eq!(s.volatile.match_index.get(&NodeId(2)), Some(&LogIndex(1)));
    // Peer 3 is still probing: a heartbeat probes it again, with a batch.
    let out = s.step(Input::HeartbeatTimeout);
    assert!(sends(&out).contains(&send(2, ae(2, 1, 2, 2, vec![], 0))));
    assert!(sends(&out).contains(&send(3, ae(2, 1, 1, 1, vec![command(2, 7, 1)], 0))));
}

/// In replicate, each append goes out at once while the window has room;
/// a full window holds the rest until an acknowledgement frees it.
#[test]
fn the_window_bounds_unacknowledged_batches() {
    let mut s = leader(&[], 1, windowed(2, Some(1)));
    s.step(receive(2, aer(1, true, 0)));
    assert_eq!(s.volatile.progress.get(&NodeId(2)), Some(&replicate(&[])));

    for (n, expect_send) in [(1, true), (2, true), (3, false)] {
        let out = s.step(client_request(7, n));
        let to_2: Vec<Out> = sends(&out)
            .into_iter()
            .filter(|o| matches!(o, crate::Output::Send { to, .. } if *to == NodeId(2)))
            .collect();
        assert_eq!(!to_2.is_empty(), expect_send, "request {n}: {to_2:?}");
    }
    assert_eq!(
        s.volatile.progress.get(&NodeId(2)),
        Some(&replicate(&[1, 2]))
    );
    assert_eq!(s.volatile.next_index.get(&NodeId(2)), Some(&LogIndex(3)));

    // The first batch's acknowledgement frees one slot: the third entry goes.
    let out = s.step(receive(2, aer(1, true, 1)));
    assert!(sends(&out).contains(&send(2, ae(1, 1, 2, 1, vec![command(1, 7, 3)], 1))));
    assert_eq!(
        s.volatile.progress.get(&NodeId(2)),
        Some(&replicate(&[2, 3]))
    );
    // A duplicate of it changes nothing.
    let before = s.clone();
    assert_eq!(sends(&s.step(receive(2, aer(1, true, 1)))), vec![]);
    assert_eq!(s, before);
}

/// In replicate a heartbeat carries no entries and checks the follower's
/// log at next_index - 1; a follower that missed a batch rejects it, and the
/// leader probes again from the follower's end of log.
#[test]
fn a_rejected_heartbeat_sends_the_follower_back_to_probe_from_its_end_of_log() {
    let mut s = replicating(windowed(4, Some(1)), 3);
    let out = s.step(Input::HeartbeatTimeout);
    assert!(sends(&out).contains(&send(2, ae(1, 1, 3, 1, vec![], 0))));

    // Peer 2 got only the first batch.
    let out = s.step(receive(2, rejection(1, 3, 1)));
    assert_eq!(
        sends(&out),
        vec![send(2, ae(1, 1, 1, 1, vec![command(1, 7, 2)], 0))]
    );
    assert_eq!(s.volatile.progress.get(&NodeId(2)), Some(&Progress::Probe));
    assert_eq!(s.volatile.next_index.get(&NodeId(2)), Some(&LogIndex(2)));
    // An older rejection is stale in probe.
    let before = s.clone();
    assert_eq!(sends(&s.step(receive(2, rejection(1, 2, 1)))), vec![]);
    assert_eq!(s, before);
}

/// A follower's rejection carries its last log index only with a window.
#[test]
fn a_follower_tells_its_last_log_index_in_a_rejection_only_with_a_window() {
    let probe = ae(2, 2, 5, 1, vec![], 0);
    let mut plain = server_with_log(1, 3, &[1, 1], 2);
    assert_eq!(
        sends(&plain.step(receive(2, probe.clone()))),
        vec![send(2, aer(2, false, 5))]
    );
    let mut paced = server_with_log(1, 3, &[1, 1], 2).with_replication(windowed(4, None));
    assert_eq!(
        sends(&paced.step(receive(2, probe))),
        vec![send(2, rejection(2, 5, 2))]
    );
}

/// Repair: a follower whose log went back below its match_index (it lost
/// entries it had acknowledged) rejects the heartbeat at next_index - 1, and
/// the leader sends it the batch after its real end of log. Figure 2's
/// pacing ignores that rejection (at or below match_index) for good.
#[test]
fn a_follower_that_fell_back_below_its_match_index_is_repaired() {
    let mut s = replicating(windowed(4, Some(2)), 4);
    s.step(receive(2, aer(1, true, 2)));
    s.step(receive(2, aer(1, true, 4)));
    assert_eq!(s.volatile.match_index.get(&NodeId(2)), Some(&LogIndex(4)));
    assert_eq!(s.volatile.next_index.get(&NodeId(2)), Some(&LogIndex(5)));

    // Peer 2 lost entries 2..=4 and rejects the heartbeat at 4.
    let before = s.clone();
    let out = s.step(receive(2, rejection(1, 4, 1)));
    assert_eq!(
        sends(&out),
        vec![send(
            2,
            ae(1, 1, 1, 1, vec![command(1, 7, 2), command(1, 7, 3)], 4)
        )]
    );
    // The leader's own state is as it was: match_index never decreases.
    assert_eq!(s, before);
    // A rejection below match_index, or not at next_index - 1, is stale.
    assert_eq!(sends(&s.step(receive(2, rejection(1, 3, 1)))), vec![]);

    // Figure 2's pacing ignores it.
    let mut fig2 = leader(&[], 1, Replication::default());
    for n in 1..=4 {
        fig2.step(client_request(7, n));
    }
    fig2.step(receive(2, aer(1, true, 4)));
    assert_eq!(sends(&fig2.step(receive(2, rejection(1, 4, 1)))), vec![]);
}

/// The reduction's rule for a window: a response below match_index is dead,
/// one at match_index is not (it may answer a probe).
#[test]
fn with_a_window_responses_below_match_index_are_dead() {
    let mut s = replicating(windowed(4, Some(1)), 2);
    s.step(receive(2, aer(1, true, 2)));
    for (message, dead) in [
        (aer(1, true, 1), true),
        (rejection(1, 1, 0), true),
        (aer(1, true, 2), false),
        (rejection(1, 2, 1), false),
    ] {
        assert_eq!(s.ignores_forever(NodeId(2), &message), dead, "{message:?}");
    }
}
