//! The five safety properties of Figure 3 as plain functions over a cluster
//! snapshot plus the ghost history they need.
//!
//! The model checker and the trace replayer both call these functions: the
//! checker on every explored state, the replayer after every replayed step.
//!
//! A snapshot is a slice of [`ServerView`]s. A crashed server is still part of
//! the snapshot: its `log` is what it persisted, but it plays no role, so a
//! crashed leader is not a leader (its volatile state is gone).
//!
//! [`History`] is the ghost (auxiliary) state: it is updated by
//! [`History::record_step`] after every step a server takes, and remembers
//! what the snapshot alone forgets: who led which term, which entry was
//! applied at which index, and whether a leader ever rewrote its own log.

use crate::server::{PersistentState, Role, Server};
use crate::state_machine::StateMachine;
use crate::types::{ClientId, Entry, Log, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// "Election Safety: at most one leader can be elected in a given term." (Raft §5.2)
pub const ELECTION_SAFETY: &str = "Election Safety";
/// "Leader Append-Only: a leader never overwrites or deletes entries in its
/// log; it only appends new entries." (Raft §5.3)
pub const LEADER_APPEND_ONLY: &str = "Leader Append-Only";
/// "Log Matching: if two logs contain an entry with the same index and term,
/// then the logs are identical in all entries up through the given index." (Raft §5.3)
pub const LOG_MATCHING: &str = "Log Matching";
/// "Leader Completeness: if a log entry is committed in a given term, then that
/// entry will be present in the logs of the leaders for all higher-numbered
/// terms." (Raft §5.4)
pub const LEADER_COMPLETENESS: &str = "Leader Completeness";
/// "State Machine Safety: if a server has applied a log entry at a given
/// index to its state machine, no other server will ever apply a different log
/// entry for the same index." (Raft §5.4.3)
pub const STATE_MACHINE_SAFETY: &str = "State Machine Safety";

/// "Each server will vote for at most one candidate in a given term" (Raft
/// §5.2): once `voted_for` is set in a term it does not change in that term,
/// across restarts too (Fig. 2: `voted_for` is persistent). Not one of
/// Figure 3's five, but the rule Election Safety rests on; a server that
/// forgets its vote breaks it even where Election Safety survives.
pub const ONE_VOTE_PER_TERM: &str = "One Vote Per Term";
/// A leader's `match_index` for a follower never decreases within its term
/// (Fig. 2: "index of highest log entry known to be replicated"; what is
/// known to be replicated in a term stays replicated in it). Not one of
/// Figure 3's five: a regression only delays commitment.
pub const MATCH_INDEX_MONOTONIC: &str = "Match Index Monotonic";

/// No server that lacks a committed entry could win an election: its log
/// is not at least as up-to-date (Raft §5.4.1) as the logs of a majority of
/// the servers, itself included (crashed servers by their persisted log).
/// This is the step of the paper's proof of Leader Completeness (§5.4.3):
/// a committed entry is on a majority, and every log at least as up-to-date
/// as one of theirs holds it. Not one of Figure 3's five, but it looks
/// ahead: when it fails, one more election, in a term above every current
/// one, makes that server leader without the entry and breaks Leader
/// Completeness. So the checker sees a bad commit when it happens, not
/// only once the terms for the next election are within the bounds.
pub const COMMITTED_ENTRIES_SURVIVE_ELECTIONS: &str = "Committed Entries Survive Elections";

/// A write acknowledged before it was applied ([`crate::ClientReply::Accepted`])
/// by the leader of term `T` is in the log of every leader of a term above
/// `T` elected after the client received the acknowledgement: the
/// guarantee a client relies on when it takes an early answer as
/// "written", in the form Leader Completeness gives it to committed
/// entries. Not one of Figure 3's five; it is what separates the
/// acknowledgement levels (a write answered once the leader alone stores it
/// can be missing from the next leader's log). An applied write's answer
/// carries its result, and its survival is State Machine Safety's.
pub const ACKNOWLEDGED_WRITES_SURVIVE: &str = "Acknowledged Writes Survive";

/// Whether `log` holds a command entry of each `(client, request number)`
/// in `writes`: [`ACKNOWLEDGED_WRITES_SURVIVE`] for one newly elected
/// leader.
pub fn log_holds_writes<C>(
    log: &Log<C>,
    mut writes: impl Iterator<Item = (ClientId, u64)>,
) -> bool {
    writes.all(|(client, request_no)| {
        log.entries().iter().any(|e| {
            matches!(&e.payload, crate::Payload::Command { client_id, request_no: r, .. }
                if *client_id == client && *r == request_no)
        })
    })
}

/// The three auxiliary invariants, checked beside the five.
pub const AUXILIARY_PROPERTY_NAMES: [&str; 3] = [
    ONE_VOTE_PER_TERM,
    MATCH_INDEX_MONOTONIC,
    COMMITTED_ENTRIES_SURVIVE_ELECTIONS,
];

/// The five property names, in the paper's order.
pub const PROPERTY_NAMES: [&str; 5] = [
    ELECTION_SAFETY,
    LEADER_APPEND_ONLY,
    LOG_MATCHING,
    LEADER_COMPLETENESS,
    STATE_MACHINE_SAFETY,
];

/// What the properties need to know about one server.
#[derive(Clone, Copy, Debug)]
pub struct ServerView<'a, C> {
    /// The server.
    pub id: NodeId,
    /// Whether it is down. A crashed server has no role and no volatile state.
    pub crashed: bool,
    /// Its role (ignored when crashed).
    pub role: Role,
    /// Its current term.
    pub current_term: Term,
    /// Its log (when crashed: the persisted log).
    pub log: &'a Log<C>,
    /// Its commit index (ignored when crashed).
    pub commit_index: LogIndex,
    /// Its last applied index (ignored when crashed).
    pub last_applied: LogIndex,
    /// The candidate it voted for in `current_term` (when crashed: the
    /// persisted vote).
    pub voted_for: Option<NodeId>,
    /// Its `match_index` while it is a live leader, `None` otherwise.
    pub match_index: Option<&'a BTreeMap<NodeId, LogIndex>>,
}

impl<'a, C> ServerView<'a, C> {
    /// The view of a live server.
    pub fn live<S: StateMachine<Command = C>>(server: &'a Server<S>) -> Self {
        let leader = server.role() == Role::Leader;
        ServerView {
            id: server.id,
            crashed: false,
            role: server.role(),
            current_term: server.current_term(),
            log: server.log(),
            commit_index: server.volatile.commit_index,
            last_applied: server.volatile.last_applied,
            voted_for: server.persistent.voted_for,
            match_index: leader.then_some(&server.volatile.match_index),
        }
    }

    /// The view of a crashed server: only what it persisted.
    pub fn crashed(id: NodeId, persistent: &'a PersistentState<C>) -> Self {
        ServerView {
            id,
            crashed: true,
            role: Role::Follower,
            current_term: persistent.current_term,
            log: &persistent.log,
            commit_index: LogIndex(0),
            last_applied: LogIndex(0),
            voted_for: persistent.voted_for,
            match_index: None,
        }
    }
}

impl<C> ServerView<'_, C> {
    /// Whether this server is a live leader.
    pub fn is_leader(&self) -> bool {
        !self.crashed && self.role == Role::Leader
    }
}

/// A step-level breach that the snapshot after the step can no longer show.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Violation {
    /// A leader's log after a step does not extend its log before the step.
    LeaderAppendOnly {
        /// The leader.
        leader: NodeId,
        /// Its term.
        term: Term,
    },
    /// A server applied an entry that differs from one applied before at the
    /// same index (by itself or another server).
    StateMachineSafety {
        /// The server that applied the differing entry.
        server: NodeId,
        /// The index.
        index: LogIndex,
    },
    /// A server's vote changed (or was forgotten) within a term.
    VoteChanged {
        /// The server.
        server: NodeId,
        /// The term.
        term: Term,
    },
    /// A leader's `match_index` for a follower went down within its term.
    MatchIndexDecreased {
        /// The leader.
        leader: NodeId,
        /// The follower.
        follower: NodeId,
        /// The leader's term.
        term: Term,
    },
}

/// Ghost history for the properties (TLA+'s auxiliary variables).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct History<C> {
    /// Every (term, server) that became leader.
    pub leaders: BTreeSet<(Term, NodeId)>,
    /// Entry `k - 1` is the first entry ever applied at index `k`, with the
    /// term of the server that applied it then (the term it was committed in).
    pub applied: Vec<(Entry<C>, Term)>,
    /// Step-level violations seen so far.
    pub violations: BTreeSet<Violation>,
    /// Whether some server ever replaced a conflicting entry of its log
    /// (Raft §5.3): an example the checker must reach.
    pub conflict_overwritten: bool,
}

impl<C> Default for History<C> {
    fn default() -> Self {
        History {
            leaders: BTreeSet::new(),
            applied: Vec::new(),
            violations: BTreeSet::new(),
            conflict_overwritten: false,
        }
    }
}

/// What [`History::record_step_with`] needs of a server's state before its
/// step, apart from its log.
#[derive(Clone, Copy, Debug)]
pub struct Before<'a> {
    /// Whether it was down.
    pub crashed: bool,
    /// Its role (ignored when crashed).
    pub role: Role,
    /// Its current term.
    pub current_term: Term,
    /// Its vote in `current_term`.
    pub voted_for: Option<NodeId>,
    /// Its last applied index (ignored when crashed).
    pub last_applied: LogIndex,
    /// Its `match_index` while it was a live leader, `None` otherwise.
    pub match_index: Option<&'a BTreeMap<NodeId, LogIndex>>,
}

impl<'a, C> From<&ServerView<'a, C>> for Before<'a> {
    fn from(v: &ServerView<'a, C>) -> Self {
        Before {
            crashed: v.crashed,
            role: v.role,
            current_term: v.current_term,
            voted_for: v.voted_for,
            last_applied: v.last_applied,
            match_index: v.match_index,
        }
    }
}

impl Before<'_> {
    /// Whether the server was a live leader.
    pub fn is_leader(&self) -> bool {
        !self.crashed && self.role == Role::Leader
    }
}

impl<C: Clone + PartialEq> History<C> {
    /// Records one step of one server, from its state before to its state
    /// after. Call it after every step (message, timeout, client request,
    /// restart).
    pub fn record_step(&mut self, before: &ServerView<'_, C>, after: &ServerView<'_, C>) {
        self.record_step_with(&Before::from(before), after, || {
            !after.log.extends(before.log)
        });
    }

    /// [`History::record_step`] without the log before the step:
    /// `log_rewritten` answers whether the step deleted or changed an entry
    /// the server held before it (`!after.log.extends(before.log)`). It is
    /// called at most once, and only when the answer matters, so a caller
    /// that knows what the step wrote (its [`crate::LogWrite`]) answers in
    /// time proportional to the write. With that answer, the result is the
    /// one `record_step` gives.
    pub fn record_step_with(
        &mut self,
        before: &Before<'_>,
        after: &ServerView<'_, C>,
        log_rewritten: impl FnOnce() -> bool,
    ) {
        let mut log_rewritten = Some(log_rewritten);
        let mut rewritten = None;
        let mut rewritten = move || -> bool {
            *rewritten.get_or_insert_with(|| log_rewritten.take().is_some_and(|f| f()))
        };
        let id = after.id;
        if after.is_leader() && !(before.is_leader() && before.current_term == after.current_term) {
            self.leaders.insert((after.current_term, id));
        }
        if before.is_leader()
            && after.is_leader()
            && before.current_term == after.current_term
            && rewritten()
        {
            self.violations.insert(Violation::LeaderAppendOnly {
                leader: id,
                term: after.current_term,
            });
        }
        if before.current_term == after.current_term
            && before.voted_for.is_some()
            && after.voted_for != before.voted_for
        {
            self.violations.insert(Violation::VoteChanged {
                server: id,
                term: after.current_term,
            });
        }
        if let (Some(b), Some(a)) = (before.match_index, after.match_index) {
            if before.current_term == after.current_term {
                for (&follower, &was) in b {
                    if a.get(&follower).is_none_or(|&now| now < was) {
                        self.violations.insert(Violation::MatchIndexDecreased {
                            leader: id,
                            follower,
                            term: after.current_term,
                        });
                    }
                }
            }
        }
        if !self.conflict_overwritten {
            // An entry of the common part differs, or the log shrank: the
            // log after does not extend the log before.
            self.conflict_overwritten = rewritten();
        }
        if after.crashed {
            return;
        }
        let from = if before.crashed {
            LogIndex(0)
        } else {
            before.last_applied
        };
        let mut index = from.next();
        while index <= after.last_applied {
            if let Some(entry) = after.log.get(index) {
                let k = (index.0 - 1) as usize;
                match self.applied.get(k) {
                    Some((first, _)) if first != entry => {
                        self.violations
                            .insert(Violation::StateMachineSafety { server: id, index });
                    }
                    Some(_) => {}
                    None if k == self.applied.len() => {
                        self.applied.push((entry.clone(), after.current_term));
                    }
                    // Applied past a gap: impossible, as servers apply in order
                    // and index k - 1 was applied by this server before.
                    None => {}
                }
            }
            index = index.next();
        }
    }

    /// Rewrites node and client ids (used for symmetry reduction).
    #[must_use]
    pub fn map_ids(
        &self,
        nodes: &dyn Fn(NodeId) -> NodeId,
        clients: &dyn Fn(ClientId) -> ClientId,
    ) -> Self {
        History {
            leaders: self.leaders.iter().map(|&(t, n)| (t, nodes(n))).collect(),
            applied: self
                .applied
                .iter()
                .map(|(e, t)| (e.map_client_ids(clients), *t))
                .collect(),
            violations: self
                .violations
                .iter()
                .map(|v| match v {
                    Violation::LeaderAppendOnly { leader, term } => Violation::LeaderAppendOnly {
                        leader: nodes(*leader),
                        term: *term,
                    },
                    Violation::StateMachineSafety { server, index } => {
                        Violation::StateMachineSafety {
                            server: nodes(*server),
                            index: *index,
                        }
                    }
                    Violation::VoteChanged { server, term } => Violation::VoteChanged {
                        server: nodes(*server),
                        term: *term,
                    },
                    Violation::MatchIndexDecreased {
                        leader,
                        follower,
                        term,
                    } => Violation::MatchIndexDecreased {
                        leader: nodes(*leader),
                        follower: nodes(*follower),
                        term: *term,
                    },
                })
                .collect(),
            conflict_overwritten: self.conflict_overwritten,
        }
    }
}

/// Election Safety: no term has two leaders, counting every leader ever
/// elected (a leader that crashed still led its term).
pub fn election_safety<C>(history: &History<C>) -> bool {
    history
        .leaders
        .iter()
        .zip(history.leaders.iter().skip(1))
        .all(|(a, b)| a.0 != b.0)
}

/// Leader Append-Only: no leader's step ever rewrote its own log.
pub fn leader_append_only<C>(history: &History<C>) -> bool {
    !history
        .violations
        .iter()
        .any(|v| matches!(v, Violation::LeaderAppendOnly { .. }))
}

/// Log Matching: for every pair of servers (crashed ones by their persisted
/// log), if both hold an entry with the same index and term, their logs are
/// identical up to that index.
pub fn log_matching<C: PartialEq>(servers: &[ServerView<'_, C>]) -> bool {
    for (i, a) in servers.iter().enumerate() {
        for b in &servers[i + 1..] {
            let common = a.log.len().min(b.log.len());
            let (ea, eb) = (a.log.entries(), b.log.entries());
            // The highest index where the terms agree decides.
            if let Some(k) = (0..common).rev().find(|&k| ea[k].term == eb[k].term) {
                if ea[..=k] != eb[..=k] {
                    return false;
                }
            }
        }
    }
    true
}

/// Leader Completeness: every live leader of term `t` holds every entry that
/// was committed (first applied) in a term lower than `t`.
pub fn leader_completeness<C: PartialEq>(
    servers: &[ServerView<'_, C>],
    history: &History<C>,
) -> bool {
    servers.iter().filter(|s| s.is_leader()).all(|leader| {
        history
            .applied
            .iter()
            .enumerate()
            .filter(|(_, (_, committed_in))| *committed_in < leader.current_term)
            .all(|(k, (entry, _))| leader.log.get(LogIndex(k as u64 + 1)) == Some(entry))
    })
}

/// State Machine Safety: no server ever applied an entry that differs from
/// what another server applied at the same index, and what every live server
/// has applied now agrees with the history.
pub fn state_machine_safety<C: PartialEq>(
    servers: &[ServerView<'_, C>],
    history: &History<C>,
) -> bool {
    let no_step_violation = !history
        .violations
        .iter()
        .any(|v| matches!(v, Violation::StateMachineSafety { .. }));
    no_step_violation
        && servers.iter().filter(|s| !s.crashed).all(|s| {
            s.log
                .prefix(s.last_applied)
                .iter()
                .zip(history.applied.iter())
                .all(|(mine, (first, _))| mine == first)
        })
}

/// One Vote Per Term: no server's vote changed within a term.
pub fn one_vote_per_term<C>(history: &History<C>) -> bool {
    !history
        .violations
        .iter()
        .any(|v| matches!(v, Violation::VoteChanged { .. }))
}

/// Match Index Monotonic: no leader's `match_index` went down within its term.
pub fn match_index_monotonic<C>(history: &History<C>) -> bool {
    !history
        .violations
        .iter()
        .any(|v| matches!(v, Violation::MatchIndexDecreased { .. }))
}

/// Committed Entries Survive Elections: every server whose log lacks an
/// entry committed so far (the history's applied entries) is less
/// up-to-date than the logs of a majority.
pub fn committed_entries_survive_elections<C: PartialEq>(
    servers: &[ServerView<'_, C>],
    history: &History<C>,
) -> bool {
    servers.iter().all(|s| {
        let holds_all = history
            .applied
            .iter()
            .enumerate()
            .all(|(k, (entry, _))| s.log.get(LogIndex(k as u64 + 1)) == Some(entry));
        holds_all || !could_be_elected(s, servers)
    })
}

/// Whether `s`'s log is at least as up-to-date as the logs of a majority of
/// `servers` (itself included), so that they could all vote for it.
fn could_be_elected<C>(s: &ServerView<'_, C>, servers: &[ServerView<'_, C>]) -> bool {
    let key = s.log.up_to_date();
    let voters = servers.iter().filter(|v| key >= v.log.up_to_date()).count();
    2 * voters > servers.len()
}

/// Evaluates the five properties, then the three auxiliary invariants; returns
/// the names of those that fail, in that order.
pub fn violated_properties<C: PartialEq>(
    servers: &[ServerView<'_, C>],
    history: &History<C>,
) -> Vec<&'static str> {
    let mut failed = Vec::new();
    if !election_safety(history) {
        failed.push(ELECTION_SAFETY);
    }
    if !leader_append_only(history) {
        failed.push(LEADER_APPEND_ONLY);
    }
    if !log_matching(servers) {
        failed.push(LOG_MATCHING);
    }
    if !leader_completeness(servers, history) {
        failed.push(LEADER_COMPLETENESS);
    }
    if !state_machine_safety(servers, history) {
        failed.push(STATE_MACHINE_SAFETY);
    }
    if !one_vote_per_term(history) {
        failed.push(ONE_VOTE_PER_TERM);
    }
    if !match_index_monotonic(history) {
        failed.push(MATCH_INDEX_MONOTONIC);
    }
    if !committed_entries_survive_elections(servers, history) {
        failed.push(COMMITTED_ENTRIES_SURVIVE_ELECTIONS);
    }
    failed
}

/// The properties of [`violated_properties`], evaluated step by step in time
/// proportional to what each step changed instead of to the logs.
///
/// The trace replayer's monitor: it owns the ghost [`History`] and, after
/// each step of one server, gives exactly what [`violated_properties`] gives
/// on the snapshot after the step (the model checker keeps calling the full
/// predicates). The caller says which server stepped, from which index its
/// log changed (a [`crate::LogWrite`]'s `from`; `None` if it did not change)
/// and whether the step rewrote an entry it held (see
/// [`History::record_step_with`]). The entries of that log below `from`
/// must be the ones it held before the step, and no other server's log may
/// have changed: a server's step changes only its own state.
///
/// How each property is kept:
/// - Election Safety: a new `(term, leader)` is compared with the leaders of
///   the same term only.
/// - Leader Append-Only, One Vote Per Term, Match Index Monotonic: the
///   history's step-level violations, as the full predicates read them.
/// - Committed Entries Survive Elections: a server holds every committed
///   entry exactly when its `agree` (below) covers the applied entries; the
///   up-to-date comparison is between pairs of servers.
/// - Log Matching: only pairs with the stepped server can change, and only
///   at indices from `from` on. Since the pair matched before the step
///   (checked at every step, so by induction), the logs agree below `from`
///   exactly when their terms agree at `from - 1`; the rest of the check
///   compares the entries the step wrote. After a violation it falls back
///   to the full predicate.
/// - Leader Completeness and State Machine Safety: for each server, the
///   length of the common prefix of its log and the history's applied
///   entries (`agree`), kept current as logs and the history change (each
///   entry compared is one the step wrote or one newly applied, amortised);
///   and a min-tree over the terms the applied entries were committed in,
///   to find the committed entries past a leader's `agree` that it must
///   still hold (none in a correct run).
#[derive(Clone, Debug)]
pub struct IncrementalSafety<C> {
    history: History<C>,
    /// Per server: the length of the common prefix of its log and the
    /// applied entries of the history.
    agree: BTreeMap<NodeId, usize>,
    /// The terms the applied entries were committed in.
    committed_in: MinTree,
    /// Whether Log Matching or Election Safety failed at some step (from
    /// then on the full predicate is evaluated).
    log_matching_failed: bool,
    election_safety_failed: bool,
}

impl<C: Clone + PartialEq> IncrementalSafety<C> {
    /// Starts from the snapshot `servers` and the ghost `history` (whatever
    /// they hold: the full predicates are evaluated once here).
    pub fn new(servers: &[ServerView<'_, C>], history: History<C>) -> Self {
        let mut committed_in = MinTree::default();
        for (_, t) in &history.applied {
            committed_in.push(t.0);
        }
        let mut s = IncrementalSafety {
            agree: servers.iter().map(|v| (v.id, 0)).collect(),
            committed_in,
            log_matching_failed: !log_matching(servers),
            election_safety_failed: !election_safety(&history),
            history,
        };
        for v in servers {
            s.extend_agree(v);
        }
        s
    }

    /// The ghost history.
    pub fn history(&self) -> &History<C> {
        &self.history
    }

    /// Records a step of server `after.id` (as [`History::record_step_with`])
    /// and returns the properties violated in the snapshot `servers` after
    /// it, as [`violated_properties`] would. `servers` holds every server,
    /// the stepped one included, as it is after the step.
    pub fn step(
        &mut self,
        before: &Before<'_>,
        servers: &[ServerView<'_, C>],
        stepped: NodeId,
        log_from: Option<LogIndex>,
        log_rewritten: bool,
    ) -> Vec<&'static str> {
        let Some(after) = servers.iter().find(|v| v.id == stepped) else {
            return violated_properties(servers, &self.history);
        };
        let leaders_before = self.history.leaders.len();
        let applied_before = self.history.applied.len();
        self.history
            .record_step_with(before, after, || log_rewritten);
        if self.history.leaders.len() != leaders_before {
            let t = after.current_term;
            let in_term = self
                .history
                .leaders
                .range((t, NodeId(0))..=(t, NodeId(u64::MAX)))
                .count();
            self.election_safety_failed |= in_term > 1;
        }
        for (_, t) in &self.history.applied[applied_before..] {
            self.committed_in.push(t.0);
        }
        // Keep `agree` current: the stepped server's log changed from
        // `log_from`; every server may extend over newly applied entries.
        if let Some(from) = log_from {
            let keep = usize::try_from(from.0.saturating_sub(1)).unwrap_or(usize::MAX);
            let a = self.agree.entry(stepped).or_insert(0);
            *a = (*a).min(keep);
        }
        for v in servers {
            if v.id == stepped || self.history.applied.len() != applied_before {
                self.extend_agree(v);
            }
        }

        let mut failed = Vec::new();
        if self.election_safety_failed {
            failed.push(ELECTION_SAFETY);
        }
        if !leader_append_only(&self.history) {
            failed.push(LEADER_APPEND_ONLY);
        }
        let matching = if self.log_matching_failed {
            log_matching(servers)
        } else {
            match log_from {
                Some(from) => servers
                    .iter()
                    .filter(|b| b.id != stepped)
                    .all(|b| pair_matches_from(after.log, b.log, from)),
                None => true,
            }
        };
        if !matching {
            self.log_matching_failed = true;
            failed.push(LOG_MATCHING);
        }
        if !servers
            .iter()
            .filter(|s| s.is_leader())
            .all(|l| self.leader_complete(l))
        {
            failed.push(LEADER_COMPLETENESS);
        }
        if !self.state_machine_safe(servers) {
            failed.push(STATE_MACHINE_SAFETY);
        }
        if !one_vote_per_term(&self.history) {
            failed.push(ONE_VOTE_PER_TERM);
        }
        if !match_index_monotonic(&self.history) {
            failed.push(MATCH_INDEX_MONOTONIC);
        }
        let applied = self.history.applied.len();
        if !servers.iter().all(|s| {
            self.agree.get(&s.id).copied().unwrap_or(0) >= applied || !could_be_elected(s, servers)
        }) {
            failed.push(COMMITTED_ENTRIES_SURVIVE_ELECTIONS);
        }
        failed
    }

    /// Extends `agree` of `v` over the entries its log shares with the
    /// applied entries.
    fn extend_agree(&mut self, v: &ServerView<'_, C>) {
        let a = self.agree.entry(v.id).or_insert(0);
        let entries = v.log.entries();
        let applied = &self.history.applied;
        let end = entries.len().min(applied.len());
        *a = (*a).min(end);
        while *a < end && entries[*a] == applied[*a].0 {
            *a += 1;
        }
    }

    /// [`leader_completeness`] for one live leader: every entry committed
    /// in a term below the leader's is in its log. Below `agree` they are;
    /// past it, the min-tree finds those committed earlier than its term.
    fn leader_complete(&self, leader: &ServerView<'_, C>) -> bool {
        let mut from = self.agree.get(&leader.id).copied().unwrap_or(0);
        while let Some(k) = self.committed_in.first_below(from, leader.current_term.0) {
            let Some((entry, _)) = self.history.applied.get(k) else {
                return true;
            };
            if leader.log.get(LogIndex(k as u64 + 1)) != Some(entry) {
                return false;
            }
            from = k + 1;
        }
        true
    }

    /// [`state_machine_safety`]: what each live server applied is a prefix
    /// of the applied entries, i.e. within its `agree`.
    fn state_machine_safe(&self, servers: &[ServerView<'_, C>]) -> bool {
        let no_step_violation = !self
            .history
            .violations
            .iter()
            .any(|v| matches!(v, Violation::StateMachineSafety { .. }));
        no_step_violation
            && servers.iter().filter(|s| !s.crashed).all(|s| {
                let applied = usize::try_from(s.last_applied.0).unwrap_or(usize::MAX);
                let compared = applied.min(s.log.len()).min(self.history.applied.len());
                self.agree.get(&s.id).copied().unwrap_or(0) >= compared
            })
    }
}

/// Log Matching for the pair `(a, b)` where `a` changed from index `from`
/// on, given that the pair matched before the change (see
/// [`IncrementalSafety`]). Compares entries `from..` of `a` only.
fn pair_matches_from<C: PartialEq>(a: &Log<C>, b: &Log<C>, from: LogIndex) -> bool {
    let start = usize::try_from(from.0.max(1) - 1).unwrap_or(usize::MAX);
    let common = a.len().min(b.len());
    if common <= start {
        return true;
    }
    let (ea, eb) = (a.entries(), b.entries());
    let Some(k) = (start..common).rev().find(|&k| ea[k].term == eb[k].term) else {
        return true;
    };
    // The entries below `start` are unchanged and matched before: they are
    // identical exactly when the terms at `start - 1` agree.
    let below = start == 0 || ea[start - 1].term == eb[start - 1].term;
    below && ea[start..=k] == eb[start..=k]
}

/// A min segment tree over a sequence that only grows at its end.
#[derive(Clone, Debug, Default)]
struct MinTree {
    /// Leaves at `cap..cap + len`; node `i` is the minimum of `2i`, `2i + 1`.
    tree: Vec<u64>,
    cap: usize,
    len: usize,
}

impl MinTree {
    fn push(&mut self, value: u64) {
        if self.len == self.cap {
            let cap = (self.cap * 2).max(16);
            let mut tree = vec![u64::MAX; 2 * cap];
            tree[cap..cap + self.len].copy_from_slice(&self.tree[self.cap..self.cap + self.len]);
            for i in (1..cap).rev() {
                tree[i] = tree[2 * i].min(tree[2 * i + 1]);
            }
            self.tree = tree;
            self.cap = cap;
        }
        let mut i = self.cap + self.len;
        self.tree[i] = value;
        self.len += 1;
        while i > 1 {
            i /= 2;
            self.tree[i] = self.tree[2 * i].min(self.tree[2 * i + 1]);
        }
    }

    /// The first position at or after `from` whose value is below `bound`.
    fn first_below(&self, from: usize, bound: u64) -> Option<usize> {
        if from >= self.len {
            return None;
        }
        self.find(1, 0, self.cap, from, bound)
    }

    fn find(&self, node: usize, lo: usize, hi: usize, from: usize, bound: u64) -> Option<usize> {
        if hi <= from || self.tree[node] >= bound {
            return None;
        }
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = (lo + hi) / 2;
        self.find(2 * node, lo, mid, from, bound)
            .or_else(|| self.find(2 * node + 1, mid, hi, from, bound))
    }
}
