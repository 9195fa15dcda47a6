//! Scenario tests of the pure core: whole rings of dozens of nodes driven
//! through [`Sim`] by explicit tick and deliver calls.
//!
//! Every scenario is seeded, so a failure replays exactly, and every wait is
//! bounded by an explicit tick count.

use super::id::{Id, NodeRef, ID_BITS};
use super::sim::Sim;
use super::state::Options;

/// Upper bound on the rounds a freshly grown ring needs to become consistent.
const CONVERGE_TICKS: usize = 40;

fn addr(k: usize) -> String {
    format!("10.0.{}.{}:5057", k / 250, k % 250 + 1)
}

fn opts(r: usize) -> Options {
    Options { successors: r }
}

/// Runs single rounds until the ring is consistent; the rounds it took.
fn converge(sim: &mut Sim, max_ticks: usize) -> Option<usize> {
    sim.deliver_all();
    (0..=max_ticks).find(|_| {
        if sim.is_consistent() {
            return true;
        }
        sim.run(1);
        false
    })
}

/// `n` nodes, each joining through a random earlier one, one round apart.
fn grow(seed: u64, n: usize, r: usize) -> Sim {
    let mut sim = Sim::new(seed, opts(r));
    sim.add_node(&addr(0), None).expect("first node");
    for k in 1..n {
        let via = sim.random_live().expect("a live node");
        sim.add_node(&addr(k), Some(&via)).expect("join");
        sim.run(1);
    }
    sim
}

fn grown_and_converged(seed: u64, n: usize, r: usize) -> Sim {
    let mut sim = grow(seed, n, r);
    let took = converge(&mut sim, CONVERGE_TICKS);
    assert!(
        took.is_some(),
        "{n} nodes not consistent after {CONVERGE_TICKS} rounds"
    );
    sim
}

/// Runs `count` lookups of random keys from random nodes, asserts each
/// finds the true owner, and returns their hop counts.
fn check_lookups(sim: &mut Sim, count: usize) -> Vec<u32> {
    let mut hops = Vec::with_capacity(count);
    for _ in 0..count {
        let from = sim.random_live().expect("a live node");
        let key = sim.random_id();
        let truth = sim.true_successor(&key).expect("a live node");
        let got = sim.lookup(&from, &key);
        let Some((owner, h)) = got else {
            panic!("lookup of {key:?} from {from} failed");
        };
        assert_eq!(owner, truth, "lookup of {key:?} from {from}");
        hops.push(h);
    }
    hops
}

/// Every finger of every node names the true successor of its start.
fn fingers_exact(sim: &Sim) -> bool {
    sim.live().iter().all(|n| {
        let Some(state) = sim.state(&n.addr) else {
            return false;
        };
        state.fingers().entries().all(|(_, start, finger)| {
            let truth = sim.true_successor(&start);
            match finger {
                Some(f) => Some(f) == truth.as_ref(),
                None => truth.as_ref() == Some(n),
            }
        })
    })
}

#[test]
fn tiny_rings_form_and_shrink() {
    let mut sim = Sim::new(1, Options::default());
    let a = sim.add_node("a", None).expect("create");
    assert!(sim.is_consistent());
    assert_eq!(sim.lookup("a", &Id::ZERO), Some((a.clone(), 0)));
    sim.add_node("b", Some("a")).expect("join");
    assert_eq!(converge(&mut sim, 5), Some(1));
    sim.add_node("c", Some("b")).expect("join");
    assert!(converge(&mut sim, 5).is_some());
    check_lookups(&mut sim, 50);
    assert!(sim.leave("b"));
    assert!(sim.is_consistent());
    assert!(sim.leave("c"));
    assert!(sim.is_consistent());
    assert!(sim.state("a").is_some_and(|s| s.is_alone()));
    assert_eq!(sim.lookup("a", &Id::MAX).map(|(n, _)| n), Some(a));
    assert!(!sim.leave("c"));
    assert!(sim.add_node("a", None).is_err());
    assert!(sim.add_node("d", Some("nowhere")).is_err());
}

#[test]
fn sequential_joins_converge_and_route_correctly() {
    let mut sim = grow(7, 50, 3);
    let took = converge(&mut sim, CONVERGE_TICKS);
    assert!(
        took.is_some(),
        "not consistent after {CONVERGE_TICKS} rounds"
    );
    // Consistency is stable under further rounds.
    sim.run(5);
    assert!(sim.is_consistent());
    assert_eq!(sim.live().len(), 50);
    check_lookups(&mut sim, 300);
}

#[test]
fn hundreds_of_lookups_on_a_hundred_nodes_find_the_truth() {
    let mut sim = grown_and_converged(11, 100, 3);
    check_lookups(&mut sim, 500);
    // Lookups started before any finger settled are right too: they walk
    // the successor lists.
    let mut fresh = Sim::new(12, opts(3));
    fresh.add_node(&addr(0), None).expect("first node");
    for k in 1..30 {
        fresh.add_node(&addr(k), Some(&addr(0))).expect("join");
        fresh.run(1);
    }
    assert!(converge(&mut fresh, CONVERGE_TICKS).is_some());
    check_lookups(&mut fresh, 200);
}

#[test]
fn concurrent_joins_through_one_node_converge() {
    let mut sim = Sim::new(5, opts(3));
    sim.add_node(&addr(0), None).expect("first node");
    for k in 1..25 {
        sim.add_node(&addr(k), Some(&addr(0))).expect("join");
    }
    let took = converge(&mut sim, 80);
    assert!(took.is_some(), "25 simultaneous joins did not converge");
    check_lookups(&mut sim, 200);
}

#[test]
fn crash_of_r_minus_one_adjacent_nodes_is_survived() {
    let r = 3;
    let mut sim = grown_and_converged(21, 100, r);
    sim.run(10);
    for round in 0..3 {
        let live = sim.live();
        let start = (round * 37) % live.len();
        for k in 0..r - 1 {
            assert!(sim.kill(&live[(start + k) % live.len()].addr));
        }
        let took = converge(&mut sim, 10);
        assert!(
            took.is_some(),
            "round {round}: not consistent after the crash"
        );
        check_lookups(&mut sim, 200);
    }
    assert_eq!(sim.live().len(), 100 - 3 * (r - 1));
}

#[test]
fn lookups_survive_fresh_crashes_before_repair() {
    let mut sim = grown_and_converged(23, 60, 3);
    sim.run(20);
    // Kill a tenth of the ring at once, non-adjacent, and look up at once:
    // stale fingers time out and the lookups fall back.
    let live = sim.live();
    for k in (0..live.len()).step_by(10) {
        sim.kill(&live[k].addr);
    }
    let before = sim.timeouts();
    for _ in 0..100 {
        let from = sim.random_live().expect("a live node");
        let key = sim.random_id();
        assert!(
            sim.lookup(&from, &key).is_some(),
            "lookup from {from} failed"
        );
    }
    assert!(sim.timeouts() > before, "the crashes went unnoticed");
    assert!(converge(&mut sim, 10).is_some());
    check_lookups(&mut sim, 200);
}

#[test]
fn graceful_leaves_need_no_failure_detection() {
    let mut sim = grown_and_converged(31, 60, 3);
    sim.run(10);
    for _ in 0..8 {
        let leaving = sim.random_live().expect("a live node");
        let timeouts = sim.timeouts();
        assert!(sim.leave(&leaving));
        // Consistent as soon as the notices are in: no round, no timeout.
        assert_eq!(sim.timeouts(), timeouts);
        assert!(
            sim.is_consistent(),
            "not consistent right after {leaving} left"
        );
        sim.run(2);
        assert!(
            sim.is_consistent(),
            "not consistent two rounds after {leaving} left"
        );
    }
    assert_eq!(sim.live().len(), 52);
    check_lookups(&mut sim, 200);
}

#[test]
fn leaving_adjacent_nodes_one_after_the_other() {
    let mut sim = grown_and_converged(33, 30, 3);
    let live = sim.live();
    for node in &live[5..9] {
        assert!(sim.leave(&node.addr));
        assert!(
            sim.is_consistent(),
            "not consistent after {} left",
            node.addr
        );
    }
    check_lookups(&mut sim, 100);
}

#[test]
fn joins_and_crashes_interleaved() {
    let mut sim = grown_and_converged(41, 40, 3);
    for next in 40..70 {
        let via = sim.random_live().expect("a live node");
        sim.add_node(&addr(next), Some(&via)).expect("join");
        let victim = sim.random_live().expect("a live node");
        sim.kill(&victim);
        sim.run(3);
    }
    assert_eq!(sim.live().len(), 40);
    let took = converge(&mut sim, CONVERGE_TICKS);
    assert!(took.is_some(), "churned ring did not converge");
    check_lookups(&mut sim, 300);
}

#[test]
fn a_crashed_address_can_rejoin_before_it_is_forgotten() {
    let mut sim = grown_and_converged(51, 20, 3);
    let live = sim.live();
    let victim = live[7].addr.clone();
    assert!(sim.kill(&victim));
    // Its neighbours still name it; the join must not make it a ring of one.
    let via = live[0].addr.clone();
    sim.add_node(&victim, Some(&via)).expect("rejoin");
    assert!(sim.state(&victim).is_some_and(|s| !s.is_alone()));
    assert!(converge(&mut sim, 10).is_some());
    check_lookups(&mut sim, 100);
}

#[test]
fn mean_path_length_is_about_half_log2_n() {
    for (seed, n) in [(61, 64usize), (62, 128)] {
        let mut sim = grown_and_converged(seed, n, 3);
        // fix_fingers refreshes one run of equal fingers per round: about
        // log2 N + a few rounds cover the table.
        let mut rounds = 0;
        while !fingers_exact(&sim) && rounds < 60 {
            sim.run(1);
            rounds += 1;
        }
        assert!(
            fingers_exact(&sim),
            "{n} nodes: fingers not exact after 60 rounds"
        );
        let hops = check_lookups(&mut sim, 1000);
        let mean = hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len() as f64;
        let bound = 0.5 * (n as f64).log2() + 1.0;
        println!("{n} nodes: mean {mean:.2} hops (bound {bound:.2}), fingers exact after {rounds} more rounds");
        assert!(mean <= bound, "{n} nodes: mean {mean:.2} hops > {bound:.2}");
        assert!(hops.iter().all(|&h| h as usize <= ID_BITS));
    }
}

#[test]
fn same_seed_same_run() {
    let summary = |seed| {
        let mut sim = grow(seed, 25, 3);
        sim.run(5);
        let links: Vec<(NodeRef, Vec<NodeRef>)> = sim
            .live()
            .into_iter()
            .map(|n| {
                let succs = sim.state(&n.addr).map(|s| s.successors().to_vec());
                (n, succs.unwrap_or_default())
            })
            .collect();
        (sim.delivered(), links)
    };
    assert_eq!(summary(3), summary(3));
    assert_ne!(summary(3).0, summary(4).0);
}
