//! Unit tests of the Figure 3 safety predicates in [`crate::safety`]: each
//! holds on a good snapshot and fails on a crafted bad one.

use crate::safety::{
    committed_entries_survive_elections, election_safety, leader_append_only, leader_completeness,
    log_matching, state_machine_safety, violated_properties, History, ServerView, Violation,
    COMMITTED_ENTRIES_SURVIVE_ELECTIONS, ELECTION_SAFETY, LEADER_COMPLETENESS, LOG_MATCHING,
    STATE_MACHINE_SAFETY,
};
use crate::{CounterCommand, Log, LogIndex, NodeId, Role, Term};
use std::collections::BTreeSet;

type View<'a> = ServerView<'a, CounterCommand>;

use super::{command, entry};

fn log_of(terms: &[u64]) -> Log<CounterCommand> {
    Log::from_entries(terms.iter().map(|&t| entry(t)).collect())
}

/// A live server whose commit index equals its last applied index.
fn view(id: u64, role: Role, term: u64, log: &Log<CounterCommand>, last_applied: u64) -> View<'_> {
    ServerView {
        id: NodeId(id),
        crashed: false,
        role,
        current_term: Term(term),
        log,
        commit_index: LogIndex(last_applied),
        last_applied: LogIndex(last_applied),
        voted_for: None,
        match_index: None,
    }
}

fn crashed(view: View<'_>) -> View<'_> {
    ServerView {
        crashed: true,
        ..view
    }
}

/// Records that server `id` was elected leader of `term` (candidate -> leader).
fn record_election(history: &mut History<CounterCommand>, id: u64, term: u64) {
    let log = Log::new();
    history.record_step(
        &view(id, Role::Candidate, term, &log, 0),
        &view(id, Role::Leader, term, &log, 0),
    );
}

/// Records that server `id` applied `log` up to `to` (from `from`) in `term`.
fn record_apply(
    history: &mut History<CounterCommand>,
    id: u64,
    term: u64,
    log: &Log<CounterCommand>,
    from: u64,
    to: u64,
) {
    history.record_step(
        &view(id, Role::Follower, term, log, from),
        &view(id, Role::Follower, term, log, to),
    );
}

/// One leader per term, in different terms, satisfies Election Safety; a
/// leader's later steps in its term do not count as new elections.
///
/// Fig. 3 (Election Safety), Raft §5.2
#[test]
fn election_safety_holds_with_one_leader_per_term() {
    let mut history = History::default();
    record_election(&mut history, 1, 2);
    let log = log_of(&[2]);
    history.record_step(
        &view(1, Role::Leader, 2, &Log::new(), 0),
        &view(1, Role::Leader, 2, &log, 0),
    );
    record_election(&mut history, 2, 3);

    assert_eq!(
        history.leaders,
        BTreeSet::from([(Term(2), NodeId(1)), (Term(3), NodeId(2))])
    );
    assert!(election_safety(&history));
}

/// Two servers elected in the same term break Election Safety.
///
/// Fig. 3 (Election Safety), Raft §5.2
#[test]
fn election_safety_fails_with_two_leaders_in_one_term() {
    let mut history = History::default();
    record_election(&mut history, 1, 2);
    record_election(&mut history, 2, 2);

    assert!(!election_safety(&history));
}

/// A leader that only appends to its log satisfies Leader Append-Only.
///
/// Fig. 3 (Leader Append-Only), Raft §5.3
#[test]
fn leader_append_only_holds_when_leader_appends() {
    let mut history = History::default();
    let (before, after) = (log_of(&[1, 2]), log_of(&[1, 2, 2]));

    history.record_step(
        &view(1, Role::Leader, 2, &before, 0),
        &view(1, Role::Leader, 2, &after, 0),
    );

    assert!(history.violations.is_empty());
    assert!(leader_append_only(&history));
    assert!(!history.conflict_overwritten);
}

/// A leader that deletes or overwrites an entry of its own log breaks Leader
/// Append-Only; a follower doing the same (Raft §5.3 conflict resolution)
/// does not.
///
/// Fig. 3 (Leader Append-Only), Raft §5.3
#[test]
fn leader_append_only_fails_when_leader_rewrites_its_log() {
    let before = log_of(&[1, 2]);
    for after in [log_of(&[1]), log_of(&[1, 3])] {
        let mut history = History::default();
        history.record_step(
            &view(1, Role::Leader, 2, &before, 0),
            &view(1, Role::Leader, 2, &after, 0),
        );

        assert_eq!(
            history.violations,
            BTreeSet::from([Violation::LeaderAppendOnly {
                leader: NodeId(1),
                term: Term(2),
            }])
        );
        assert!(!leader_append_only(&history));
    }

    let mut history = History::default();
    history.record_step(
        &view(2, Role::Follower, 3, &before, 0),
        &view(2, Role::Follower, 3, &log_of(&[1, 3]), 0),
    );
    assert!(leader_append_only(&history));
    assert!(history.conflict_overwritten);
}

/// Logs that agree up to their last common term, and diverge after it, satisfy
/// Log Matching; crashed servers count by their persisted log.
///
/// Fig. 3 (Log Matching), Raft §5.3
#[test]
fn log_matching_holds_on_diverging_suffixes() {
    let (a, b, c) = (log_of(&[1, 1, 2]), log_of(&[1, 1, 3, 3]), log_of(&[1]));
    let servers = [
        view(1, Role::Follower, 2, &a, 0),
        view(2, Role::Leader, 3, &b, 0),
        crashed(view(3, Role::Follower, 1, &c, 0)),
    ];

    assert!(log_matching(&servers));
}

/// Two logs with the same term at index 2 but different entries at index 1
/// break Log Matching, also when one of the servers is crashed.
///
/// Fig. 3 (Log Matching), Raft §5.3
#[test]
fn log_matching_fails_when_equal_terms_have_different_prefixes() {
    let a = Log::from_entries(vec![command(1, 7, 1), entry(2)]);
    let b = Log::from_entries(vec![command(1, 8, 1), entry(2)]);

    assert!(!log_matching(&[
        view(1, Role::Follower, 2, &a, 0),
        view(2, Role::Follower, 2, &b, 0),
    ]));
    assert!(!log_matching(&[
        view(1, Role::Follower, 2, &a, 0),
        crashed(view(2, Role::Follower, 2, &b, 0)),
    ]));
}

/// A leader of a later term that holds every entry committed before its term
/// satisfies Leader Completeness.
///
/// Fig. 3 (Leader Completeness), Raft §5.4
#[test]
fn leader_completeness_holds_when_leader_has_committed_entries() {
    let mut history = History::default();
    let committed = Log::from_entries(vec![command(1, 7, 1)]);
    record_apply(&mut history, 2, 1, &committed, 0, 1);
    assert_eq!(history.applied, vec![(command(1, 7, 1), Term(1))]);

    let leader_log = Log::from_entries(vec![command(1, 7, 1), entry(2)]);
    let servers = [
        view(1, Role::Leader, 2, &leader_log, 0),
        view(2, Role::Follower, 2, &committed, 1),
    ];

    assert!(leader_completeness(&servers, &history));
}

/// A leader of a later term missing (or holding a different) entry committed
/// in an earlier term breaks Leader Completeness.
///
/// Fig. 3 (Leader Completeness), Raft §5.4
#[test]
fn leader_completeness_fails_when_leader_misses_committed_entry() {
    let mut history = History::default();
    let committed = Log::from_entries(vec![command(1, 7, 1)]);
    record_apply(&mut history, 2, 1, &committed, 0, 1);

    for leader_log in [Log::new(), log_of(&[2])] {
        let servers = [
            view(1, Role::Leader, 2, &leader_log, 0),
            view(2, Role::Follower, 2, &committed, 1),
        ];
        assert!(!leader_completeness(&servers, &history));
    }
}

/// A server that lacks a committed entry but whose log is less up-to-date
/// than a majority's (here: shorter, or of a lower last term) cannot be
/// elected, and the invariant holds; a crashed server counts by its
/// persisted log.
///
/// Raft §5.4.3 (the argument for Leader Completeness), §5.4.1 (up-to-date)
#[test]
fn committed_entries_survive_elections_holds_when_lacking_servers_are_behind() {
    let mut history = History::default();
    let committed = log_of(&[1, 2]);
    record_apply(&mut history, 1, 2, &committed, 0, 2);
    let behind = [log_of(&[]), log_of(&[1]), log_of(&[1, 1, 1])];
    for lacking in &behind {
        let servers = [
            view(1, Role::Leader, 2, &committed, 2),
            crashed(view(2, Role::Follower, 2, &committed, 0)),
            view(3, Role::Follower, 2, lacking, 0),
        ];
        assert!(committed_entries_survive_elections(&servers, &history));
    }
}

/// Figure 8 at the moment of the wrong commit: the entry of term 1 at index
/// 1 is committed on servers 1 and 3, while server 2 holds an entry of term 2
/// there. Server 2's log is more up-to-date than server 3's, so servers 2
/// and 3 could elect it without the committed entry: the invariant fails
/// (and `violated_properties` names it), though every Figure 3 property
/// still holds. With an empty log server 2 would be behind, and it holds.
///
/// Raft §5.4.2 (Figure 8), §5.4.3
#[test]
fn committed_entries_survive_elections_fails_when_a_lacking_server_could_win() {
    let mut history = History::default();
    let old = log_of(&[1]);
    record_apply(&mut history, 1, 3, &old, 0, 1);
    let other = log_of(&[2]);
    let servers = [
        view(1, Role::Leader, 3, &old, 1),
        view(2, Role::Follower, 3, &other, 0),
        view(3, Role::Follower, 3, &old, 0),
    ];
    assert!(!committed_entries_survive_elections(&servers, &history));
    assert_eq!(
        violated_properties(&servers, &history),
        vec![COMMITTED_ENTRIES_SURVIVE_ELECTIONS]
    );

    let lower = Log::new();
    let servers = [
        servers[0],
        view(2, Role::Follower, 3, &lower, 0),
        servers[2],
    ];
    assert!(committed_entries_survive_elections(&servers, &history));
}

/// Servers applying the same entry at an index satisfy State Machine Safety;
/// a crashed server's lost volatile state is not checked.
///
/// Fig. 3 (State Machine Safety), Raft §5.4.3
#[test]
fn state_machine_safety_holds_when_servers_apply_the_same_entries() {
    let mut history = History::default();
    let log = Log::from_entries(vec![command(1, 7, 1), entry(1)]);
    record_apply(&mut history, 1, 1, &log, 0, 2);
    record_apply(&mut history, 2, 1, &log, 0, 1);
    let other = log_of(&[2]);
    let servers = [
        view(1, Role::Leader, 1, &log, 2),
        view(2, Role::Follower, 1, &log, 1),
        crashed(view(3, Role::Follower, 2, &other, 1)),
    ];

    assert!(history.violations.is_empty());
    assert!(state_machine_safety(&servers, &history));
}

/// A server applying a different entry at an index someone already applied
/// breaks State Machine Safety, whether it is caught by the step history or
/// only by the snapshot.
///
/// Fig. 3 (State Machine Safety), Raft §5.4.3
#[test]
fn state_machine_safety_fails_when_servers_apply_different_entries() {
    let mut history = History::default();
    let first = Log::from_entries(vec![command(1, 7, 1)]);
    let second = Log::from_entries(vec![command(1, 8, 1)]);
    record_apply(&mut history, 1, 1, &first, 0, 1);
    record_apply(&mut history, 2, 1, &second, 0, 1);

    assert_eq!(
        history.violations,
        BTreeSet::from([Violation::StateMachineSafety {
            server: NodeId(2),
            index: LogIndex(1),
        }])
    );
    assert!(!state_machine_safety(
        &[view(1, Role::Follower, 1, &first, 1)],
        &history
    ));

    // No step violation recorded, but a live server's applied prefix differs.
    let mut history = History::default();
    record_apply(&mut history, 1, 1, &first, 0, 1);
    let servers = [
        view(1, Role::Follower, 1, &first, 1),
        view(2, Role::Follower, 1, &second, 1),
    ];
    assert!(!state_machine_safety(&servers, &history));
}

/// All five properties together: none fails on a good snapshot, and each
/// crafted breach is named, in the paper's order, then the auxiliary
/// invariants.
///
/// Fig. 3 (all five properties)
#[test]
fn violated_properties_names_the_failing_properties() {
    let mut history = History::default();
    let log = Log::from_entries(vec![command(1, 7, 1), entry(2)]);
    record_election(&mut history, 1, 1);
    record_apply(&mut history, 1, 1, &log, 0, 1);
    record_election(&mut history, 1, 2);
    let good = [
        view(1, Role::Leader, 2, &log, 1),
        view(2, Role::Follower, 2, &log, 1),
    ];
    assert_eq!(violated_properties(&good, &history), Vec::<&str>::new());

    record_election(&mut history, 2, 2);
    let bad_log = Log::from_entries(vec![command(1, 8, 1), entry(2)]);
    let bad = [
        view(1, Role::Leader, 2, &log, 1),
        view(2, Role::Leader, 2, &bad_log, 1),
    ];
    assert_eq!(
        violated_properties(&bad, &history),
        vec![
            ELECTION_SAFETY,
            LOG_MATCHING,
            LEADER_COMPLETENESS,
            STATE_MACHINE_SAFETY,
            // Server 2 lacks the committed entry and is as up-to-date as 1.
            COMMITTED_ENTRIES_SURVIVE_ELECTIONS
        ]
    );
}
