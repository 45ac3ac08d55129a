//! The properties the checker checks: Figure 3's five, the auxiliary
//! invariants and linearizability (`Always`), and the examples that show the
//! checked space is not vacuous (`Sometimes`). The predicates are raft-spec's
//! ([`raft_spec::safety`]); this file registers them.

use super::state::{ClientStatus, State};
use super::RaftModel;
use raft_spec::safety;
use raft_spec::{LogIndex, ReadMode};
use stateright::Property;
use std::collections::BTreeSet;

/// Property names beyond Figure 3.
pub mod names {
    /// Client replies are linearizable with respect to the counter.
    pub const LINEARIZABILITY: &str = "Linearizability";
    /// Sometimes: a leader is elected.
    pub const LEADER_ELECTED: &str = "a leader is elected";
    /// Sometimes: an entry is committed.
    pub const ENTRY_COMMITTED: &str = "an entry is committed";
    /// Sometimes: a leader of a higher term replaces an earlier one.
    pub const LEADER_REPLACED: &str = "a leader of a higher term replaces an earlier one";
    /// Sometimes: a follower's conflicting entry is overwritten.
    pub const CONFLICT_OVERWRITTEN: &str = "a follower's conflicting entry is overwritten";
    /// Sometimes: a leader learns of a higher term from a response (not a
    /// request) and steps down.
    pub const LEADER_STEPS_DOWN_ON_RESPONSE: &str =
        "a leader steps down on a response with a higher term";
    /// Sometimes: a client gets a reply.
    pub const CLIENT_REPLY: &str = "a client gets a reply";
    /// Sometimes (with a flow-control window of at least 2 and at least 2
    /// requests): a leader has two batches in flight to one follower.
    pub const PIPELINED: &str = "a leader has two batches in flight to one follower";
    /// Sometimes (with the leader's write in parallel, at least 3 servers and
    /// a request): a leader commits an entry before its own copy is
    /// durable, on the followers' copies alone.
    pub const COMMITTED_BEFORE_OWN_SYNC: &str =
        "a leader commits an entry before its own copy is durable";
    /// Sometimes (with an acknowledgement level below `applied` and a
    /// request): a client is told its write is written before it learns
    /// the write's result.
    pub const ACKNOWLEDGED_EARLY: &str =
        "a write is acknowledged before the client learns its result";
    /// Sometimes (with reads and a write): a read returns the count after
    /// a write, in whichever mode reads are served.
    pub const READ_SEES_WRITE: &str = "a read returns a write's effect";
    /// Sometimes (with lease reads): a leader answers a read at once under
    /// its lease, without a round of AppendEntries.
    pub const LEASE_READ: &str = "a leader answers a read at once under its lease";
    /// Sometimes (with CheckQuorum): a leader steps down at its check for
    /// want of a majority.
    pub const LOST_QUORUM: &str = "a leader steps down for want of a majority";
    /// Sometimes (with follower reads at the leader's read index): a
    /// server that does not lead answers a read, at the read index its
    /// leader gave it.
    pub const FOLLOWER_READ_INDEX: &str = "a follower answers a read at its leader's read index";
    /// Sometimes (with crashes): a server that crashed and recovered later
    /// votes or accepts entries.
    pub const CRASHED_SERVER_REJOINS: &str =
        "a crashed server recovers and later votes or accepts entries";
}

fn election_safety(_: &RaftModel, s: &State) -> bool {
    safety::election_safety(&s.ghost.raft)
}
fn leader_append_only(_: &RaftModel, s: &State) -> bool {
    safety::leader_append_only(&s.ghost.raft)
}
fn log_matching(_: &RaftModel, s: &State) -> bool {
    safety::log_matching(&s.views())
}
fn leader_completeness(_: &RaftModel, s: &State) -> bool {
    safety::leader_completeness(&s.views(), &s.ghost.raft)
}
fn state_machine_safety(_: &RaftModel, s: &State) -> bool {
    safety::state_machine_safety(&s.views(), &s.ghost.raft)
}
fn one_vote_per_term(_: &RaftModel, s: &State) -> bool {
    safety::one_vote_per_term(&s.ghost.raft)
}
fn match_index_monotonic(_: &RaftModel, s: &State) -> bool {
    safety::match_index_monotonic(&s.ghost.raft)
}
fn committed_entries_survive_elections(_: &RaftModel, s: &State) -> bool {
    safety::committed_entries_survive_elections(&s.views(), &s.ghost.raft)
}
fn acknowledged_writes_survive(_: &RaftModel, s: &State) -> bool {
    !s.ghost.ack_lost
}
fn acknowledged_early(_: &RaftModel, s: &State) -> bool {
    s.clients
        .iter()
        .any(|c| matches!(c.status, ClientStatus::Accepted { .. }))
}
fn read_sees_write(model: &RaftModel, s: &State) -> bool {
    s.clients.iter().any(|c| {
        model.is_reader(c.index - model.config.servers)
            && matches!(c.status, ClientStatus::Done(v) if v > 0)
    })
}
fn linearizability(_: &RaftModel, s: &State) -> bool {
    s.ghost.clients.serialized_history().is_some()
}
fn leader_elected(_: &RaftModel, s: &State) -> bool {
    !s.ghost.raft.leaders.is_empty()
}
fn entry_committed(_: &RaftModel, s: &State) -> bool {
    s.views().iter().any(|v| v.commit_index > LogIndex(0))
}
fn leader_replaced(_: &RaftModel, s: &State) -> bool {
    let terms: BTreeSet<_> = s.ghost.raft.leaders.iter().map(|(t, _)| *t).collect();
    terms.len() >= 2
}
fn conflict_overwritten(_: &RaftModel, s: &State) -> bool {
    s.ghost.raft.conflict_overwritten
}
fn leader_stepped_down_on_response(_: &RaftModel, s: &State) -> bool {
    s.ghost.stepped_down_on_response
}
fn client_reply(_: &RaftModel, s: &State) -> bool {
    s.clients
        .iter()
        .any(|c| matches!(c.status, ClientStatus::Done(_)))
}
fn pipelined(model: &RaftModel, s: &State) -> bool {
    (0..model.config.servers).any(|i| {
        s.server(i).is_some_and(|server| {
            server.volatile.progress.values().any(
                |p| matches!(p, raft_spec::Progress::Replicate { inflight } if inflight.len() >= 2),
            )
        })
    })
}
fn committed_before_own_sync(model: &RaftModel, s: &State) -> bool {
    (0..model.config.servers).any(|i| {
        s.server(i).is_some_and(|server| {
            server
                .volatile
                .durable_index
                .is_some_and(|durable| server.volatile.commit_index > durable)
        })
    })
}
fn lease_read(_: &RaftModel, s: &State) -> bool {
    s.ghost.lease_read
}
fn follower_read_index(_: &RaftModel, s: &State) -> bool {
    s.ghost.follower_read
}
fn lost_quorum(_: &RaftModel, s: &State) -> bool {
    s.ghost.lost_quorum
}
fn crashed_server_rejoins(_: &RaftModel, s: &State) -> bool {
    s.ghost.rejoined
}

/// The properties of a configuration: every `Always` property, and the
/// examples the configuration can show.
pub(crate) fn properties(model: &RaftModel) -> Vec<Property<RaftModel>> {
    let mut props = vec![
        Property::always(safety::ELECTION_SAFETY, election_safety),
        Property::always(safety::LEADER_APPEND_ONLY, leader_append_only),
        Property::always(safety::LOG_MATCHING, log_matching),
        Property::always(safety::LEADER_COMPLETENESS, leader_completeness),
        Property::always(safety::STATE_MACHINE_SAFETY, state_machine_safety),
        Property::always(safety::ONE_VOTE_PER_TERM, one_vote_per_term),
        Property::always(safety::MATCH_INDEX_MONOTONIC, match_index_monotonic),
        Property::always(
            safety::COMMITTED_ENTRIES_SURVIVE_ELECTIONS,
            committed_entries_survive_elections,
        ),
        Property::always(names::LINEARIZABILITY, linearizability),
        Property::always(
            safety::ACKNOWLEDGED_WRITES_SURVIVE,
            acknowledged_writes_survive,
        ),
        Property::sometimes(names::LEADER_ELECTED, leader_elected),
        // Registered even without client requests: then no entry can exist,
        // and the missing example tells the user the check is vacuous.
        Property::sometimes(names::ENTRY_COMMITTED, entry_committed),
    ];
    let cfg = &model.config;
    if cfg.max_term >= 2 && (cfg.servers >= 2 || cfg.crashes > 0) {
        props.push(Property::sometimes(names::LEADER_REPLACED, leader_replaced));
    }
    if cfg.max_term >= 2 && cfg.servers >= 2 {
        props.push(Property::sometimes(
            names::LEADER_STEPS_DOWN_ON_RESPONSE,
            leader_stepped_down_on_response,
        ));
    }
    if cfg.max_term >= 2 && cfg.servers >= 3 {
        props.push(Property::sometimes(
            names::CONFLICT_OVERWRITTEN,
            conflict_overwritten,
        ));
    }
    if cfg.requests > 0 {
        props.push(Property::sometimes(names::CLIENT_REPLY, client_reply));
    }
    if cfg.replication.window.is_some_and(|w| w.get() >= 2) && cfg.requests >= 2 && cfg.servers >= 2
    {
        props.push(Property::sometimes(names::PIPELINED, pipelined));
    }
    if cfg.replication.parallel_write && cfg.requests >= 1 && cfg.servers >= 3 {
        props.push(Property::sometimes(
            names::COMMITTED_BEFORE_OWN_SYNC,
            committed_before_own_sync,
        ));
    }
    // Levels 5 and 6 answer after the apply, with the result.
    if !cfg.ack.is_applied() && !cfg.ack.counts_applied() && cfg.requests >= 1 {
        props.push(Property::sometimes(
            names::ACKNOWLEDGED_EARLY,
            acknowledged_early,
        ));
    }
    if cfg.reads > 0 && cfg.requests > 0 {
        props.push(Property::sometimes(names::READ_SEES_WRITE, read_sees_write));
    }
    if cfg.reads > 0 && cfg.read == ReadMode::Lease && cfg.replication.leases {
        props.push(Property::sometimes(names::LEASE_READ, lease_read));
    }
    if cfg.replication.check_quorum && cfg.servers >= 2 {
        props.push(Property::sometimes(names::LOST_QUORUM, lost_quorum));
    }
    if cfg.reads > 0 && cfg.read == ReadMode::FollowerReadIndex && cfg.servers >= 2 {
        props.push(Property::sometimes(
            names::FOLLOWER_READ_INDEX,
            follower_read_index,
        ));
    }
    if cfg.crashes > 0 && cfg.servers >= 2 {
        props.push(Property::sometimes(
            names::CRASHED_SERVER_REJOINS,
            crashed_server_rejoins,
        ));
    }
    props
}
