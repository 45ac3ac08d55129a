use raft_model::check::*;
use raft_model::*;
fn main() {
    let cfg = ModelConfig { servers: 3, max_term: 1, requests: 0, crashes: 0, network: NetworkKind::UnorderedDuplicating, lossy: false };
    let r = run(cfg, CheckOptions { threads: 1, ..Default::default() }, &mut std::io::stdout());
    let m = RaftModel::new(cfg);
    for v in &r.verdicts { if let Outcome::Found(p) = &v.outcome { println!("{}\n{}", v.name, format_path(&m, p)); } }
}
