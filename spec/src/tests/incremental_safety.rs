//! [`IncrementalSafety`] equals the full predicates ([`History::record_step`]
//! then [`violated_properties`]) after every step of random histories: mostly
//! Raft-like (followers copy a prefix of another log and extend it, leaders
//! append in their term, servers apply and crash), with random rewrites,
//! elections and rollbacks of `last_applied` mixed in so that every property
//! fails in some of them.

use crate::safety::{violated_properties, Before, History, IncrementalSafety, ServerView};
use crate::{CounterCommand, Log, LogIndex, NodeId, Role, Term};
use proptest::prelude::*;
use std::collections::BTreeMap;

use super::command;

#[derive(Clone, Debug)]
struct Sim {
    id: NodeId,
    crashed: bool,
    role: Role,
    term: Term,
    log: Log<CounterCommand>,
    last_applied: LogIndex,
    voted_for: Option<NodeId>,
    match_index: BTreeMap<NodeId, LogIndex>,
}

impl Sim {
    fn view(&self) -> ServerView<'_, CounterCommand> {
        ServerView {
            id: self.id,
            crashed: self.crashed,
            role: self.role,
            current_term: self.term,
            log: &self.log,
            commit_index: self.last_applied,
            last_applied: self.last_applied,
            voted_for: self.voted_for,
            match_index: (!self.crashed && self.role == Role::Leader).then_some(&self.match_index),
        }
    }
}

/// One random step: (server, kind, a, b, c).
type Op = (usize, u8, u8, u8, u8);

fn apply(sims: &mut [Sim], op: Op, counter: &mut u64) -> Option<LogIndex> {
    let (s, kind, a, b, c) = op;
    let s = s % sims.len();
    let before = sims[s].log.clone();
    let other = sims[(s + 1 + a as usize) % sims.len()].clone();
    let me = &mut sims[s];
    match kind % 10 {
        // Replicate: take a prefix of another log (at most 2 entries past
        // the common part), as AppendEntries does.
        0..=2 => {
            let n = other.log.len().min(me.log.len() + 1 + (b as usize % 2));
            me.log = Log::from_entries(other.log.prefix(LogIndex(n as u64)).to_vec());
            me.term = me.term.max(other.term);
        }
        // Leader append in its term.
        3 | 4 => {
            if me.role == Role::Leader {
                *counter += 1;
                me.log.push(command(me.term.0, 1, *counter));
            }
        }
        // Become leader of a new or the same term (elections, possibly bad).
        5 => {
            me.term = Term(me.term.0 + u64::from(b % 2));
            me.role = Role::Leader;
            me.crashed = false;
            me.voted_for = Some(me.id);
            me.match_index = BTreeMap::new();
        }
        // Apply further, or (rarely) roll back.
        6 | 7 => {
            if !me.crashed {
                let up = LogIndex((me.last_applied.0 + u64::from(b % 3)).min(me.log.len() as u64));
                me.last_applied = if c == 0 { LogIndex(0) } else { up };
            }
        }
        // Crash or recover.
        8 => {
            me.crashed = !me.crashed;
            me.role = Role::Follower;
            me.last_applied = LogIndex(0);
        }
        // A random rewrite of the tail.
        _ => {
            let keep = (b as usize).min(me.log.len());
            me.log.truncate_from(LogIndex(keep as u64 + 1));
            for i in 0..(c % 3) {
                *counter += 1;
                me.log
                    .push(command((u64::from(a) + u64::from(i)) % 3 + 1, 2, *counter));
            }
            if c % 4 == 0 {
                me.role = Role::Follower;
            }
        }
    }
    let after = &me.log;
    if *after == before {
        return None;
    }
    let common = before
        .entries()
        .iter()
        .zip(after.entries())
        .take_while(|(x, y)| x == y)
        .count();
    // Any `from` at or below the first change is allowed.
    let from = (common as u64 + 1).saturating_sub(u64::from(a % 2)).max(1);
    Some(LogIndex(from))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn incremental_equals_full_predicates(
        n in 2usize..5,
        ops in proptest::collection::vec((0usize..5, any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()), 1..80),
    ) {
        let mut sims: Vec<Sim> = (0..n)
            .map(|i| Sim {
                id: NodeId(i as u64 + 1),
                crashed: false,
                role: Role::Follower,
                term: Term(1),
                log: Log::new(),
                last_applied: LogIndex(0),
                voted_for: None,
                match_index: BTreeMap::new(),
            })
            .collect();
        let mut full = History::default();
        let views: Vec<_> = sims.iter().map(Sim::view).collect();
        let mut inc = IncrementalSafety::new(&views, History::default());
        let mut counter = 0;
        for op in ops {
            let s = op.0 % n;
            let before = sims[s].clone();
            let from = apply(&mut sims, op, &mut counter);
            let after = &sims[s];
            let rewritten = !after.log.extends(&before.log);
            full.record_step(&before.view(), &after.view());
            let views: Vec<_> = sims.iter().map(Sim::view).collect();
            let expected = violated_properties(&views, &full);
            let bv = before.view();
            let got = inc.step(&Before::from(&bv), &views, before.id, from, rewritten);
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(inc.history(), &full);
        }
    }
}

proptest! {
    /// `LogWrite::rewrites` (what the replayer answers `record_step_with`
    /// with) agrees with comparing the whole logs: the log after the write
    /// does not extend the log before.
    #[test]
    fn log_write_rewrites_iff_the_log_after_does_not_extend_the_log_before(
        terms in proptest::collection::vec(1u64..4, 0..6),
        from in 1u64..8,
        new_terms in proptest::collection::vec(1u64..4, 0..6),
    ) {
        let entries = |ts: &[u64]| -> Vec<crate::Entry<CounterCommand>> {
            ts.iter().map(|&t| command(t, 1, t)).collect()
        };
        let before = Log::from_entries(entries(&terms));
        let from = LogIndex(from.min(before.len() as u64 + 1));
        let write = crate::LogWrite { from, entries: entries(&new_terms) };
        let mut after = before.clone();
        after.truncate_from(write.from);
        for e in &write.entries {
            after.push(e.clone());
        }
        prop_assert_eq!(write.rewrites(&before), !after.extends(&before));
    }
}
