//! Running a check to completion and reporting it.

use crate::config::ModelConfig;
use crate::model::{Action, RaftModel, State};
use crate::render;
use raft_spec::safety;
use stateright::{Checker, Expectation, HasDiscoveries, Model, Path};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Search order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Breadth-first: counterexamples are shortest.
    Bfs,
    /// Depth-first: less memory.
    Dfs,
}

/// How to run the checker.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Search order.
    pub strategy: Strategy,
    /// Reduce by symmetry over server identities: Stateright's reduction in
    /// a depth-first search, the canonical model
    /// ([`RaftModel::with_canonical_states`]) in a breadth-first one.
    pub symmetry: bool,
    /// Worker threads.
    pub threads: usize,
    /// Print progress this often (None: never).
    pub progress_every: Option<Duration>,
    /// Stop as soon as this property has a discovery (for an `Always`
    /// property: a counterexample). `None`: search until every property has
    /// one or the bounded space is exhausted.
    pub stop_at: Option<&'static str>,
    /// Stop the search after this long and report how far it got (`None`:
    /// search until done). A search stopped so is not complete: its
    /// `Always` verdicts cover only the states it explored.
    pub time_limit: Option<Duration>,
    /// Give each `sometimes` example its shortest form: one more
    /// breadth-first search after the check, to the depth of the deepest
    /// example, under the same limit as the counterexamples' re-search
    /// ([`shortest_path`]'s search). Without it an example is the path of the
    /// last state the checker found it in.
    pub shortest_examples: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            strategy: Strategy::Bfs,
            symmetry: false,
            threads: 2,
            progress_every: None,
            stop_at: None,
            time_limit: None,
            shortest_examples: true,
        }
    }
}

/// The outcome of one property.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// `Always` and no counterexample exists in the bounded space.
    Held,
    /// `Always` and a counterexample was found.
    Violated(Path<State, Action>),
    /// `Sometimes` and an example was found.
    Found(Path<State, Action>),
    /// `Sometimes` and no state of the bounded space satisfies it.
    NotFound,
}

/// One property's verdict.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The property's name.
    pub name: &'static str,
    /// `Always` or `Sometimes`.
    pub expectation: Expectation,
    /// What the search found.
    pub outcome: Outcome,
}

impl Verdict {
    /// Whether this verdict is what the property expects.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Held | Outcome::Found(_))
    }
}

/// The result of a check.
#[derive(Debug)]
pub struct CheckReport {
    /// What was checked.
    pub config: ModelConfig,
    /// How.
    pub options: CheckOptions,
    /// Whether the search explored the whole bounded space.
    pub completed: bool,
    /// The search stopped at the discovery [`CheckOptions::stop_at`] asked for.
    pub stopped_early: bool,
    /// A checker thread panicked (a bug in the model or the spec).
    pub panicked: bool,
    /// The search was stopped by [`CheckOptions::time_limit`] before it
    /// explored the whole bounded space.
    pub timed_out: bool,
    /// Unique states (after symmetry reduction, if on).
    pub unique_states: usize,
    /// States generated, repeats included.
    pub states: usize,
    /// Deepest path explored.
    pub max_depth: usize,
    /// Wall-clock time of the search.
    pub elapsed: Duration,
    /// Wall-clock time of the work after the search: the re-searches for
    /// shortest counterexamples ([`shortest_path`]), turning canonical paths
    /// into plain ones, and the follow-up ([`one_more_election`]).
    pub research_elapsed: Duration,
    /// Peak resident memory of the process, if the OS tells.
    pub peak_rss_bytes: Option<u64>,
    /// A counterexample to Committed Entries Survive Elections carried on,
    /// with one more term, to where a Figure 3 property breaks (see
    /// [`one_more_election`]).
    pub follow_up: Option<FollowUp>,
    /// Whether every `sometimes` example is a shortest one
    /// ([`CheckOptions::shortest_examples`], and the re-search finished).
    pub shortest_examples: bool,
    /// Every property's verdict, in registration order.
    pub verdicts: Vec<Verdict>,
}

impl CheckReport {
    /// Exit status 0: the search completed, no panic, every `Always` held and
    /// every `Sometimes` was found.
    pub fn success(&self) -> bool {
        self.completed && !self.panicked && self.verdicts.iter().all(Verdict::is_ok)
    }

    /// The verdict of a property, by name.
    pub fn verdict(&self, name: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.name == name)
    }

    /// Unique states per second.
    pub fn states_per_sec(&self) -> f64 {
        self.unique_states as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// How many states the search for a shortest counterexample may visit.
pub const SHORTEST_PATH_LIMIT: usize = 2_000_000;

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs the checker on `config` to completion, printing progress to `progress`.
pub fn run(config: ModelConfig, options: CheckOptions, progress: &mut dyn Write) -> CheckReport {
    // Breadth-first symmetry reduction is the canonical model's (Stateright
    // reduces only depth-first searches); depth-first, Stateright's own.
    let canonical = options.symmetry && options.strategy == Strategy::Bfs;
    let searched = |config| {
        let model = RaftModel::new(config);
        if canonical {
            model.with_canonical_states()
        } else {
            model
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let model = searched(config).with_stop(Arc::clone(&stop));
    let mut builder = model.checker().threads(options.threads.max(1));
    if let Some(name) = options.stop_at {
        builder = builder.finish_when(HasDiscoveries::AnyOf([name].into_iter().collect()));
    }
    if options.symmetry && !canonical {
        builder = builder.symmetry();
    }
    let start = Instant::now();
    let mut checker: Box<dyn DynChecker> = match options.strategy {
        Strategy::Bfs => Box::new(builder.spawn_bfs()),
        Strategy::Dfs => Box::new(builder.spawn_dfs()),
    };
    let mut running = checker.take_handles();
    let mut last_progress = Instant::now();
    let mut panicked = false;
    let mut timed_out = false;
    // A panicking checker thread can leave the others waiting for work it
    // held, so threads are joined as they finish and a panic ends the wait.
    while !running.is_empty() && !panicked {
        std::thread::sleep(Duration::from_millis(20));
        // At the limit the model stops generating successors (`with_stop`):
        // the threads empty their queues and end. Threads that all ended
        // before the limit completed the search.
        if !timed_out
            && options
                .time_limit
                .is_some_and(|limit| start.elapsed() >= limit)
            && running.iter().any(|h| !h.is_finished())
        {
            stop.store(true, Ordering::Relaxed);
            timed_out = true;
        }
        let (finished, still): (Vec<_>, Vec<_>) =
            running.into_iter().partition(|h| h.is_finished());
        running = still;
        for h in finished {
            panicked |= h.join().is_err();
        }
        if let Some(every) = options.progress_every {
            if last_progress.elapsed() >= every && !panicked {
                last_progress = Instant::now();
                let secs = start.elapsed().as_secs_f64();
                let unique = checker.unique_state_count();
                let _ = writeln!(
                    progress,
                    "  {:>6.1}s  states={} unique={} depth={} rate={:.0} unique/s",
                    secs,
                    checker.state_count(),
                    unique,
                    checker.max_depth(),
                    unique as f64 / secs.max(1e-9)
                );
            }
        }
    }
    let elapsed = start.elapsed();
    // The paths to discoveries are rebuilt by replaying the checker's model,
    // which must have its successors back.
    stop.store(false, Ordering::Relaxed);
    let discoveries = checker.discoveries();
    let stopped_early = options
        .stop_at
        .is_some_and(|name| discoveries.contains_key(name));
    let completed = checker.is_done() && !panicked && !stopped_early && !timed_out;
    let (unique_states, states, max_depth) = (
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
    );
    // The checker's queues and fingerprints are no longer needed: free them
    // before the shortest-path re-searches, which need memory of their own.
    drop(checker);
    let model = &searched(config);
    let plain = &RaftModel::new(config);
    // The canonical model's paths step between representatives: shown and
    // linked as the plain model's paths they stand for.
    let concrete = |path: Path<State, Action>| {
        if canonical {
            plain.concrete_path(&path).unwrap_or(path)
        } else {
            path
        }
    };
    // A breadth-first search that needed more states than the re-search may
    // visit has the counterexample beyond its reach: the re-search would
    // only spend as long again to give up. Depth-first paths are re-searched
    // whatever their search cost, since their violation may be shallow.
    let research = options.strategy == Strategy::Dfs || unique_states <= SHORTEST_PATH_LIMIT;
    let research_start = Instant::now();
    let verdicts: Vec<Verdict> = model
        .properties()
        .into_iter()
        .map(|p| {
            let found = discoveries.get(p.name).cloned();
            let outcome = match (&p.expectation, found) {
                (&Expectation::Sometimes, Some(path)) => Outcome::Found(concrete(path)),
                (&Expectation::Sometimes, None) => Outcome::NotFound,
                (_, Some(path)) => {
                    let holds = p.condition;
                    let violated = |m: &RaftModel, s: &State| !holds(m, s);
                    Outcome::Violated(concrete(
                        research
                            .then(|| shortest_path(model, violated, SHORTEST_PATH_LIMIT))
                            .flatten()
                            .unwrap_or(path),
                    ))
                }
                (_, None) => Outcome::Held,
            };
            Verdict {
                name: p.name,
                expectation: p.expectation,
                outcome,
            }
        })
        .collect();
    let mut verdicts = verdicts;
    // A run stopped at a counterexample is about the counterexample: its
    // examples are left as the search found them.
    let shortest = options.shortest_examples
        && research
        && !panicked
        && !stopped_early
        && make_examples_shortest(model, &mut verdicts, &concrete);
    let follow_up = verdicts
        .iter()
        .find(|v| v.name == safety::COMMITTED_ENTRIES_SURVIVE_ELECTIONS)
        .and_then(|v| match &v.outcome {
            Outcome::Violated(path) => one_more_election(config, path),
            _ => None,
        });
    CheckReport {
        config,
        options,
        follow_up,
        completed,
        stopped_early,
        panicked,
        timed_out,
        unique_states,
        states,
        max_depth,
        elapsed,
        research_elapsed: research_start.elapsed(),
        peak_rss_bytes: peak_rss_bytes(),
        shortest_examples: shortest,
        verdicts,
    }
}

/// A counterexample carried on to a Figure 3 property ([`one_more_election`]).
#[derive(Clone, Debug)]
pub struct FollowUp {
    /// The Figure 3 property the path breaks.
    pub property: &'static str,
    /// The configuration the path runs in: the checked one with one more term.
    pub config: ModelConfig,
    /// The counterexample's steps, then the shortest continuation.
    pub path: Path<State, Action>,
    /// The number of steps of the counterexample it continues.
    pub from_step: usize,
}

/// Carries a counterexample to Committed Entries Survive Elections on to
/// what the invariant foretells: with one more term allowed, the shortest
/// continuation to a state where Leader Completeness or State Machine Safety
/// fails (searched from the counterexample's last state, at most
/// [`SHORTEST_PATH_LIMIT`] states). None if there is none within that.
///
/// The invariant fails one election before the bound on terms lets Leader
/// Completeness fail; this shows that election.
pub fn one_more_election(config: ModelConfig, path: &Path<State, Action>) -> Option<FollowUp> {
    let config = ModelConfig {
        max_term: config.max_term + 1,
        ..config
    };
    let model = RaftModel::new(config);
    type Holds = fn(&RaftModel, &State) -> bool;
    let broken: Vec<(&'static str, Holds)> = model
        .properties()
        .into_iter()
        .filter(|p| p.name == safety::LEADER_COMPLETENESS || p.name == safety::STATE_MACHINE_SAFETY)
        .map(|p| (p.name, p.condition))
        .collect();
    let steps = path.clone().into_actions();
    let init = model.init_states().into_iter().next()?;
    let replayed = Path::from_actions(&model, init.clone(), steps.iter())?;
    let fails = |m: &RaftModel, s: &State| broken.iter().any(|(_, holds)| !holds(m, s));
    let Steps::Found(_, more) = search_steps(
        &model,
        vec![replayed.last_state().clone()],
        fails,
        usize::MAX,
        SHORTEST_PATH_LIMIT,
    ) else {
        return None;
    };
    let all: Vec<Action> = steps.iter().cloned().chain(more).collect();
    let path = Path::from_actions(&model, init, all.iter())?;
    let property = broken
        .iter()
        .find(|(_, holds)| !holds(&model, path.last_state()))?
        .0;
    Some(FollowUp {
        property,
        config,
        path,
        from_step: steps.len(),
    })
}

/// The object-safe part of Stateright's `Checker` that `run` needs.
trait DynChecker {
    fn take_handles(&mut self) -> Vec<std::thread::JoinHandle<()>>;
    fn unique_state_count(&self) -> usize;
    fn state_count(&self) -> usize;
    fn max_depth(&self) -> usize;
    fn is_done(&self) -> bool;
    fn discoveries(&self) -> std::collections::HashMap<&'static str, Path<State, Action>>;
}

impl<C: Checker<RaftModel>> DynChecker for C {
    fn take_handles(&mut self) -> Vec<std::thread::JoinHandle<()>> {
        self.handles()
    }
    fn unique_state_count(&self) -> usize {
        Checker::unique_state_count(self)
    }
    fn state_count(&self) -> usize {
        Checker::state_count(self)
    }
    fn max_depth(&self) -> usize {
        Checker::max_depth(self)
    }
    fn is_done(&self) -> bool {
        Checker::is_done(self)
    }
    fn discoveries(&self) -> std::collections::HashMap<&'static str, Path<State, Action>> {
        Checker::discoveries(self)
    }
}

fn state_key(state: &State) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    state.hash(&mut h);
    h.finish()
}

/// A shortest path from an initial state to a state where `goal` holds, by a
/// breadth-first search of at most `limit` states (None past it), on two
/// threads.
///
/// Stateright 0.31 records a property's discovery again each time another
/// state satisfies it, and its workers do not keep to depth order, so the
/// path its checker reports is not always the shortest; this search gives
/// counterexamples their shortest form.
///
/// The search goes one depth at a time. The workers expand halves of a depth
/// in parallel (each drops the successors seen at an earlier depth or by
/// itself); the successors are then merged in order on one thread, so the
/// path found, the first at the least depth, is the same in every run.
pub fn shortest_path(
    model: &RaftModel,
    goal: impl Fn(&RaftModel, &State) -> bool + Sync,
    limit: usize,
) -> Option<Path<State, Action>> {
    match search_steps(model, model.init_states(), goal, usize::MAX, limit) {
        Steps::Found(init, steps) => Path::from_actions(model, *init, steps.iter()),
        Steps::Absent { .. } | Steps::GaveUp => None,
    }
}

/// What [`within_depth`] found.
#[derive(Debug)]
pub enum Reach {
    /// A shortest path to a goal state.
    Found(Path<State, Action>),
    /// No state within the depth is a goal; this many states are.
    Absent {
        /// Unique states within the depth.
        states: usize,
    },
    /// The search reached its limit on states first.
    GaveUp,
}

/// Whether a goal state is within `max_depth` steps of an initial state: the
/// search of [`shortest_path`], stopped at that depth (one depth at a time,
/// so every state within it is visited, whatever the workers' timing).
pub fn within_depth(
    model: &RaftModel,
    goal: impl Fn(&RaftModel, &State) -> bool + Sync,
    max_depth: usize,
    limit: usize,
) -> Reach {
    match search_steps(model, model.init_states(), goal, max_depth, limit) {
        Steps::Found(init, steps) => {
            Path::from_actions(model, *init, steps.iter()).map_or(Reach::GaveUp, Reach::Found)
        }
        Steps::Absent { states } => Reach::Absent { states },
        Steps::GaveUp => Reach::GaveUp,
    }
}

/// What [`search_steps`] found: the start a goal is reached from and the
/// steps, or none within the depth, or the limit first.
enum Steps {
    Found(Box<State>, Vec<Action>),
    Absent { states: usize },
    GaveUp,
}

/// The search of [`shortest_path`] from `starts`, to at most `max_depth`
/// steps.
fn search_steps(
    model: &RaftModel,
    starts: Vec<State>,
    goal: impl Fn(&RaftModel, &State) -> bool + Sync,
    max_depth: usize,
    limit: usize,
) -> Steps {
    let goals: [&Goal<'_>; 1] = [&goal];
    let reached = search_goals(model, starts, &goals, max_depth, limit);
    match reached.paths.into_iter().next().flatten() {
        Some((start, steps)) => Steps::Found(start, steps),
        None if reached.gave_up => Steps::GaveUp,
        None => Steps::Absent {
            states: reached.states,
        },
    }
}

/// A condition on states that a search looks for.
type Goal<'a> = dyn Fn(&RaftModel, &State) -> bool + Sync + 'a;

/// What [`search_goals`] found.
struct Reached {
    /// For each goal, the start and steps of a shortest path to it.
    paths: Vec<Option<(Box<State>, Vec<Action>)>>,
    /// Unique states visited.
    states: usize,
    /// Whether the limit on states stopped the search.
    gave_up: bool,
}

/// A breadth-first search from `starts` for every goal at once, one depth
/// at a time (see [`shortest_path`]), until each has a path, `max_depth`
/// steps, or `limit` states. A goal's path is the first found at the least
/// depth, the same in every run.
fn search_goals(
    model: &RaftModel,
    starts: Vec<State>,
    goals: &[&Goal<'_>],
    max_depth: usize,
    limit: usize,
) -> Reached {
    use std::collections::{HashMap, HashSet};
    /// A successor: its key, its parent's key, the step, the state, and
    /// the goals it meets (bits).
    type Successor = (u64, u64, Action, State, u64);
    const WORKERS: usize = 2;
    let mut parent: HashMap<u64, Option<(u64, Action)>> = HashMap::new();
    let mut level: Vec<(u64, State)> = Vec::new();
    let mut first = HashMap::new();
    let mut paths: Vec<Option<(Box<State>, Vec<Action>)>> = vec![None; goals.len()];
    let meets = |state: &State| -> u64 {
        goals
            .iter()
            .enumerate()
            .filter(|(_, g)| g(model, state))
            .fold(0, |bits, (i, _)| bits | (1 << i))
    };
    let all = if goals.len() >= 64 {
        u64::MAX
    } else {
        (1u64 << goals.len()) - 1
    };
    let mut found = 0u64;
    let mut record = |bits: u64,
                      key: u64,
                      parent: &HashMap<u64, Option<(u64, Action)>>,
                      first: &HashMap<u64, State>,
                      found: &mut u64| {
        let new = bits & !*found;
        if new == 0 {
            return;
        }
        let mut steps = Vec::new();
        let mut cursor = key;
        while let Some(Some((prev, action))) = parent.get(&cursor) {
            steps.push(action.clone());
            cursor = *prev;
        }
        steps.reverse();
        let Some(start) = first.get(&cursor) else {
            return;
        };
        for (i, path) in paths.iter_mut().enumerate() {
            if new & (1 << i) != 0 {
                *path = Some((Box::new(start.clone()), steps.clone()));
            }
        }
        *found |= new;
    };
    for s in starts {
        let key = state_key(&s);
        if model.within_boundary(&s) && parent.insert(key, None).is_none() {
            first.insert(key, s.clone());
            record(meets(&s), key, &parent, &first, &mut found);
            level.push((key, s));
        }
    }
    let expand = |part: &[(u64, State)], seen: &HashMap<u64, Option<(u64, Action)>>| {
        let mut mine = HashSet::new();
        let mut out: Vec<Successor> = Vec::new();
        let mut actions = Vec::new();
        for (key, state) in part {
            actions.clear();
            model.actions(state, &mut actions);
            for action in actions.drain(..) {
                let Some(next) = model.next_state(state, action.clone()) else {
                    continue;
                };
                if !model.within_boundary(&next) {
                    continue;
                }
                let next_key = state_key(&next);
                if seen.contains_key(&next_key) || !mine.insert(next_key) {
                    continue;
                }
                let bits = meets(&next);
                out.push((next_key, *key, action, next, bits));
            }
        }
        out
    };
    let mut depth = 0;
    let mut gave_up = false;
    while !level.is_empty() && depth < max_depth && found != all {
        if parent.len() >= limit {
            gave_up = true;
            break;
        }
        depth += 1;
        let chunk = level.len().div_ceil(WORKERS).max(1);
        let parts: Vec<Vec<Successor>> = std::thread::scope(|scope| {
            let seen = &parent;
            let handles: Vec<_> = level
                .chunks(chunk)
                .map(|part| scope.spawn(move || expand(part, seen)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        level = Vec::new();
        for (key, from, action, state, bits) in parts.into_iter().flatten() {
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(key) {
                e.insert(Some((from, action)));
                record(bits, key, &parent, &first, &mut found);
                level.push((key, state));
            }
        }
    }
    Reached {
        paths,
        states: parent.len(),
        gave_up,
    }
}

/// Replaces every `sometimes` example of `verdicts` by a shortest one, found
/// by one breadth-first search for all of them ([`search_goals`], within
/// [`SHORTEST_PATH_LIMIT`] states and the depth of the deepest example);
/// `concrete` turns a path of `model` into the plain model's. Whether every
/// example now is a shortest one.
fn make_examples_shortest(
    model: &RaftModel,
    verdicts: &mut [Verdict],
    concrete: &dyn Fn(Path<State, Action>) -> Path<State, Action>,
) -> bool {
    let properties = model.properties();
    let mut wanted = Vec::new();
    let mut deepest = 0;
    for (i, v) in verdicts.iter().enumerate() {
        if let Outcome::Found(path) = &v.outcome {
            if let Some(p) = properties.iter().find(|p| p.name == v.name) {
                wanted.push((i, p.condition));
                deepest = deepest.max(path.clone().into_actions().len());
            }
        }
    }
    if wanted.is_empty() {
        return true;
    }
    let conditions: Vec<Box<Goal<'_>>> = wanted
        .iter()
        .map(|&(_, c)| Box::new(move |m: &RaftModel, s: &State| c(m, s)) as Box<Goal<'_>>)
        .collect();
    let goals: Vec<&Goal<'_>> = conditions.iter().map(|g| &**g).collect();
    let reached = search_goals(
        model,
        model.init_states(),
        &goals,
        deepest,
        SHORTEST_PATH_LIMIT,
    );
    let mut all = true;
    for ((i, _), path) in wanted.into_iter().zip(reached.paths) {
        let Some((start, steps)) = path else {
            all = false;
            continue;
        };
        match Path::from_actions(model, *start, steps.iter()) {
            Some(p) => verdicts[i].outcome = Outcome::Found(concrete(p)),
            None => all = false,
        }
    }
    all
}

/// The Explorer URL that opens `path` (served by `raft-model explore` with
/// the same configuration flags, at `base`, e.g. `http://127.0.0.1:3000`).
pub fn explorer_url(model: &RaftModel, path: &Path<State, Action>, base: &str) -> String {
    format!(
        "{}/#/steps/{}",
        base.trim_end_matches('/'),
        path.encode(model)
    )
}

/// A path as numbered steps: the action, then the state of the actor it
/// touched afterwards.
pub fn format_path(model: &RaftModel, path: &Path<State, Action>) -> String {
    format_path_after(model, path, 0)
}

/// [`format_path`] without the first `skip` steps (the numbering still
/// counts them).
pub fn format_path_after(model: &RaftModel, path: &Path<State, Action>, skip: usize) -> String {
    let mut out = String::new();
    let steps = path.clone().into_vec();
    let mut step_no = 0;
    for window in steps.windows(2) {
        let (_, Some(action)) = &window[0] else {
            continue;
        };
        let after = &window[1].0;
        step_no += 1;
        if step_no <= skip {
            continue;
        }
        let _ = writeln!(out, "  {:>3}. {}", step_no, render::action(action));
        if let Some(slot) = action.actor().and_then(|i| after.servers.get(i)) {
            let _ = writeln!(
                out,
                "       {}",
                render::server(slot.server(), slot.crashed)
            );
        }
    }
    if let Some((last, _)) = steps.last() {
        let _ = writeln!(out, "  final state:");
        for line in render::state(last).lines() {
            let _ = writeln!(out, "       {line}");
        }
    }
    let _ = model;
    out
}

/// Writes the final report.
pub fn write_report(report: &CheckReport, explorer_base: &str, out: &mut dyn Write) {
    let model = RaftModel::new(report.config);
    let _ = writeln!(
        out,
        "{} after {:.2}s: unique states={} states generated={} max depth={} rate={:.0} unique states/s peak memory={} ({} bytes per unique state)",
        if report.panicked {
            "ABORTED (the model panicked; see the panic message above)".to_string()
        } else if report.stopped_early {
            format!(
                "Stopped at the first counterexample to \"{}\"",
                report.options.stop_at.unwrap_or_default()
            )
        } else if report.completed {
            "Completed".to_string()
        } else if report.timed_out {
            format!(
                "INCOMPLETE (stopped at the time limit of {} s)",
                report.options.time_limit.unwrap_or_default().as_secs()
            )
        } else {
            "INCOMPLETE".to_string()
        },
        report.elapsed.as_secs_f64(),
        report.unique_states,
        report.states,
        report.max_depth,
        report.states_per_sec(),
        report
            .peak_rss_bytes
            .map_or("unknown".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        report.peak_rss_bytes.map_or("unknown".to_string(), |b| {
            (b / report.unique_states.max(1) as u64).to_string()
        }),
    );
    if report.research_elapsed >= Duration::from_millis(500) {
        let _ = writeln!(
            out,
            "Shortest paths to examples and counterexamples, and follow-ups, in {:.2}s (total {:.2}s)",
            report.research_elapsed.as_secs_f64(),
            (report.elapsed + report.research_elapsed).as_secs_f64()
        );
    }
    for v in &report.verdicts {
        let kind = match v.expectation {
            Expectation::Always => "always",
            Expectation::Sometimes => "sometimes",
            Expectation::Eventually => "eventually",
        };
        let verdict = match &v.outcome {
            Outcome::Held if report.completed => "held".to_string(),
            Outcome::Held => "no counterexample among the states explored".to_string(),
            Outcome::Found(p) if report.shortest_examples => {
                format!("found ({} steps)", p.clone().into_actions().len())
            }
            Outcome::Found(p) => format!(
                "found (an example of {} steps)",
                p.clone().into_actions().len()
            ),
            Outcome::NotFound if report.stopped_early || report.timed_out => {
                "not reached before the search stopped".to_string()
            }
            Outcome::NotFound => "NOT FOUND: no explored state satisfies it".to_string(),
            Outcome::Violated(p) => {
                format!("VIOLATED ({} steps)", p.clone().into_actions().len())
            }
        };
        let _ = writeln!(out, "  {:<9} {:<62} {}", kind, v.name, verdict);
    }
    let examples = report
        .verdicts
        .iter()
        .any(|v| matches!(v.outcome, Outcome::Found(_)));
    if examples && !report.shortest_examples {
        let why = if !report.options.shortest_examples {
            String::new()
        } else if report.stopped_early {
            ": the search stopped at the counterexample".to_string()
        } else {
            format!(": the space is too large to search again within {SHORTEST_PATH_LIMIT} states")
        };
        let _ = writeln!(
            out,
            "  (examples are the paths the search last found them on, not the shortest{why})"
        );
    }
    for v in &report.verdicts {
        if let Outcome::Violated(path) = &v.outcome {
            let _ = writeln!(out, "\nCounterexample to \"{}\":", v.name);
            let _ = write!(out, "{}", format_path(&model, path));
            let _ = writeln!(
                out,
                "  Explorer: {} (run `raft-model explore` with the same flags)",
                explorer_url(&model, path, explorer_base)
            );
        }
    }
    if let Some(f) = &report.follow_up {
        let model = RaftModel::new(f.config);
        let _ = writeln!(
            out,
            "\nOne more election: with --max-term {}, the same {} steps and {} more break \"{}\":",
            f.config.max_term,
            f.from_step,
            f.path.clone().into_actions().len() - f.from_step,
            f.property
        );
        let _ = write!(out, "{}", format_path_after(&model, &f.path, f.from_step));
        let _ = writeln!(
            out,
            "  Explorer: {} (run `raft-model explore --max-term {}` with the other flags the same)",
            explorer_url(&model, &f.path, explorer_base),
            f.config.max_term
        );
    }
}
