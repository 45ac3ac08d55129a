//! `raft-node bench`: throughput and latency of writes on a local 3-node
//! cluster of processes over TCP with fsync on, then failover time.
//!
//! - **Throughput and latency**: for each concurrency `c`, `c` clients (each
//!   its own connection and session, all driven from one thread, module `driver`)
//!   issue `put`s back to back to the leader for the given duration, after a
//!   warm-up; the report gives writes per second and the p50/p99 latency of
//!   a write (from the request to the leader's reply, which comes after the
//!   entry is committed: fsynced on the leader and on a follower).
//! - **Reads** (`--reads MODE,...`): the same, with `get`s of one key
//!   served in each mode (`raft_spec::ReadMode`: through the log, by the
//!   leader's read index, from the node asked); and **acknowledgement
//!   levels** (`--acks LEVEL,...`): `put`s answered at each level
//!   (`raft_spec::Ack`).
//! - **Large puts** (`--large-puts-mib`): one put of each size; the time
//!   until it is acknowledged and the elections meanwhile (how far the
//!   highest term moved).
//! - **Catch-up** (`--catch-up-mib N`): a follower is paused (SIGSTOP) while
//!   N puts of 1 MiB commit, then resumed; the time until its log holds the
//!   leader's last entry, the elections meanwhile, and the leader's resident
//!   and peak memory against the data it holds.
//! - **Failover**: the leader is killed with SIGKILL; the time until a client
//!   write succeeds is measured, the node is restarted and caught up, and
//!   this is repeated. The median is compared with the bound of the source
//!   articles, election timeout + 2 × round trip, where the round trip is the
//!   median of a `status` request's.

mod driver;

use crate::client::ClientOptions;
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::config::Timing;
use raft_spec::{Ack, KvCommand, NodeId, ReadMode};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The `raft-node` executable.
    pub exe: PathBuf,
    /// Where the nodes keep their data.
    pub data_dir: PathBuf,
    /// The concurrencies to measure.
    pub clients: Vec<usize>,
    /// How long each concurrency runs.
    pub duration: Duration,
    /// Failover trials.
    pub trials: u32,
    /// Node timing.
    pub timing: Timing,
    /// How the nodes pace AppendEntries.
    pub replication: raft_spec::Replication,
    /// Value size in bytes.
    pub value_size: usize,
    /// Sizes in MiB of the large puts to measure (none: skip).
    pub large_puts_mib: Vec<usize>,
    /// MiB a paused follower falls behind before it catches up (0: skip).
    pub catch_up_mib: usize,
    /// The read modes to measure at each concurrency (none: skip).
    pub reads: Vec<ReadMode>,
    /// The acknowledgement levels to measure writes at, beside the
    /// default's (none: skip).
    pub acks: Vec<Ack>,
}

/// What each client of a measurement does, back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Puts answered at this level.
    Write(Ack),
    /// Gets of one key served in this mode.
    Read(ReadMode),
}

impl Op {
    /// `writes` (the default level), `writes ack=LEVEL` or `reads MODE`.
    pub fn label(self) -> String {
        match self {
            Op::Write(Ack::Applied) => "writes".to_string(),
            Op::Write(ack) => format!("writes ack={}", ack.name()),
            Op::Read(mode) => format!("reads {}", mode.name()),
        }
    }
}

/// One large put's figures.
#[derive(Clone, Debug)]
pub struct LargePut {
    /// The value's size in MiB.
    pub mib: usize,
    /// Until it was acknowledged (`None`: it failed).
    pub took: Option<Duration>,
    /// Elections meanwhile: how far the highest term moved.
    pub elections: u64,
}

/// The catch-up's figures.
#[derive(Clone, Debug)]
pub struct CatchUp {
    /// MiB the follower fell behind.
    pub mib: usize,
    /// From its resumption until its log held the leader's last entry
    /// (`None`: not within 120 s).
    pub took: Option<Duration>,
    /// Elections meanwhile (from the pause on).
    pub elections: u64,
    /// The leader's resident memory after the catch-up, MiB.
    pub leader_rss_mib: f64,
    /// The leader's peak resident memory, MiB.
    pub leader_peak_mib: f64,
}

/// One concurrency's figures.
#[derive(Clone, Debug)]
pub struct Throughput {
    /// What was measured.
    pub op: Op,
    /// Concurrent clients.
    pub clients: usize,
    /// Successful operations.
    pub writes: u64,
    /// Failed operations (timeouts).
    pub errors: u64,
    /// Operations per second.
    pub per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// The failover figures.
#[derive(Clone, Debug)]
pub struct Failover {
    /// Each trial's time from the kill to the first successful write.
    pub trials: Vec<Duration>,
    /// Their median.
    pub median: Duration,
    /// Median round trip of a status request.
    pub rtt: Duration,
    /// election_max + 2 × rtt.
    pub bound: Duration,
}

/// The whole report.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Per concurrency.
    pub throughput: Vec<Throughput>,
    /// Failover, if trials were run.
    pub failover: Option<Failover>,
    /// The large puts.
    pub large: Vec<LargePut>,
    /// The catch-up, if measured.
    pub catch_up: Option<CatchUp>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark, printing progress to stderr.
pub fn run(options: &BenchOptions) -> Result<BenchReport, String> {
    let mut copts = ClusterOptions::new(options.exe.clone(), options.data_dir.clone());
    copts.timing = options.timing;
    copts.replication = options.replication;
    let (mut cluster, leader) = LocalCluster::start_and_elect(copts)?;
    eprintln!(
        "cluster {} up, leader node {}",
        cluster.peers_arg(),
        leader.id.0
    );
    let value = "x".repeat(options.value_size);
    let mut throughput = Vec::new();
    let ops: Vec<Op> = std::iter::once(Op::Write(Ack::Applied))
        .chain(
            options
                .acks
                .iter()
                .filter(|a| !a.is_applied())
                .map(|&a| Op::Write(a)),
        )
        .chain(options.reads.iter().map(|&m| Op::Read(m)))
        .collect();
    if !options.reads.is_empty() {
        let mut client = cluster.client();
        client
            .call(KvCommand::put("read-key", &value))
            .map_err(|e| format!("the key to read: {e}"))?;
    }
    for op in ops {
        for &c in &options.clients {
            let t = measure(&cluster, op, c, options.duration, &value)?;
            eprintln!(
                "{:>3} clients, {}: {:>8.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} done, {} errors)",
                t.clients,
                op.label(),
                t.per_sec,
                t.p50.as_secs_f64() * 1e3,
                t.p99.as_secs_f64() * 1e3,
                t.writes,
                t.errors
            );
            throughput.push(t);
        }
    }
    let mut large = Vec::new();
    for &mib in &options.large_puts_mib {
        let l = large_put(&cluster, mib);
        eprintln!("{l:?}");
        large.push(l);
    }
    let catch_up = if options.catch_up_mib > 0 {
        let c = catch_up(&mut cluster, options.catch_up_mib)?;
        eprintln!("{c:?}");
        Some(c)
    } else {
        None
    };
    let failover = if options.trials > 0 {
        Some(failover(&mut cluster, options, &value)?)
    } else {
        None
    };
    Ok(BenchReport {
        throughput,
        failover,
        large,
        catch_up,
    })
}

fn highest_term(cluster: &LocalCluster) -> u64 {
    cluster
        .statuses()
        .iter()
        .map(|s| s.term.0)
        .max()
        .unwrap_or(0)
}

fn large_put(cluster: &LocalCluster, mib: usize) -> LargePut {
    let value = "L".repeat(mib << 20);
    let before = highest_term(cluster);
    let mut client = cluster.client();
    let started = Instant::now();
    let took = client
        .call(KvCommand::put(format!("large-{mib}"), value))
        .ok()
        .map(|_| started.elapsed());
    LargePut {
        mib,
        took,
        elections: highest_term(cluster).saturating_sub(before),
    }
}

/// `VmRSS` and `VmHWM` of process `pid`, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn catch_up(cluster: &mut LocalCluster, mib: usize) -> Result<CatchUp, String> {
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .ok_or("no leader")?;
    let follower = cluster
        .peers()
        .keys()
        .copied()
        .find(|&n| n != leader.id)
        .ok_or("no follower")?;
    let before = highest_term(cluster);
    cluster.pause(follower).map_err(|e| e.to_string())?;
    let value = "C".repeat(1 << 20);
    let mut client = cluster.client();
    for i in 0..mib {
        client
            .call(KvCommand::put(
                format!("catch-up-{}", i % 16),
                value.clone(),
            ))
            .map_err(|e| format!("put {i} of the catch-up: {e:?}"))?;
    }
    cluster.resume(follower).map_err(|e| e.to_string())?;
    let resumed = Instant::now();
    let mut took = None;
    while resumed.elapsed() < Duration::from_secs(120) {
        let statuses = cluster.statuses();
        let last = statuses.iter().map(|s| s.last_log_index).max();
        let behind = statuses
            .iter()
            .find(|s| s.id == follower)
            .map(|s| s.last_log_index);
        if last.is_some() && behind == last {
            took = Some(resumed.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let now_leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .map_or(leader.id, |s| s.id);
    let (leader_rss_mib, leader_peak_mib) = cluster.pid(now_leader).map_or((0.0, 0.0), memory_mib);
    Ok(CatchUp {
        mib,
        took,
        elections: highest_term(cluster).saturating_sub(before),
        leader_rss_mib,
        leader_peak_mib,
    })
}

fn measure(
    cluster: &LocalCluster,
    op: Op,
    clients: usize,
    duration: Duration,
    value: &str,
) -> Result<Throughput, String> {
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .ok_or("no leader")?
        .id;
    // Follower reads are spread over the followers, one per client in turn.
    let followers: Vec<NodeId> = cluster
        .peers()
        .keys()
        .copied()
        .filter(|&n| n != leader)
        .collect();
    let addresses: Vec<String> = (0..clients)
        .map(|t| {
            let node = match op {
                Op::Read(ReadMode::Follower | ReadMode::FollowerReadIndex) => {
                    followers.get(t % followers.len().max(1)).copied()
                }
                _ => None,
            };
            let node = node.unwrap_or(leader);
            cluster.peers().get(&node).cloned().unwrap_or_default()
        })
        .collect();
    let requests = |t: usize, i: u64| match op {
        Op::Write(ack) => {
            let key = format!("b{clients}-{t}-{i}-{}", ack.name());
            (KvCommand::put(key, value), ack, None)
        }
        Op::Read(ReadMode::Log) => (KvCommand::get("read-key"), Ack::Applied, None),
        Op::Read(mode) => (KvCommand::get("read-key"), Ack::Applied, Some(mode)),
    };
    let load = driver::drive(
        &addresses,
        cluster.cluster_id(),
        &requests,
        WARM_UP,
        duration,
    )?;
    let mut all = load.latencies;
    all.sort();
    Ok(Throughput {
        op,
        clients,
        writes: all.len() as u64,
        errors: load.errors,
        per_sec: all.len() as f64 / duration.as_secs_f64(),
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
    })
}

/// How long each measurement runs before its window opens.
const WARM_UP: Duration = Duration::from_millis(300);

fn rtt(cluster: &LocalCluster, node: NodeId) -> Duration {
    let mut o = ClientOptions::new(cluster.peers().clone());
    o.attempt_timeout = Duration::from_millis(500);
    let mut c = crate::client::Client::new(o);
    let mut samples: Vec<Duration> = (0..21)
        .filter_map(|_| {
            let t = Instant::now();
            c.status(node).ok().map(|_| t.elapsed())
        })
        .collect();
    samples.sort();
    percentile(&samples, 0.5)
}

fn failover(
    cluster: &mut LocalCluster,
    options: &BenchOptions,
    value: &str,
) -> Result<Failover, String> {
    let mut trials = Vec::new();
    let mut rtts = Vec::new();
    for trial in 1..=options.trials {
        let leader = cluster
            .wait_for_leader(Duration::from_secs(10))
            .ok_or("no leader before a failover trial")?;
        rtts.push(rtt(cluster, leader.id));
        let mut client = cluster.client();
        client.prefer(leader.id);
        client
            .call(KvCommand::put(format!("pre-{trial}"), value))
            .map_err(|e| format!("write before trial {trial}: {e}"))?;
        cluster
            .kill(leader.id)
            .map_err(|e| format!("cannot kill node {}: {e}", leader.id.0))?;
        let killed = Instant::now();
        client
            .call(KvCommand::put(format!("post-{trial}"), value))
            .map_err(|e| format!("no successful write after killing the leader: {e}"))?;
        let took = killed.elapsed();
        eprintln!(
            "failover trial {trial}: killed leader node {} (term {}), first write after {:.1} ms (new leader node {})",
            leader.id.0,
            leader.term.0,
            took.as_secs_f64() * 1e3,
            client.leader().map_or(0, |n| n.0)
        );
        trials.push(took);
        cluster
            .start_node(leader.id)
            .map_err(|e| format!("cannot restart node {}: {e}", leader.id.0))?;
        // Let the restarted node catch up before the next trial.
        let target = client
            .leader()
            .and_then(|l| cluster.status().into_iter().find(|(n, _)| *n == l))
            .and_then(|(_, s)| s.ok())
            .map_or(0, |s| s.commit_index.0);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let caught_up = cluster
                .status()
                .into_iter()
                .any(|(n, s)| n == leader.id && s.is_ok_and(|s| s.last_log_index.0 >= target));
            if caught_up {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    let mut sorted = trials.clone();
    sorted.sort();
    rtts.sort();
    let rtt = percentile(&rtts, 0.5);
    Ok(Failover {
        median: percentile(&sorted, 0.5),
        trials,
        rtt,
        bound: options.timing.election_max + 2 * rtt,
    })
}
