//! The seeded-bug catalogue: for each bug of [`raft_spec::bugs::Bug`], what
//! the checker must report and the smallest configuration that shows it.
//!
//! `raft-model check --bug NAME` runs the checker with the servers running
//! that bug; `tests/seeded_bugs.rs` checks every entry both ways (the bug is
//! caught; the same configuration without it passes).

use crate::config::ModelConfig;
use crate::model::names;
use raft_spec::bugs::Bug;
use raft_spec::safety;
use raft_spec::{ReadMode, Replication};

/// What the checker must report for a seeded bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A counterexample to this `Always` property.
    Violates(&'static str),
    /// No safety property breaks; this `Sometimes` property (reachable
    /// without the bug) is never found.
    Unreachable(&'static str),
}

impl Expected {
    /// The property's name.
    pub fn property(self) -> &'static str {
        match self {
            Expected::Violates(p) | Expected::Unreachable(p) => p,
        }
    }
}

/// One entry of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct SeededBug {
    /// The bug.
    pub bug: Bug,
    /// What the checker reports.
    pub expected: Expected,
    /// The smallest configuration (fewest servers, then terms, requests and
    /// crashes) that exposes it; `bug` is set.
    pub config: ModelConfig,
    /// What a user should know before running it (empty if nothing).
    pub note: &'static str,
}

fn config(servers: usize, max_term: u64, requests: usize, crashes: usize, bug: Bug) -> ModelConfig {
    ModelConfig {
        bug: Some(bug),
        ..ModelConfig::bounded(servers, max_term, requests, crashes)
    }
}

/// `config` with one lease read (leases on).
fn lease(config: ModelConfig) -> ModelConfig {
    ModelConfig {
        read: ReadMode::Lease,
        replication: Replication {
            leases: true,
            ..config.replication
        },
        ..reads(config)
    }
}

/// `config` with one ReadIndex read.
fn reads(config: ModelConfig) -> ModelConfig {
    ModelConfig {
        reads: 1,
        read: ReadMode::ReadIndex,
        ..config
    }
}

/// The catalogue entry of `bug`.
pub fn seeded(bug: Bug) -> SeededBug {
    use Expected::*;
    let mut note = "";
    let (expected, config) = match bug {
        Bug::Figure8 => {
            note = "caught when the term-3 leader commits its term-1 entry: the term-2 leader \
                    lacks it and could still be elected; the report then carries the \
                    counterexample on, with a fourth term, to that election, where Leader \
                    Completeness breaks (20 steps)";
            (
                Violates(safety::COMMITTED_ENTRIES_SURVIVE_ELECTIONS),
                config(3, 3, 1, 0, bug),
            )
        }
        Bug::StaleVoteResponse => (Violates(safety::ELECTION_SAFETY), config(3, 2, 1, 0, bug)),
        Bug::VoteNotPersisted => (Violates(safety::ELECTION_SAFETY), config(3, 1, 1, 1, bug)),
        Bug::StepDownForgetsVote => (Violates(safety::ONE_VOTE_PER_TERM), config(3, 1, 1, 0, bug)),
        Bug::TruncateOnMatch => (
            Violates(safety::LEADER_COMPLETENESS),
            config(3, 2, 1, 0, bug),
        ),
        Bug::EntriesTakeLeaderTerm => (Violates(safety::LOG_MATCHING), config(3, 2, 1, 0, bug)),
        Bug::AckOwnLastIndex => {
            note = "caught when the term-2 leader commits its entry on a false acknowledgement \
                    from a server holding a term-1 entry there, which could still be elected; \
                    the report then carries the counterexample on, with a third term, to that \
                    election, where Leader Completeness breaks (13 steps)";
            (
                Violates(safety::COMMITTED_ENTRIES_SURVIVE_ELECTIONS),
                config(3, 2, 1, 0, bug),
            )
        }
        Bug::MatchIndexRegress => (
            Violates(safety::MATCH_INDEX_MONOTONIC),
            config(2, 1, 1, 0, bug),
        ),
        Bug::CommitWithoutMin => {
            note = "needs empty heartbeats (--empty-heartbeats): by default every AppendEntries \
                    carries the leader's log from next_index on, so leader_commit <= \
                    prev_log_index + entries.len() and the min changes nothing";
            (
                Violates(safety::STATE_MACHINE_SAFETY),
                ModelConfig {
                    replication: Replication {
                        empty_heartbeats: true,
                        ..Replication::default()
                    },
                    ..config(3, 2, 1, 0, bug)
                },
            )
        }
        Bug::EvenQuorum => (Violates(safety::ELECTION_SAFETY), config(4, 1, 1, 0, bug)),
        Bug::NoUpToDateCheck => (
            Violates(safety::LEADER_COMPLETENESS),
            config(3, 2, 1, 0, bug),
        ),
        Bug::NoTermAdoptionOnVoteRequest => {
            note = "no safety property breaks: servers stay in older terms and refuse the \
                    higher-term candidate, so no later leader is ever elected";
            (Unreachable(names::LEADER_REPLACED), config(2, 2, 1, 0, bug))
        }
        Bug::LeaderIgnoresHigherTerm => {
            note = "no safety property breaks: the stale leader still steps down on the next \
                    RequestVote or AppendEntries of the higher term, only later (liveness)";
            (
                Unreachable(names::LEADER_STEPS_DOWN_ON_RESPONSE),
                config(2, 2, 1, 0, bug),
            )
        }
        Bug::CountsUnsyncedEntry => {
            note = "needs the leader's write in parallel (--parallel-write): caught when the \
                    leader commits its entry on one follower's acknowledgement while its own \
                    copy is not durable, then crashes and loses it, so a server without the \
                    entry could be elected; the report then carries the counterexample on, \
                    with a second term, to that election, which the recovered leader votes \
                    for, where Leader Completeness breaks (11 steps)";
            (
                Violates(safety::COMMITTED_ENTRIES_SURVIVE_ELECTIONS),
                ModelConfig {
                    replication: Replication {
                        parallel_write: true,
                        ..Replication::default()
                    },
                    ..config(3, 1, 1, 1, bug)
                },
            )
        }
        Bug::ReadIndexBeforeTermCommit => {
            note = "needs ReadIndex reads (--reads 1 --read read-index): the term-2 leader \
                    holds the write the term-1 leader committed and answered, but has not \
                    committed it yet, and answers a read issued after the write returned \
                    with the count before it";
            (
                Violates(names::LINEARIZABILITY),
                reads(config(2, 2, 1, 0, bug)),
            )
        }
        Bug::LocalLeaderRead => {
            note = "needs ReadIndex reads (--reads 1 --read read-index): the term-1 leader, \
                    deposed without knowing it, answers a read issued after the term-2 \
                    leader's write returned with the count before it";
            (
                Violates(names::LINEARIZABILITY),
                reads(config(3, 2, 1, 0, bug)),
            )
        }
        Bug::LeaseBeyondDrift => {
            note = "needs lease reads (--reads 1 --read lease) and two writes: n1 answers the \
                    term-1 leader n0's lease round and n0 commits the first write; n1's quiet \
                    timer runs out before n0's lease and it votes for n2, which commits the \
                    second write in term 2; n0, in its lease, answers a read sent after both \
                    writes returned with the count after the first (21 steps). The \
                    breadth-first search needs more states than a test can afford at that \
                    depth: tests/model_check/seeded_bugs.rs follows the path step by step, \
                    and shows it blocked without the bug";
            (
                Violates(names::LINEARIZABILITY),
                lease(config(3, 2, 2, 0, bug)),
            )
        }
        Bug::FollowerReadBeforeApply => {
            note = "needs follower reads at the leader's read index (--reads 1 --read \
                    follower-read-index) and three servers: the leader commits and answers \
                    the write with one follower; the read goes to the other, which holds \
                    the entry but has not learnt it is committed, gets the read index from \
                    the leader (whose round the first follower confirms) and answers before \
                    applying it, with the count before the write";
            (
                Violates(names::LINEARIZABILITY),
                ModelConfig {
                    read: ReadMode::FollowerReadIndex,
                    ..reads(config(3, 1, 1, 0, bug))
                },
            )
        }
    };
    SeededBug {
        bug,
        expected,
        config,
        note,
    }
}

/// Every entry, in catalogue order.
pub fn catalogue() -> Vec<SeededBug> {
    Bug::ALL.into_iter().map(seeded).collect()
}
