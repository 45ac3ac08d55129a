//! A fetch-and-increment counter: the smallest state machine whose replies
//! reveal the order in which commands were applied. The model checker uses it,
//! so that a linearizability check on the replies is meaningful.

use crate::state_machine::StateMachine;
use serde::{Deserialize, Serialize};

/// The counter's only command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Increment;

/// A counter; applying [`Increment`] returns the value before the increment.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Counter(pub u64);

impl StateMachine for Counter {
    type Command = Increment;
    type Output = u64;

    fn apply(&mut self, _command: &Increment) -> u64 {
        let before = self.0;
        self.0 += 1;
        before
    }

    fn command_bytes(_command: &Increment) -> u64 {
        0
    }
}
