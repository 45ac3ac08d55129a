//! # raft-node: the reference runtime (skeleton)
//!
//! The runtime that carries out `raft-spec`'s outputs over TCP, durable
//! storage and real timers is built by its own issue. For now this crate only
//! fixes the dependency rule: it depends on `raft-spec`, never on
//! `raft-model` or Stateright, so the implementation ships without the
//! checker.

pub use raft_spec as spec;
