//! Exhaustive model checking of named bounded configurations.
//!
//! Each test runs a configuration to completion and asserts that the search
//! completed, that every `Always` property held, that every `Sometimes`
//! property was found, and the exact number of unique states. A change to the
//! state space shows up here first: explain the new count in the commit.
//!
//! The configurations (a), (b) and (c) are the tests named `a_`,
//! `b_` and `c_`: the test harness starts tests in name order, so the longest
//! ones, (b) above all, start first and overlap the rest.

use raft_model::check::{self, CheckOptions, CheckReport, Outcome, Strategy};
use raft_model::model::names;
use raft_model::{ModelConfig, NetworkKind, RaftModel};
use raft_spec::safety::{ACKNOWLEDGED_WRITES_SURVIVE, AUXILIARY_PROPERTY_NAMES, PROPERTY_NAMES};
use raft_spec::{Ack, ReadMode, Replication};
use stateright::{Expectation, Model};
use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

#[path = "model_check/seeded_bugs.rs"]
mod seeded_bugs;

fn config(servers: usize, max_term: u64, requests: usize, crashes: usize) -> ModelConfig {
    ModelConfig::bounded(servers, max_term, requests, crashes)
}

fn run(config: ModelConfig, strategy: Strategy, symmetry: bool, threads: usize) -> CheckReport {
    let options = CheckOptions {
        strategy,
        symmetry,
        threads,
        progress_every: None,
        stop_at: None,
        time_limit: None,
        // The suite checks verdicts and counts; the shortest examples have
        // a test of their own.
        shortest_examples: false,
    };
    check::run(config, options, &mut std::io::sink())
}

/// The complete check of a configuration without a seeded bug, run once per
/// test binary and shared by the tests that need it (the seeded-bug tests
/// compare against the same configurations). Three servers with two or more
/// terms run DFS with symmetry on one thread (one thread keeps the count of
/// representatives deterministic); everything else runs BFS.
fn clean_run(config: ModelConfig) -> Arc<CheckReport> {
    let symmetry = config.servers >= 3 && config.max_term >= 2;
    memo_run(config, symmetry)
}

/// The complete check of a configuration without a seeded bug and without
/// symmetry reduction, run once per test binary: DFS on two threads for
/// three servers with two or more terms (without symmetry the count of
/// unique states does not depend on the interleaving of workers), BFS
/// otherwise.
fn full_run(config: ModelConfig) -> Arc<CheckReport> {
    memo_run(config, false)
}

fn memo_run(config: ModelConfig, symmetry: bool) -> Arc<CheckReport> {
    assert!(config.bug.is_none(), "clean runs are for the correct rules");
    type Memo = Mutex<HashMap<(ModelConfig, bool), Arc<OnceLock<Arc<CheckReport>>>>>;
    static MEMO: OnceLock<Memo> = OnceLock::new();
    let cell = {
        let mut memo = MEMO
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(memo.entry((config, symmetry)).or_default())
    };
    Arc::clone(cell.get_or_init(|| {
        let report = if symmetry {
            run(config, Strategy::Dfs, true, 1)
        } else if config.servers >= 3 && config.max_term >= 2 {
            run(config, Strategy::Dfs, false, 2)
        } else {
            run(config, Strategy::Bfs, false, 2)
        };
        Arc::new(report)
    }))
}

/// Asserts completion, every property, every expected discovery.
fn assert_clean(report: &CheckReport, expected_sometimes: &[&str]) {
    assert!(report.completed, "search did not complete: {report:?}");
    assert!(!report.panicked);
    for name in PROPERTY_NAMES
        .iter()
        .chain(&AUXILIARY_PROPERTY_NAMES)
        .chain([&names::LINEARIZABILITY, &ACKNOWLEDGED_WRITES_SURVIVE])
    {
        let v = report
            .verdict(name)
            .unwrap_or_else(|| panic!("property {name} not registered"));
        assert_eq!(v.expectation, Expectation::Always, "{name}");
        assert!(
            matches!(v.outcome, Outcome::Held),
            "{name}: {:?}",
            v.outcome
        );
    }
    let sometimes: Vec<&str> = report
        .verdicts
        .iter()
        .filter(|v| v.expectation == Expectation::Sometimes)
        .map(|v| v.name)
        .collect();
    assert_eq!(
        sometimes, expected_sometimes,
        "registered Sometimes properties"
    );
    for v in &report.verdicts {
        if v.expectation == Expectation::Sometimes {
            assert!(
                matches!(v.outcome, Outcome::Found(_)),
                "{} not found",
                v.name
            );
        }
    }
    assert!(report.success());
}

const ELECTION_ONLY: &[&str] = &[names::LEADER_ELECTED, names::ENTRY_COMMITTED];

/// 3 servers, 1 term, 1 request: an election, replication of the request,
/// commitment and the reply.
#[test]
fn three_servers_one_term_one_request() {
    let report = clean_run(config(3, 1, 1, 0));
    assert_clean(&report, &[ELECTION_ONLY, &[names::CLIENT_REPLY]].concat());
    assert_eq!(report.unique_states, 1_268);
}

/// 3 servers, 2 terms, no request: competing elections, a change of leader.
/// Without client requests no entry exists, so nothing can commit or conflict:
/// only the elections' examples are expected.
#[test]
fn three_servers_two_terms_no_request() {
    let report = run(config(3, 2, 0, 0), Strategy::Bfs, false, 2);
    assert!(report.completed);
    for name in PROPERTY_NAMES {
        assert!(matches!(
            report.verdict(name).map(|v| &v.outcome),
            Some(Outcome::Held)
        ));
    }
    assert!(matches!(
        report.verdict(names::LEADER_REPLACED).map(|v| &v.outcome),
        Some(Outcome::Found(_))
    ));
    assert!(matches!(
        report.verdict(names::LEADER_ELECTED).map(|v| &v.outcome),
        Some(Outcome::Found(_))
    ));
    // No entry can ever exist, so none commits: the checker must say so.
    assert!(matches!(
        report.verdict(names::ENTRY_COMMITTED).map(|v| &v.outcome),
        Some(Outcome::NotFound)
    ));
    assert!(!report.success());
    assert_eq!(report.unique_states, 1_896);
}

/// 2 servers, 2 terms, 1 request: a leader of term 2 replaces the one of term
/// 1, and the request is replicated, committed and answered.
#[test]
fn two_servers_two_terms_one_request() {
    let report = clean_run(config(2, 2, 1, 0));
    assert_clean(
        &report,
        &[
            ELECTION_ONLY,
            &[
                names::LEADER_REPLACED,
                names::LEADER_STEPS_DOWN_ON_RESPONSE,
                names::CLIENT_REPLY,
            ],
        ]
        .concat(),
    );
    assert_eq!(report.unique_states, 321);
}

/// 3 servers, 1 term, 2 requests, with the replication options of
/// `raft_spec::Server`: the default (every AppendEntries carries the log from
/// `next_index` on), a cap of one entry per AppendEntries (the next batch
/// follows each acknowledgement), and that cap with empty heartbeats. Each
/// passes; the cap gives fewer distinct messages, so fewer states.
#[test]
fn three_servers_one_term_two_requests_with_each_replication_option() {
    let one = std::num::NonZeroUsize::new(1);
    let with = |replication| ModelConfig {
        replication,
        ..config(3, 1, 2, 0)
    };
    for (cfg, states) in [
        (config(3, 1, 2, 0), 87_563),
        (
            with(Replication {
                max_append_entries: one,
                ..Replication::default()
            }),
            22_043,
        ),
        (
            with(Replication {
                max_append_entries: one,
                empty_heartbeats: true,
                ..Replication::default()
            }),
            23_363,
        ),
    ] {
        let report = clean_run(cfg);
        assert_clean(&report, &[ELECTION_ONLY, &[names::CLIENT_REPLY]].concat());
        assert_eq!(report.unique_states, states, "{cfg}");
    }
}

/// Flow control (`raft_spec::flow`): followers in probe and replicate,
/// a window of unacknowledged batches, empty heartbeats in replicate, and
/// rejections that tell the follower's end of log. 3 servers, 1 term, 1
/// request and a crash with a window of one; 2 servers, 2 terms, 2 requests
/// with a window of two batches of one entry, where the leader pipelines.
#[test]
fn flow_control_holds_every_property() {
    let window = |n| Replication {
        window: std::num::NonZeroUsize::new(n),
        ..Replication::default()
    };
    let one_crash = ModelConfig {
        replication: window(1),
        ..config(3, 1, 1, 1)
    };
    let report = clean_run(one_crash);
    assert_clean(
        &report,
        &[
            ELECTION_ONLY,
            &[names::CLIENT_REPLY, names::CRASHED_SERVER_REJOINS],
        ]
        .concat(),
    );
    assert_eq!(report.unique_states, 185_309, "{one_crash}");

    let pipelined = ModelConfig {
        replication: Replication {
            max_append_entries: std::num::NonZeroUsize::new(1),
            ..window(2)
        },
        ..config(2, 2, 2, 0)
    };
    let report = clean_run(pipelined);
    assert_clean(
        &report,
        &[
            ELECTION_ONLY,
            &[
                names::LEADER_REPLACED,
                names::LEADER_STEPS_DOWN_ON_RESPONSE,
                names::CLIENT_REPLY,
                names::PIPELINED,
            ],
        ]
        .concat(),
    );
    assert_eq!(report.unique_states, 161_221, "{pipelined}");
}

/// The leader's write in parallel with replicating it (Raft thesis
/// §10.2.1): its entries become durable one at a time (`Action::Sync`), a
/// crash loses those that are not, and it counts itself toward a majority
/// only for those that are. Every property holds on 3 servers, 1 term, 1
/// request, 1 crash (the seeded bug's configuration), and on 2 terms, where
/// the leader that lost its entry can vote for a new one; a leader commits
/// on its followers' copies before its own is durable.
#[test]
fn parallel_write_holds_every_property() {
    let parallel = |cfg: ModelConfig| ModelConfig {
        replication: Replication {
            parallel_write: true,
            ..Replication::default()
        },
        ..cfg
    };
    let one_term = parallel(config(3, 1, 1, 1));
    let report = clean_run(one_term);
    assert_clean(
        &report,
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
    assert_eq!(report.unique_states, 17_852, "{one_term}");

    let two_terms = parallel(config(3, 2, 1, 1));
    let report = clean_run(two_terms);
    assert_clean(
        &report,
        &[
            ELECTION_ONLY,
            &[
                names::LEADER_REPLACED,
                names::LEADER_STEPS_DOWN_ON_RESPONSE,
                names::CONFLICT_OVERWRITTEN,
                names::CLIENT_REPLY,
                names::COMMITTED_BEFORE_OWN_SYNC,
                names::CRASHED_SERVER_REJOINS,
            ],
        ]
        .concat(),
    );
    assert_eq!(report.unique_states, 1_198_886, "{two_terms}");
}

/// The acknowledgement levels (the seed article's consistency levels) on
/// 3 servers, 2 terms, 1 request: a write answered once it is committed, or
/// once every server stores it, is in the log of every later leader, and
/// every reply stays linearizable; a write answered once the leader alone
/// stores it is not. That is a demonstration, not a failure: the shortest
/// counterexample has 8 steps and no crash (the leader answers, a second
/// server is elected in term 2 by the third, and neither has the entry).
#[test]
fn acknowledgement_levels_hold_from_committed_and_fail_when_only_stored() {
    let at = |ack: Ack| {
        let base = config(3, 2, 1, 0);
        ModelConfig {
            ack,
            replication: Replication {
                report_applied: ack.counts_applied(),
                ..base.replication
            },
            ..base
        }
    };
    let early = [three_two_one_examples(), vec![names::ACKNOWLEDGED_EARLY]].concat();
    let levels = [
        (Ack::Committed, 64_836, &early),
        (Ack::Replicated, 55_122, &early),
        // Answered with the result once a majority, or every server,
        // reported the apply: the reply (a `Sometimes`) comes only that way.
        (Ack::QuorumApplied, 194_023, &three_two_one_examples()),
        (Ack::AllApplied, 214_884, &three_two_one_examples()),
    ];
    for (ack, states, examples) in levels {
        let report = clean_run(at(ack));
        assert_clean(&report, examples);
        assert_eq!(report.unique_states, states, "{}", at(ack));
    }

    let options = CheckOptions {
        strategy: Strategy::Bfs,
        symmetry: true,
        threads: 2,
        progress_every: None,
        stop_at: Some(ACKNOWLEDGED_WRITES_SURVIVE),
        time_limit: None,
        shortest_examples: false,
    };
    let report = check::run(at(Ack::Stored), options, &mut std::io::sink());
    assert!(!report.panicked && !report.success());
    let Some(Outcome::Violated(path)) = report
        .verdict(ACKNOWLEDGED_WRITES_SURVIVE)
        .map(|v| &v.outcome)
    else {
        panic!("no counterexample: {report:?}");
    };
    let model = RaftModel::new(at(Ack::Stored));
    let text = check::format_path(&model, path);
    assert_eq!(path.clone().into_actions().len(), 8, "{text}");
    assert!(text.contains("accepted at 1@1"), "{text}");
    for name in PROPERTY_NAMES.iter().chain([&names::LINEARIZABILITY]) {
        let held = report.verdict(name).map(|v| &v.outcome);
        assert!(
            !matches!(held, Some(Outcome::Violated(_))),
            "{name} fails too"
        );
    }
}

/// Reads (`raft_spec::ReadMode`): one write, then one read sent to a server
/// of the checker's choosing once the write is answered. Through the log,
/// by ReadIndex and by a follower at its leader's read index every property
/// holds, Linearizability of the read included, and a read sees the write
/// (with the follower's read index, a follower answers it); a follower
/// answering from its own state
/// returns the count before the write: a counterexample of 10 steps with no
/// change of leader (the follower holds the entry but has not learnt that
/// it is committed). That is a demonstration, not a failure.
#[test]
fn reads_through_the_log_and_by_read_index_hold_and_follower_reads_are_stale() {
    let reading = |servers, max_term, read| ModelConfig {
        reads: 1,
        read,
        ..config(servers, max_term, 1, 0)
    };
    let two_terms = [
        ELECTION_ONLY,
        &[
            names::LEADER_REPLACED,
            names::LEADER_STEPS_DOWN_ON_RESPONSE,
            names::CLIENT_REPLY,
            names::READ_SEES_WRITE,
        ],
    ]
    .concat();
    let one_term = [
        ELECTION_ONLY,
        &[names::CLIENT_REPLY, names::READ_SEES_WRITE],
    ]
    .concat();
    for (servers, max_term, read, states) in [
        (2, 2, ReadMode::Log, 2_601),
        (2, 2, ReadMode::ReadIndex, 2_141),
        (3, 1, ReadMode::Log, 31_817),
        (3, 1, ReadMode::ReadIndex, 17_093),
        (2, 2, ReadMode::FollowerReadIndex, 1_989),
        (3, 1, ReadMode::FollowerReadIndex, 15_773),
    ] {
        let cfg = reading(servers, max_term, read);
        let report = clean_run(cfg);
        let mut examples = if max_term == 2 {
            two_terms.clone()
        } else {
            one_term.clone()
        };
        if read == ReadMode::FollowerReadIndex {
            examples.push(names::FOLLOWER_READ_INDEX);
        }
        assert_clean(&report, &examples);
        assert_eq!(report.unique_states, states, "{cfg}");
    }

    let cfg = reading(3, 1, ReadMode::Follower);
    let options = CheckOptions {
        strategy: Strategy::Bfs,
        symmetry: true,
        threads: 2,
        progress_every: None,
        stop_at: Some(names::LINEARIZABILITY),
        time_limit: None,
        shortest_examples: false,
    };
    let report = check::run(cfg, options, &mut std::io::sink());
    assert!(!report.panicked && !report.success());
    let Some(Outcome::Violated(path)) = report.verdict(names::LINEARIZABILITY).map(|v| &v.outcome)
    else {
        panic!("no counterexample: {report:?}");
    };
    let text = check::format_path(&RaftModel::new(cfg), path);
    assert_eq!(path.clone().into_actions().len(), 10, "{text}");
    assert!(text.contains("ClientRead #1 (follower)"), "{text}");
    for name in PROPERTY_NAMES {
        let held = report.verdict(name).map(|v| &v.outcome);
        assert!(
            !matches!(held, Some(Outcome::Violated(_))),
            "{name} fails too"
        );
    }
}

/// The default configuration: 3 servers, 1 term, 1 request, 1 crash, here
/// with a lossy network (the default check's count: loss is explored as
/// delay on this network).
#[test]
fn three_servers_one_term_one_request_one_crash_lossy() {
    let mut cfg = config(3, 1, 1, 1);
    cfg.lossy = true;
    let report = run(cfg, Strategy::Bfs, false, 2);
    assert_clean(
        &report,
        &[
            ELECTION_ONLY,
            &[names::CLIENT_REPLY, names::CRASHED_SERVER_REJOINS],
        ]
        .concat(),
    );
    assert_eq!(report.unique_states, 10_832);
}

/// 2 servers, 2 terms, 1 request, 1 crash: a crashed server keeps its term,
/// vote and log (no false Election Safety violation), recovers and rejoins.
#[test]
fn two_servers_two_terms_one_request_one_crash() {
    let report = run(config(2, 2, 1, 1), Strategy::Bfs, false, 2);
    assert_clean(
        &report,
        &[
            ELECTION_ONLY,
            &[
                names::LEADER_REPLACED,
                names::LEADER_STEPS_DOWN_ON_RESPONSE,
                names::CLIENT_REPLY,
                names::CRASHED_SERVER_REJOINS,
            ],
        ]
        .concat(),
    );
    assert_eq!(report.unique_states, 2_537);
}

/// (c) DFS with symmetry reduction agrees with BFS on every verdict, on
/// fewer states.
#[test]
fn dfs_with_symmetry_agrees_with_bfs_on_fewer_states() {
    let cfg = config(3, 1, 1, 0);
    let bfs = run(cfg, Strategy::Bfs, false, 1);
    let dfs = run(cfg, Strategy::Dfs, false, 1);
    let sym = run(cfg, Strategy::Dfs, true, 1);
    for r in [&bfs, &dfs, &sym] {
        assert!(r.success(), "{r:?}");
    }
    let verdicts = |r: &CheckReport| -> Vec<(&str, bool)> {
        r.verdicts.iter().map(|v| (v.name, v.is_ok())).collect()
    };
    assert_eq!(verdicts(&bfs), verdicts(&sym));
    assert_eq!(bfs.unique_states, dfs.unique_states);
    assert_eq!(sym.unique_states, 312);
    assert!(sym.unique_states * 4 < bfs.unique_states);
}

/// The non-duplicating and the ordered networks are checked too.
#[test]
fn other_network_semantics() {
    let mut cfg = config(2, 2, 1, 0);
    cfg.network = NetworkKind::UnorderedNonDuplicating;
    let nondup = run(cfg, Strategy::Bfs, false, 2);
    let expected = [
        ELECTION_ONLY,
        &[
            names::LEADER_REPLACED,
            names::LEADER_STEPS_DOWN_ON_RESPONSE,
            names::CLIENT_REPLY,
        ],
    ]
    .concat();
    assert_clean(&nondup, &expected);
    assert_eq!(nondup.unique_states, 2_032);
    cfg.network = NetworkKind::Ordered;
    cfg.lossy = true;
    let ordered = run(cfg, Strategy::Bfs, false, 2);
    assert_clean(&ordered, &expected);
    assert_eq!(ordered.unique_states, 2_666);
}

/// Everything about a state except the network: what the properties see.
fn projection(state: &raft_model::model::State) -> u64 {
    let mut h = DefaultHasher::new();
    state.servers.iter().for_each(|slot| {
        slot.server.hash(&mut h);
        slot.stored.hash(&mut h);
        slot.timers.hash(&mut h);
        slot.crashed.hash(&mut h);
    });
    state.clients.hash(&mut h);
    state.ghost.hash(&mut h);
    h.finish()
}

/// All reachable projections, by a plain depth-first search.
///
/// Each state also counts with the ghost's example flags cleared. They mark
/// the step that shows an example and the next step clears them, but a step
/// that changes nothing is not taken (Stateright has no self-loops), and
/// whether a delivery changes nothing can depend on the dead messages still
/// in flight. So the states reached with a flag set are compared exactly,
/// and the same states without it are counted on both sides.
fn reachable_projections(model: &RaftModel) -> HashSet<u64> {
    let fingerprint = |state: &raft_model::model::State| {
        let mut h = DefaultHasher::new();
        state.hash(&mut h);
        h.finish()
    };
    let mut stack: Vec<_> = model.init_states();
    let mut seen: HashSet<u64> = stack.iter().map(fingerprint).collect();
    let mut projections = HashSet::new();
    let mut actions = Vec::new();
    while let Some(state) = stack.pop() {
        projections.insert(projection(&state));
        let mut cleared = state.clone();
        cleared.ghost.rejoined = false;
        cleared.ghost.stepped_down_on_response = false;
        cleared.ghost.lease_read = false;
        cleared.ghost.lost_quorum = false;
        cleared.ghost.follower_read = false;
        projections.insert(projection(&cleared));
        actions.clear();
        model.actions(&state, &mut actions);
        for a in actions.drain(..) {
            if let Some(next) = model.next_state(&state, a) {
                if model.within_boundary(&next) && seen.insert(fingerprint(&next)) {
                    stack.push(next);
                }
            }
        }
    }
    projections
}

/// Forgetting dead messages (responses raft-spec's `Server::ignores_forever`
/// says are ignored, requests refused for good or absorbed for good whose
/// answers are ignored, moot redirects) changes no reachable server, client
/// or ghost state: it only merges states that differ in messages nobody will
/// act on. The configurations include seeded bugs that change which
/// messages matter, the non-duplicating network, empty heartbeats and a cap
/// on entries per AppendEntries.
#[test]
fn dead_message_collection_preserves_reachable_server_states() {
    // The seeded bugs that change which messages are dead (a counted vote of
    // an earlier term, a match_index that moves back, a commit without the
    // min, a leader's commit rule under which AppendEntries may be absorbed)
    // are checked too, and the network that consumes what it delivers.
    let with_bug = |cfg: ModelConfig, bug| ModelConfig {
        bug: Some(bug),
        ..cfg
    };
    let non_duplicating = ModelConfig {
        network: NetworkKind::UnorderedNonDuplicating,
        ..config(2, 1, 1, 1)
    };
    for cfg in [
        config(2, 2, 1, 0),
        config(2, 1, 1, 1),
        config(3, 1, 0, 0),
        non_duplicating,
        with_bug(config(2, 2, 1, 0), raft_spec::bugs::Bug::StaleVoteResponse),
        with_bug(config(2, 1, 1, 0), raft_spec::bugs::Bug::MatchIndexRegress),
        with_bug(config(2, 2, 1, 0), raft_spec::bugs::Bug::Figure8),
        ModelConfig {
            replication: Replication {
                empty_heartbeats: true,
                ..Replication::default()
            },
            ..with_bug(config(2, 1, 1, 1), raft_spec::bugs::Bug::CommitWithoutMin)
        },
        ModelConfig {
            replication: Replication {
                max_append_entries: std::num::NonZeroUsize::new(1),
                empty_heartbeats: true,
                ..Replication::default()
            },
            ..config(2, 1, 2, 0)
        },
        ModelConfig {
            replication: Replication {
                max_append_entries: std::num::NonZeroUsize::new(1),
                window: std::num::NonZeroUsize::new(1),
                ..Replication::default()
            },
            ..config(2, 2, 1, 1)
        },
        ModelConfig {
            replication: Replication {
                parallel_write: true,
                ..Replication::default()
            },
            ..config(2, 2, 1, 1)
        },
        ModelConfig {
            replication: Replication {
                parallel_write: true,
                ..Replication::default()
            },
            ..config(3, 1, 1, 0)
        },
        // Reads: answers that may still confirm a round stay alive, and a
        // reader's redirect is moot only once its read is in flight.
        ModelConfig {
            reads: 1,
            read: ReadMode::ReadIndex,
            ..config(2, 1, 1, 0)
        },
        // Leases and CheckQuorum: answers that may confirm a lease or count
        // at a check stay alive, and no AppendEntries is absorbed.
        ModelConfig {
            reads: 1,
            read: ReadMode::Lease,
            replication: Replication {
                leases: true,
                ..Replication::default()
            },
            ..config(2, 1, 1, 0)
        },
        ModelConfig {
            replication: Replication {
                check_quorum: true,
                ..Replication::default()
            },
            ..config(2, 2, 1, 0)
        },
        // Reported applies: an answer that raises the applied index known
        // of its sender stays alive, and no AppendEntries is absorbed.
        ModelConfig {
            ack: Ack::AllApplied,
            replication: Replication {
                report_applied: true,
                ..Replication::default()
            },
            ..config(2, 2, 1, 0)
        },
    ] {
        let with = reachable_projections(&RaftModel::new(cfg));
        let without = reachable_projections(&RaftModel::new(cfg).without_garbage_collection());
        assert_eq!(with, without, "{cfg}");
    }
}

/// An example path prints as numbered steps naming the action and the
/// server's key fields, and has an Explorer URL that replays it.
#[test]
fn paths_print_as_numbered_readable_steps() {
    let cfg = config(2, 1, 1, 0);
    let report = run(cfg, Strategy::Bfs, false, 1);
    let Some(Outcome::Found(path)) = report.verdict(names::CLIENT_REPLY).map(|v| &v.outcome) else {
        panic!("no example of a client reply: {report:?}");
    };
    let model = RaftModel::new(cfg);
    let text = check::format_path(&model, path);
    let steps = path.clone().into_actions().len();
    assert!(text.contains("    1. "), "{text}");
    assert!(text.contains(&format!("{steps:>5}. ")), "{text}");
    assert!(text.contains("ClientRequest #1"), "{text}");
    assert!(text.contains("Leader t1"), "{text}");
    assert!(text.contains("client 2 request #1 done, got 0"), "{text}");
    let url = check::explorer_url(&model, path, "http://127.0.0.1:3000");
    let encoded = url
        .strip_prefix("http://127.0.0.1:3000/#/steps/")
        .unwrap_or_else(|| panic!("{url}"));
    // One index for the initial state, then one per action.
    assert_eq!(encoded.split('/').count(), steps + 1, "{url}");
}

/// The examples every 3-server, 2-term, 1-request run must find.
fn three_two_one_examples() -> Vec<&'static str> {
    [
        ELECTION_ONLY,
        &[
            names::LEADER_REPLACED,
            names::LEADER_STEPS_DOWN_ON_RESPONSE,
            names::CONFLICT_OVERWRITTEN,
            names::CLIENT_REPLY,
        ],
    ]
    .concat()
}

/// (a) 3 servers, 2 terms, 1 request, no crash, the full space (no symmetry
/// reduction): every example, including a follower's conflicting entry being
/// overwritten and a change of leader, with all five properties and
/// linearizability holding; and (c) the symmetry-reduced run below agrees
/// with it on every verdict, on fewer states.
///
/// 229,674 states (269,934 while the ghost's example flags stayed set,
/// 315,000 before requests whose answer is in flight for good were
/// forgotten, 388,494 before AppendEntries absorbed for good were,
/// 956,310 before requests refused for good were, 10,145,904 before dead
/// responses and stale vote requests were): about 8 s on two threads of the
/// 2-core machine.
#[test]
fn a_three_servers_two_terms_one_request() {
    let report = full_run(config(3, 2, 1, 0));
    assert_clean(&report, &three_two_one_examples());
    assert_eq!(report.unique_states, 229_674);
    let reduced = clean_run(config(3, 2, 1, 0));
    let verdicts = |r: &CheckReport| -> Vec<(&str, bool)> {
        r.verdicts.iter().map(|v| (v.name, v.is_ok())).collect()
    };
    assert_eq!(verdicts(&reduced), verdicts(&report));
    assert!(reduced.unique_states * 5 < report.unique_states);
}

/// (c) The configuration of (a) with symmetry reduction over server
/// identities (DFS, one thread, so that the count of representatives does not
/// depend on the interleaving of workers): every property holds and every
/// example is found, on 5.4 times fewer states than (a).
#[test]
fn c_three_servers_two_terms_one_request_with_symmetry() {
    let report = clean_run(config(3, 2, 1, 0));
    assert_clean(&report, &three_two_one_examples());
    assert_eq!(report.unique_states, 42_030);
}

/// (c) The configuration of (a) breadth-first with symmetry reduction (the
/// canonical model, `RaftModel::with_canonical_states`): the verdicts of
/// (a), on 42,299 representatives on two threads (each state is replaced by
/// its representative when generated, so the count does not depend on the
/// workers' interleaving; a little above the depth-first count, which keeps
/// the first member of each class it meets). Each example is reported as a
/// path of the plain model that reaches a state where it holds.
#[test]
fn c_breadth_first_with_symmetry_agrees_with_a() {
    let report = run(config(3, 2, 1, 0), Strategy::Bfs, true, 2);
    assert_clean(&report, &three_two_one_examples());
    assert_eq!(report.unique_states, 42_299);
    let model = RaftModel::new(config(3, 2, 1, 0));
    for property in model.properties() {
        let Some(Outcome::Found(path)) = report.verdict(property.name).map(|v| &v.outcome) else {
            continue;
        };
        assert!(
            (property.condition)(&model, path.last_state()),
            "{}: the reported path does not end in an example",
            property.name
        );
    }
}

/// (b) 3 servers, 2 terms, 1 request, 1 crash, lossy network, with
/// symmetry reduction (DFS, one thread): every property holds and every
/// example is found, a crashed server's return included. 425,734
/// representatives; the full space is checked by the ignored test below.
///
/// The count depends on the order in which the search meets states, which
/// one thread makes repeatable: a state's representative sorts servers by
/// what they hold, and what they hold names servers (a leader hint, the
/// votes granted), so two renamings of one state need not have the same
/// representative. Such states are explored twice; none is ever merged with
/// a state that is not a renaming of it, so the reduction stays sound.
#[test]
fn b_three_servers_two_terms_one_request_one_crash_lossy() {
    let report = clean_run(config_b());
    assert_clean(&report, &b_examples());
    assert_eq!(report.unique_states, 425_734);
}

/// (b) without symmetry reduction: 2,253,018 states (about 15 s on two
/// threads of the 2-core machine, and the symmetric run again). The
/// symmetric run above agrees with it on every verdict.
#[test]
fn b_three_servers_two_terms_one_request_one_crash_lossy_full() {
    let report = full_run(config_b());
    assert_clean(&report, &b_examples());
    assert_eq!(report.unique_states, 2_253_018);
    let reduced = clean_run(config_b());
    let verdicts = |r: &CheckReport| -> Vec<(&str, bool)> {
        r.verdicts.iter().map(|v| (v.name, v.is_ok())).collect()
    };
    assert_eq!(verdicts(&reduced), verdicts(&report));
}

fn config_b() -> ModelConfig {
    ModelConfig {
        lossy: true,
        ..config(3, 2, 1, 1)
    }
}

fn b_examples() -> Vec<&'static str> {
    [
        three_two_one_examples(),
        vec![names::CRASHED_SERVER_REJOINS],
    ]
    .concat()
}

/// The shortest path to a leader in a 3-server cluster has three steps: an
/// election timeout, one RequestVote delivered, its granted vote delivered.
/// (Counterexamples are searched the same way, so they come out shortest.)
#[test]
fn shortest_path_to_a_leader_has_three_steps() {
    let model = RaftModel::new(config(3, 1, 0, 0));
    let elected =
        |m: &RaftModel, s: &raft_model::model::State| m.views(s).iter().any(|v| v.is_leader());
    let path = check::shortest_path(&model, elected, 100_000)
        .unwrap_or_else(|| panic!("no path to a leader"));
    let text = check::format_path(&model, &path);
    assert_eq!(path.clone().into_actions().len(), 3, "{text}");
    assert!(text.contains("Election timeout"), "{text}");
    assert!(text.contains("RequestVote t1"), "{text}");
    assert!(text.contains("RequestVoteResponse t1 granted"), "{text}");
    assert!(text.contains("Leader t1"), "{text}");
}

/// A path of the canonical model (symmetry reduction in a breadth-first
/// search) stands for a path of the plain model: `concrete_path` finds one
/// with the same number of steps whose states equal the canonical path's up
/// to renaming servers, and that ends where the goal holds. Here the
/// canonical path renames servers on the way (some of its states are not
/// the plain path's), which is why it cannot be shown as it is.
#[test]
fn canonical_paths_become_plain_paths() {
    let cfg = config(3, 2, 1, 0);
    let plain = RaftModel::new(cfg);
    let canonical = RaftModel::new(cfg).with_canonical_states();
    let committed = |m: &RaftModel, s: &raft_model::model::State| {
        m.views(s)
            .iter()
            .any(|v| v.is_leader() && v.current_term.0 == 2 && v.commit_index.0 > 0)
    };
    let path = check::shortest_path(&canonical, committed, 1_000_000)
        .unwrap_or_else(|| panic!("no path to a commit"));
    let concrete = plain.concrete_path(&path).unwrap_or_else(|| {
        panic!(
            "no plain path for {}",
            check::format_path(&canonical, &path)
        )
    });
    let (canonical_states, plain_states) = (path.into_states(), concrete.clone().into_states());
    assert_eq!(canonical_states.len(), plain_states.len());
    for (c, p) in canonical_states.iter().zip(&plain_states) {
        assert!(plain.same_up_to_renaming(p, c));
    }
    assert!(canonical_states
        .iter()
        .zip(&plain_states)
        .any(|(c, p)| c != p));
    assert!(committed(&plain, concrete.last_state()));
    // And states that differ in more than names are told apart.
    assert!(!plain.same_up_to_renaming(&plain_states[0], concrete.last_state()));
}

/// `check` gives each `sometimes` example its shortest form: on the default
/// configuration a leader is elected in 3 steps (a timeout, the vote
/// request, the grant), an entry committed in 6 and a client answered in 7,
/// although the checker itself records longer paths; every example still
/// ends in a state that shows it.
#[test]
fn sometimes_examples_are_shortest() {
    let options = |shortest_examples| CheckOptions {
        shortest_examples,
        ..CheckOptions::default()
    };
    let config = ModelConfig::default_check();
    let shortest = check::run(config, options(true), &mut std::io::sink());
    let plain = check::run(config, options(false), &mut std::io::sink());
    assert!(shortest.completed && shortest.shortest_examples);
    assert!(!plain.shortest_examples);
    let model = RaftModel::new(config);
    let length = |r: &CheckReport, name: &str| -> usize {
        match r.verdict(name).map(|v| &v.outcome) {
            Some(Outcome::Found(path)) => {
                let property = model.properties().into_iter().find(|p| p.name == name);
                let holds = property.is_some_and(|p| (p.condition)(&model, path.last_state()));
                assert!(holds, "{name}: the example's last state does not show it");
                path.clone().into_actions().len()
            }
            other => panic!("{name}: {other:?}"),
        }
    };
    let expected = [
        (names::LEADER_ELECTED, 3),
        (names::ENTRY_COMMITTED, 6),
        (names::CLIENT_REPLY, 7),
    ];
    for (name, steps) in expected {
        assert_eq!(length(&shortest, name), steps, "{name}");
        assert!(length(&plain, name) >= steps, "{name}");
    }
    // The checker's own examples are not the shortest here: the re-search
    // is what makes them so.
    assert!(expected.iter().any(|(n, s)| length(&plain, n) > *s));
    for v in &shortest.verdicts {
        if let Outcome::Found(_) = v.outcome {
            assert!(
                length(&shortest, v.name) <= length(&plain, v.name),
                "{}",
                v.name
            );
        }
    }
}

/// Lease reads (Raft thesis §6.4.1) hold on two servers and two terms: a
/// leader answers a read at once under the lease its election's round
/// earned, and the clock-drift bound keeps every follower that answered it
/// from timing out (or voting) while the lease lasts; with a crash too.
/// CheckQuorum holds, and a leader is seen stepping down at its check.
#[test]
fn lease_reads_and_check_quorum_hold() {
    let base = config(2, 2, 1, 0);
    let examples = [
        ELECTION_ONLY,
        &[
            names::LEADER_REPLACED,
            names::LEADER_STEPS_DOWN_ON_RESPONSE,
            names::CLIENT_REPLY,
        ],
    ]
    .concat();
    let lease = ModelConfig {
        reads: 1,
        read: ReadMode::Lease,
        replication: Replication {
            leases: true,
            ..Replication::default()
        },
        ..base
    };
    let report = clean_run(lease);
    let with_reads = [
        examples.as_slice(),
        &[names::READ_SEES_WRITE, names::LEASE_READ],
    ]
    .concat();
    assert_clean(&report, &with_reads);
    assert_eq!(report.unique_states, 80_679, "{lease}");

    // With a crash: a server restarted with a term is quiet until it
    // hears a leader and its quiet timer fires, or it times out.
    let crash = ModelConfig {
        crashes: 1,
        ..lease
    };
    let report = clean_run(crash);
    let with_crash = [with_reads.as_slice(), &[names::CRASHED_SERVER_REJOINS]].concat();
    assert_clean(&report, &with_crash);
    assert_eq!(report.unique_states, 1_220_863, "{crash}");

    let check_quorum = ModelConfig {
        replication: Replication {
            check_quorum: true,
            ..Replication::default()
        },
        ..base
    };
    let report = clean_run(check_quorum);
    assert_clean(
        &report,
        &[examples.as_slice(), &[names::LOST_QUORUM]].concat(),
    );
    assert_eq!(report.unique_states, 2_285, "{check_quorum}");
}
