//! The seeded-bug catalogue (`raft_model::bugs`): each bug, switched on in
//! raft-spec, is caught on its smallest configuration, and the same
//! configuration without it passes (the clean runs are shared with the
//! other tests of this binary through `clean_run`).

use super::{assert_clean, clean_run, names, CheckReport, Outcome, ELECTION_ONLY};
use raft_model::bugs::{seeded, Expected, SeededBug};
use raft_model::check::{self, CheckOptions, Strategy};
use raft_model::{ModelConfig, RaftModel};
use raft_spec::bugs::Bug;
use stateright::{Expectation, Model};

/// Runs the checker on the bug's own configuration, as `raft-model check
/// --bug NAME` does: breadth-first with symmetry reduction, stopping at the
/// expected counterexample.
fn check_bug(entry: &SeededBug) -> CheckReport {
    let options = CheckOptions {
        strategy: Strategy::Bfs,
        symmetry: true,
        threads: 2,
        progress_every: None,
        stop_at: match entry.expected {
            Expected::Violates(p) => Some(p),
            Expected::Unreachable(_) => None,
        },
        time_limit: None,
        shortest_examples: false,
    };
    check::run(entry.config, options, &mut std::io::sink())
}

fn without_bug(config: ModelConfig) -> ModelConfig {
    ModelConfig {
        bug: None,
        ..config
    }
}

/// The checker finds a counterexample to the bug's property, `steps` long
/// (breadth-first, so shortest), whose last state really breaks the
/// property; the configuration without the bug passes, with `clean_states`
/// unique states and the examples `sometimes`.
fn assert_caught(bug: Bug, steps: usize, clean_states: usize, sometimes: &[&str]) {
    let entry = seeded(bug);
    let Expected::Violates(property) = entry.expected else {
        panic!("{bug} is not expected to violate a property: {entry:?}");
    };
    let report = check_bug(&entry);
    assert!(!report.panicked);
    assert!(!report.success(), "{bug}: the check passed: {report:?}");
    let Some(Outcome::Violated(path)) = report.verdict(property).map(|v| &v.outcome) else {
        panic!("{bug}: no counterexample to {property}: {report:?}");
    };
    let model = RaftModel::new(entry.config);
    let text = check::format_path(&model, path);
    assert_eq!(path.clone().into_actions().len(), steps, "{bug}:\n{text}");
    let condition = model
        .properties()
        .into_iter()
        .find(|p| p.name == property)
        .map(|p| p.condition)
        .unwrap_or_else(|| panic!("{property} is not registered"));
    assert!(
        !condition(&model, path.last_state()),
        "{bug}: the path's last state satisfies {property}:\n{text}"
    );
    assert!(report.stopped_early);

    let clean = clean_run(without_bug(entry.config));
    assert_clean(&clean, sometimes);
    assert_eq!(clean.unique_states, clean_states, "{}", entry.config);
}

/// The bug breaks no safety property but makes `missing` unreachable; the
/// configuration without the bug reaches it.
fn assert_unreachable(bug: Bug, clean_states: usize, sometimes: &[&str]) {
    let entry = seeded(bug);
    let Expected::Unreachable(missing) = entry.expected else {
        panic!("{bug} is expected to violate a property: {entry:?}");
    };
    let report = check_bug(&entry);
    assert!(report.completed, "{report:?}");
    for v in &report.verdicts {
        if v.expectation == Expectation::Always {
            assert!(matches!(v.outcome, Outcome::Held), "{bug}: {}", v.name);
        }
    }
    assert!(
        matches!(
            report.verdict(missing).map(|v| &v.outcome),
            Some(Outcome::NotFound)
        ),
        "{bug}: {missing} was reached: {report:?}"
    );
    assert!(!report.success());
    let clean = clean_run(without_bug(entry.config));
    assert!(sometimes.contains(&missing));
    assert_clean(&clean, sometimes);
    assert_eq!(clean.unique_states, clean_states);
}

const REPLACED: &[&str] = &[names::LEADER_REPLACED, names::LEADER_STEPS_DOWN_ON_RESPONSE];

fn three_servers_two_terms() -> Vec<&'static str> {
    [
        ELECTION_ONLY,
        REPLACED,
        &[names::CONFLICT_OVERWRITTEN, names::CLIENT_REPLY],
    ]
    .concat()
}

fn two_servers_two_terms() -> Vec<&'static str> {
    [ELECTION_ONLY, REPLACED, &[names::CLIENT_REPLY]].concat()
}

fn one_term() -> Vec<&'static str> {
    [ELECTION_ONLY, &[names::CLIENT_REPLY]].concat()
}

const THREE_SERVERS_TWO_TERMS_SYMMETRIC: usize = 42_030;

#[test]
fn stale_vote_response_breaks_election_safety() {
    assert_caught(
        Bug::StaleVoteResponse,
        7,
        THREE_SERVERS_TWO_TERMS_SYMMETRIC,
        &three_servers_two_terms(),
    );
}

#[test]
fn vote_not_persisted_breaks_election_safety() {
    let sometimes = [one_term(), vec![names::CRASHED_SERVER_REJOINS]].concat();
    assert_caught(Bug::VoteNotPersisted, 8, 10_832, &sometimes);
}

#[test]
fn step_down_forgets_vote_breaks_one_vote_per_term() {
    assert_caught(Bug::StepDownForgetsVote, 5, 1_268, &one_term());
}

#[test]
fn truncate_on_match_breaks_leader_completeness() {
    assert_caught(
        Bug::TruncateOnMatch,
        10,
        THREE_SERVERS_TWO_TERMS_SYMMETRIC,
        &three_servers_two_terms(),
    );
}

#[test]
fn entries_take_leader_term_breaks_log_matching() {
    assert_caught(
        Bug::EntriesTakeLeaderTerm,
        12,
        THREE_SERVERS_TWO_TERMS_SYMMETRIC,
        &three_servers_two_terms(),
    );
}

#[test]
fn match_index_regress_breaks_match_index_monotonic() {
    assert_caught(Bug::MatchIndexRegress, 8, 28, &one_term());
}

#[test]
fn even_quorum_breaks_election_safety() {
    assert_caught(Bug::EvenQuorum, 6, 7_024, &one_term());
}

#[test]
fn no_up_to_date_check_breaks_leader_completeness() {
    assert_caught(
        Bug::NoUpToDateCheck,
        9,
        THREE_SERVERS_TWO_TERMS_SYMMETRIC,
        &three_servers_two_terms(),
    );
}

#[test]
fn no_term_adoption_on_vote_request_prevents_any_leader_change() {
    assert_unreachable(
        Bug::NoTermAdoptionOnVoteRequest,
        321,
        &two_servers_two_terms(),
    );
}

#[test]
fn leader_ignores_higher_term_never_steps_down_on_a_response() {
    assert_unreachable(Bug::LeaderIgnoresHigherTerm, 321, &two_servers_two_terms());
}

/// Needs empty heartbeats: n0 leads term 1 with an entry only it holds, n1
/// leads term 2 with an empty log, appends its own entry at index 1 and
/// commits it with n2; its empty heartbeat to n0 (`prev_log_index` 0) passes
/// the consistency check and, without the `min`, makes n0 commit and apply
/// its own term-1 entry at index 1.
///
/// With the default heartbeats, which carry the leader's log from
/// `next_index` on, the missing `min` changes nothing: the same
/// configuration with the bug has exactly the correct rules' states.
#[test]
fn commit_without_min_breaks_state_machine_safety_with_empty_heartbeats() {
    assert_caught(
        Bug::CommitWithoutMin,
        12,
        EMPTY_HEARTBEATS_SYMMETRIC,
        &three_servers_two_terms(),
    );
    let default_heartbeats = ModelConfig {
        replication: raft_spec::Replication::default(),
        ..seeded(Bug::CommitWithoutMin).config
    };
    let report = super::run(default_heartbeats, Strategy::Dfs, true, 1);
    assert_clean(&report, &three_servers_two_terms());
    assert_eq!(report.unique_states, THREE_SERVERS_TWO_TERMS_SYMMETRIC);
}

/// 3 servers, 2 terms, 1 request, no crash, empty heartbeats, with symmetry.
const EMPTY_HEARTBEATS_SYMMETRIC: usize = 36_213;

/// A follower holding an entry of term 1 acknowledges it (its own last
/// index) to the empty AppendEntries of the new leader of term 2, which then
/// commits its own, different entry at that index on the strength of it:
/// the follower lacks a committed entry and could still be elected.
/// The report carries the counterexample on by one more election, to Leader
/// Completeness: the follower that lacks the committed entry wins term 3
/// (3 more steps).
#[test]
fn ack_own_last_index_breaks_committed_entries_survive_elections() {
    assert_caught(
        Bug::AckOwnLastIndex,
        10,
        THREE_SERVERS_TWO_TERMS_SYMMETRIC,
        &three_servers_two_terms(),
    );
    let report = check_bug(&seeded(Bug::AckOwnLastIndex));
    assert_one_more_election_breaks_leader_completeness(&report, 10, 13);
}

/// The leader counts its own entry before its write in parallel is durable:
/// it commits on one follower's acknowledgement, crashes and loses the
/// entry, and the server without it could be elected (7 steps); with one
/// more term the recovered leader votes for it (Leader Completeness, 11).
#[test]
fn counts_unsynced_entry_breaks_committed_entries_survive_elections() {
    assert_caught(
        Bug::CountsUnsyncedEntry,
        7,
        17_852,
        &[
            ELECTION_ONLY,
            &[
                names::CLIENT_REPLY,
                names::COMMITTED_BEFORE_OWN_SYNC,
                names::CRASHED_SERVER_REJOINS,
            ],
        ]
        .concat(),
    );
    let report = check_bug(&seeded(Bug::CountsUnsyncedEntry));
    assert_one_more_election_breaks_leader_completeness(&report, 7, 11);
}

/// The report's follow-up ([`check::one_more_election`]) continues the
/// `from`-step counterexample to Committed Entries Survive Elections, with
/// one more term, to a state of step `to` where Leader Completeness fails.
fn assert_one_more_election_breaks_leader_completeness(
    report: &CheckReport,
    from: usize,
    to: usize,
) {
    let Some(follow_up) = &report.follow_up else {
        panic!("no follow-up: {report:?}");
    };
    let model = RaftModel::new(follow_up.config);
    let text = check::format_path(&model, &follow_up.path);
    assert_eq!(follow_up.config.max_term, report.config.max_term + 1);
    assert_eq!(follow_up.property, raft_spec::safety::LEADER_COMPLETENESS);
    assert_eq!(follow_up.from_step, from, "{text}");
    assert_eq!(follow_up.path.clone().into_actions().len(), to, "{text}");
    let Some(Outcome::Violated(path)) = report
        .verdict(raft_spec::safety::COMMITTED_ENTRIES_SURVIVE_ELECTIONS)
        .map(|v| &v.outcome)
    else {
        panic!("no counterexample: {report:?}");
    };
    assert_eq!(
        path.clone().into_actions(),
        follow_up.path.clone().into_actions()[..from],
        "the follow-up does not start with the counterexample"
    );
    let holds = model
        .properties()
        .into_iter()
        .find(|p| p.name == raft_spec::safety::LEADER_COMPLETENESS)
        .map(|p| (p.condition)(&model, follow_up.path.last_state()));
    assert_eq!(holds, Some(false), "{text}");
}

/// With a third term the same false acknowledgement breaks Leader
/// Completeness itself: the follower that lacks the committed entry wins
/// term 3. About 0.5 M states, 8 to 10 s, 1 GB. (The configuration without
/// the bug, 3 servers and 3 terms, is too large to check exhaustively here.)
#[test]
fn ack_own_last_index_breaks_leader_completeness_with_three_terms() {
    let entry = SeededBug {
        expected: Expected::Violates(raft_spec::safety::LEADER_COMPLETENESS),
        config: ModelConfig {
            max_term: 3,
            ..seeded(Bug::AckOwnLastIndex).config
        },
        ..seeded(Bug::AckOwnLastIndex)
    };
    let report = check_bug(&entry);
    let Some(Outcome::Violated(path)) = report
        .verdict(raft_spec::safety::LEADER_COMPLETENESS)
        .map(|v| &v.outcome)
    else {
        panic!("no counterexample: {report:?}");
    };
    assert_eq!(path.clone().into_actions().len(), 13);
}

/// etcd issue 7331 on two servers: n0 leads term 1 and commits the write
/// with n1, which holds it uncommitted; n1 leads term 2 with commit index 0
/// and, with the bug, takes 0 as the read index of a read sent after the
/// write was answered, confirms its round with n0 and answers 0.
#[test]
fn read_index_before_term_commit_breaks_linearizability() {
    let sometimes = [two_servers_two_terms(), vec![names::READ_SEES_WRITE]].concat();
    assert_caught(Bug::ReadIndexBeforeTermCommit, 15, 2_141, &sometimes);
}

/// A follower that answers at its leader's read index before applying it:
/// n0 leads term 1 with n1's vote and commits and answers the write with
/// n2, which holds it but has not learnt it is committed; the read goes to
/// n2, which asks n0 for the read index; n0 confirms its round with n1 and
/// sends index 1; n2, at commit index 0, answers 0 at once. Without the bug
/// it waits until it has applied index 1.
#[test]
fn follower_read_before_apply_breaks_linearizability() {
    let sometimes = [
        one_term(),
        vec![names::READ_SEES_WRITE, names::FOLLOWER_READ_INDEX],
    ]
    .concat();
    assert_caught(Bug::FollowerReadBeforeApply, 14, 15_773, &sometimes);
}

/// A deposed leader reading locally: n0 leads term 1; n1 leads term 2 with
/// n2's vote and commits the write with n2; the read sent to n0, which has
/// not heard of term 2, is answered with the count before the write. The
/// configuration without the bug (3 servers, 2 terms, a write and a
/// ReadIndex read) takes about a minute: the suite checks it to the bug's
/// depth, and the ignored test below checks all of it.
#[test]
fn local_leader_read_breaks_linearizability() {
    let entry = seeded(Bug::LocalLeaderRead);
    let report = check_bug(&entry);
    assert!(!report.panicked && report.stopped_early);
    let Some(Outcome::Violated(path)) = report.verdict(names::LINEARIZABILITY).map(|v| &v.outcome)
    else {
        panic!("no counterexample: {report:?}");
    };
    let model = RaftModel::new(entry.config);
    let text = check::format_path(&model, path);
    assert_eq!(path.clone().into_actions().len(), 13, "{text}");

    let clean = RaftModel::new(without_bug(entry.config)).with_canonical_states();
    let always: Vec<_> = clean
        .properties()
        .into_iter()
        .filter(|p| p.expectation == Expectation::Always)
        .map(|p| p.condition)
        .collect();
    let broken =
        |m: &RaftModel, s: &raft_model::model::State| always.iter().any(|holds| !holds(m, s));
    match check::within_depth(&clean, broken, 13, 5_000_000) {
        check::Reach::Absent { states } => assert_eq!(states, 16_186),
        other => panic!("{other:?}"),
    }
}

/// local-leader-read's configuration without the bug passes: DFS with
/// symmetry reduction on two threads (the count pinned to within 0.5%, as
/// for figure 8).
#[test]
#[ignore = "about a minute: cargo test --release --test model_check -- --ignored local_leader_read_configuration_without_the_bug_passes"]
fn local_leader_read_configuration_without_the_bug_passes() {
    let config = without_bug(seeded(Bug::LocalLeaderRead).config);
    let report = super::run(config, Strategy::Dfs, true, 2);
    let sometimes = [three_servers_two_terms(), vec![names::READ_SEES_WRITE]].concat();
    assert_clean(&report, &sometimes);
    let pinned = 6_048_895_f64;
    let off = (report.unique_states as f64 - pinned).abs() / pinned;
    assert!(off < 0.005, "{} representatives", report.unique_states);
}

/// Every bug has a catalogue entry whose configuration runs that bug.
#[test]
fn every_bug_is_in_the_catalogue() {
    for bug in Bug::ALL {
        let entry = seeded(bug);
        assert_eq!(entry.config.bug, Some(bug));
        assert!(entry.config.validate().is_ok());
    }
}

/// Figure 8 found by the search: n0 leads term 1 with an entry only it
/// holds, n2 leads term 2 with a different entry at index 1, n0 leads term 3
/// and, with the bug, commits its term-1 entry once n1 holds it too; n2
/// lacks that committed entry and its log (last term 2) is more up-to-date
/// than n1's, so it could win the next election. About 1 M representatives
/// and 1.8 GB for the breadth-first search with symmetry reduction to depth
/// 16 (3.5 M states without), 20 s, and as long again for the re-search
/// that makes the path shortest. The configuration without the bug (3
/// servers, 3 terms) takes 23 minutes with symmetry reduction: its check is
/// the ignored test below; the suite checks it to the bug's depth.
#[test]
fn figure_8_breaks_committed_entries_survive_elections() {
    let entry = seeded(Bug::Figure8);
    let property = entry.expected.property();
    assert_eq!(
        property,
        raft_spec::safety::COMMITTED_ENTRIES_SURVIVE_ELECTIONS
    );
    let report = check_bug(&entry);
    assert!(!report.panicked);
    assert!(report.stopped_early);
    let Some(Outcome::Violated(path)) = report.verdict(property).map(|v| &v.outcome) else {
        panic!("no counterexample: {report:?}");
    };
    let model = RaftModel::new(entry.config);
    let text = check::format_path(&model, path);
    assert_eq!(path.clone().into_actions().len(), 16, "{text}");
    let holds = model
        .properties()
        .into_iter()
        .find(|p| p.name == property)
        .map(|p| (p.condition)(&model, path.last_state()));
    assert_eq!(holds, Some(false), "{text}");
    // Nothing of Figure 3 is broken yet: the term-4 leader is still to come,
    // and the report's follow-up shows it, four steps on.
    for p in model.properties() {
        if raft_spec::safety::PROPERTY_NAMES.contains(&p.name) {
            assert!(
                (p.condition)(&model, path.last_state()),
                "{}: {text}",
                p.name
            );
        }
    }
    assert_one_more_election_breaks_leader_completeness(&report, 16, 20);
}

/// figure-8's configuration without the bug has no counterexample to any
/// property within 16 steps, the length of the bug's: every state up to
/// that depth (breadth-first, one depth at a time, with symmetry reduction)
/// satisfies every `Always` property: 563,752 representatives, about 20 s.
/// The whole space is the ignored test above.
#[test]
fn figure_8_configuration_without_the_bug_is_clean_to_the_bugs_depth() {
    let model = RaftModel::new(without_bug(seeded(Bug::Figure8).config)).with_canonical_states();
    let always: Vec<_> = model
        .properties()
        .into_iter()
        .filter(|p| p.expectation == Expectation::Always)
        .map(|p| p.condition)
        .collect();
    assert_eq!(always.len(), 10);
    let broken =
        |m: &RaftModel, s: &raft_model::model::State| always.iter().any(|holds| !holds(m, s));
    match check::within_depth(&model, broken, 16, 5_000_000) {
        check::Reach::Absent { states } => assert_eq!(states, 563_752),
        other => panic!("{other:?}"),
    }
}

/// Follows `script` (each item a prefix of the rendered action to take) from
/// the initial state, checking at each step that such an action is enabled.
/// Returns the path, or the step where no action matched.
fn follow(
    model: &RaftModel,
    script: &[&str],
) -> Result<stateright::Path<raft_model::model::State, raft_model::model::Action>, String> {
    let Some(init) = model.init_states().into_iter().next() else {
        return Err("no initial state".into());
    };
    let mut state = init.clone();
    let mut taken = Vec::new();
    for (i, label) in script.iter().enumerate() {
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        let Some(action) = actions
            .into_iter()
            .find(|a| raft_model::render::action(a).starts_with(label))
        else {
            return Err(format!("step {}: no enabled action '{label}'", i + 1));
        };
        let Some(next) = model.next_state(&state, action.clone()) else {
            return Err(format!("step {}: '{label}' changes nothing", i + 1));
        };
        if !model.within_boundary(&next) {
            return Err(format!("step {}: '{label}' leaves the bounds", i + 1));
        }
        taken.push(action);
        state = next;
    }
    stateright::Path::from_actions(model, init, taken.iter())
        .ok_or_else(|| "the path does not replay".to_string())
}

/// figure-8's configuration (3 servers, 3 terms, 1 request) without the bug
/// passes: DFS with symmetry reduction on two threads, about 18.46 M
/// representatives; its time (docs/benchmarks.md) is too long for the
/// default suite. With two threads the symmetric count may
/// vary a little between runs (the representative of a state depends on
/// which member of its class was met first), so it is pinned to within 0.5%.
#[test]
#[ignore = "minutes long: cargo test --release --test model_check -- --ignored figure_8_configuration_without_the_bug_passes"]
fn figure_8_configuration_without_the_bug_passes() {
    let config = without_bug(seeded(Bug::Figure8).config);
    let report = super::run(config, Strategy::Dfs, true, 2);
    assert_clean(&report, &three_servers_two_terms());
    let pinned = 18_457_028_f64;
    let off = (report.unique_states as f64 - pinned).abs() / pinned;
    assert!(off < 0.005, "{} representatives", report.unique_states);
}

/// The whole Figure 8 scenario, to the point where Leader Completeness itself
/// breaks (20 steps with 4 terms, beyond a breadth-first search of 10
/// minutes; the search above stops at step 16, where the lookahead property
/// fails), followed step by step through the model: n0 leads term 1 with an entry only it holds; n1 leads term 2 with a
/// different entry at index 1; n0 leads term 3, replicates its term-1 entry to
/// n2 and, with the bug, commits it by counting replicas; n1 then wins term 4
/// with n2's vote and lacks the committed entry. The checker's own Leader
/// Completeness flags the final state; without the bug n0 does not commit at
/// step 16 and the same script ends with every property holding.
#[test]
fn figure_8_scripted_counterexample_breaks_leader_completeness() {
    let script = [
        "0 Election timeout",
        "0 → 1 : RequestVote t1",
        "1 → 0 : RequestVoteResponse t1 granted",
        "3 → 0 : ClientRequest #1",
        "1 Election timeout",
        "1 → 2 : RequestVote t2",
        "2 → 1 : RequestVoteResponse t2 granted",
        "3 → 1 : ClientRequest #1",
        "1 → 0 : RequestVote t2",
        "0 Election timeout",
        "0 → 2 : RequestVote t3",
        "2 → 0 : RequestVoteResponse t3 granted",
        // n0's first AppendEntries probes at its own last entry: n2 rejects
        // it, n0 backs off and sends the entry.
        "0 → 2 : AppendEntries t3 from n0 prev 1@1",
        "2 → 0 : AppendEntriesResponse t3",
        "0 → 2 : AppendEntries t3 from n0 prev 0@0",
        "2 → 0 : AppendEntriesResponse t3 ok index 1",
        "0 → 1 : RequestVote t3",
        "1 Election timeout",
        "1 → 2 : RequestVote t4",
        "2 → 1 : RequestVoteResponse t4 granted",
    ];
    let entry = seeded(Bug::Figure8);
    let config = ModelConfig {
        max_term: 4,
        ..entry.config
    };
    let model = RaftModel::new(config);
    let path = follow(&model, &script).unwrap_or_else(|e| panic!("{e}"));
    let text = check::format_path(&model, &path);
    let holds = |m: &RaftModel, name: &str| {
        m.properties()
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| (p.condition)(m, path.last_state()))
    };
    assert_eq!(
        holds(&model, raft_spec::safety::LEADER_COMPLETENESS),
        Some(false),
        "{text}"
    );
    assert!(text.contains("n1 Leader t4"), "{text}");

    let correct = RaftModel::new(without_bug(config));
    let path = follow(&correct, &script).unwrap_or_else(|e| panic!("{e}"));
    let text = check::format_path(&correct, &path);
    for p in correct.properties() {
        if p.expectation == Expectation::Always {
            assert!(
                (p.condition)(&correct, path.last_state()),
                "{}: {text}",
                p.name
            );
        }
    }
}

/// The path of lease-beyond-drift's counterexample, step by step (see the
/// catalogue's note).
const LEASE_BEYOND_DRIFT: &[&str] = &[
    "0 Election timeout",
    "0 → 1 : RequestVote",
    "1 → 0 : RequestVoteResponse",
    "0 → 1 : AppendEntries",
    "1 → 0 : AppendEntriesResponse",
    "3 → 0 : ClientRequest",
    "0 → 1 : AppendEntries t1 from n0 prev 0@0 [1@1(c3)]",
    "1 → 0 : AppendEntriesResponse t1 ok index 1",
    "0 → 3 : ClientReply",
    "0 → 2 : AppendEntries t1 from n0 prev 0@0 [1@1(c3)]",
    "2 Election timeout",
    "1 Quiet timeout",
    "2 → 1 : RequestVote",
    "1 → 2 : RequestVoteResponse",
    "4 → 2 : ClientRequest",
    "2 → 1 : AppendEntries",
    "1 → 2 : AppendEntriesResponse",
    "2 → 4 : ClientReply",
    "5 sends its read to 0",
    "5 → 0 : ClientRead",
    "0 → 5 : ClientReply",
];

/// Clocks past the drift bound: the path above, followed through the model
/// with the bug, ends in a stale lease read (Linearizability fails, every
/// Figure 3 property holds); without the bug the same path stops where n2's
/// election timer would run out inside the lease n2 answered (step 11):
/// the drift order is what keeps lease reads linearizable. The
/// breadth-first search cannot reach this depth on 3 servers with two
/// writes in a test's time (about 14 M representatives by depth 18), so the
/// path is given; the two-server lease configuration holds exhaustively
/// (`lease_reads_and_check_quorum_hold`).
#[test]
fn lease_beyond_drift_serves_a_stale_lease_read() {
    let entry = seeded(Bug::LeaseBeyondDrift);
    let model = RaftModel::new(entry.config);
    let path = follow(&model, LEASE_BEYOND_DRIFT).unwrap_or_else(|e| panic!("{e}"));
    let text = check::format_path(&model, &path);
    assert!(text.contains("ClientRead #1 (lease)"), "{text}");
    for p in model.properties() {
        if p.expectation != Expectation::Always {
            continue;
        }
        let holds = (p.condition)(&model, path.last_state());
        assert_eq!(
            holds,
            p.name != names::LINEARIZABILITY,
            "{}: {text}",
            p.name
        );
    }
    assert_eq!(entry.expected, Expected::Violates(names::LINEARIZABILITY));

    let clean = RaftModel::new(without_bug(entry.config));
    let blocked = follow(&clean, LEASE_BEYOND_DRIFT).map(|_| ());
    assert_eq!(
        blocked,
        Err("step 11: no enabled action '2 Election timeout'".to_string())
    );
}
