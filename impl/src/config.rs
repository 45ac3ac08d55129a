//! Configuration: cluster membership, timing, the AppendEntries cap, and
//! their parsing from the command line.

use raft_spec::{NodeId, Replication};
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;
use thiserror::Error;

/// An invalid configuration value (a command-line argument).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A `--peers` item is not `ID=HOST:PORT`.
    #[error("bad peer {item:?}: expected ID=HOST:PORT (e.g. 1=127.0.0.1:7001)")]
    BadPeer {
        /// The offending item.
        item: String,
    },
    /// The same id appears twice in `--peers`.
    #[error("peer id {0} appears twice in --peers")]
    DuplicatePeer(u64),
    /// Two ids of `--peers` share one address.
    #[error("peers {first} and {second} have the same address {addr} in --peers")]
    DuplicateAddress {
        /// The address.
        addr: String,
        /// The first id with it.
        first: u64,
        /// The second id with it.
        second: u64,
    },
    /// `--peers` lists no server.
    #[error("--peers lists no server")]
    NoPeers,
    /// `--listen` is not `HOST:PORT`.
    #[error("--listen {0:?}: expected HOST:PORT (e.g. 0.0.0.0:7001)")]
    BadListen(String),
    /// `--max-connections 0`.
    #[error("--max-connections 0: expected at least 1")]
    NoConnections,
    /// `--max-frame-bytes` below what a handshake needs.
    #[error("--max-frame-bytes {0}: expected at least {MIN_FRAME} bytes (a frame must hold a handshake and a message)")]
    BadMaxFrame(usize),
    /// `--id` is not one of the `--peers`.
    #[error("node id {id} is not in --peers (known ids: {known})")]
    UnknownId {
        /// The id given.
        id: u64,
        /// The ids of `--peers`.
        known: String,
    },
    /// Election timeouts must satisfy `0 < min <= max`, heartbeat `0 < hb < min`.
    #[error("bad timing: {0}")]
    BadTiming(String),
    /// `--max-append-entries` is not a whole number of at least 1.
    #[error(
        "--max-append-entries {value:?}: expected a whole number of entries, at least 1 \
         (leave the flag out for no cap)"
    )]
    BadMaxAppendEntries {
        /// The value given.
        value: String,
    },
    /// `--max-append-bytes` is 0, or too large for one AppendEntries to fit
    /// a frame.
    #[error(
        "--max-append-bytes {bytes}: expected at least 1 and at most half of --max-frame-bytes \
         ({max_frame}), so that every AppendEntries fits a frame"
    )]
    BadMaxAppendBytes {
        /// The value given.
        bytes: u64,
        /// The frame limit.
        max_frame: usize,
    },
}

/// The servers of a cluster and their addresses, by id.
pub type Peers = BTreeMap<NodeId, String>;

/// Parses `1=127.0.0.1:7001,2=127.0.0.1:7002,...`.
pub fn parse_peers(s: &str) -> Result<Peers, ConfigError> {
    let mut peers = Peers::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || ConfigError::BadPeer {
            item: item.to_string(),
        };
        let (id, addr) = item.split_once('=').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        let addr = addr.trim();
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        if let Some((first, _)) = peers.iter().find(|(_, a)| a.as_str() == addr) {
            return Err(ConfigError::DuplicateAddress {
                addr: addr.to_string(),
                first: first.0,
                second: id,
            });
        }
        if peers.insert(NodeId(id), addr.to_string()).is_some() {
            return Err(ConfigError::DuplicatePeer(id));
        }
    }
    if peers.is_empty() {
        return Err(ConfigError::NoPeers);
    }
    Ok(peers)
}

/// The smallest `--max-frame-bytes` accepted.
pub const MIN_FRAME: usize = 1024;

/// Checks `--listen HOST:PORT`.
pub fn check_listen(addr: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(ConfigError::BadListen(addr.to_string())),
    }
}

/// Checks `--max-connections`.
pub fn check_max_connections(n: usize) -> Result<(), ConfigError> {
    if n == 0 {
        Err(ConfigError::NoConnections)
    } else {
        Ok(())
    }
}

/// Checks `--max-frame-bytes`.
pub fn check_max_frame(bytes: usize) -> Result<(), ConfigError> {
    if bytes < MIN_FRAME {
        Err(ConfigError::BadMaxFrame(bytes))
    } else {
        Ok(())
    }
}

/// Checks that `id` is one of `peers`.
pub fn check_member(id: NodeId, peers: &Peers) -> Result<(), ConfigError> {
    if peers.contains_key(&id) {
        Ok(())
    } else {
        Err(ConfigError::UnknownId {
            id: id.0,
            known: peers
                .keys()
                .map(|n| n.0.to_string())
                .collect::<Vec<_>>()
                .join(","),
        })
    }
}

/// Parses `--max-append-entries N`: the most entries one AppendEntries
/// carries ([`raft_spec::Replication::max_append_entries`]), `N >= 1`.
pub fn parse_max_append_entries(s: &str) -> Result<NonZeroUsize, ConfigError> {
    s.trim()
        .parse::<NonZeroUsize>()
        .map_err(|_| ConfigError::BadMaxAppendEntries {
            value: s.to_string(),
        })
}

/// The replication settings of `serve`'s flags: [`Replication::runtime`]
/// with `--max-append-entries` (`max_entries`), `--max-append-bytes`
/// (`max_bytes`, at most half of `max_frame`; by default 1 MiB or half of
/// `max_frame` if less), `--window` (`window`; 0: no window, Figure 2's
/// pacing) and `--serial-write` (`serial_write`: the leader's own write is
/// durable before it sends its entries).
pub fn replication(
    max_entries: Option<NonZeroUsize>,
    max_bytes: Option<u64>,
    window: Option<usize>,
    serial_write: bool,
    max_frame: usize,
) -> Result<Replication, ConfigError> {
    let half = (max_frame / 2) as u64;
    let bytes = match max_bytes {
        Some(b) if b == 0 || b > half => {
            return Err(ConfigError::BadMaxAppendBytes {
                bytes: b,
                max_frame,
            })
        }
        Some(b) => b,
        None => Replication::RUNTIME_MAX_APPEND_BYTES.min(half),
    };
    let d = Replication::runtime();
    Ok(Replication {
        max_append_entries: max_entries,
        max_append_bytes: std::num::NonZeroU64::new(bytes),
        window: window.map_or(d.window, NonZeroUsize::new),
        empty_heartbeats: false,
        parallel_write: !serial_write,
        check_quorum: d.check_quorum,
        leases: d.leases,
        report_applied: d.report_applied,
    })
}

/// The command-line flags that set `r`, as `serve` takes them: each of
/// `--max-append-entries`, `--max-append-bytes`, `--window` and
/// `--serial-write` whose value differs from [`Replication::runtime`]'s
/// (`--window 0`: no window).
pub fn replication_args(r: &Replication) -> Vec<String> {
    let d = Replication::runtime();
    let mut args = Vec::new();
    if r.max_append_entries != d.max_append_entries {
        if let Some(n) = r.max_append_entries {
            args.extend(["--max-append-entries".to_string(), n.to_string()]);
        }
    }
    if r.max_append_bytes != d.max_append_bytes {
        if let Some(n) = r.max_append_bytes {
            args.extend(["--max-append-bytes".to_string(), n.to_string()]);
        }
    }
    if r.window != d.window {
        let n = r.window.map_or(0, NonZeroUsize::get);
        args.extend(["--window".to_string(), n.to_string()]);
    }
    if !r.parallel_write {
        args.push("--serial-write".to_string());
    }
    args
}

/// `r` as the flags that set it, for messages: [`replication_args`] joined
/// (and "(no byte cap)" if it has none, which no flag sets), or "the
/// default replication settings".
pub fn replication_flags(r: &Replication) -> String {
    let mut args = replication_args(r);
    if r.max_append_bytes.is_none() {
        args.push("(no byte cap)".to_string());
    }
    if args.is_empty() {
        "the default replication settings".to_string()
    } else {
        args.join(" ")
    }
}

/// Timer durations. The election timeout is drawn uniformly from
/// `[election_min, election_max]` each time the timer is set (Raft §5.2:
/// randomized election timeouts make split votes rare).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Lower bound of the election timeout.
    pub election_min: Duration,
    /// Upper bound of the election timeout.
    pub election_max: Duration,
    /// The leader's heartbeat interval.
    pub heartbeat: Duration,
}

impl Default for Timing {
    /// 150–300 ms election timeout, 50 ms heartbeat (Raft §9.3 suggests
    /// 150–300 ms).
    fn default() -> Self {
        Timing {
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            heartbeat: Duration::from_millis(50),
        }
    }
}

impl Timing {
    /// The clock-drift bound a lease assumes: no clock of the cluster runs
    /// more than this factor faster or slower than another over a lease.
    pub const DRIFT_BOUND: f64 = 1.25;

    /// How long a leader's lease lasts from the start of the round that
    /// earns it (Raft thesis §6.4.1): the minimum election timeout, for
    /// which a follower that answered the round takes no later term, divided
    /// by the drift bound.
    pub fn lease(&self) -> Duration {
        self.election_min.div_f64(Self::DRIFT_BOUND)
    }

    /// Builds and checks a timing from milliseconds.
    pub fn from_millis(
        election_min: u64,
        election_max: u64,
        heartbeat: u64,
    ) -> Result<Self, ConfigError> {
        let t = Timing {
            election_min: Duration::from_millis(election_min),
            election_max: Duration::from_millis(election_max),
            heartbeat: Duration::from_millis(heartbeat),
        };
        t.check()?;
        Ok(t)
    }

    /// Checks `0 < heartbeat < election_min <= election_max`.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.election_min.is_zero() || self.election_min > self.election_max {
            return Err(ConfigError::BadTiming(format!(
                "election timeout range {:?}..{:?} must be non-empty and positive",
                self.election_min, self.election_max
            )));
        }
        if self.heartbeat.is_zero() || self.heartbeat >= self.election_min {
            return Err(ConfigError::BadTiming(format!(
                "heartbeat {:?} must be positive and below the election timeout {:?}",
                self.heartbeat, self.election_min
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_bad_items() {
        let p = parse_peers("1=127.0.0.1:7001, 2=localhost:7002").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[&NodeId(2)], "localhost:7002");
        assert_eq!(
            parse_peers("1=127.0.0.1"),
            Err(ConfigError::BadPeer {
                item: "1=127.0.0.1".into()
            })
        );
        assert_eq!(
            parse_peers("x=127.0.0.1:1"),
            Err(ConfigError::BadPeer {
                item: "x=127.0.0.1:1".into()
            })
        );
        assert_eq!(
            parse_peers("1=a:1,1=b:2"),
            Err(ConfigError::DuplicatePeer(1))
        );
        assert_eq!(
            parse_peers("1=a:1,2=a:1").unwrap_err().to_string(),
            "peers 1 and 2 have the same address a:1 in --peers"
        );
        assert_eq!(parse_peers(" , "), Err(ConfigError::NoPeers));
        assert_eq!(
            check_member(NodeId(4), &p).unwrap_err().to_string(),
            "node id 4 is not in --peers (known ids: 1,2)"
        );
    }

    #[test]
    fn listen_addresses_and_frame_limits_are_checked() {
        assert!(check_listen("0.0.0.0:7001").is_ok());
        assert!(check_listen("[::1]:7001").is_ok());
        for bad in ["nonsense", ":7001", "host:", "host:99999"] {
            assert_eq!(
                check_listen(bad).unwrap_err().to_string(),
                format!("--listen {bad:?}: expected HOST:PORT (e.g. 0.0.0.0:7001)")
            );
        }
        assert!(check_max_frame(MIN_FRAME).is_ok());
        assert_eq!(
            check_max_frame(0).unwrap_err().to_string(),
            "--max-frame-bytes 0: expected at least 1024 bytes (a frame must hold a handshake and a message)"
        );
    }

    #[test]
    fn the_append_entries_cap_is_at_least_one() {
        assert_eq!(parse_max_append_entries("1").unwrap().get(), 1);
        assert_eq!(parse_max_append_entries(" 64 ").unwrap().get(), 64);
        for bad in ["0", "-1", "", "x", "1.5"] {
            assert_eq!(
                parse_max_append_entries(bad),
                Err(ConfigError::BadMaxAppendEntries { value: bad.into() })
            );
        }
        assert_eq!(
            parse_max_append_entries("0").unwrap_err().to_string(),
            "--max-append-entries \"0\": expected a whole number of entries, at least 1 \
             (leave the flag out for no cap)"
        );
    }

    #[test]
    fn timing_is_checked() {
        assert!(Timing::from_millis(150, 300, 50).is_ok());
        assert!(Timing::from_millis(300, 150, 50).is_err());
        assert!(Timing::from_millis(150, 300, 150).is_err());
        assert!(Timing::from_millis(0, 300, 0).is_err());
        Timing::default().check().unwrap();
    }
}
