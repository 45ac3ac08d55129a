//! Vocabulary of the paper: terms, log indices, node ids, log entries.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

newtype!(
    /// A Raft term (Raft §5.1). Terms start at 0 and only grow on each server.
    Term,
    "t"
);
newtype!(
    /// A 1-based position in the log. `LogIndex(0)` names the empty prefix,
    /// which every log matches (Fig. 2, AppendEntries with `prev_log_index` 0).
    LogIndex,
    ""
);
newtype!(
    /// The identity of a server in the cluster.
    NodeId,
    "n"
);
newtype!(
    /// The identity of a client session, used to make retries idempotent
    /// (Raft §8).
    ClientId,
    "c"
);

impl Term {
    /// The next term, as a candidate starts it (Fig. 2, Candidates rule 1).
    #[must_use]
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl LogIndex {
    /// The index after this one.
    #[must_use]
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one, saturating at 0.
    #[must_use]
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Payload<C> {
    /// An entry that carries no command; applying it changes nothing. The
    /// leaders of this spec do not append one on election (see
    /// `Server::become_leader`); a runtime may use it as a barrier (Raft §8).
    Noop,
    /// A client command, identified by its session and request number so that
    /// a retried request is applied only once (Raft §8).
    Command {
        /// The client session that issued the command.
        client_id: ClientId,
        /// The client's request number; requests of one client are numbered 1, 2, ...
        request_no: u64,
        /// The state-machine command.
        command: C,
    },
}

/// A log entry: the term in which a leader created it and what it carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entry<C> {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's content.
    pub payload: Payload<C>,
}

impl<C> Entry<C> {
    /// Rewrites the client id inside the entry (used for symmetry reduction).
    #[must_use]
    pub fn map_client_ids(&self, clients: &dyn Fn(ClientId) -> ClientId) -> Self
    where
        C: Clone,
    {
        let payload = match &self.payload {
            Payload::Noop => Payload::Noop,
            Payload::Command {
                client_id,
                request_no,
                command,
            } => Payload::Command {
                client_id: clients(*client_id),
                request_no: *request_no,
                command: command.clone(),
            },
        };
        Entry {
            term: self.term,
            payload,
        }
    }
}

/// A server's log, indexed from 1 as in the paper.
///
/// Invariant: entry terms never decrease along the log (every leader appends
/// entries of its current term, which is at least the term of every entry it
/// holds).
///
/// The entries are shared between copies of a server and copied on the first
/// write (most steps do not write the log, and a model checker copies the
/// server for every step). Equality, order, hash and the serialized form are
/// those of the entries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Log<C> {
    entries: Arc<Vec<Entry<C>>>,
}

impl<C> Default for Log<C> {
    fn default() -> Self {
        Log::new()
    }
}

impl<C> Log<C> {
    /// An empty log.
    pub fn new() -> Self {
        Log {
            entries: Arc::new(Vec::new()),
        }
    }

    /// A log holding `entries` at indices 1, 2, ...
    pub fn from_entries(entries: Vec<Entry<C>>) -> Self {
        Log {
            entries: Arc::new(entries),
        }
    }

    /// The index of the last entry, 0 when empty.
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.entries.len() as u64)
    }

    /// The term of the last entry, 0 when empty.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(Term(0), |e| e.term)
    }

    /// The key of Raft §5.4.1's order on logs: "If the logs have last
    /// entries with different terms, then the log with the later term is
    /// more up-to-date. If the logs end with the same term, then whichever
    /// log is longer is more up-to-date." So `a.up_to_date() >=
    /// b.up_to_date()` says that `a` is at least as up-to-date as `b`.
    pub fn up_to_date(&self) -> (Term, LogIndex) {
        (self.last_term(), self.last_index())
    }

    /// The term of the entry at `index`: `Some(Term(0))` for index 0, `None`
    /// past the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index.0 == 0 {
            Some(Term(0))
        } else {
            self.get(index).map(|e| e.term)
        }
    }

    /// The entry at `index` (1-based).
    pub fn get(&self, index: LogIndex) -> Option<&Entry<C>> {
        let i = usize::try_from(index.0).ok()?.checked_sub(1)?;
        self.entries.get(i)
    }

    /// All entries, index 1 first.
    pub fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }

    /// The entries from `index` (inclusive) to the end; empty past the end.
    pub fn entries_from(&self, index: LogIndex) -> &[Entry<C>] {
        let start = usize::try_from(index.0.max(1) - 1).unwrap_or(usize::MAX);
        self.entries.get(start..).unwrap_or(&[])
    }

    /// The entries from 1 to `index` (inclusive), clamped to the log.
    pub fn prefix(&self, index: LogIndex) -> &[Entry<C>] {
        let end = usize::try_from(index.0)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        &self.entries[..end]
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends one entry at `last_index() + 1`.
    pub fn push(&mut self, entry: Entry<C>)
    where
        C: Clone,
    {
        Arc::make_mut(&mut self.entries).push(entry);
    }

    /// Deletes the entry at `index` and all that follow it.
    pub fn truncate_from(&mut self, index: LogIndex)
    where
        C: Clone,
    {
        let keep = usize::try_from(index.0.max(1) - 1).unwrap_or(usize::MAX);
        if keep < self.entries.len() {
            Arc::make_mut(&mut self.entries).truncate(keep);
        }
    }

    /// The log with each entry's client id rewritten (used for symmetry
    /// reduction); it shares the entries when the rewrite changes none.
    #[must_use]
    pub fn map_client_ids(&self, clients: &dyn Fn(ClientId) -> ClientId) -> Self
    where
        C: Clone,
    {
        let unchanged = self.entries.iter().all(|e| match &e.payload {
            Payload::Noop => true,
            Payload::Command { client_id, .. } => clients(*client_id) == *client_id,
        });
        if unchanged {
            return self.clone();
        }
        Log::from_entries(
            self.entries
                .iter()
                .map(|e| e.map_client_ids(clients))
                .collect(),
        )
    }

    /// Whether `self` extends `other`: `other` is a prefix of `self`.
    pub fn extends(&self, other: &Log<C>) -> bool
    where
        C: PartialEq,
    {
        self.entries.starts_with(&other.entries)
    }
}
