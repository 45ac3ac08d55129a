//! # raft-node: the reference runtime of raft-spec
//!
//! `raft-node` runs `raft-spec`'s transition functions on real sockets,
//! disks and timers. It writes no Raft rule of its own: every decision of the
//! protocol is [`raft_spec::Server::step`]'s; the runtime decides only when
//! inputs happen and carries out the outputs, in order, under the
//! persist-before-send contract (see [`raft_spec::Output`]). The
//! repository's docs/raft-node.md gives the commands, options and storage
//! format; docs/replay.md how its traces are checked against the model.
//!
//! ```text
//!             peers (TCP frames)   clients (TCP frames)   timers
//!                    │                    │                  │
//!                    ▼                    ▼                  ▼
//!  runtime::serve ─► channel of node::Event ─► node::Node::handle(now, batch)
//!                                                 │ Server::step per event
//!                                                 │ Persist → storage (one fsync per batch)
//!                                                 │ then Send → transport, ClientReply → client
//!                                                 ▼
//!                                        trace (NDJSON, raft_spec::trace)
//! ```
//!
//! - [`node`]: the event loop's core, shared by the real runtime and the
//!   deterministic simulation ([`sim`]);
//! - [`storage`]: the write-ahead log with checksummed records;
//! - [`wire`] and [`transport`]: frames, handshake, TCP connections;
//! - [`runtime`]: one node process (`raft-node serve`);
//! - [`client`]: the client that follows redirects and retries exactly once;
//! - [`cluster`] and [`bench`](mod@bench): local clusters of node processes;
//! - [`sim`]: an in-process cluster with simulated network, clock and storage.
//!
//! The state machine is [`raft_spec::Kv`], a replicated key-value map whose
//! reads go through the log (linearizable).
//!
//! ## Example: a simulated three-node cluster elects a leader and commits
//!
//! ```
//! use raft_node::sim::{Sim, SimConfig};
//! use raft_spec::KvCommand;
//!
//! let mut sim = Sim::new(SimConfig { seed: 7, ..SimConfig::default() });
//! sim.run_for_millis(2_000);
//! assert!(sim.leader().is_some());
//! let put = KvCommand::Put { key: "k".into(), value: "v".into() };
//! assert_eq!(sim.call(put, 5_000), Some(None));
//! let get = KvCommand::Get { key: "k".into() };
//! assert_eq!(sim.call(get, 5_000), Some(Some("v".into())));
//! ```

pub mod bench;
pub mod client;
pub mod cluster;
pub mod config;
pub mod jepsen;
pub mod node;
pub mod runtime;
pub mod sim;
pub mod storage;
pub mod transport;
pub mod wire;

pub use raft_spec as spec;
