//! Paper tests: one test per rule of Figure 2 and §5.

mod incremental_safety;
mod paper;
mod safety_predicates;

use crate::{ClientId, Entry, Increment, Payload, Term};

/// An entry of `term` without a command (the payload does not matter to most
/// rules). Leaders do not append such entries themselves (see
/// `paper::new_leader_appends_no_entry_on_election`); tests put them in logs.
pub(crate) fn entry(term: u64) -> Entry<Increment> {
    Entry {
        term: Term(term),
        payload: Payload::Noop,
    }
}

/// A client command entry of `term`.
pub(crate) fn command(term: u64, client: u64, request_no: u64) -> Entry<Increment> {
    Entry {
        term: Term(term),
        payload: Payload::Command {
            client_id: ClientId(client),
            request_no,
            command: Increment,
        },
    }
}
