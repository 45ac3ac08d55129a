//! The test run: a local cluster of `raft-node` processes, concurrent
//! clients recording every operation, a nemesis injecting faults, and the
//! history checked at the end.
//!
//! Each client is one session ([`Client`]) with one operation in flight:
//! a put of a value unique to the run (`c{client}-{n}`), a get or a
//! delete, on one of a few keys. An operation that gets no answer within
//! the client's timeout is recorded as [`Outcome::Unknown`]: it may have
//! been applied, then or later. When the time is up the clients stop, every
//! fault is healed, and one client reads every key (these reads are part of
//! the history: a write acknowledged and then lost shows in them).

use super::check::{self, Report};
use super::history::{HistoryWriter, Op, Outcome};
use super::nemesis::{Fault, Nemesis};
use crate::client::{Client, ClientError, ClientOptions};
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::config::Timing;
use crate::node::SplitMix64;
use raft_spec::{KvCommand, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// How to run the test.
#[derive(Clone, Debug)]
pub struct JepsenOptions {
    /// The `raft-node` executable the nodes run.
    pub exe: PathBuf,
    /// Where the nodes keep their data and logs.
    pub data_dir: PathBuf,
    /// Where to write the history (NDJSON).
    pub history: PathBuf,
    /// Write the nodes' traces here (`DIR/node-N.ndjson`), if set.
    pub trace_dir: Option<PathBuf>,
    /// Nodes in the cluster.
    pub nodes: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients work on.
    pub keys: usize,
    /// How long the clients run.
    pub time: Duration,
    /// The faults injected.
    pub nemesis: Nemesis,
    /// Time between the start of one fault and the next; each fault lasts
    /// about half of it and is then healed.
    pub fault_interval: Duration,
    /// How long one operation may take, retries included, before it is
    /// recorded as of unknown outcome.
    pub op_timeout: Duration,
    /// Seeds the choice of operations and faults.
    pub seed: u64,
    /// The nodes' timers.
    pub timing: Timing,
}

impl JepsenOptions {
    /// Defaults: 3 nodes, 5 clients, 5 keys, 60 s, mixed faults every 2 s,
    /// operations given up after 2 s.
    pub fn new(exe: PathBuf, data_dir: PathBuf) -> Self {
        JepsenOptions {
            history: data_dir.join("history.ndjson"),
            exe,
            data_dir,
            trace_dir: None,
            nodes: 3,
            clients: 5,
            keys: 5,
            time: Duration::from_secs(60),
            nemesis: Nemesis::Mixed,
            fault_interval: Duration::from_secs(2),
            op_timeout: Duration::from_secs(2),
            seed: 1,
            timing: Timing::default(),
        }
    }
}

/// What a run did and what the checker found.
#[derive(Debug)]
pub struct JepsenReport {
    /// Operations recorded (the final reads included).
    pub ops: usize,
    /// Operations answered.
    pub ok: usize,
    /// Operations of unknown outcome.
    pub unknown: usize,
    /// Operations answered per second while the clients ran.
    pub ok_per_sec: f64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// The linearizability check.
    pub check: Report,
    /// How long the check took.
    pub check_time: Duration,
    /// Acknowledged writes that no later operation can have overwritten
    /// unseen and whose value no operation returned ([`lost_writes`]).
    pub lost: Vec<u64>,
    /// Where the history is.
    pub history: PathBuf,
}

impl JepsenReport {
    /// Whether the history is linearizable and nothing acknowledged was lost.
    pub fn passed(&self) -> bool {
        self.check.is_linearizable() && self.lost.is_empty()
    }
}

impl std::fmt::Display for JepsenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "ops {} (ok {}, unknown {}), {:.0} ok ops/s; faults: {}",
            self.ops,
            self.ok,
            self.unknown,
            self.ok_per_sec,
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(", ")
            }
        )?;
        writeln!(
            f,
            "history {} checked in {:.2} s",
            self.history.display(),
            self.check_time.as_secs_f64()
        )?;
        write!(f, "{}", self.check)?;
        if !self.lost.is_empty() {
            writeln!(f)?;
            write!(f, "acknowledged writes lost (op ids): {:?}", self.lost)?;
        }
        writeln!(f)?;
        write!(
            f,
            "verdict: {}",
            if self.passed() {
                "linearizable, no acknowledged write lost"
            } else {
                "FAILED"
            }
        )
    }
}

/// Acknowledged puts that were lost for certain: their value appears in no
/// operation's output, although an answered operation on their key began
/// after they were acknowledged, and their key has no write of unknown
/// outcome.
///
/// Every operation returns the key's value (a get its value, a put or a
/// delete the previous one), and values are unique. In any linearization,
/// the operation right after such a put is one of those on its key, and
/// since the answered one comes after the put, some operation does follow
/// it: if all of them are answered, that one returned the put's value.
/// Only a write of unknown outcome (its output unconstrained) could
/// overwrite it unseen. The linearizability check finds these too; this
/// names them.
pub fn lost_writes(history: &[Op]) -> Vec<u64> {
    let mut seen: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut uncertain: BTreeSet<&str> = BTreeSet::new();
    let mut last_answered_invoke: BTreeMap<&str, u64> = BTreeMap::new();
    for op in history {
        let key = key_of(&op.command);
        match &op.outcome {
            Outcome::Ok(output) => {
                if let Some(v) = output {
                    seen.entry(key).or_default().insert(v.as_str());
                }
                let last = last_answered_invoke.entry(key).or_insert(0);
                *last = (*last).max(op.invoke_ns);
            }
            Outcome::Unknown => {
                if !matches!(op.command, KvCommand::Get { .. }) {
                    uncertain.insert(key);
                }
            }
        }
    }
    history
        .iter()
        .filter_map(|op| match (&op.command, &op.outcome) {
            (KvCommand::Put { key, value }, Outcome::Ok(_))
                if !uncertain.contains(key.as_str())
                    && last_answered_invoke
                        .get(key.as_str())
                        .is_some_and(|&t| t > op.complete_ns)
                    && !seen
                        .get(key.as_str())
                        .is_some_and(|s| s.contains(value.as_str())) =>
            {
                Some(op.id)
            }
            _ => None,
        })
        .collect()
}

fn key_of(command: &KvCommand) -> &str {
    match command {
        KvCommand::Put { key, .. } | KvCommand::Get { key } | KvCommand::Delete { key } => key,
    }
}

/// Records operations: stamps them, numbers them, hands them to the
/// history writer.
struct Recorder {
    origin: Instant,
    next_id: AtomicU64,
    tx: mpsc::Sender<Op>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Runs `command` through `client` and records it.
    fn run(&self, process: u64, client: &mut Client, command: KvCommand) {
        let invoke_ns = self.now();
        let result = client.call(command.clone());
        let complete_ns = self.now();
        let outcome = match result {
            Ok(output) => Outcome::Ok(output),
            // No answer, or one that says nothing of the command: it may
            // have been applied.
            Err(ClientError::Timeout { .. } | ClientError::Unexpected { .. }) => Outcome::Unknown,
            // Never for a session with one request at a time; recorded as
            // unknown should it happen.
            Err(ClientError::Superseded { .. }) => Outcome::Unknown,
        };
        let _ = self.tx.send(Op {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            client: process,
            command,
            invoke_ns,
            complete_ns,
            outcome,
        });
    }
}

fn client_options(cluster: &LocalCluster, options: &JepsenOptions) -> ClientOptions {
    let mut o = ClientOptions::new(cluster.peers().clone());
    o.timeout = options.op_timeout;
    o.attempt_timeout = options.op_timeout.min(Duration::from_millis(500));
    o
}

/// Runs the test, printing progress to stderr.
pub fn run(options: &JepsenOptions) -> Result<JepsenReport, String> {
    if options.nodes == 0 || options.clients == 0 || options.keys == 0 {
        return Err("--nodes, --clients and --keys must be at least 1".into());
    }
    let mut copts = ClusterOptions::new(options.exe.clone(), options.data_dir.clone());
    copts.nodes = options.nodes;
    copts.timing = options.timing;
    copts.trace_dir = options.trace_dir.clone();
    copts.test_control = true;
    let (mut cluster, leader) = LocalCluster::start_and_elect(copts)?;
    eprintln!(
        "cluster {} up, leader node {}; {} clients on {} keys for {} s, nemesis {}",
        cluster.peers_arg(),
        leader.id.0,
        options.clients,
        options.keys,
        options.time.as_secs(),
        options.nemesis
    );

    let file = File::create(&options.history)
        .map_err(|e| format!("cannot create {}: {e}", options.history.display()))?;
    let (tx, rx) = mpsc::channel::<Op>();
    let history_path = options.history.clone();
    let writer = thread::spawn(move || -> Result<Vec<Op>, String> {
        let mut out = HistoryWriter::new(BufWriter::new(file));
        let mut ops = Vec::new();
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", history_path.display());
        for op in rx {
            out.write(&op).map_err(fail)?;
            ops.push(op);
        }
        out.flush().map_err(fail)?;
        Ok(ops)
    });
    let recorder = Arc::new(Recorder {
        origin: Instant::now(),
        next_id: AtomicU64::new(0),
        tx,
    });

    let stop = Arc::new(AtomicBool::new(false));
    let keys: Vec<String> = (0..options.keys).map(|k| format!("k{k}")).collect();
    let mut workers = Vec::new();
    for c in 0..options.clients {
        let mut client = Client::new(client_options(&cluster, options));
        let recorder = recorder.clone();
        let stop = stop.clone();
        let keys = keys.clone();
        let mut rng = SplitMix64::new(options.seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9));
        workers.push(thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = keys[rng.range(0, keys.len() as u64 - 1) as usize].clone();
                let command = match rng.range(0, 9) {
                    0..=4 => {
                        n += 1;
                        KvCommand::put(key, format!("c{c}-{n}"))
                    }
                    5..=8 => KvCommand::get(key),
                    _ => KvCommand::Delete { key },
                };
                recorder.run(c as u64, &mut client, command);
            }
        }));
    }

    let started = Instant::now();
    let mut faults = BTreeMap::new();
    let mut rng = SplitMix64::new(options.seed);
    let ids: Vec<NodeId> = cluster.peers().keys().copied().collect();
    let mut control = {
        let mut o = client_options(&cluster, options);
        o.attempt_timeout = Duration::from_secs(2);
        Client::new(o)
    };
    let mut nemesis = || -> Result<(), String> {
        while started.elapsed() < options.time {
            let round = options
                .fault_interval
                .min(options.time.saturating_sub(started.elapsed()));
            match options.nemesis.pick(&mut rng) {
                None => thread::sleep(round),
                Some(kind) => {
                    let fault = Fault::inject(kind, &mut cluster, &mut control, &ids, &mut rng)?;
                    *faults.entry(kind.name()).or_insert(0) += 1;
                    thread::sleep(round / 2);
                    fault.heal(&mut cluster, &mut control)?;
                    thread::sleep(round - round / 2);
                }
            }
        }
        Ok(())
    };
    let injected = nemesis();
    // The clients stop whatever the nemesis did.
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "a client thread panicked")?;
    }
    injected?;
    let ran = started.elapsed();

    // Every node up and connected; then the final reads.
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .ok_or("no leader within 20 s after the faults were healed")?;
    let mut reader = Client::new(client_options(&cluster, options));
    for key in &keys {
        recorder.run(
            options.clients as u64,
            &mut reader,
            KvCommand::get(key.clone()),
        );
    }
    drop(recorder);
    let ops = writer.join().map_err(|_| "the history writer panicked")??;
    drop(cluster);

    let ok = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
        .count();
    let final_ok = ops
        .iter()
        .rev()
        .take(keys.len())
        .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
        .count();
    let checking = Instant::now();
    let report = check::check(&ops);
    let check_time = checking.elapsed();
    Ok(JepsenReport {
        ops: ops.len(),
        ok,
        unknown: ops.len() - ok,
        ok_per_sec: (ok - final_ok) as f64 / ran.as_secs_f64().max(1e-9),
        faults,
        lost: lost_writes(&ops),
        check: report,
        check_time,
        history: options.history.clone(),
    })
}
