use super::*;

#[test]
fn a_cluster_elects_one_leader_and_serves() {
    let mut sim = Sim::new(SimConfig {
        seed: 1,
        ..SimConfig::default()
    });
    sim.run_for_millis(1_000);
    let leader = sim.leader().expect("a leader");
    let leaders = sim
        .up()
        .into_iter()
        .filter(|&n| {
            sim.node(n)
                .is_some_and(|x| x.server().role() == Role::Leader)
        })
        .count();
    assert_eq!(leaders, 1);
    assert_eq!(sim.call(KvCommand::put("a", "1"), 2_000), Some(None));
    assert_eq!(
        sim.call(KvCommand::Get { key: "a".into() }, 2_000),
        Some(Some("1".into()))
    );
    sim.crash(leader);
    sim.run_for_millis(1_000);
    let next = sim.leader().expect("a new leader");
    assert_ne!(next, leader);
    assert_eq!(
        sim.call(KvCommand::Get { key: "a".into() }, 3_000),
        Some(Some("1".into()))
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut sim = Sim::new(SimConfig {
            seed,
            loss: 0.1,
            duplicate: 0.1,
            ..SimConfig::default()
        });
        sim.add_client(
            (0..20)
                .map(|i| KvCommand::put(format!("k{i}"), "v"))
                .collect(),
        );
        sim.run_for_millis(3_000);
        (sim.stats(), sim.acked().to_vec(), sim.leader())
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
}

/// A follower that crashes after appending an entry and before its fsync
/// must not have acknowledged it: otherwise the leader could commit an entry
/// that only the leader holds, and lose it with the leader.
#[test]
fn a_crash_before_the_fsync_never_loses_an_acknowledged_write() {
    for seed in 0..10 {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.run_for_millis(1_000);
        let leader = sim.leader().expect("a leader");
        let followers: Vec<NodeId> = sim.up().into_iter().filter(|&n| n != leader).collect();
        let (a, b) = (followers[0], followers[1]);
        sim.partition(&[b]);
        sim.crash_before_sync(a);
        let acked = sim.call(KvCommand::put("x", "1"), 300);
        // The leader now crashes; the two others elect a leader without it.
        sim.crash(leader);
        sim.heal();
        sim.restart(a);
        sim.run_for_millis(2_000);
        sim.restart(leader);
        assert!(
            sim.call(KvCommand::put("barrier", "b"), 5_000).is_some(),
            "seed {seed}"
        );
        sim.run_for_millis(500);
        for (id, sm) in sim.state_machines() {
            if acked.is_some() {
                assert_eq!(sm.get("x"), Some("1"), "seed {seed}: node {id} lost x");
            }
        }
        for a in sim.acked() {
            if let KvCommand::Put { key, value } = &a.command {
                for (id, sm) in sim.state_machines() {
                    assert_eq!(sm.get(key), Some(value.as_str()), "seed {seed}: node {id}");
                }
            }
        }
    }
}
