//! The replicated state machine that committed entries are applied to.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::hash::Hash;

/// A deterministic state machine driven by the committed log (Raft §5.3).
///
/// The server owns one instance in its volatile state: after a restart it
/// starts from [`Default`] and re-applies the log as entries become known
/// committed again (Raft §5.3; no snapshots).
pub trait StateMachine:
    Clone + Debug + Default + Eq + Hash + Ord + Serialize + DeserializeOwned
{
    /// The command a client submits and a log entry carries.
    type Command: Clone + Debug + Eq + Hash + Ord + Serialize + DeserializeOwned;
    /// What applying a command returns to the client.
    type Output: Clone + Debug + Eq + Hash + Ord + Serialize + DeserializeOwned;

    /// Applies one committed command.
    fn apply(&mut self, command: &Self::Command) -> Self::Output;

    /// What `command` returns if it only reads: its output, computed without
    /// changing the state machine; `None` for a command that writes. A
    /// server answers a read this way when it serves it without the log
    /// ([`crate::ReadMode`]); a command for which this is `None` always
    /// goes through the log.
    fn read(&self, command: &Self::Command) -> Option<Self::Output> {
        let _ = command;
        None
    }

    /// A bound on the bytes `command` takes in a message, which
    /// [`Replication::max_append_bytes`](crate::Replication::max_append_bytes)
    /// counts.
    fn command_bytes(command: &Self::Command) -> u64;
}
