//! A fetch-and-increment counter: the smallest state machine whose replies
//! reveal the order in which commands were applied. The model checker uses it,
//! so that a linearizability check on the replies is meaningful.

use crate::state_machine::StateMachine;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// A command on the counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CounterCommand {
    /// Adds one; returns the value before.
    Increment,
    /// Returns the value; changes nothing (a read, which a leader may serve
    /// without the log: [`crate::ReadMode`]).
    Read,
}

/// An increment hashes to nothing, as the counter's one command always
/// did, so that the hashes of messages and states without reads (and with
/// them the model checker's order of exploration) do not depend on reads
/// existing.
impl Hash for CounterCommand {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if *self == CounterCommand::Read {
            state.write_u8(1);
        }
    }
}

/// A counter; applying [`CounterCommand::Increment`] returns the value before
/// the increment.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Counter(pub u64);

impl StateMachine for Counter {
    type Command = CounterCommand;
    type Output = u64;

    fn apply(&mut self, command: &CounterCommand) -> u64 {
        let before = self.0;
        if *command == CounterCommand::Increment {
            self.0 += 1;
        }
        before
    }

    fn read(&self, command: &CounterCommand) -> Option<u64> {
        (*command == CounterCommand::Read).then_some(self.0)
    }

    fn command_bytes(_command: &CounterCommand) -> u64 {
        0
    }
}
