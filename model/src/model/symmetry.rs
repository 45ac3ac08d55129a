//! Symmetry reduction over server identities.
//!
//! All servers run the same code and every property is blind to server
//! names, so two states equal up to a renaming of servers have the same
//! futures up to that renaming. A state's representative
//! ([`Representative`]) sorts the servers by what they hold (persistent
//! state, volatile state, then id) and renames every id accordingly; clients
//! are never renamed.
//!
//! Depth-first, Stateright's checker keeps each state's representative in
//! its visited set. Breadth-first, which Stateright 0.31 does not reduce,
//! the model replaces every state it generates by its representative
//! ([`RaftModel::with_canonical_states`]); renaming servers maps a path to a
//! path of the same length, so breadth-first counterexamples stay shortest,
//! and [`RaftModel::concrete_path`] turns a path between representatives back
//! into a path of the plain model, which is what the Explorer replays.

use super::intern::{Interned, Ref};
use super::memo::{Memo, MEMO_CAPACITY};
use super::state::{Cmd, Msg, ServerSlot, Sm, State};
use super::{Action, RaftModel};
use raft_spec::safety::History;
use raft_spec::{NodeId, PersistentState, Server};
use smallvec::SmallVec;
use stateright::{Model, Path, Representative};
use std::cell::RefCell;
use std::cmp::Ordering;

/// The order servers are sorted in for a representative: by persistent
/// state, then volatile state, then id, so that servers are sorted by what
/// they hold rather than by who they are.
fn by_content(a: &Server<Sm>, b: &Server<Sm>) -> Ordering {
    (&a.persistent, &a.volatile, a.id, &a.peers).cmp(&(&b.persistent, &b.volatile, b.id, &b.peers))
}

/// A permutation of at most 8 servers as a memo key (3 bits a server).
fn perm_key(perm: &[usize]) -> u32 {
    perm.iter()
        .enumerate()
        .fold(0, |key, (i, &to)| key | ((to as u32 & 7) << (3 * i)))
}

/// Renamed values by value and permutation ([`perm_key`]).
type Renamed<T> = RefCell<Memo<(u32, u32), Ref<T>>>;

thread_local! {
    static SERVERS: Renamed<Server<Sm>> = RefCell::new(Memo::new(MEMO_CAPACITY));
    static STORED: Renamed<PersistentState<Cmd>> = RefCell::new(Memo::new(MEMO_CAPACITY));
    static MESSAGES: Renamed<Msg> = RefCell::new(Memo::new(MEMO_CAPACITY));
    static HISTORIES: Renamed<History<Cmd>> = RefCell::new(Memo::new(MEMO_CAPACITY));
}

/// `value` renamed by `rename`, remembered per thread by value and
/// permutation (renaming is a pure function of both).
fn renamed_with<T: Interned + Clone>(
    memo: &'static std::thread::LocalKey<Renamed<T>>,
    value: Ref<T>,
    perm: u32,
    rename: impl FnOnce(&T) -> T,
) -> Ref<T> {
    memo.with(|memo| {
        memo.borrow_mut().get_or((value.index(), perm), || {
            let mapped = rename(value.get());
            if mapped == *value.get() {
                value
            } else {
                Ref::new(mapped)
            }
        })
    })
}

impl State {
    /// The state with server `i` renamed `perm[i]` (a permutation of the
    /// servers; clients stay).
    pub fn renamed(&self, perm: &[usize]) -> State {
        let n = self.servers.len();
        let key = perm_key(perm);
        let node = |k: NodeId| match perm.get(k.0 as usize) {
            Some(&to) => NodeId(to as u64),
            None => k,
        };
        let actor = |a: u8| match perm.get(usize::from(a)) {
            Some(&to) => to as u8,
            None => a,
        };
        let mut servers: Vec<Option<ServerSlot>> = vec![None; n];
        for (i, slot) in self.servers.iter().enumerate() {
            let stored = slot
                .stored
                .map(|s| renamed_with(&STORED, s, key, |p| p.map_ids(&node, &|c| c)));
            let renamed = ServerSlot {
                server: renamed_with(&SERVERS, slot.server, key, |s| s.map_ids(&node, &|c| c)),
                stored,
                timers: slot.timers,
                crashed: slot.crashed,
            };
            if let Some(place) = perm.get(i).and_then(|&to| servers.get_mut(to)) {
                *place = Some(renamed);
            }
        }
        let mut recovered = 0u8;
        for (i, &to) in perm.iter().enumerate() {
            if self.ghost.recovered & (1 << i) != 0 {
                recovered |= 1 << to;
            }
        }
        let mut ghost = self.ghost;
        ghost.raft = renamed_with(&HISTORIES, self.ghost.raft, key, |h| {
            h.map_ids(&node, &|c| c)
        });
        ghost.recovered = recovered;
        State {
            // A permutation fills every place.
            servers: servers.into_iter().flatten().collect::<SmallVec<_>>(),
            clients: self.clients,
            network: self.network.renamed(&actor, &|m| {
                renamed_with(&MESSAGES, m, key, |msg| msg.renamed(&node))
            }),
            ghost,
        }
    }

    /// The permutation that sorts the servers by state: server `i` goes to
    /// place `perm[i]`.
    fn sorting_permutation(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.servers.len()).collect();
        order.sort_by(|&a, &b| by_content(self.servers[a].server(), self.servers[b].server()));
        let mut perm = vec![0; order.len()];
        for (place, &i) in order.iter().enumerate() {
            perm[i] = place;
        }
        perm
    }
}

impl Representative for State {
    /// The state with its servers sorted by state and every id rewritten; a
    /// state whose servers are already in order is its own representative
    /// and is not rewritten (the successors of a representative often are:
    /// a step changes one server).
    fn representative(&self) -> Self {
        let perm = self.sorting_permutation();
        if perm.iter().enumerate().all(|(i, &to)| i == to) {
            return self.clone();
        }
        self.renamed(&perm)
    }
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..n {
            let mut p = rest.clone();
            p.insert(at, n - 1);
            all.push(p);
        }
    }
    all
}

impl RaftModel {
    /// Whether `x` and `y` are equal up to a renaming of servers.
    pub fn same_up_to_renaming(&self, x: &State, y: &State) -> bool {
        permutations(self.config.servers)
            .into_iter()
            .any(|p| x.renamed(&p) == *y)
    }

    /// The path of this (plain) model that a path of the canonical model
    /// ([`Self::with_canonical_states`]) stands for: the same steps, with the
    /// servers under the names they have from the initial state on. None if
    /// some step has no counterpart (it always has one when the model is
    /// symmetric, which the canonical search assumes).
    pub fn concrete_path(&self, path: &Path<State, Action>) -> Option<Path<State, Action>> {
        let targets = path.clone().into_states();
        let (first, rest) = targets.split_first()?;
        let init = self
            .init_states()
            .into_iter()
            .find(|s| self.same_up_to_renaming(s, first))?;
        let mut current = init.clone();
        let mut steps = Vec::new();
        let mut actions = Vec::new();
        for target in rest {
            actions.clear();
            self.actions(&current, &mut actions);
            let (action, next) = actions.drain(..).find_map(|a| {
                let next = self.next_state(&current, a.clone())?;
                self.same_up_to_renaming(&next, target).then_some((a, next))
            })?;
            steps.push(action);
            current = next;
        }
        Path::from_actions(self, init, steps.iter())
    }

    pub(crate) fn canonical_if_asked(&self, state: State) -> State {
        if self.canonical {
            state.representative()
        } else {
            state
        }
    }
}
