use super::*;

fn put(k: &str, v: &str) -> KvCommand {
    KvCommand::Put {
        key: k.into(),
        value: v.into(),
    }
}

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
    assert_eq!(sim.call(put("a", "1"), 2_000), Some(None));
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
        sim.add_client((0..20).map(|i| put(&format!("k{i}"), "v")).collect());
        sim.run_for_millis(3_000);
        (sim.stats(), sim.acked().to_vec(), sim.leader())
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
}
