//! Seeded bugs: Raft bugs found in the field, re-introduced on demand.
//!
//! A model checker that never fails proves nothing. Each [`Bug`] names one
//! wrong behaviour that real Raft implementations shipped; `raft-model` can
//! run the checker with one of them switched on and must find a
//! counterexample to the property the bug breaks.
//!
//! The catalogue is plain data and always compiled. Switching a bug *on* is
//! only possible through `Server::restart_with_bug`, which
//! exists only with the crate feature `seeded-bugs`: `raft-model` enables it,
//! `raft-node` never does, so no runtime configuration can reach a bug. With
//! no bug selected every transition takes exactly the correct path: each
//! injection point is an `if` on the selected bug that the correct server
//! never enters.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One wrong behaviour. The variant docs say what the code does instead of
/// the rule; [`Bug::seen_in`] says where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Bug {
    /// The leader commits an entry of an earlier term by counting replicas,
    /// without the `log[N].term == currentTerm` check (Raft §5.4.2, Figure 8).
    Figure8,
    /// A candidate counts a granted vote whose term is older than its
    /// current term.
    StaleVoteResponse,
    /// `voted_for` is not kept across a restart.
    VoteNotPersisted,
    /// A candidate that steps down on an AppendEntries of its own term clears
    /// `voted_for`, so it may vote again in that term.
    StepDownForgetsVote,
    /// A follower truncates its log after `prev_log_index` on every
    /// AppendEntries, even when the entries already match.
    TruncateOnMatch,
    /// A follower stores received entries with the leader's current term
    /// instead of each entry's own term.
    EntriesTakeLeaderTerm,
    /// A follower acknowledges its own last log index instead of
    /// `prev_log_index + entries.len()`.
    AckOwnLastIndex,
    /// The leader sets `match_index` (and `next_index`) from a response
    /// without taking the maximum, so a stale response moves it backwards.
    MatchIndexRegress,
    /// A follower sets `commit_index = leader_commit` without the minimum
    /// with the index of its last new entry.
    CommitWithoutMin,
    /// A majority is computed as `count >= N / 2` instead of `count > N / 2`.
    EvenQuorum,
    /// Votes are granted without checking that the candidate's log is at
    /// least as up-to-date as the voter's (Raft §5.4.1).
    NoUpToDateCheck,
    /// A server receiving a RequestVote of a higher term neither adopts the
    /// term nor steps down.
    NoTermAdoptionOnVoteRequest,
    /// A leader does not step down on a response carrying a higher term.
    LeaderIgnoresHigherTerm,
    /// A leader that writes its own log in parallel with replicating it
    /// (Raft thesis §10.2.1) counts itself toward a majority before its
    /// write is durable.
    CountsUnsyncedEntry,
    /// A leader takes its commit index as a ReadIndex read's read index
    /// before it has committed an entry of its own term (Raft thesis §6.4,
    /// step 1), so the index can miss writes a previous leader committed.
    ReadIndexBeforeTermCommit,
    /// A leader answers a ReadIndex read at once from its own state
    /// machine, as if it surely still led: no round of AppendEntries
    /// confirms it, and it does not wait for a commit of its term. A
    /// deposed leader that does not know it answers stale data.
    LocalLeaderRead,
    /// Clocks drift past the bound a lease assumes (Raft thesis §6.4.1): a
    /// follower's quiet and election timers run out before the lease of a
    /// leader it answered. Not a fault of a server's code but of its clock:
    /// the model checker drops the order of those timers
    /// ([`crate::server::lease`]).
    LeaseBeyondDrift,
    /// A follower serving a read at its leader's read index
    /// ([`crate::ReadMode::FollowerReadIndex`]) answers as soon as the
    /// index comes, without waiting until it has applied that index (Raft
    /// thesis §6.4, step 4), so it can answer from a state machine behind
    /// the read index.
    FollowerReadBeforeApply,
}

impl Bug {
    /// Every bug, in catalogue order.
    pub const ALL: [Bug; 18] = [
        Bug::Figure8,
        Bug::StaleVoteResponse,
        Bug::VoteNotPersisted,
        Bug::StepDownForgetsVote,
        Bug::TruncateOnMatch,
        Bug::EntriesTakeLeaderTerm,
        Bug::AckOwnLastIndex,
        Bug::MatchIndexRegress,
        Bug::CommitWithoutMin,
        Bug::EvenQuorum,
        Bug::NoUpToDateCheck,
        Bug::NoTermAdoptionOnVoteRequest,
        Bug::LeaderIgnoresHigherTerm,
        Bug::CountsUnsyncedEntry,
        Bug::ReadIndexBeforeTermCommit,
        Bug::LocalLeaderRead,
        Bug::LeaseBeyondDrift,
        Bug::FollowerReadBeforeApply,
    ];

    /// The bug's name: lowercase words joined by dashes.
    pub fn name(self) -> &'static str {
        match self {
            Bug::Figure8 => "figure-8",
            Bug::StaleVoteResponse => "stale-vote-response",
            Bug::VoteNotPersisted => "vote-not-persisted",
            Bug::StepDownForgetsVote => "step-down-forgets-vote",
            Bug::TruncateOnMatch => "truncate-on-match",
            Bug::EntriesTakeLeaderTerm => "entries-take-leader-term",
            Bug::AckOwnLastIndex => "ack-own-last-index",
            Bug::MatchIndexRegress => "match-index-regress",
            Bug::CommitWithoutMin => "commit-without-min",
            Bug::EvenQuorum => "even-quorum",
            Bug::NoUpToDateCheck => "no-up-to-date-check",
            Bug::NoTermAdoptionOnVoteRequest => "no-term-adoption-on-vote-request",
            Bug::LeaderIgnoresHigherTerm => "leader-ignores-higher-term",
            Bug::CountsUnsyncedEntry => "counts-unsynced-entry",
            Bug::ReadIndexBeforeTermCommit => "read-index-before-term-commit",
            Bug::LocalLeaderRead => "local-leader-read",
            Bug::LeaseBeyondDrift => "lease-beyond-drift",
            Bug::FollowerReadBeforeApply => "follower-read-before-apply",
        }
    }

    /// One line on the wrong behaviour.
    pub fn description(self) -> &'static str {
        match self {
            Bug::Figure8 => {
                "a leader commits an entry of an earlier term by counting replicas (no current-term check)"
            }
            Bug::StaleVoteResponse => "a candidate counts a granted vote from an older term",
            Bug::VoteNotPersisted => "voted_for is lost across a restart",
            Bug::StepDownForgetsVote => {
                "a candidate stepping down on AppendEntries of its own term clears voted_for"
            }
            Bug::TruncateOnMatch => {
                "a follower truncates after prev_log_index on every AppendEntries, even on matching entries"
            }
            Bug::EntriesTakeLeaderTerm => {
                "a follower stores received entries with the leader's term, not the entries' own"
            }
            Bug::AckOwnLastIndex => {
                "a follower acknowledges its own last log index, not prev_log_index + entries"
            }
            Bug::MatchIndexRegress => {
                "the leader takes match_index from a stale response without max, so it moves back"
            }
            Bug::CommitWithoutMin => {
                "a follower sets commit_index = leader_commit, without min(last new entry)"
            }
            Bug::EvenQuorum => "a majority is counted as >= N/2 instead of > N/2",
            Bug::NoUpToDateCheck => "votes are granted without the up-to-date log check",
            Bug::NoTermAdoptionOnVoteRequest => {
                "a RequestVote of a higher term neither updates the term nor makes the server step down"
            }
            Bug::LeaderIgnoresHigherTerm => {
                "a leader does not step down on a response with a higher term"
            }
            Bug::CountsUnsyncedEntry => {
                "a leader writing its log in parallel counts its own entry before the write is durable"
            }
            Bug::ReadIndexBeforeTermCommit => {
                "a leader serves a ReadIndex read before it has committed an entry of its own term"
            }
            Bug::LocalLeaderRead => {
                "a leader serves a ReadIndex read from its own state at once, without confirming it still leads"
            }
            Bug::LeaseBeyondDrift => {
                "clocks drift past the lease's bound: a follower times out before the lease it granted ends"
            }
            Bug::FollowerReadBeforeApply => {
                "a follower answers a read at its leader's read index before it has applied that index"
            }
        }
    }

    /// Where the bug was seen: project and issue, or the paper.
    pub fn seen_in(self) -> &'static str {
        match self {
            Bug::Figure8 => "Raft §5.4.2 Figure 8; LogCabin, PySyncObj",
            Bug::StaleVoteResponse => "Xraft, akka-raft",
            Bug::VoteNotPersisted => {
                "Raft Fig. 2 (persistent state); common in toy implementations"
            }
            Bug::StepDownForgetsVote => "akka-raft",
            Bug::TruncateOnMatch => "RaftOS",
            Bug::EntriesTakeLeaderTerm => "the AppendEntries pseudo-code of the Japanese explainer \"分散合意アルゴリズム Raft を理解する\" (Understanding Raft)",
            Bug::AckOwnLastIndex => "CCF PR 6001",
            Bug::MatchIndexRegress => "RaftOS, PySyncObj",
            Bug::CommitWithoutMin => "Raft Fig. 2 (AppendEntries rule 5)",
            Bug::EvenQuorum => "off-by-one quorum (Raft §5.2)",
            Bug::NoUpToDateCheck => "Raft §5.4.1",
            Bug::NoTermAdoptionOnVoteRequest => "the RequestVote pseudo-code of the Japanese explainer \"分散合意アルゴリズム Raft を理解する\" (Understanding Raft)",
            Bug::LeaderIgnoresHigherTerm => "Raft Fig. 2 (Rules for Servers)",
            Bug::CountsUnsyncedEntry => "dragonboat PR 224, d-engine issues 444 and 446 (Raft thesis §10.2.1)",
            Bug::ReadIndexBeforeTermCommit => "etcd issue 7331 (Raft thesis §6.4)",
            Bug::LocalLeaderRead => {
                "etcd 0.4 and Consul 0.5 stale reads from a deposed leader (Jepsen); Raft thesis §6.4"
            }
            Bug::LeaseBeyondDrift => {
                "tikv issue 964, hashicorp/raft issue 108 (lease reads on a partitioned leader with a slow clock); Raft thesis §6.4.1"
            }
            Bug::FollowerReadBeforeApply => {
                "Raft thesis §6.4 (step 4: wait until the read index is applied); etcd-io/raft leaves that wait to the application (ReadState)"
            }
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownBug(pub String);

impl fmt::Display for UnknownBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown bug '{}' (run `raft-model bugs` for the list)",
            self.0
        )
    }
}

impl std::error::Error for UnknownBug {}

impl FromStr for Bug {
    type Err = UnknownBug;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBug(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_lowercase_dashed() {
        for bug in Bug::ALL {
            assert_eq!(bug.name().parse::<Bug>(), Ok(bug));
            assert!(bug
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
        assert_eq!(
            "no-such-bug".parse::<Bug>(),
            Err(UnknownBug("no-such-bug".into()))
        );
    }
}
