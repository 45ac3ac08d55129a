//! CheckQuorum, the quiet period and lease reads ([`crate::server::lease`];
//! Raft thesis §6.2, §4.2.3, §6.4.1).

use super::helpers::*;
use crate::{
    ClientId, CounterCommand, Input, LogIndex, Message, Output, PersistentState, ReadMode,
    Replication, Role, Server, Term, Timer, QUIET_AT_BOOT,
};

fn leases() -> Replication {
    Replication {
        check_quorum: true,
        leases: true,
        ..Replication::default()
    }
}

fn lease_read(client: u64) -> Input<CounterCommand> {
    Input::ClientRead {
        client_id: ClientId(client),
        request_no: 1,
        command: CounterCommand::Read,
        mode: ReadMode::Lease,
    }
}

/// An answer of `term` up to `index` to a request of `round`.
fn ack(term: u64, index: u64, round: u64) -> Msg {
    let mut m = aer(term, true, index);
    if let Message::AppendEntriesResponse(r) = &mut m {
        r.read_round = round;
    }
    m
}

/// An AppendEntries of `term` from server 1 carrying `round`.
fn heartbeat(term: u64, round: u64) -> Msg {
    let mut m = ae(term, 1, 0, 0, vec![], 0);
    if let Message::AppendEntries(a) = &mut m {
        a.read_round = round;
    }
    m
}

/// A leader's election starts its lease with the term's first round; an
/// answer of a majority to it holds the lease, and then a lease read is
/// answered at once once the term has a commit; when the lease timer fires
/// the next lease read waits for a round again.
#[test]
fn a_lease_read_is_answered_at_once_while_the_lease_holds() {
    let mut s = server_with_log(1, 3, &[], 0).with_replication(leases());
    s.step(Input::ElectionTimeout);
    let out = s.step(receive(2, rvr(1, true)));
    assert_eq!(s.role(), Role::Leader);
    assert!(out.contains(&Output::SetTimer(Timer::Lease)));
    assert!(
        out.contains(&Output::SetTimer(Timer::Election)),
        "CheckQuorum"
    );
    assert_eq!(
        s.volatile.lease.map(|l| (l.round, l.held)),
        Some((1, false))
    );
    s.step(receive(2, ack(1, 0, 1)));
    assert_eq!(s.volatile.lease.map(|l| l.held), Some(true));
    // No commit of the term yet: the read waits.
    assert!(s
        .step(lease_read(8))
        .iter()
        .all(|o| !matches!(o, Output::ClientReply { .. })));
    s.step(client_request(7, 1));
    let out = s.step(receive(2, ack(1, 1, 1)));
    assert!(out.contains(&reply_ok(8, 1, 1)), "{out:?}");
    // Under the lease, no round: answered in the step that takes it.
    let out = s.step(lease_read(9));
    assert_eq!(out, vec![reply_ok(9, 1, 1)]);
    s.step(Input::LeaseTimeout);
    assert_eq!(s.volatile.lease, None);
    let out = s.step(lease_read(10));
    assert!(!out.contains(&reply_ok(10, 1, 1)), "{out:?}");
    assert!(
        out.contains(&Output::SetTimer(Timer::Lease)),
        "a new lease starts"
    );
}

/// Without leases a lease read is a ReadIndex read: it waits for a round.
#[test]
fn without_leases_a_lease_read_waits_for_a_round() {
    let mut s = leader(3, Replication::default());
    s.step(client_request(7, 1));
    s.step(receive(2, aer(1, true, 1)));
    let out = s.step(lease_read(9));
    assert!(!out.contains(&reply_ok(9, 1, 1)));
    assert_eq!(s.volatile.lease, None);
}

/// A follower that heard from its leader takes no message of a later term
/// but an AppendEntries until its quiet timer fires: no vote, no new term.
#[test]
fn a_quiet_follower_ignores_a_later_terms_vote_request_until_its_quiet_timer_fires() {
    let mut f = server_with_log(2, 3, &[], 0).with_replication(leases());
    let out = f.step(receive(1, heartbeat(1, 1)));
    assert!(out.contains(&Output::SetTimer(Timer::Quiet)));
    assert_eq!(f.volatile.quiet, Some(1));
    assert_eq!(f.step(receive(3, rv(2, 3, 0, 0))), vec![]);
    assert_eq!(f.current_term(), Term(1));
    assert_eq!(f.step(receive(3, aer(5, false, 0))), vec![]);
    assert_eq!(f.current_term(), Term(1));
    f.step(Input::QuietTimeout);
    let out = f.step(receive(3, rv(2, 3, 0, 0)));
    assert_eq!(f.current_term(), Term(2));
    assert!(out.contains(&send(3, rvr(2, true))), "{out:?}");
    // An AppendEntries of a later term is taken even while quiet.
    let mut g = server_with_log(3, 3, &[], 0).with_replication(leases());
    g.step(receive(1, heartbeat(1, 1)));
    g.step(receive(2, heartbeat(2, 0)));
    assert_eq!(g.current_term(), Term(2));
}

/// A server that restarts with a term is quiet from the start; one that
/// never had a term is not.
#[test]
fn a_restarted_server_is_quiet_until_it_times_out() {
    let persistent = PersistentState {
        current_term: Term(3),
        ..PersistentState::default()
    };
    let (s, _) = Server::<crate::Counter>::restart(crate::NodeId(2), peers_of(2, 3), persistent);
    let mut s = s.with_replication(leases());
    assert_eq!(s.volatile.quiet, Some(QUIET_AT_BOOT));
    assert_eq!(s.step(receive(3, rv(4, 3, 0, 0))), vec![]);
    s.step(Input::ElectionTimeout);
    assert_eq!(s.volatile.quiet, None);
    let fresh = server_with_log(2, 3, &[], 0).with_replication(leases());
    assert_eq!(fresh.volatile.quiet, None);
}

/// CheckQuorum: a leader that no majority answered between two checks
/// steps down at the second; one a majority answered stays.
#[test]
fn check_quorum_steps_a_leader_down_without_a_majority() {
    let mut s = leader(3, leases());
    s.step(receive(2, aer(1, true, 0)));
    let out = s.step(Input::ElectionTimeout);
    assert_eq!(s.role(), Role::Leader);
    assert_eq!(out, vec![Output::SetTimer(Timer::Election)]);
    assert!(s.volatile.recent_active.is_empty());
    let out = s.step(Input::ElectionTimeout);
    assert_eq!(s.role(), Role::Follower);
    assert_eq!(s.volatile.leader_hint, None);
    assert!(out.contains(&Output::CancelTimer(Timer::Heartbeat)));
    assert!(out.contains(&Output::CancelTimer(Timer::Lease)));
    assert_eq!(s.volatile.lease, None);
    assert_eq!(s.volatile.commit_index, LogIndex(0));
}

/// A lease rests on a follower quiet since a round no earlier than the
/// lease's, of the leader's term, or quiet since its restart in a term at
/// least the leader's; on no other.
#[test]
fn a_lease_rests_on_the_followers_that_heard_its_round() {
    let mut l = server_with_log(1, 3, &[], 0).with_replication(leases());
    l.step(Input::ElectionTimeout);
    l.step(receive(2, rvr(1, true)));
    assert_eq!(l.volatile.lease.map(|l| l.round), Some(1));
    let mut heard = server_with_log(2, 3, &[], 0).with_replication(leases());
    heard.step(receive(1, heartbeat(1, 1)));
    assert!(l.lease_rests_on(&heard));
    let mut before = server_with_log(3, 3, &[], 0).with_replication(leases());
    before.step(receive(1, heartbeat(1, 0)));
    assert!(!l.lease_rests_on(&before));
    before.step(Input::QuietTimeout);
    assert!(!l.lease_rests_on(&before));
    let persistent = PersistentState {
        current_term: Term(1),
        ..PersistentState::default()
    };
    let (booted, _) =
        Server::<crate::Counter>::restart(crate::NodeId(3), peers_of(3, 3), persistent);
    assert!(l.lease_rests_on(&booted.with_replication(leases())));
    l.step(Input::LeaseTimeout);
    assert!(!l.lease_rests_on(&heard));
}
