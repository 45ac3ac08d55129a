//! A local cluster of node processes (`raft-node cluster`, the benchmark and
//! the end-to-end tests): each node is a `raft-node serve` child process with
//! its own data directory, on a loopback port.

use crate::client::{Client, ClientOptions};
use crate::config::{Peers, Timing};
use crate::wire::StatusInfo;
use raft_spec::{NodeId, Replication, Role};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How to start a local cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The `raft-node` executable.
    pub exe: PathBuf,
    /// Number of nodes (ids 1..=n).
    pub nodes: u64,
    /// Parent of the nodes' data directories (`DIR/node-N`).
    pub data_dir: PathBuf,
    /// Where to write the nodes' traces (`DIR/node-N.ndjson`), if anywhere.
    pub trace_dir: Option<PathBuf>,
    /// First port (ports `base_port + 0 .. n`); `None` picks free ports.
    pub base_port: Option<u16>,
    /// The cluster id.
    pub cluster_id: String,
    /// Timer durations.
    pub timing: Timing,
    /// How the nodes pace AppendEntries (passed as `--max-append-entries`,
    /// `--max-append-bytes` and `--window`).
    pub replication: Replication,
    /// Let nodes inherit stdout/stderr (else each logs to `DIR/node-N.log`).
    pub inherit_output: bool,
    /// `RUST_LOG` for the nodes (`None`: inherit the environment's).
    pub rust_log: Option<String>,
    /// Start nodes with the test-only partition control.
    pub test_control: bool,
    /// Nodes log JSON lines (`--log-format json`).
    pub log_json: bool,
}

impl ClusterOptions {
    /// Defaults: 3 nodes, free ports, cluster id "local", logs to files.
    pub fn new(exe: PathBuf, data_dir: PathBuf) -> Self {
        ClusterOptions {
            exe,
            nodes: 3,
            data_dir,
            trace_dir: None,
            base_port: None,
            cluster_id: "local".into(),
            timing: Timing::default(),
            replication: Replication::runtime(),
            inherit_output: false,
            rust_log: None,
            test_control: false,
            log_json: false,
        }
    }
}

/// A running local cluster; its processes are killed when it is dropped.
#[derive(Debug)]
pub struct LocalCluster {
    options: ClusterOptions,
    peers: Peers,
    children: BTreeMap<NodeId, Child>,
    /// Nodes this launcher started at least once.
    started: std::collections::BTreeSet<NodeId>,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalCluster {
    /// Starts every node.
    pub fn start(options: ClusterOptions) -> io::Result<Self> {
        let mut peers = Peers::new();
        for i in 1..=options.nodes {
            let port = match options.base_port {
                Some(b) => b
                    .checked_add(u16::try_from(i - 1).unwrap_or(u16::MAX))
                    .ok_or_else(|| io::Error::other("port out of range"))?,
                None => free_port()?,
            };
            peers.insert(NodeId(i), format!("127.0.0.1:{port}"));
        }
        std::fs::create_dir_all(&options.data_dir)?;
        if let Some(t) = &options.trace_dir {
            std::fs::create_dir_all(t)?;
        }
        let mut cluster = LocalCluster {
            options,
            peers,
            children: BTreeMap::new(),
            started: Default::default(),
        };
        let ids: Vec<NodeId> = cluster.peers.keys().copied().collect();
        for id in ids {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// Starts every node, their logs at warnings unless `options.rust_log`
    /// or `RUST_LOG` says otherwise, and waits up to 10 s for a leader:
    /// how `bench` and `jepsen` begin.
    pub fn start_and_elect(mut options: ClusterOptions) -> Result<(Self, StatusInfo), String> {
        if options.rust_log.is_none() {
            options.rust_log = Some(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        }
        let cluster =
            LocalCluster::start(options).map_err(|e| format!("cannot start the cluster: {e}"))?;
        let leader = cluster
            .wait_for_leader(Duration::from_secs(10))
            .ok_or("no leader elected within 10 s")?;
        Ok((cluster, leader))
    }

    /// The `--peers` argument of this cluster.
    pub fn peers_arg(&self) -> String {
        self.peers
            .iter()
            .map(|(id, a)| format!("{}={a}", id.0))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes and their addresses.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The cluster id the nodes were started with.
    pub fn cluster_id(&self) -> &str {
        &self.options.cluster_id
    }

    /// The data directory of node `id`.
    pub fn node_dir(&self, id: NodeId) -> PathBuf {
        self.options.data_dir.join(format!("node-{}", id.0))
    }

    /// The log file of node `id` (when output is not inherited).
    pub fn log_file(&self, id: NodeId) -> PathBuf {
        self.options.data_dir.join(format!("node-{}.log", id.0))
    }

    /// The trace file of node `id`, if traces are on (a restarted node
    /// continues its file).
    pub fn trace_file(&self, id: NodeId) -> Option<PathBuf> {
        let dir = self.options.trace_dir.as_ref()?;
        Some(dir.join(format!("node-{}.ndjson", id.0)))
    }

    /// Starts (or restarts) node `id`. Its first start by this launcher
    /// passes `--bootstrap` (a no-op on a directory that holds a node's
    /// state already); a restart does not, so a node whose directory was
    /// wiped meanwhile is refused rather than rejoining empty.
    pub fn start_node(&mut self, id: NodeId) -> io::Result<()> {
        let first = self.started.insert(id);
        self.spawn(id, first)
    }

    /// Starts node `id` with `--bootstrap`, as an operator who wiped its
    /// directory and bootstrapped it again would (its peers refuse it).
    pub fn bootstrap_node(&mut self, id: NodeId) -> io::Result<()> {
        self.started.insert(id);
        self.spawn(id, true)
    }

    fn spawn(&mut self, id: NodeId, bootstrap: bool) -> io::Result<()> {
        let o = &self.options;
        let mut cmd = Command::new(&o.exe);
        cmd.arg("serve")
            .arg("--id")
            .arg(id.0.to_string())
            .arg("--peers")
            .arg(self.peers_arg())
            .arg("--data-dir")
            .arg(self.node_dir(id))
            .arg("--cluster-id")
            .arg(&o.cluster_id)
            .arg("--election-timeout-ms")
            .arg(format!(
                "{}..{}",
                o.timing.election_min.as_millis(),
                o.timing.election_max.as_millis()
            ))
            .arg("--heartbeat-ms")
            .arg(o.timing.heartbeat.as_millis().to_string());
        cmd.args(crate::config::replication_args(&o.replication));
        if o.test_control {
            cmd.arg("--test-control");
        }
        if o.log_json {
            cmd.arg("--log-format").arg("json");
        }
        if bootstrap {
            cmd.arg("--bootstrap");
        }
        if let Some(t) = self.trace_file(id) {
            cmd.arg("--trace").arg(t);
        }
        if let Some(l) = &o.rust_log {
            cmd.env("RUST_LOG", l);
        }
        if o.inherit_output {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            let log = File::options()
                .create(true)
                .append(true)
                .open(self.log_file(id))?;
            cmd.stdout(log.try_clone()?).stderr(log);
        }
        // The node exits when this process goes away (its stdin closes).
        cmd.arg("--exit-on-stdin-eof").stdin(Stdio::piped());
        let child = cmd.spawn()?;
        self.children.insert(id, child);
        Ok(())
    }

    /// Kills node `id` with SIGKILL (`kill -9`) and reaps it.
    pub fn kill(&mut self, id: NodeId) -> io::Result<()> {
        if let Some(mut c) = self.children.remove(&id) {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.children.get(&id).map(std::process::Child::id)
    }

    /// Stops node `id` with SIGSTOP (a paused process: its sockets stay
    /// open, nothing is answered).
    pub fn pause(&mut self, id: NodeId) -> io::Result<()> {
        self.signal(id, "-STOP")
    }

    /// Resumes node `id` with SIGCONT.
    pub fn resume(&mut self, id: NodeId) -> io::Result<()> {
        self.signal(id, "-CONT")
    }

    fn signal(&mut self, id: NodeId, signal: &str) -> io::Result<()> {
        let Some(child) = self.children.get(&id) else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill {signal} {}: {status}",
                child.id()
            )))
        }
    }

    /// The nodes whose process is running.
    pub fn running(&mut self) -> Vec<NodeId> {
        let mut out = Vec::new();
        for (id, c) in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                out.push(*id);
            }
        }
        out
    }

    /// Nodes whose process exited, with their status; they are forgotten.
    pub fn exited(&mut self) -> Vec<(NodeId, std::process::ExitStatus)> {
        let mut out = Vec::new();
        for (id, c) in &mut self.children {
            if let Ok(Some(status)) = c.try_wait() {
                out.push((*id, status));
            }
        }
        for (id, _) in &out {
            self.children.remove(id);
        }
        out
    }

    /// A client of this cluster.
    pub fn client(&self) -> Client {
        let mut o = ClientOptions::new(self.peers.clone());
        o.cluster_id = self.options.cluster_id.clone();
        Client::new(o)
    }

    /// Every node's status.
    pub fn status(&self) -> Vec<(NodeId, Result<StatusInfo, String>)> {
        let mut o = ClientOptions::new(self.peers.clone());
        o.attempt_timeout = Duration::from_millis(500);
        Client::new(o).cluster_status()
    }

    /// The status of every node that answered.
    pub fn statuses(&self) -> Vec<StatusInfo> {
        self.status()
            .into_iter()
            .filter_map(|(_, s)| s.ok())
            .collect()
    }

    /// Waits until exactly one running node says it is the leader of the
    /// highest term seen, and returns it.
    pub fn wait_for_leader(&self, timeout: Duration) -> Option<StatusInfo> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let statuses = self.statuses();
            let max_term = statuses.iter().map(|s| s.term).max();
            let leaders: Vec<&StatusInfo> = statuses
                .iter()
                .filter(|s| s.role == Role::Leader && Some(s.term) == max_term)
                .collect();
            if let [leader] = leaders[..] {
                return Some(leader.clone());
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The data directory of the cluster.
    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
