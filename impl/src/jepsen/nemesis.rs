//! The nemesis: the faults a run injects into a real cluster, one at a
//! time, each healed before the next.
//!
//! - `kill`: `kill -9` of a node, restarted on its data directory when
//!   healed (what it had synced survives, nothing else);
//! - `pause`: SIGSTOP, then SIGCONT (a process that stops answering with
//!   its sockets open, as under a long GC pause or a VM stall);
//! - `partition`: a minority of the nodes cut off from the rest through the
//!   nodes' test-only transport control (`--test-control`: each side drops
//!   the other's frames), then rejoined.
//!
//! Half of the time the fault hits the current leader (or the minority
//! holds it), where faults matter most.

use crate::client::Client;
use crate::cluster::LocalCluster;
use crate::node::SplitMix64;
use raft_spec::{NodeId, Role};
use std::fmt;
use std::str::FromStr;

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nemesis {
    /// None: a baseline.
    None,
    /// Only kills.
    Kill,
    /// Only pauses.
    Pause,
    /// Only partitions.
    Partition,
    /// Each fault drawn among the three.
    Mixed,
}

impl Nemesis {
    /// Every nemesis, by name.
    pub const ALL: [Nemesis; 5] = [
        Nemesis::None,
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Partition,
        Nemesis::Mixed,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::None => "none",
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::Mixed => "mixed",
        }
    }

    /// The next fault to inject, if any.
    pub fn pick(self, rng: &mut SplitMix64) -> Option<FaultKind> {
        match self {
            Nemesis::None => None,
            Nemesis::Kill => Some(FaultKind::Kill),
            Nemesis::Pause => Some(FaultKind::Pause),
            Nemesis::Partition => Some(FaultKind::Partition),
            Nemesis::Mixed => Some(
                [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition][rng.range(0, 2) as usize],
            ),
        }
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nemesis {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Nemesis::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
                format!(
                    "unknown nemesis {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `kill -9`, then a restart.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// A minority cut off, then rejoined.
    Partition,
}

impl FaultKind {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
        }
    }
}

/// A fault in place, to be healed.
#[derive(Debug)]
pub enum Fault {
    /// The node was killed.
    Killed(NodeId),
    /// The node is stopped.
    Paused(NodeId),
    /// These nodes are cut off from the others.
    Partitioned(Vec<NodeId>),
}

/// Tells `node` to drop traffic with `blocked`, retrying for a while: a
/// node busy catching up may take long to answer.
fn partition(control: &mut Client, node: NodeId, blocked: &[NodeId]) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..10 {
        match control.partition(node, blocked) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Err(format!(
        "node {} did not take the partition control: {last}",
        node.0
    ))
}

/// The current leader, if one answers.
fn leader(cluster: &LocalCluster) -> Option<NodeId> {
    cluster
        .status()
        .into_iter()
        .filter_map(|(_, s)| s.ok())
        .filter(|s| s.role == Role::Leader)
        .max_by_key(|s| s.term)
        .map(|s| s.id)
}

impl Fault {
    /// Injects a fault of `kind` into `cluster` (`control` speaks to the
    /// nodes' test control), on the leader half of the time.
    pub fn inject(
        kind: FaultKind,
        cluster: &mut LocalCluster,
        control: &mut Client,
        ids: &[NodeId],
        rng: &mut SplitMix64,
    ) -> Result<Fault, String> {
        let random = ids[rng.range(0, ids.len() as u64 - 1) as usize];
        let target = if rng.chance(0.5) {
            leader(cluster).unwrap_or(random)
        } else {
            random
        };
        match kind {
            FaultKind::Kill => {
                cluster
                    .kill(target)
                    .map_err(|e| format!("kill node {}: {e}", target.0))?;
                Ok(Fault::Killed(target))
            }
            FaultKind::Pause => {
                cluster
                    .pause(target)
                    .map_err(|e| format!("pause node {}: {e}", target.0))?;
                Ok(Fault::Paused(target))
            }
            FaultKind::Partition => {
                // A minority: the target and, in larger clusters, up to
                // (n-1)/2 - 1 more.
                let size = rng.range(1, ((ids.len() as u64).saturating_sub(1) / 2).max(1)) as usize;
                let mut minority = vec![target];
                let mut others: Vec<NodeId> =
                    ids.iter().copied().filter(|&n| n != target).collect();
                while minority.len() < size && !others.is_empty() {
                    let i = rng.range(0, others.len() as u64 - 1) as usize;
                    minority.push(others.swap_remove(i));
                }
                for &n in ids {
                    let blocked: Vec<NodeId> = if minority.contains(&n) {
                        ids.iter()
                            .copied()
                            .filter(|m| !minority.contains(m))
                            .collect()
                    } else {
                        minority.clone()
                    };
                    partition(control, n, &blocked)?;
                }
                Ok(Fault::Partitioned(minority))
            }
        }
    }

    /// Heals the fault.
    pub fn heal(self, cluster: &mut LocalCluster, control: &mut Client) -> Result<(), String> {
        match self {
            Fault::Killed(n) => cluster
                .start_node(n)
                .map_err(|e| format!("restart node {}: {e}", n.0)),
            Fault::Paused(n) => cluster
                .resume(n)
                .map_err(|e| format!("resume node {}: {e}", n.0)),
            Fault::Partitioned(_) => {
                let ids: Vec<NodeId> = cluster.peers().keys().copied().collect();
                for n in ids {
                    partition(control, n, &[])?;
                }
                Ok(())
            }
        }
    }
}
