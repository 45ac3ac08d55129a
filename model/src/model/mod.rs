//! The Stateright model: Raft servers stepped by `raft-spec`, clients, a
//! network, and the ghost history the Figure 3 properties need.
//!
//! [`RaftModel`] implements [`stateright::Model`] over a state type of its
//! own, designed for checking ([`state`]), with one next-state function
//! ([`RaftModel::step`], in [`step`]) that the checker, the Explorer and the
//! counterexample reports share. Each reduction lives in a file of its own
//! with the argument for its soundness: forgetting dead messages ([`dead`])
//! and symmetry over server names ([`symmetry`]). The properties are
//! registered in [`properties`].
//!
//! The ghost history records each server step in
//! [`raft_spec::safety::History`] (who led which term, what was applied
//! where, step-level violations); it also counts crashes over the whole
//! execution (the bound is on crashes in total) and treats a crashed server
//! by its persisted state: a crashed leader is not a leader.

pub mod dead;
pub mod intern;
mod memo;
pub mod properties;
pub mod state;
pub mod step;
pub mod symmetry;

pub use properties::names;
pub use state::{
    ClientState, ClientStatus, Cmd, Envelope, Ghost, Msg, MsgRef, Network, ServerRef, ServerSlot,
    Sm, State,
};
pub use step::{Action, Effect};

use crate::config::ModelConfig;
use raft_spec::safety::ServerView;
use raft_spec::Server;
use stateright::{Model, Path, Property};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The Raft model for one bounded configuration.
pub struct RaftModel {
    /// The configuration.
    pub config: ModelConfig,
    /// Whether dead messages are forgotten (on by default; see
    /// [`RaftModel::without_garbage_collection`]).
    pub collect_garbage: bool,
    /// Whether every state is replaced by its representative under server
    /// renaming (see [`RaftModel::with_canonical_states`]).
    pub canonical: bool,
    /// Once set, no state has a successor (see [`RaftModel::with_stop`]).
    stop: Option<Arc<AtomicBool>>,
    /// Tells this model's configuration apart in the per-thread memos of
    /// [`dead`] (whose verdicts depend on the bounds).
    memo_tag: u64,
}

impl RaftModel {
    /// Builds the model for a configuration (which must be valid).
    pub fn new(config: ModelConfig) -> Self {
        RaftModel {
            config,
            // Dead-message collection follows the rules the servers run,
            // seeded bug included (`ignores_forever_with_bug`).
            collect_garbage: true,
            canonical: false,
            stop: None,
            memo_tag: intern::content_hash(&config) | 1,
        }
    }

    /// The same model, keeping dead messages in the network (for checking
    /// that the reduction changes no verdict and no reachable server state).
    pub fn without_garbage_collection(mut self) -> Self {
        self.collect_garbage = false;
        self
    }

    /// The same model with every state replaced by its representative
    /// under server renaming (servers sorted by state, ids rewritten; clients
    /// stay): symmetry reduction for the breadth-first checker (see
    /// [`symmetry`]).
    pub fn with_canonical_states(mut self) -> Self {
        self.canonical = true;
        self
    }

    /// The same model, whose states have no successors once `stop` is set.
    ///
    /// This is how a search is cut short from outside (the checker's time
    /// limit): Stateright 0.31's own timeout ends a search exactly as its
    /// completion does, so a search stopped by it could not be told from a
    /// finished one. With the flag, whoever sets it knows the search was
    /// stopped, and the checker's threads still end promptly: they only
    /// empty their queues.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The Raft server at index `i` of a state (while it is down, the state
    /// it will recover in).
    pub fn server(state: &State, i: usize) -> Option<&Server<Sm>> {
        state.server(i)
    }

    /// The snapshot the safety properties look at: every server, crashed
    /// ones by their persisted state.
    pub fn views<'a>(&self, state: &'a State) -> Vec<ServerView<'a, Cmd>> {
        state.views()
    }
}

impl Model for RaftModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.canonical_if_asked(self.initial_state())]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if self
            .stop
            .as_ref()
            .is_some_and(|stop| stop.load(Ordering::Relaxed))
        {
            return;
        }
        self.enabled_actions(state, actions);
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        self.step(last, action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::properties(self)
    }

    /// Terms are bounded by `max_term`, and a leader's rounds of ReadIndex
    /// reads in a term by the number of reads: a round serves every read
    /// waiting, so each read needs at most one round per term; more come
    /// only from a read delivered again after it was answered. With leases
    /// the election's AppendEntries are a round of their own.
    fn within_boundary(&self, state: &State) -> bool {
        let rounds = self.config.reads as u64 + u64::from(self.config.replication.leases);
        state.servers.iter().all(|s| {
            let server = s.server();
            server.current_term().0 <= self.config.max_term && server.volatile.read_round <= rounds
        })
    }

    fn format_action(&self, action: &Action) -> String {
        crate::render::action(action)
    }

    fn format_step(&self, last_state: &State, action: Action) -> Option<String> {
        Some(crate::render::step(self, last_state, &action))
    }

    fn as_svg(&self, path: Path<State, Action>) -> Option<String> {
        Some(crate::render::sequence_diagram(self, &path))
    }
}
