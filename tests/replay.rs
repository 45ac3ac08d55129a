//! Trace replay end to end: traces recorded by raft-node (its deterministic
//! harness, and real processes over TCP and disk) replay clean against the
//! model; runtime-layer bugs, drift of a rule, and hand-edited traces are
//! rejected at the first step where they show, naming what disagreed.

#![allow(clippy::unwrap_used)]

use raft_model::replay::{
    self, Divergence, DivergenceKind, ReplayError, ReplayOptions, ReplaySummary,
};
use raft_node::sim::{RuntimeFault, Sim, SimConfig};
use raft_spec::bugs::Bug;
use raft_spec::trace::{Emitted, Header, LogDigest, Step, TraceInput, TraceReader, TraceWriter};
use raft_spec::{
    ClientId, Input, Kv, KvCommand, KvOutput, LogIndex, Message, NodeId, Output, PersistentState,
    Role, Server, Timer,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::BufRead;

fn inputs(traces: &BTreeMap<NodeId, String>) -> Vec<(String, Box<dyn BufRead>)> {
    traces
        .iter()
        .map(|(id, text)| {
            (
                format!("node-{}.ndjson", id.0),
                Box::new(std::io::Cursor::new(text.clone().into_bytes())) as Box<dyn BufRead>,
            )
        })
        .collect()
}

fn sim_traces(sim: &Sim) -> BTreeMap<NodeId, String> {
    sim.traces()
        .into_iter()
        .map(|(id, b)| (id, String::from_utf8(b).unwrap()))
        .collect()
}

/// Replays with the cross-check: every step is also run through the
/// model's `next_state` and the full property predicates, which must agree
/// with the in-place step and the incremental properties.
fn replay_texts(traces: &BTreeMap<NodeId, String>) -> Result<ReplaySummary, ReplayError> {
    let options = ReplayOptions {
        cross_check: true,
        ..ReplayOptions::default()
    };
    replay::replay_with(inputs(traces), &options)
}

fn divergence(r: Result<ReplaySummary, ReplayError>) -> Divergence {
    match r {
        Err(ReplayError::Divergence(d)) => *d,
        Err(ReplayError::Input(e)) => panic!("expected a divergence, got bad input: {e}"),
        Err(e @ ReplayError::Internal(_)) => panic!("expected a divergence, got {e}"),
        Ok(s) => panic!("expected a divergence, the replay was clean: {s}"),
    }
}

fn sim(seed: u64) -> Sim {
    Sim::new(SimConfig {
        seed,
        trace: true,
        ..SimConfig::default()
    })
}

/// A fault schedule: elections, writes from concurrent clients, a leader
/// crash and restart, a partition and heal, a crash before a sync, message
/// loss and duplication.
fn schedule(sim: &mut Sim, seed: u64) {
    sim.run_for_millis(600);
    for c in 0..3 {
        sim.add_client(
            (0..5)
                .map(|i| KvCommand::put(format!("k{c}-{i}"), "v"))
                .collect(),
        );
    }
    sim.run_for_millis(800);
    if let Some(leader) = sim.leader() {
        sim.crash(leader);
        sim.run_for_millis(600);
        sim.restart(leader);
    }
    sim.set_faults(0.05, 0.05);
    sim.add_client(
        (0..5)
            .map(|i| KvCommand::put(format!("p{i}"), "w"))
            .collect(),
    );
    let isolated = NodeId(1 + seed % 3);
    sim.partition(&[isolated]);
    sim.run_for_millis(800);
    sim.heal();
    sim.run_for_millis(600);
    let follower = sim
        .up()
        .into_iter()
        .find(|n| Some(*n) != sim.leader())
        .unwrap();
    sim.crash_before_sync(follower);
    sim.add_client(
        (0..5)
            .map(|i| KvCommand::put(format!("q{i}"), "x"))
            .collect(),
    );
    sim.run_for_millis(800);
    sim.cancel_pending_crashes();
    for id in 1..=3 {
        sim.restart(NodeId(id));
    }
    sim.set_faults(0.0, 0.0);
    sim.run_for_millis(800);
}

#[test]
fn deterministic_harness_traces_replay_clean() {
    for seed in 1..=6 {
        let mut s = sim(seed);
        schedule(&mut s, seed);
        let summary = replay_texts(&sim_traces(&s)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(summary.servers, 3);
        assert!(summary.steps > 200, "seed {seed}: {summary}");
        assert!(summary.committed >= LogIndex(10), "seed {seed}: {summary}");
        assert!(summary.restarts >= 2, "seed {seed}: {summary}");
        assert!(s.stats().crashes >= 2);
    }
}

/// The same schedule with the WAL on real files (written and fdatasynced
/// in a temporary directory): the traces replay clean and are those of the
/// in-memory disk, step for step; a storage fault still shows.
#[test]
fn the_harness_on_real_files_replays_clean_as_in_memory() {
    for seed in 1..=2 {
        let dir = tempfile::tempdir().unwrap();
        let mut on_disk = Sim::new(SimConfig {
            seed,
            trace: true,
            data_dir: Some(dir.path().to_path_buf()),
            ..SimConfig::default()
        });
        schedule(&mut on_disk, seed);
        let traces = sim_traces(&on_disk);
        let summary = replay_texts(&traces).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(summary.restarts >= 2, "seed {seed}: {summary}");
        for id in 1..=3 {
            let wal = dir.path().join(format!("node-{id}.wal"));
            assert!(
                std::fs::metadata(&wal).unwrap().len() > 8,
                "{}",
                wal.display()
            );
        }
        let mut in_memory = sim(seed);
        schedule(&mut in_memory, seed);
        assert_eq!(sim_traces(&in_memory), traces, "seed {seed}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sim::new(SimConfig {
        seed: 11,
        trace: true,
        data_dir: Some(dir.path().to_path_buf()),
        ..SimConfig::default()
    });
    s.inject(RuntimeFault::LoseLastEntryOnRestart);
    s.run_for_millis(600);
    assert_eq!(s.call(KvCommand::put("a", "1"), 2_000), Some(None));
    let leader = s.leader().unwrap();
    s.crash(leader);
    s.restart(leader);
    s.run_for_millis(300);
    let d = divergence(replay_texts(&sim_traces(&s)));
    assert_eq!(d.input, "\"Restart\"", "{d}");
}

/// Many random fault schedules (one seed picks every fault and its time):
/// every trace the harness records replays clean.
#[test]
fn random_fault_schedules_replay_clean() {
    let (mut restarted, mut committed) = (0, 0);
    for seed in 100..130u64 {
        let mut s = sim(seed);
        let mut rng = raft_node::node::SplitMix64::new(seed);
        s.add_client(
            (0..8)
                .map(|i| KvCommand::put(format!("r{i}"), "v"))
                .collect(),
        );
        for _ in 0..12 {
            let node = NodeId(1 + rng.next_u64() % 3);
            match rng.next_u64() % 9 {
                0 => s.crash(node),
                1 => s.restart(node),
                2 => s.crash_before_sync(node),
                3 => s.partition(&[node]),
                4 => s.heal(),
                5 => s.set_faults(0.1, 0.1),
                6 => s.set_faults(0.0, 0.0),
                7 => s.crash_after_sync(node),
                _ => s.add_client(
                    (0..3)
                        .map(|i| KvCommand::put(format!("x{i}"), "y"))
                        .collect(),
                ),
            }
            s.run_for_millis(50 + rng.next_u64() % 400);
        }
        s.heal();
        s.cancel_pending_crashes();
        for id in 1..=3 {
            s.restart(NodeId(id));
        }
        s.run_for_millis(500);
        let summary = replay_texts(&sim_traces(&s)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(summary.steps > 20, "seed {seed}: {summary}");
        restarted += usize::from(summary.restarts > 0);
        committed += usize::from(summary.committed > LogIndex(0));
    }
    assert!(restarted >= 10, "{restarted} schedules restarted a node");
    assert!(committed >= 10, "{committed} schedules committed an entry");
}

fn steps_of(text: &str) -> Vec<Step<KvCommand, KvOutput>> {
    TraceReader::new("t", text.as_bytes())
        .unwrap()
        .steps()
        .unwrap()
}

/// A `kill -9` in either window the recorder leaves between a batch's
/// trace lines and its synced marker: before the batch's fsync (its writes
/// are lost) and after it (its writes are durable). Either way the batch's
/// steps are in the trace without a synced marker. A follower's batch sent
/// nothing: at the restart the recorder cuts its steps if they never became
/// durable and keeps them if they did. A leader's batch of its own entries
/// left before its fsync (its write in parallel): its steps stay, and the
/// replay loses the entries with the crash. Every trace replays clean.
#[test]
fn a_kill_in_either_window_of_the_recorder_leaves_a_trace_that_replays_clean() {
    let (mut cut, mut lost, mut kept) = (0, 0, 0);
    for after_sync in [false, true] {
        for seed in 1..=6u64 {
            let mut s = sim(seed);
            s.run_for_millis(600);
            assert_eq!(
                s.call(KvCommand::put("a", "1"), 2_000),
                Some(None),
                "seed {seed}"
            );
            let leader = s.leader().unwrap();
            // The leader (its batch of client requests) or a follower (its
            // AppendEntries).
            let victim = if seed % 2 == 0 {
                leader
            } else {
                s.up().into_iter().find(|&n| n != leader).unwrap()
            };
            if after_sync {
                s.crash_after_sync(victim);
            } else {
                s.crash_before_sync(victim);
            }
            for c in 0..2 {
                s.add_client(
                    (0..4)
                        .map(|i| KvCommand::put(format!("k{c}-{i}"), "v"))
                        .collect(),
                );
            }
            s.run_for_millis(400);
            assert!(s.node(victim).is_none(), "seed {seed}: the victim crashed");
            let text = sim_traces(&s)[&victim].clone();
            let last_line = text.lines().last().unwrap();
            assert!(
                !last_line.starts_with("{\"synced\""),
                "seed {seed}: the crashed batch has no marker"
            );
            let last_seq = steps_of(&text).last().unwrap().seq;
            s.restart(victim);
            let steps = steps_of(&sim_traces(&s)[&victim]);
            let restart = steps.last().unwrap();
            assert_eq!(restart.input, TraceInput::Restart);
            if after_sync {
                // Durable: nothing cut.
                assert_eq!(restart.seq, last_seq + 1, "seed {seed}");
                kept += 1;
            } else if victim == leader {
                // The leader writes its entries in parallel with sending
                // them: its batch was released before the fsync, so its
                // steps stay, and the restart recovers a log without the
                // entries the crash lost (the replay loses them too).
                assert_eq!(restart.seq, last_seq + 1, "seed {seed}");
                let before = &steps[steps.len() - 2];
                assert!(
                    restart.last_log_index < before.last_log_index,
                    "seed {seed}: the leader lost no entry"
                );
                lost += 1;
            } else {
                // Lost: the batch's persisting steps are cut.
                assert!(restart.seq <= last_seq, "seed {seed}");
                cut += 1;
            }
            s.run_for_millis(600);
            assert!(s.clients_done(), "seed {seed}");
            let summary = replay_texts(&sim_traces(&s))
                .unwrap_or_else(|e| panic!("seed {seed}, after sync {after_sync}: {e}"));
            assert!(summary.restarts >= 1, "{summary}");
            assert!(summary.committed >= LogIndex(9), "seed {seed}: {summary}");
        }
    }
    assert_eq!((cut, lost, kept), (3, 3, 6));
}

// ---- The AppendEntries cap ----------------------------------------------

/// Records a run of the deterministic harness whose nodes send at most one
/// entry per AppendEntries: concurrent clients append entries faster than
/// one message carries them, and a follower cut off while they commit
/// catches up one entry per message after the heal.
fn capped_run(seed: u64) -> BTreeMap<NodeId, String> {
    let mut s = Sim::new(SimConfig {
        seed,
        trace: true,
        replication: raft_spec::Replication {
            max_append_entries: std::num::NonZeroUsize::new(1),
            ..raft_spec::Replication::default()
        },
        ..SimConfig::default()
    });
    s.run_for_millis(600);
    for c in 0..3 {
        s.add_client(
            (0..4)
                .map(|i| KvCommand::put(format!("k{c}-{i}"), "v"))
                .collect(),
        );
    }
    s.run_for_millis(300);
    let leader = s.leader().unwrap();
    let lagging = s.up().into_iter().find(|&n| n != leader).unwrap();
    s.partition(&[lagging]);
    s.add_client(
        (0..4)
            .map(|i| KvCommand::put(format!("p{i}"), "w"))
            .collect(),
    );
    s.run_for_millis(600);
    s.heal();
    s.run_for_millis(800);
    assert!(s.clients_done(), "seed {seed}");
    sim_traces(&s)
}

/// Every AppendEntries a trace records receiving: its number of entries.
fn received_append_entries(text: &str) -> Vec<usize> {
    steps_of(text)
        .into_iter()
        .filter_map(|step| match step.input {
            TraceInput::Step(Input::Message {
                message: Message::AppendEntries(m),
                ..
            }) => Some(m.entries.len()),
            _ => None,
        })
        .collect()
}

#[test]
fn traces_recorded_with_a_cap_of_one_replay_clean_and_need_the_cap() {
    for seed in 1..=4 {
        let traces = capped_run(seed);
        for text in traces.values() {
            let header = TraceReader::new("t", text.as_bytes())
                .unwrap()
                .header()
                .clone();
            assert_eq!(
                header.replication.max_append_entries.map(|n| n.get()),
                Some(1)
            );
            assert!(text.starts_with(&format!(
                r#"{{"format":"raft-trace","version":3,"cluster_id":"sim","servers":[1,2,3],"state_machine":"kv","recorded_by":{},"max_append_entries":1}}"#,
                header.recorded_by.0
            )));
        }
        let sizes: Vec<usize> = traces
            .values()
            .flat_map(|t| received_append_entries(t))
            .collect();
        assert!(sizes.iter().all(|&n| n <= 1), "seed {seed}: {sizes:?}");
        assert!(
            sizes.iter().filter(|&&n| n == 1).count() >= 16,
            "seed {seed}: every entry reached both followers one at a time"
        );
        let summary = replay_texts(&traces).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(summary.committed >= LogIndex(16), "seed {seed}: {summary}");

        // Without the cap in the headers the model's leader sends every
        // entry from the follower's next index on, so the first
        // AppendEntries the leader recorded with fewer entries differs
        // from the model's: the step's outputs disagree, at the leader.
        let uncapped: BTreeMap<NodeId, String> = traces
            .iter()
            .map(|(id, t)| (*id, t.replacen(r#","max_append_entries":1}"#, "}", 1)))
            .collect();
        let d = divergence(replay_texts(&uncapped));
        let DivergenceKind::OutputMismatch { recorded, model } = &d.kind else {
            panic!("seed {seed}: {d}")
        };
        let differing: Vec<(&String, &String)> =
            recorded.iter().zip(model).filter(|(r, m)| r != m).collect();
        assert!(
            !differing.is_empty()
                && differing
                    .iter()
                    .all(|(r, m)| r.starts_with(r#"{"Send""#) && m.starts_with(r#"{"Send""#)),
            "seed {seed}: {d}"
        );

        // Traces that disagree on the cap are bad input, named at the
        // header of the one that differs.
        let mut mixed = traces.clone();
        mixed.insert(NodeId(2), uncapped[&NodeId(2)].clone());
        let Err(ReplayError::Input(e)) = replay_texts(&mixed) else {
            panic!("seed {seed}: mixed caps were accepted")
        };
        assert_eq!(
            e.to_string(),
            "node-2.ndjson:1: replication settings absent (Figure 2's pacing), but node-1.ndjson records {\"max_append_entries\":1}: the traces of one cluster must agree on them"
        );
    }
}

// ---- Runtime-layer bugs -------------------------------------------------

#[test]
fn storage_that_loses_the_last_synced_entry_is_caught_at_the_restart() {
    let mut s = sim(11);
    s.run_for_millis(600);
    assert_eq!(s.call(KvCommand::put("a", "1"), 2_000), Some(None));
    // Both followers hold the entry.
    s.run_for_millis(300);
    let victim = s.up().into_iter().find(|n| Some(*n) != s.leader()).unwrap();
    s.inject(RuntimeFault::LoseLastEntryOnRestart);
    s.crash(victim);
    s.restart(victim);
    s.run_for_millis(300);
    let d = divergence(replay_texts(&sim_traces(&s)));
    assert_eq!(d.server, victim);
    assert_eq!(d.input, "\"Restart\"");
    let DivergenceKind::StateMismatch { fields } = &d.kind else {
        panic!("{d}")
    };
    let last = fields.iter().find(|f| f.0 == "last_log_index").unwrap();
    assert_eq!((last.1.as_str(), last.2.as_str()), ("0", "1"), "{d}");
    assert!(d.to_string().contains("last_log_index"), "{d}");
}

#[test]
fn a_codec_that_zeroes_leader_commit_is_caught_at_the_first_commit_it_hides() {
    let mut s = sim(12);
    s.inject(RuntimeFault::ZeroLeaderCommit);
    s.run_for_millis(600);
    assert_eq!(s.call(KvCommand::put("a", "1"), 2_000), Some(None));
    s.run_for_millis(300);
    let d = divergence(replay_texts(&sim_traces(&s)));
    assert!(d.input.contains("AppendEntries"), "{d}");
    assert!(d.input.contains("\"leader_commit\":0"), "{d}");
    let DivergenceKind::NotEnabled { reason } = &d.kind else {
        panic!("{d}")
    };
    assert!(reason.contains("is not in flight"), "{d}");
    assert!(
        reason.contains("leader_commit (recorded 0, model 1)"),
        "{d}"
    );
}

#[test]
fn a_batch_released_before_its_fsync_is_caught_at_its_release_with_or_without_a_crash() {
    // Without the fault, a crash before the fsync loses the step and
    // everything it would have sent: the traces replay clean.
    let run = |fault: bool, crash: bool| {
        let mut s = sim(13);
        if fault {
            s.inject(RuntimeFault::SendBeforeSync);
        }
        if crash {
            s.crash_before_sync(NodeId(2));
            s.crash_before_sync(NodeId(3));
        }
        s.run_for_millis(400);
        s.cancel_pending_crashes();
        for id in 1..=3 {
            if crash {
                s.restart(NodeId(id));
            }
        }
        s.run_for_millis(600);
        assert_eq!(s.stats().crashes >= 1, crash);
        s
    };
    replay_texts(&sim_traces(&run(false, true))).unwrap();
    replay_texts(&sim_traces(&run(false, false))).unwrap();

    // With it, the released marker of the first batch that persisted
    // something comes before its synced marker: caught there, whether or
    // not a crash ever makes the early release matter.
    for crash in [true, false] {
        let s = run(true, crash);
        let d = divergence(replay_texts(&sim_traces(&s)));
        assert_eq!(d.kind, DivergenceKind::ReleasedBeforeSynced, "{d}");
        assert!(d.input.starts_with("{\"released\":"), "{d}");
        assert!(
            d.recent
                .last()
                .is_some_and(|r| r.contains("ElectionTimeout")),
            "the first such batch is a vote request: {d}"
        );
    }
}

// ---- Drift: the implementation runs a different rule --------------------

/// A minimal deterministic runner of `raft-spec` servers that may run a
/// seeded bug (the implementation "built with one rule changed"), recording
/// traces as raft-node does.
struct Harness {
    servers: BTreeMap<NodeId, Server<Kv>>,
    digests: BTreeMap<NodeId, LogDigest>,
    timers: BTreeMap<NodeId, BTreeSet<Timer>>,
    network: VecDeque<(NodeId, NodeId, Message<KvCommand>)>,
    traces: BTreeMap<NodeId, (TraceWriter<SharedBuf>, SharedBuf, u64)>,
}

#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Harness {
    fn new(n: u64, bug: Option<Bug>) -> Self {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let mut h = Harness {
            servers: BTreeMap::new(),
            digests: BTreeMap::new(),
            timers: BTreeMap::new(),
            network: VecDeque::new(),
            traces: BTreeMap::new(),
        };
        for &id in &ids {
            let buf = SharedBuf::default();
            let header = Header::new("drift", ids.clone(), "kv", id);
            let w = TraceWriter::new(buf.clone(), &header).unwrap();
            h.traces.insert(id, (w, buf, 0));
            let (server, outputs) =
                Server::restart_with_bug(id, ids.clone(), PersistentState::default(), bug);
            h.servers.insert(id, server);
            h.digests.insert(id, LogDigest::default());
            let out = h.carry_out(id, outputs);
            h.record(id, TraceInput::Restart, out);
        }
        h
    }

    /// Carries out a step's outputs; what it emitted, as raft-node records it.
    fn carry_out(
        &mut self,
        id: NodeId,
        outputs: Vec<Output<KvCommand, KvOutput>>,
    ) -> Vec<Emitted<KvOutput>> {
        // The log digest after the step's persist (its first output), which
        // the sends' digests read.
        for o in &outputs {
            if let Output::Persist(p) = o {
                if let Some(w) = &p.log {
                    self.digests.get_mut(&id).unwrap().apply(w);
                }
            }
        }
        let out = Emitted::all(&outputs, &self.digests[&id]);
        for o in outputs {
            match o {
                Output::Persist(_) => {}
                Output::Send { to, message } => self.network.push_back((id, to, message)),
                Output::SetTimer(t) => {
                    self.timers.entry(id).or_default().insert(t);
                }
                Output::CancelTimer(t) => {
                    self.timers.entry(id).or_default().remove(&t);
                }
                Output::Applied { .. } | Output::ClientReply { .. } => {}
            }
        }
        out
    }

    /// Records a step as a batch of its own, as raft-node would: its line,
    /// its synced marker if it persisted anything, its released marker if
    /// it sent or answered anything.
    fn record(&mut self, id: NodeId, input: TraceInput<KvCommand>, out: Vec<Emitted<KvOutput>>) {
        let (w, _, seq) = self.traces.get_mut(&id).unwrap();
        *seq += 1;
        let released: Vec<Emitted<KvOutput>> =
            out.iter().filter(|e| e.is_released()).cloned().collect();
        let persisted = out.iter().any(|e| matches!(e, Emitted::Persist { .. }));
        let step = Step::after(*seq, input, &self.servers[&id], &self.digests[&id]).with_out(out);
        w.write_step(&step).unwrap();
        if persisted {
            w.write_synced(*seq).unwrap();
        }
        if !released.is_empty() {
            w.write_released(*seq, Some(&released)).unwrap();
        }
        w.flush().unwrap();
    }

    fn step(&mut self, id: NodeId, input: Input<KvCommand>) {
        if let Input::ElectionTimeout = input {
            self.timers.entry(id).or_default().remove(&Timer::Election);
        }
        if let Input::HeartbeatTimeout = input {
            self.timers.entry(id).or_default().remove(&Timer::Heartbeat);
        }
        let outputs = self.servers.get_mut(&id).unwrap().step(input.clone());
        let out = self.carry_out(id, outputs);
        self.record(id, input.into(), out);
    }

    fn deliver_all(&mut self) {
        while let Some((from, to, message)) = self.network.pop_front() {
            self.step(to, Input::Message { from, message });
        }
    }

    fn traces(&self) -> BTreeMap<NodeId, String> {
        self.traces
            .iter()
            .map(|(id, (_, buf, _))| {
                (
                    *id,
                    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap(),
                )
            })
            .collect()
    }

    fn leader(&self) -> Option<NodeId> {
        self.servers
            .values()
            .find(|s| s.role() == Role::Leader)
            .map(|s| s.id)
    }
}

/// An election, a client write and its replication in a cluster of `n`.
fn drive(h: &mut Harness) {
    h.step(NodeId(1), Input::ElectionTimeout);
    h.deliver_all();
    let leader = h.leader().unwrap();
    h.step(
        leader,
        Input::ClientRequest {
            client_id: ClientId(5),
            request_no: 1,
            command: KvCommand::put("a", "1"),
            ack: raft_spec::Ack::Applied,
        },
    );
    h.step(leader, Input::HeartbeatTimeout);
    h.deliver_all();
    h.step(leader, Input::HeartbeatTimeout);
    h.deliver_all();
}

#[test]
fn the_drift_harness_replays_clean_with_the_correct_rules() {
    let mut h = Harness::new(4, None);
    drive(&mut h);
    let s = replay_texts(&h.traces()).unwrap();
    assert_eq!(s.committed, LogIndex(1));
    assert_eq!(s.servers, 4);
}

#[test]
fn an_implementation_with_a_changed_rule_is_caught_where_it_drifts() {
    // The implementation counts a majority as `count >= N / 2` (seeded bug
    // even-quorum); the model keeps `count > N / 2`. In a cluster of four,
    // the candidate becomes leader on its second vote, one too early.
    let mut h = Harness::new(4, Some(Bug::EvenQuorum));
    drive(&mut h);
    let d = divergence(replay_texts(&h.traces()));
    assert_eq!(d.server, NodeId(1));
    assert!(d.input.contains("RequestVoteResponse"), "{d}");
    let DivergenceKind::StateMismatch { fields } = &d.kind else {
        panic!("{d}")
    };
    assert!(
        fields.contains(&("role".into(), "Leader".into(), "Candidate".into())),
        "{d}"
    );
}

// ---- Hand-edited traces --------------------------------------------------

fn clean_traces() -> BTreeMap<NodeId, String> {
    let mut h = Harness::new(3, None);
    drive(&mut h);
    let t = h.traces();
    replay_texts(&t).unwrap();
    t
}

fn edit_line(text: &str, line: usize, f: impl Fn(&str) -> String) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == line { f(l) } else { l.to_string() })
        .map(|l| l + "\n")
        .collect()
}

#[test]
fn a_changed_term_is_rejected() {
    let mut t = clean_traces();
    // Node 1's line 3: its ElectionTimeout made it candidate of term 1.
    let text = edit_line(&t[&NodeId(1)], 3, |l| {
        assert!(l.contains("ElectionTimeout"), "{l}");
        l.replace("\"term\":1", "\"term\":2")
    });
    t.insert(NodeId(1), text);
    let d = divergence(replay_texts(&t));
    assert_eq!((d.file.as_str(), d.line), ("node-1.ndjson", 3));
    assert_eq!(
        d.kind,
        DivergenceKind::StateMismatch {
            fields: vec![("term".into(), "2".into(), "1".into())]
        },
        "{d}"
    );
}

/// A trace's header line, then its steps, each with the marker lines that
/// follow it (a hand edit moves or removes a step with its markers).
fn steps_with_markers(text: &str) -> (String, Vec<Vec<String>>) {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let mut steps: Vec<Vec<String>> = Vec::new();
    for l in lines {
        match steps.last_mut() {
            Some(step) if l.starts_with("{\"synced\"") || l.starts_with("{\"released\"") => {
                step.push(l.to_string())
            }
            _ => steps.push(vec![l.to_string()]),
        }
    }
    (header, steps)
}

fn join_steps(header: &str, steps: &[Vec<String>]) -> String {
    let mut out = format!("{header}\n");
    for l in steps.iter().flatten() {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[test]
fn two_swapped_steps_are_rejected() {
    let mut t = clean_traces();
    let (header, mut steps) = steps_with_markers(&t[&NodeId(2)]);
    steps.swap(1, 2);
    t.insert(NodeId(2), join_steps(&header, &steps));
    let d = divergence(replay_texts(&t));
    assert_eq!((d.file.as_str(), d.line), ("node-2.ndjson", 3));
    assert_eq!(
        d.kind,
        DivergenceKind::OutOfSequence {
            expected: 2,
            found: 3
        }
    );
}

#[test]
fn a_removed_step_is_rejected() {
    let mut t = clean_traces();
    let (header, mut steps) = steps_with_markers(&t[&NodeId(3)]);
    steps.remove(1);
    t.insert(NodeId(3), join_steps(&header, &steps));
    let d = divergence(replay_texts(&t));
    assert_eq!(d.file, "node-3.ndjson");
    assert!(d.to_string().contains("a step is missing"), "{d}");

    // Renumbering the steps after it (and their markers) does not hide it:
    // the next step's state is not what the model reaches.
    for (i, lines) in steps.iter_mut().enumerate().skip(1) {
        let (old, new) = (i as u64 + 2, i as u64 + 1);
        for l in lines.iter_mut() {
            *l = l
                .replacen(&format!("\"seq\":{old},"), &format!("\"seq\":{new},"), 1)
                .replacen(
                    &format!("{{\"synced\":{old}}}"),
                    &format!("{{\"synced\":{new}}}"),
                    1,
                )
                .replacen(
                    &format!("{{\"released\":{old},"),
                    &format!("{{\"released\":{new},"),
                    1,
                );
        }
    }
    t.insert(NodeId(3), join_steps(&header, &steps));
    let d = divergence(replay_texts(&t));
    assert_eq!(d.file, "node-3.ndjson");
    assert!(
        matches!(
            d.kind,
            DivergenceKind::StateMismatch { .. }
                | DivergenceKind::NotEnabled { .. }
                | DivergenceKind::OutputMismatch { .. }
        ),
        "{d}"
    );
}

#[test]
fn an_altered_entry_is_rejected() {
    let mut t = clean_traces();
    // A follower's trace: the AppendEntries that carried the entry now
    // carries another value.
    let text = t[&NodeId(2)].replace("\"value\":\"1\"", "\"value\":\"2\"");
    assert_ne!(text, t[&NodeId(2)]);
    t.insert(NodeId(2), text);
    let d = divergence(replay_texts(&t));
    assert_eq!(d.file, "node-2.ndjson");
    let DivergenceKind::NotEnabled { reason } = &d.kind else {
        panic!("{d}")
    };
    assert!(reason.contains("AppendEntries from server"), "{d}");
    assert!(reason.contains("differs in entries"), "{d}");
}

// ---- Hand-edited outputs and releases (trace version 3) ------------------

/// The index (in `steps_with_markers`) of the first step of `text` whose
/// line contains `what`.
fn step_index(steps: &[Vec<String>], what: &str) -> usize {
    steps.iter().position(|s| s[0].contains(what)).unwrap()
}

#[test]
fn an_altered_output_is_rejected_at_its_step() {
    let mut t = clean_traces();
    let (header, mut steps) = steps_with_markers(&t[&NodeId(1)]);
    // Node 1's election: it records a vote request to node 2 that differs
    // from the one its server produced (and released as produced).
    let i = step_index(&steps, "ElectionTimeout");
    let digest = steps[i][0]
        .split("\"digest\":\"")
        .nth(2)
        .and_then(|d| d.get(..16))
        .unwrap()
        .to_string();
    steps[i][0] = steps[i][0].replacen(&digest, "0123456789abcdef", 1);
    t.insert(NodeId(1), join_steps(&header, &steps));
    let d = divergence(replay_texts(&t));
    assert_eq!((d.file.as_str(), d.line), ("node-1.ndjson", 3), "{d}");
    let DivergenceKind::OutputMismatch { recorded, model } = &d.kind else {
        panic!("{d}")
    };
    assert!(
        recorded.iter().any(|r| r.contains("0123456789abcdef")),
        "{d}"
    );
    assert!(model.iter().any(|m| m.contains(&digest)), "{d}");
}

#[test]
fn a_release_before_the_batch_is_durable_is_rejected() {
    let mut t = clean_traces();
    let (header, mut steps) = steps_with_markers(&t[&NodeId(1)]);
    let i = step_index(&steps, "ElectionTimeout");
    // Its markers: synced, then released. Swapped: the vote requests left
    // before the vote for itself was durable.
    assert_eq!(steps[i].len(), 3, "{:?}", steps[i]);
    steps[i].swap(1, 2);
    t.insert(NodeId(1), join_steps(&header, &steps));
    let d = divergence(replay_texts(&t));
    assert_eq!((d.file.as_str(), d.line), ("node-1.ndjson", 4), "{d}");
    assert_eq!(d.kind, DivergenceKind::ReleasedBeforeSynced, "{d}");
}

#[test]
fn a_release_that_adds_drops_or_alters_an_item_is_rejected() {
    let clean = clean_traces();
    let leader = NodeId(1);
    let (header, steps) = steps_with_markers(&clean[&leader]);
    let write = step_index(&steps, "ClientRequest");
    let release_line = |steps: &[Vec<String>], i: usize| {
        steps[i]
            .iter()
            .position(|l| l.starts_with("{\"released\""))
            .unwrap()
    };
    let reply = r#"{"Reply":{"client_id":5,"request_no":1,"reply":{"Ok":null}}}"#;
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            // A write acknowledged when it is appended, before it commits.
            "reply before commit",
            Box::new(move |l: &str| l.replacen("\"out\":[", &format!("\"out\":[{reply},"), 1)),
            "which the batch's steps did not emit",
        ),
        (
            // One of the AppendEntries of the write held back.
            "a send dropped",
            Box::new(|l: &str| {
                let start = l.find("{\"Send\"").unwrap();
                let end = start + l[start..].find("}}").unwrap() + 2;
                let rest = l[end..].strip_prefix(',').unwrap_or(&l[end..]);
                format!("{}{rest}", &l[..start])
            }),
            "it does not release",
        ),
        (
            // A send altered on its way out.
            "a send altered",
            Box::new(|l: &str| {
                let at = l.find("\"digest\":\"").unwrap() + 10;
                format!("{}fedcba9876543210{}", &l[..at], &l[at + 16..])
            }),
            "did not emit",
        ),
    ];
    for (name, edit, expected) in cases {
        let mut steps = steps.clone();
        let m = release_line(&steps, write);
        steps[write][m] = edit(&steps[write][m]);
        let mut t = clean.clone();
        t.insert(leader, join_steps(&header, &steps));
        let d = divergence(replay_texts(&t));
        let DivergenceKind::ReleaseMismatch { reason } = &d.kind else {
            panic!("{name}: {d}")
        };
        assert!(reason.contains(expected), "{name}: {d}");
        assert_eq!(d.file, "node-1.ndjson", "{name}: {d}");
        assert!(d.input.starts_with("{\"released\":"), "{name}: {d}");
    }
}

#[test]
fn a_message_its_sender_never_released_is_rejected() {
    let mut t = clean_traces();
    // Node 1's trace ends with the line of its election step: the vote
    // requests were produced (the model has them in flight) but never let
    // out, yet nodes 2 and 3 record receiving them.
    let (header, steps) = steps_with_markers(&t[&NodeId(1)]);
    let i = step_index(&steps, "ElectionTimeout");
    let mut cut = steps[..=i].to_vec();
    cut[i].truncate(1);
    t.insert(NodeId(1), join_steps(&header, &cut));
    let d = divergence(replay_texts(&t));
    let DivergenceKind::NotEnabled { reason } = &d.kind else {
        panic!("{d}")
    };
    assert!(
        reason.contains("RequestVote from server 1") && reason.contains("was never released"),
        "{d}"
    );
}

// ---- Real processes ---------------------------------------------------------

/// The `raft-node` binary next to this test's own directory
/// (`target/<profile>/raft-node`), which `cargo test --workspace` builds.
fn raft_node_exe() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = profile_dir.join(format!("raft-node{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p raft-node; cargo test --workspace does)",
        bin.display()
    );
    bin
}

#[test]
fn a_real_cluster_with_a_leader_killed_and_restarted_replays_clean() {
    use raft_node::cluster::{ClusterOptions, LocalCluster};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let mut o = ClusterOptions::new(raft_node_exe(), dir.path().join("data"));
    o.trace_dir = Some(dir.path().join("traces"));
    let mut c = LocalCluster::start(o).unwrap();
    let leader = c.wait_for_leader(Duration::from_secs(10)).unwrap();
    let mut client = c.client();
    for i in 0..10 {
        assert_eq!(client.call(KvCommand::put(format!("k{i}"), "v")), Ok(None));
    }
    c.kill(leader.id).unwrap();
    let next = c.wait_for_leader(Duration::from_secs(10)).unwrap();
    assert_ne!(next.id, leader.id);
    for i in 10..20 {
        assert_eq!(client.call(KvCommand::put(format!("k{i}"), "w")), Ok(None));
    }
    c.start_node(leader.id).unwrap();
    let start = Instant::now();
    while !c
        .status()
        .into_iter()
        .any(|(id, s)| id == leader.id && s.is_ok_and(|s| s.commit_index >= LogIndex(20)))
    {
        assert!(start.elapsed() < Duration::from_secs(10), "catch-up");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    let files: Vec<_> = (1..=3)
        .map(|i| dir.path().join(format!("traces/node-{i}.ndjson")))
        .collect();
    let summary = replay::replay_files(&files).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.servers, 3);
    assert!(summary.committed >= LogIndex(20), "{summary}");
    assert!(summary.restarts >= 1, "{summary}");
    assert!(summary.max_term.0 >= 2, "{summary}");
}

/// A real cluster under a fault schedule: concurrent clients, a follower
/// killed and restarted, the leader cut off in a minority partition and
/// healed, then the leader killed with SIGKILL and restarted, with writes
/// throughout. The three nodes' traces replay clean, with the cross-check.
///
/// The kills land anywhere in a batch, including between its trace lines
/// and its fsync or between the fsync and the synced marker: the recorder
/// reconciles the trace at restart (`raft_node::node`, "The trace across a
/// crash"). Before the recorder wrote the lines before the fsync, about one
/// run in twenty failed here at the killed follower's `Restart`.
#[test]
fn a_real_cluster_under_a_fault_schedule_replays_clean() {
    use raft_node::client::ClientOptions;
    use raft_node::cluster::{ClusterOptions, LocalCluster};
    use raft_node::wire::StatusInfo;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let mut o = ClusterOptions::new(raft_node_exe(), dir.path().join("data"));
    o.trace_dir = Some(dir.path().join("traces"));
    o.test_control = true;
    let mut c = LocalCluster::start(o).unwrap();
    let wait_leader = |c: &LocalCluster, not: Option<NodeId>| -> StatusInfo {
        let start = Instant::now();
        loop {
            let leader = c.wait_for_leader(Duration::from_secs(10)).unwrap();
            if Some(leader.id) != not {
                return leader;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "a new leader");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Writes from `clients` concurrent clients, `each` writes apiece.
    let concurrent_writes = |c: &LocalCluster, round: &str, clients: usize, each: usize| {
        std::thread::scope(|scope| {
            for t in 0..clients {
                let mut client = c.client();
                scope.spawn(move || {
                    for i in 0..each {
                        let key = format!("{round}-{t}-{i}");
                        assert_eq!(client.call(KvCommand::put(&key, "v")), Ok(None), "{key}");
                    }
                });
            }
        });
    };
    let mut written = 0;
    let leader = wait_leader(&c, None);
    concurrent_writes(&c, "a", 4, 5);
    written += 20;

    // A follower killed and restarted; it catches up.
    let follower = c.peers().keys().copied().find(|&n| n != leader.id).unwrap();
    c.kill(follower).unwrap();
    concurrent_writes(&c, "b", 2, 5);
    written += 10;
    c.start_node(follower).unwrap();
    let start = Instant::now();
    while !c.status().into_iter().all(|(_, s)| s.is_ok()) {
        assert!(start.elapsed() < Duration::from_secs(10), "restart");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The leader cut off in a minority; the majority elects and serves; heal.
    let leader = wait_leader(&c, None);
    let others: Vec<NodeId> = c
        .peers()
        .keys()
        .copied()
        .filter(|&n| n != leader.id)
        .collect();
    let mut ctl = c.client();
    ctl.partition(leader.id, &others).unwrap();
    for &n in &others {
        ctl.partition(n, &[leader.id]).unwrap();
    }
    let new = wait_leader(&c, Some(leader.id));
    let mut client = c.client();
    client.prefer(new.id);
    for i in 0..5 {
        assert_eq!(client.call(KvCommand::put(format!("c-{i}"), "v")), Ok(None));
    }
    written += 5;
    let mut minority = ClientOptions::new(
        [(leader.id, c.peers()[&leader.id].clone())]
            .into_iter()
            .collect(),
    );
    minority.timeout = Duration::from_millis(500);
    let _ = raft_node::client::Client::new(minority).call(KvCommand::put("minority", "lost"));
    for n in c.peers().keys() {
        ctl.partition(*n, &[]).unwrap();
    }

    // The leader killed with SIGKILL and restarted, writes in between.
    let leader = wait_leader(&c, None);
    c.kill(leader.id).unwrap();
    wait_leader(&c, Some(leader.id));
    concurrent_writes(&c, "d", 3, 5);
    written += 15;
    c.start_node(leader.id).unwrap();
    let start = Instant::now();
    while !c
        .status()
        .into_iter()
        .all(|(_, s)| s.is_ok_and(|s| s.commit_index >= LogIndex(written)))
    {
        assert!(start.elapsed() < Duration::from_secs(10), "catch-up");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);

    let traces: BTreeMap<NodeId, String> = (1..=3)
        .map(|i| {
            let path = dir.path().join(format!("traces/node-{i}.ndjson"));
            (NodeId(i), std::fs::read_to_string(path).unwrap())
        })
        .collect();
    // raft-node's transport keeps each link in order, and says so: the
    // replay forgets what the links can no longer deliver.
    for text in traces.values() {
        let header = TraceReader::new(String::from("t"), text.as_bytes()).unwrap();
        assert!(header.header().fifo_links, "{:?}", header.header());
    }
    let summary = replay_texts(&traces).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.servers, 3);
    assert!(summary.committed >= LogIndex(written), "{summary}");
    assert!(summary.restarts >= 2, "{summary}");
    assert!(summary.max_term.0 >= 3, "{summary}");
}

/// The simulated network reorders and duplicates, and its traces say so
/// (no `fifo_links`). The same traces with a header claiming links in
/// order diverge: a message delivered after a later one on its link (or a
/// second time) is out of flight by then. A negative control of the replay's
/// in-order pruning.
#[test]
fn a_trace_claiming_links_in_order_over_a_reordering_network_diverges() {
    let mut diverged = 0;
    for seed in 1..=4 {
        let mut s = sim(seed);
        schedule(&mut s, seed);
        let traces = sim_traces(&s);
        assert!(replay_texts(&traces).is_ok(), "seed {seed}");
        let claimed: BTreeMap<NodeId, String> = traces
            .iter()
            .map(|(id, text)| {
                let (header, rest) = text.split_once('\n').unwrap();
                assert!(!header.contains("fifo_links"), "{header}");
                let header = format!("{},\"fifo_links\":true}}", header.trim_end_matches('}'));
                (*id, format!("{header}\n{rest}"))
            })
            .collect();
        if let Err(ReplayError::Divergence(d)) = replay_texts(&claimed) {
            assert!(d.to_string().contains("not in flight"), "seed {seed}: {d}");
            diverged += 1;
        }
    }
    assert!(diverged >= 1, "no seed reordered a link");
}

// ---- Throughput ---------------------------------------------------------------

/// Records a trace of at least `steps` steps in the deterministic harness:
/// an idle cluster (heartbeats only) or one under writes.
fn long_run(steps: u64, writes: bool) -> BTreeMap<NodeId, String> {
    let mut s = sim(42);
    s.run_for_millis(500);
    let total = |s: &Sim| -> u64 {
        s.up()
            .into_iter()
            .filter_map(|n| s.node(n))
            .map(|n| n.counters().steps)
            .sum()
    };
    let mut round = 0;
    while total(&s) < steps {
        if writes {
            s.add_client(
                (0..10)
                    .map(|i| KvCommand::put(format!("k{}", (round * 10 + i) % 100), "v"))
                    .collect(),
            );
        }
        s.run_for_millis(200);
        round += 1;
    }
    sim_traces(&s)
}

/// Replay throughput on traces of 10 k, 100 k and 1 M steps of an idle
/// cluster and of one under continuous writes, replayed from files as
/// `raft-model replay` does (the traces are written to
/// `REPLAY_BENCH_DIR`, default a temporary directory, as
/// `idle-100000/node-1.ndjson`, ..., and dropped from memory first): the
/// median of `REPLAY_BENCH_RUNS` replays (default 3) of each trace, and the
/// ratio of the 1 M time to the 100 k one. `REPLAY_BENCH_MAX` stops
/// earlier, `REPLAY_BENCH_WRITES=0` skips the writes.
#[test]
#[ignore = "benchmark: cargo test --release --test replay -- --ignored --nocapture replay_throughput"]
fn replay_throughput() {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let max = env("REPLAY_BENCH_MAX", 1_000_000);
    let runs = env("REPLAY_BENCH_RUNS", 3).max(1);
    let with_writes = env("REPLAY_BENCH_WRITES", 1) != 0;
    let dir = std::env::var("REPLAY_BENCH_DIR").map_or_else(
        |_| std::env::temp_dir().join(format!("raft-replay-bench-{}", std::process::id())),
        std::path::PathBuf::from,
    );
    for writes in [false, true] {
        if writes && !with_writes {
            continue;
        }
        let kind = if writes { "writes" } else { "idle" };
        let mut times = BTreeMap::new();
        for size in [10_000u64, 100_000, 1_000_000] {
            if size > max {
                continue;
            }
            let t0 = std::time::Instant::now();
            let traces = long_run(size, writes);
            eprintln!("recorded {size} steps in {:?}", t0.elapsed());
            let d = dir.join(format!("{kind}-{size}"));
            std::fs::create_dir_all(&d).unwrap();
            let files: Vec<std::path::PathBuf> = traces
                .iter()
                .map(|(id, text)| {
                    let f = d.join(format!("node-{}.ndjson", id.0));
                    std::fs::write(&f, text).unwrap();
                    f
                })
                .collect();
            drop(traces);
            let mut samples: Vec<ReplaySummary> = (0..runs)
                .map(|_| replay::replay_files(&files).unwrap_or_else(|e| panic!("{e}")))
                .collect();
            samples.sort_by_key(|s| s.elapsed);
            let s = &samples[samples.len() / 2];
            times.insert(size, s.elapsed.as_secs_f64());
            println!(
                "{kind:<7} {:>8} steps, {:>6} entries committed: {:>8.3} s, {:>9.0} steps/s (median of {runs})",
                s.steps,
                s.committed.0,
                s.elapsed.as_secs_f64(),
                s.steps_per_sec()
            );
        }
        if let (Some(a), Some(b)) = (times.get(&100_000), times.get(&1_000_000)) {
            println!("{kind:<7} 1 M / 100 k time ratio: {:.1}", b / a);
        }
    }
    if std::env::var("REPLAY_BENCH_DIR").is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The Explorer window of `raft-model replay --explore`: following its
/// path from the state K steps back (crashes, recoveries and client
/// requests included) lands on the replayed state, every step is an action
/// the Explorer offers (Stateright's own `Path::from_actions` and `encode`
/// agree with the printed path), and the window's model is the replay
/// model started there.
#[test]
fn the_explorer_window_follows_the_replayed_steps() {
    use raft_model::replay::ReplayAction;
    use stateright::Model;
    let mut s = sim(1);
    schedule(&mut s, 1);
    let dir = std::env::temp_dir().join(format!("raft-explorer-window-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<std::path::PathBuf> = sim_traces(&s)
        .iter()
        .map(|(id, text)| {
            let p = dir.join(format!("node-{}.ndjson", id.0));
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect();
    let summary = replay::replay_files(&files).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.restarts >= 2, "{summary}");
    let (mut crashes, mut recoveries, mut requests) = (0, 0, 0);
    for end in [summary.steps, summary.steps / 2] {
        let here = replay::context_files(&files, end, 0, None).unwrap();
        for k in [10, end] {
            let ctx = replay::context_files(&files, end, k, None).unwrap();
            assert_eq!((ctx.start, ctx.end), (end - k, end));
            let path = ctx.path().expect("the model takes the window's steps");
            assert_eq!(path.encode(&ctx.model), ctx.encoded_path());
            assert_eq!(path.last_state(), ctx.last_state());
            // The same servers, timers and storage; the window's network
            // may hold more (nothing is forgotten in it).
            let (a, b) = (ctx.last_state(), here.last_state());
            let slots = |c: &replay::Cluster| c.slots().map(|(_, s)| s.clone()).collect::<Vec<_>>();
            assert_eq!(slots(a), slots(b), "end {end}, context {k}");
            for (_, action) in path.into_vec() {
                match action {
                    Some(ReplayAction::Crash(_)) => crashes += 1,
                    Some(ReplayAction::Recover(_)) => recoveries += 1,
                    Some(ReplayAction::Deliver(replay::Envelope {
                        msg: replay::ReplayMsg::Request { .. },
                        ..
                    })) => requests += 1,
                    _ => {}
                }
            }
            let init = ctx.model.init_states();
            assert_eq!(init.len(), 1);
        }
    }
    assert!(crashes >= 2 && recoveries >= 2, "{crashes} {recoveries}");
    assert!(requests >= 5, "{requests}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every way to read and write, on real processes over TCP: writes
/// answered at each acknowledgement level and reads through the log and by
/// ReadIndex return what was written, and the traces, with the reads the
/// nodes served without the log, replay clean (the history checks each such
/// read against the committed log).
#[test]
fn a_real_cluster_serves_every_level_and_read_mode_and_replays_clean() {
    use raft_node::client::Answer;
    use raft_node::cluster::{ClusterOptions, LocalCluster};
    use raft_spec::{Ack, ReadMode};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut o = ClusterOptions::new(raft_node_exe(), dir.path().join("data"));
    o.trace_dir = Some(dir.path().join("traces"));
    let c = LocalCluster::start(o).unwrap();
    let leader = c.wait_for_leader(Duration::from_secs(10)).unwrap();
    let mut client = c.client();
    // Follower reads at the leader's read index go to a follower.
    let follower = c.peers().keys().copied().find(|&n| n != leader.id).unwrap();
    for (i, ack) in Ack::ALL.into_iter().enumerate() {
        let key = format!("k{i}");
        let answer = client
            .call_as(KvCommand::put(&key, "v"), ack, None)
            .unwrap();
        match (ack, answer) {
            // A write applied in the step that reaches its level is
            // answered with its result first (docs/consistency.md).
            (_, Answer::Done(previous)) => assert_eq!(previous, None),
            // From level 4 on the answer carries the result.
            (Ack::Applied | Ack::QuorumApplied | Ack::AllApplied, other) => {
                panic!("{ack:?}: {other:?}")
            }
            (_, Answer::Accepted { index, .. }) => assert!(index > LogIndex(0)),
        }
        for read in [
            None,
            Some(ReadMode::ReadIndex),
            Some(ReadMode::Lease),
            Some(ReadMode::FollowerReadIndex),
        ] {
            // An early acknowledgement comes before the apply: read until
            // the write shows, through the log or by read index.
            let mut value = None;
            for _ in 0..100 {
                let got = match read {
                    Some(ReadMode::FollowerReadIndex) => {
                        let mut reader = c.client();
                        reader.prefer(follower);
                        let got = reader.call_as(KvCommand::get(&key), Ack::Applied, read);
                        if got.is_ok() {
                            assert_eq!(reader.leader(), Some(follower), "served elsewhere");
                        }
                        got
                    }
                    _ => client.call_as(KvCommand::get(&key), Ack::Applied, read),
                };
                if let Ok(Answer::Done(Some(v))) = got {
                    value = Some(v);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(value.as_deref(), Some("v"), "{ack:?} {read:?}");
        }
    }
    drop(c);
    let files: Vec<_> = (1..=3)
        .map(|i| dir.path().join(format!("traces/node-{i}.ndjson")))
        .collect();
    let summary = replay::replay_files(&files).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.committed >= LogIndex(6), "{summary}");
}

/// The leader cut off in a minority, on real processes: the majority elects
/// a new leader, which takes a write. A ReadIndex read sent to the old
/// leader first cannot be confirmed there (no majority answers its round),
/// so the client moves on and reads the new value; so does a lease read,
/// since the old leader's lease ended before the majority's quiet periods
/// did (and CheckQuorum steps the old leader down); a follower read served by
/// the old leader returns the old value: stale, as the model checker's
/// counterexample says follower reads may be.
#[test]
fn a_leader_cut_off_serves_no_stale_read_index_or_lease_read_but_a_stale_follower_read() {
    use raft_node::client::{Answer, ClientOptions};
    use raft_node::cluster::{ClusterOptions, LocalCluster};
    use raft_spec::{Ack, ReadMode};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let mut o = ClusterOptions::new(raft_node_exe(), dir.path().join("data"));
    o.test_control = true;
    let c = LocalCluster::start(o).unwrap();
    let old = c.wait_for_leader(Duration::from_secs(10)).unwrap();
    let mut client = c.client();
    assert_eq!(client.call(KvCommand::put("k", "v1")), Ok(None));

    let others: Vec<NodeId> = c.peers().keys().copied().filter(|&n| n != old.id).collect();
    let mut ctl = c.client();
    ctl.partition(old.id, &others).unwrap();
    for &n in &others {
        ctl.partition(n, &[old.id]).unwrap();
    }
    let start = Instant::now();
    let new = loop {
        let leader = c.wait_for_leader(Duration::from_secs(10)).unwrap();
        if leader.id != old.id {
            break leader;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "a new leader");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut client = c.client();
    client.prefer(new.id);
    assert_eq!(
        client.call(KvCommand::put("k", "v2")),
        Ok(Some("v1".into()))
    );

    let mut options = ClientOptions::new(c.peers().clone());
    options.attempt_timeout = Duration::from_millis(500);
    let mut reader = raft_node::client::Client::new(options.clone());
    reader.prefer(old.id);
    let read = reader.call_as(KvCommand::get("k"), Ack::Applied, Some(ReadMode::ReadIndex));
    assert_eq!(read, Ok(Answer::Done(Some("v2".into()))));
    assert_ne!(reader.leader(), Some(old.id));

    // Its lease ran out before the majority could elect a leader.
    let mut leased = raft_node::client::Client::new(options.clone());
    leased.prefer(old.id);
    let read = leased.call_as(KvCommand::get("k"), Ack::Applied, Some(ReadMode::Lease));
    assert_eq!(read, Ok(Answer::Done(Some("v2".into()))));
    assert_ne!(leased.leader(), Some(old.id));

    // A follower of the majority reads at the new leader's read index; the
    // old leader asked the same serves it as a ReadIndex read, which finds
    // no majority, so the client moves on.
    let follower = others.iter().copied().find(|&n| n != new.id).unwrap();
    for first in [follower, old.id] {
        let mut forwarded = raft_node::client::Client::new(options.clone());
        forwarded.prefer(first);
        let read = forwarded.call_as(
            KvCommand::get("k"),
            Ack::Applied,
            Some(ReadMode::FollowerReadIndex),
        );
        assert_eq!(read, Ok(Answer::Done(Some("v2".into()))), "first {first:?}");
    }

    let mut stale = raft_node::client::Client::new(options);
    stale.prefer(old.id);
    let read = stale.call_as(KvCommand::get("k"), Ack::Applied, Some(ReadMode::Follower));
    assert_eq!(read, Ok(Answer::Done(Some("v1".into()))));
}
