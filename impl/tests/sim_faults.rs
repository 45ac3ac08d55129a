//! Property test over the deterministic harness: under random fault
//! schedules (crashes, crashes before and right after an fsync, restarts,
//! partitions, loss, duplication), once the faults heal every node converges and no
//! acknowledged write is lost.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use raft_node::sim::{Sim, SimConfig};
use raft_spec::{KvCommand, NodeId};

#[derive(Clone, Debug)]
enum Fault {
    Crash(u64),
    CrashBeforeSync(u64),
    CrashAfterSync(u64),
    Restart(u64),
    Isolate(u64),
    Heal,
    Lossy(u8),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (1u64..=3).prop_map(Fault::Crash),
        (1u64..=3).prop_map(Fault::CrashBeforeSync),
        (1u64..=3).prop_map(Fault::CrashAfterSync),
        (1u64..=3).prop_map(Fault::Restart),
        (1u64..=3).prop_map(Fault::Isolate),
        Just(Fault::Heal),
        (0u8..=30).prop_map(Fault::Lossy),
    ]
}

fn puts(client: usize, n: usize) -> Vec<KvCommand> {
    (0..n)
        .map(|i| KvCommand::Put {
            key: format!("c{client}-{i}"),
            value: format!("v{i}").into(),
        })
        .collect()
}

fn run(seed: u64, faults: &[(u64, Fault)]) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(SimConfig {
        seed,
        duplicate: 0.05,
        ..SimConfig::default()
    });
    sim.add_client(puts(0, 150));
    sim.add_client(puts(1, 150));
    for (gap, f) in faults {
        sim.run_for_millis(*gap);
        match f {
            Fault::Crash(n) => sim.crash(NodeId(*n)),
            Fault::CrashBeforeSync(n) => sim.crash_before_sync(NodeId(*n)),
            Fault::CrashAfterSync(n) => sim.crash_after_sync(NodeId(*n)),
            Fault::Restart(n) => sim.restart(NodeId(*n)),
            Fault::Isolate(n) => sim.partition(&[NodeId(*n)]),
            Fault::Heal => sim.heal(),
            Fault::Lossy(p) => sim.set_faults(f64::from(*p) / 100.0, 0.05),
        }
    }
    // Heal everything, restart every node, let the clients finish.
    sim.heal();
    sim.set_faults(0.0, 0.0);
    sim.cancel_pending_crashes();
    for n in 1..=3 {
        sim.restart(NodeId(n));
    }
    sim.run_for_millis(5_000);
    prop_assert!(sim.clients_done(), "clients did not finish after healing");
    // A last write commits every earlier entry (no no-op on election).
    let barrier = KvCommand::Put {
        key: "barrier".into(),
        value: "x".into(),
    };
    prop_assert!(
        sim.call(barrier, 10_000).is_some(),
        "no leader after healing"
    );
    sim.run_for_millis(500);

    let sms = sim.state_machines();
    prop_assert_eq!(sms.len(), 3);
    let first = sms.values().next().cloned().unwrap_or_default();
    for (id, sm) in &sms {
        prop_assert_eq!(sm, &first, "node {} diverges", id);
    }
    let commits: Vec<u64> = sim
        .up()
        .into_iter()
        .filter_map(|n| sim.node(n).map(|x| x.server().volatile.commit_index.0))
        .collect();
    prop_assert!(commits.windows(2).all(|w| w[0] == w[1]), "{:?}", commits);
    let mut acked_puts = 0;
    for a in sim.acked() {
        if let KvCommand::Put { key, value } = &a.command {
            acked_puts += 1;
            prop_assert_eq!(first.get(key), Some(value.as_str()), "lost {}", key);
        }
    }
    prop_assert!(acked_puts >= 301, "only {} acknowledged puts", acked_puts);
    if std::env::var_os("SIM_DEBUG").is_some() {
        eprintln!(
            "now {:?} stats {:?} acked {} commits {:?}",
            sim.now(),
            sim.stats(),
            acked_puts,
            commits
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn after_random_faults_heal_nodes_converge_and_no_acknowledged_write_is_lost(
        seed in any::<u64>(),
        faults in prop::collection::vec((0u64..250, fault()), 0..12),
    ) {
        run(seed, &faults)?;
    }
}

#[test]
fn a_fixed_schedule_with_every_fault_kind() {
    let schedule = vec![
        (300, Fault::Lossy(20)),
        (100, Fault::Isolate(1)),
        (200, Fault::CrashBeforeSync(2)),
        (150, Fault::Crash(3)),
        (300, Fault::Restart(3)),
        (100, Fault::Heal),
        (50, Fault::Crash(1)),
        (400, Fault::Restart(2)),
    ];
    if let Err(e) = run(99, &schedule) {
        panic!("{e}");
    }
}
