//! Paper tests: one test per rule of Figure 2 and §5.

mod acks;
mod flow;
mod follower_reads;
pub(crate) mod helpers;
mod incremental_safety;
mod lease;
mod paper;
mod parallel;
mod reads;
mod safety_predicates;

use crate::{ClientId, CounterCommand, Entry, Payload, Term};

/// An entry of `term` without a command (the payload does not matter to most
/// rules). Leaders do not append such entries themselves (see
/// `paper::new_leader_appends_no_entry_on_election`); tests put them in logs.
pub(crate) fn entry(term: u64) -> Entry<CounterCommand> {
    Entry {
        term: Term(term),
        payload: Payload::Noop,
    }
}

/// A client command entry of `term`.
pub(crate) fn command(term: u64, client: u64, request_no: u64) -> Entry<CounterCommand> {
    Entry {
        term: Term(term),
        payload: Payload::Command {
            client_id: ClientId(client),
            request_no,
            command: CounterCommand::Increment,
        },
    }
}

/// A copied log shares its entries until one copy writes, and a client-id
/// rewrite that changes no entry keeps them shared; every copy still reads,
/// compares and changes as a separate log.
#[test]
fn log_copies_share_entries_until_one_writes() {
    use crate::{Log, LogIndex};
    let shared = |x: &Log<CounterCommand>, y: &Log<CounterCommand>| {
        std::ptr::eq(x.entries().as_ptr(), y.entries().as_ptr())
    };
    let original = Log::from_entries(vec![command(1, 7, 1), entry(1)]);
    let mut appended = original.clone();
    assert!(shared(&appended, &original));
    appended.push(command(2, 8, 1));
    assert!(!shared(&appended, &original));
    assert_eq!((original.len(), appended.len()), (2, 3));
    assert!(appended.extends(&original));

    let mut truncated = original.clone();
    truncated.truncate_from(LogIndex(3));
    assert!(shared(&truncated, &original), "nothing to delete");
    truncated.truncate_from(LogIndex(2));
    assert_eq!((truncated.len(), original.len()), (1, 2));

    let same = original.map_client_ids(&|c| c);
    assert!(shared(&same, &original));
    let moved = original.map_client_ids(&|c| ClientId(c.0 + 1));
    assert_eq!(moved.entries(), &[command(1, 8, 1), entry(1)]);
    assert_eq!(original.entries(), &[command(1, 7, 1), entry(1)]);
}
