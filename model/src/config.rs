//! Bounded configurations: what the checker explores.

use raft_spec::bugs::Bug;
use raft_spec::{Ack, ReadMode, Replication};
use std::fmt;
use std::str::FromStr;

/// How the network treats messages in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkKind {
    /// Any message in flight may be delivered at any time, any number of
    /// times (Stateright's default; the most adversarial, and it models client
    /// retries for free).
    UnorderedDuplicating,
    /// Any message in flight may be delivered at any time, once.
    UnorderedNonDuplicating,
    /// Each (sender, receiver) channel delivers in order, once.
    Ordered,
}

impl NetworkKind {
    /// The names accepted on the command line.
    pub const NAMES: [&'static str; 3] = [
        "unordered-duplicating",
        "unordered-nonduplicating",
        "ordered",
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            NetworkKind::UnorderedDuplicating => Self::NAMES[0],
            NetworkKind::UnorderedNonDuplicating => Self::NAMES[1],
            NetworkKind::Ordered => Self::NAMES[2],
        }
    }
}

impl fmt::Display for NetworkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetworkKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unordered-duplicating" => Ok(NetworkKind::UnorderedDuplicating),
            "unordered-nonduplicating" => Ok(NetworkKind::UnorderedNonDuplicating),
            "ordered" => Ok(NetworkKind::Ordered),
            other => Err(ConfigError::UnknownNetwork(other.to_string())),
        }
    }
}

/// A configuration that bounds the state space, so every check completes.
///
/// The bounds are on the protocol (terms, requests, crashes), never on the
/// search depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelConfig {
    /// Number of Raft servers (1 to 5).
    pub servers: usize,
    /// No server's `current_term` may exceed this.
    pub max_term: u64,
    /// Number of client requests: one client actor per request, each issuing
    /// one `CounterCommand::Increment`.
    pub requests: usize,
    /// Total number of server crashes over a whole execution (each crash may
    /// be followed by a recovery).
    pub crashes: usize,
    /// Network semantics.
    pub network: NetworkKind,
    /// Whether the network may lose messages.
    ///
    /// On the unordered networks a lost message is indistinguishable from one
    /// delayed forever for every property checked here (none reads the
    /// network), so loss adds no server, client or ghost state and the model
    /// explores it as delay: no `Drop` actions. On the ordered network a loss
    /// unblocks the messages queued behind it, so there the model drops
    /// messages for real.
    pub lossy: bool,
    /// A seeded bug the servers run with (`None`: the correct rules). See
    /// [`crate::bugs`].
    pub bug: Option<Bug>,
    /// How leaders pace AppendEntries: a cap on entries per message, empty
    /// heartbeats, a flow-control window (`raft_spec::Replication`; the
    /// default is Figure 2 read literally).
    pub replication: Replication,
    /// When leaders answer the clients' writes ([`Ack`]; the default is the
    /// paper's, once applied).
    pub ack: Ack,
    /// Number of reads: one client actor per read, each reading the counter
    /// once, at a moment of the checker's choosing (so a read can start
    /// after a write has returned).
    pub reads: usize,
    /// How the reads are served ([`ReadMode`]; the default goes through
    /// the log).
    pub read: ReadMode,
}

/// A configuration that cannot be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--servers` is outside 1..=5.
    #[error("--servers must be between 1 and 5, got {0}")]
    Servers(usize),
    /// `--max-term` is 0: no election could ever happen.
    #[error("--max-term must be at least 1, got 0")]
    MaxTerm,
    /// `--max-term` is too large to finish.
    #[error("--max-term must be at most 10, got {0}")]
    MaxTermTooLarge(u64),
    /// `--requests` is too large.
    #[error("--requests must be at most 5, got {0}")]
    Requests(usize),
    /// `--crashes` is too large.
    #[error("--crashes must be at most 5, got {0}")]
    Crashes(usize),
    /// `--reads` is too large.
    #[error("--reads must be at most 3, got {0}")]
    Reads(usize),
    /// `--network` names no known semantics.
    #[error("--network: unknown network '{0}' (expected one of: unordered-duplicating, unordered-nonduplicating, ordered)")]
    UnknownNetwork(String),
    /// An acknowledgement level that counts followers' applies, without
    /// followers reporting them: no write would ever be answered.
    #[error(
        "--ack {0} needs followers to report their applied index (Replication::report_applied)"
    )]
    AppliedNotReported(&'static str),
}

impl ModelConfig {
    /// The default for `raft-model check`: three servers, one term, one
    /// client request, one crash, duplicating network. It completes in about
    /// a second on two cores and covers an election, replication, commitment,
    /// the client's reply, and a crashed server recovering and rejoining.
    /// (Two terms add a change of leader and a conflicting entry being
    /// overwritten: configuration (a) of docs/benchmarks.md.)
    pub fn default_check() -> Self {
        Self::bounded(3, 1, 1, 1)
    }

    /// `servers` servers, at most `max_term` terms, `requests` client
    /// requests and `crashes` crashes, on the default network (unordered,
    /// duplicating, not lossy), with the correct rules and the default
    /// protocol options.
    pub fn bounded(servers: usize, max_term: u64, requests: usize, crashes: usize) -> Self {
        ModelConfig {
            servers,
            max_term,
            requests,
            crashes,
            network: NetworkKind::UnorderedDuplicating,
            lossy: false,
            bug: None,
            replication: Replication::default(),
            ack: Ack::Applied,
            reads: 0,
            read: ReadMode::Log,
        }
    }

    /// The deep benchmark configuration: 3 servers, max term 3, 2 requests,
    /// 1 crash, lossy unordered duplicating network.
    pub fn deep() -> Self {
        ModelConfig {
            lossy: true,
            ..Self::bounded(3, 3, 2, 1)
        }
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=5).contains(&self.servers) {
            return Err(ConfigError::Servers(self.servers));
        }
        if self.max_term == 0 {
            return Err(ConfigError::MaxTerm);
        }
        if self.max_term > 10 {
            return Err(ConfigError::MaxTermTooLarge(self.max_term));
        }
        if self.requests > 5 {
            return Err(ConfigError::Requests(self.requests));
        }
        if self.reads > 3 {
            return Err(ConfigError::Reads(self.reads));
        }
        if self.crashes > 5 {
            return Err(ConfigError::Crashes(self.crashes));
        }
        if self.ack.counts_applied() && !self.replication.report_applied {
            return Err(ConfigError::AppliedNotReported(self.ack.name()));
        }
        Ok(())
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::default_check()
    }
}

impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "servers={} max_term={} requests={} crashes={} network={} lossy={}{}{}{}",
            self.servers,
            self.max_term,
            self.requests,
            self.crashes,
            self.network,
            self.lossy,
            if self.lossy && self.network != NetworkKind::Ordered {
                " (loss explored as unbounded delay)"
            } else {
                ""
            },
            replication_flags(&self.replication)
                + &if self.ack.is_applied() {
                    String::new()
                } else {
                    format!(" ack={}", self.ack.name())
                }
                + &if self.reads == 0 {
                    String::new()
                } else {
                    format!(" reads={} read={}", self.reads, self.read.name())
                },
            match self.bug {
                Some(bug) => format!(" bug={bug}"),
                None => String::new(),
            }
        )
    }
}

/// The replication settings as `check`'s report shows them: nothing for
/// Figure 2's pacing, otherwise ` name=value` per setting in use.
fn replication_flags(r: &Replication) -> String {
    let mut out = String::new();
    if let Some(n) = r.max_append_entries {
        out.push_str(&format!(" max_append_entries={n}"));
    }
    if let Some(n) = r.max_append_bytes {
        out.push_str(&format!(" max_append_bytes={n}"));
    }
    if let Some(n) = r.window {
        out.push_str(&format!(" window={n}"));
    }
    if r.empty_heartbeats {
        out.push_str(" empty_heartbeats");
    }
    if r.parallel_write {
        out.push_str(" parallel_write");
    }
    if r.check_quorum {
        out.push_str(" check_quorum");
    }
    if r.leases {
        out.push_str(" leases");
    }
    out
}
