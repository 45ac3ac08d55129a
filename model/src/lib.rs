//! # raft-model: Raft checked with Stateright
//!
//! [`RaftModel`] is a Stateright model whose servers are stepped by
//! `raft-spec`'s transition functions, over a state type designed for
//! checking (interned servers and messages, one next-state function; see
//! [`model`]). It keeps the ghost history that the Figure 3 properties need,
//! bounds the total number of crashes, and bounds the state space by term
//! (never by depth). Trace replay against the same rules is [`replay`].
//!
//! The repository's docs/ explain it at length: docs/model.md (the bounds,
//! the report, the modelling decisions), docs/reductions.md (what the model
//! forgets and why that is sound), docs/seeded-bugs.md, docs/explorer.md,
//! docs/replay.md and docs/benchmarks.md.
//!
//! ```
//! use raft_model::{ModelConfig, NetworkKind, RaftModel};
//! use stateright::{Checker, Model};
//!
//! // Two servers, one term, one client request: small enough for a doctest.
//! let config = ModelConfig {
//!     servers: 2,
//!     max_term: 1,
//!     requests: 1,
//!     crashes: 0,
//!     network: NetworkKind::UnorderedNonDuplicating,
//!     lossy: false,
//!     bug: None,
//!     replication: raft_spec::Replication::default(),
//!     ack: raft_spec::Ack::Applied,
//!     reads: 0,
//!     read: raft_spec::ReadMode::Log,
//! };
//! let checker = RaftModel::new(config).checker().spawn_bfs().join();
//! assert!(checker.is_done());
//! checker.assert_properties();
//! ```

pub mod bugs;
pub mod check;
pub mod config;
pub mod model;
pub mod render;
pub mod replay;

pub use config::{ConfigError, ModelConfig, NetworkKind};
pub use model::RaftModel;

/// The allocator of every program that links the model (the CLI and the
/// test suites): the checker allocates and frees a few dozen small objects
/// per generated state, and mimalloc does that faster than the system
/// allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
