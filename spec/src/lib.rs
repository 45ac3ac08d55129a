//! # raft-spec: Raft as pure transition functions
//!
//! This crate is the executable specification of Raft leader election and log
//! replication (Ongaro & Ousterhout, *In Search of an Understandable Consensus
//! Algorithm*, Figure 2), and the only place where Raft's rules are written.
//! The Stateright model (`raft-model`) and the runtime (`raft-node`) are
//! adapters around it. It does no I/O, reads no clock and draws no random
//! numbers. What the model checker forgets, and why that is sound, is
//! [`reduction`] (and the repository's docs/reductions.md).
//!
//! ```text
//!   Input ──────────────► Server::step ──────────────► Vec<Output>
//!   Message{from, msg}      (persistent state:          Persist (first; durable before
//!   ClientRequest            current_term, voted_for,     any Send/ClientReply leaves)
//!   ElectionTimeout          log;                       Send{to, msg}
//!   HeartbeatTimeout         volatile state: role,      SetTimer / CancelTimer
//!                            commit_index, ...)         Applied{index}
//!   Server::restart(persistent) ─► follower + SetTimer  ClientReply{Ok | NotLeader{hint}}
//! ```
//!
//! The five safety properties of Figure 3 live in [`safety`], as functions
//! over a snapshot of the cluster plus a ghost [`safety::History`].
//!
//! ## Example: a one-server cluster elects itself and commits a command
//!
//! ```
//! use raft_spec::{Ack, ClientId, ClientReply, Counter, CounterCommand, Input, NodeId, Output, Role, Server};
//!
//! let (mut server, outputs) = Server::<Counter>::new(NodeId(1), vec![]);
//! assert_eq!(outputs, vec![Output::SetTimer(raft_spec::Timer::Election)]);
//!
//! server.step(Input::ElectionTimeout);
//! assert_eq!(server.role(), Role::Leader);
//!
//! let outputs = server.step(Input::ClientRequest {
//!     client_id: ClientId(7),
//!     request_no: 1,
//!     command: CounterCommand::Increment,
//!     ack: Ack::Applied,
//! });
//! // The entry is persisted first, then applied, then the client is answered.
//! assert!(matches!(outputs.first(), Some(Output::Persist(_))));
//! assert!(outputs.contains(&Output::ClientReply {
//!     client_id: ClientId(7),
//!     request_no: 1,
//!     reply: ClientReply::Ok(0),
//! }));
//! ```

pub mod bugs;
mod counter;
mod kv;
mod message;
pub mod safety;
mod server;
mod state_machine;
pub mod trace;
mod types;

pub use counter::{Counter, CounterCommand};
pub use kv::{Kv, KvCommand, KvOutput, Value};
pub use message::{
    AppendEntries, AppendEntriesResponse, Message, ReadIndexRequest, ReadIndexResponse,
    RequestVote, RequestVoteResponse,
};
pub use server::{flow, lease, reduction};
pub use server::{
    Ack, ClientReply, ForwardedRead, HardState, Input, Lease, LogWrite, Output, Outputs,
    PendingRead, Persist, PersistentState, Progress, ReadAnswer, ReadMode, Replication, Role,
    Server, Session, Timer, VolatileState, QUIET_AT_BOOT,
};
pub use state_machine::StateMachine;
pub use types::{ClientId, Entry, Log, LogIndex, NodeId, Payload, Term};

#[cfg(test)]
mod tests;
