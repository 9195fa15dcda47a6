//! An iterative `find_successor` as a pure state machine.
//!
//! The node starting a lookup keeps the walk to itself: it asks one node at
//! a time for its [`Route`] to the target and moves on to the node named,
//! until some node names the owner. [`Lookup`] decides whom to ask next;
//! the driver (the async node, or the simulator) does the asking and feeds
//! each reply or failure back. Keeping the walk at the origin means a dead
//! node on the path costs one timeout there and a fallback, instead of a
//! lost request somewhere in the ring.
//!
//! Guarantees, whatever peers answer:
//! - progress is monotone: the walk only follows a candidate that lies
//!   strictly between the node that proposed it and the target, so it only
//!   ever moves clockwise towards the target. Owners are exempt, as they lie
//!   at or past the target by definition: the owner in a final answer, and
//!   the last-resort owner a [`Route::Forward`] may end with. The latter is
//!   only asked once every other candidate of its step is exhausted, and
//!   only to confirm: if it forwards instead of answering, that is a dead end;
//! - no node is asked twice, and a dead end backtracks to the untried
//!   candidates of earlier steps;
//! - at most [`MAX_HOPS`] answers are taken; each step keeps at most
//!   [`MAX_CANDIDATES`] candidates; so every lookup ends.

use std::collections::HashSet;

use super::id::{Id, NodeRef, ID_BITS};
use super::state::{Route, MAX_CANDIDATES};

/// Most answers a lookup takes before giving up. Monotone progress with
/// working fingers needs about log2 N; this generous cap only stops a walk
/// along a ring of stale or lying nodes.
pub const MAX_HOPS: u32 = 2 * ID_BITS as u32;

/// What the driver of a [`Lookup`] should do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupStep {
    /// Ask this node for its route to the target.
    Ask(NodeRef),
    /// The owner of the target, and how many remote nodes answered on the way.
    Done { owner: NodeRef, hops: u32 },
    /// No node left to ask, or the hop cap was reached.
    Failed(String),
}

/// One iterative lookup in progress. See the module documentation.
#[derive(Clone, Debug)]
pub struct Lookup {
    target: Id,
    hops: u32,
    /// Untried candidates, one list per step. The node being asked is the
    /// front of the last list; the front of each earlier list is the node
    /// that proposed the list after it.
    steps: Vec<Vec<Candidate>>,
    /// Addresses that answered or failed: never asked again.
    asked: HashSet<String>,
    failed: Vec<NodeRef>,
    outcome: Option<LookupStep>,
}

/// A node to ask, and whether to follow its forwards.
#[derive(Clone, Debug)]
struct Candidate {
    node: NodeRef,
    /// A last-resort owner past the target: asked only to confirm.
    confirm_only: bool,
}

impl Lookup {
    /// Starts a lookup of `target` from the route the starting node computed
    /// locally (no hop taken yet).
    pub fn new(target: Id, first: Route) -> Self {
        let mut lookup = Lookup {
            target,
            hops: 0,
            steps: Vec::new(),
            asked: HashSet::new(),
            failed: Vec::new(),
            outcome: None,
        };
        match first {
            Route::Owner(owner) => {
                lookup.outcome = Some(LookupStep::Done { owner, hops: 0 });
            }
            // Our own candidates need no progress check: they come from the
            // local table. Without our id the last-resort owner cannot be
            // told apart, so it is asked like the rest; the walk it may start
            // is still monotone from there on.
            Route::Forward(candidates) => {
                let step = lookup.admit(candidates, None);
                lookup.steps.push(step);
                lookup.settle();
            }
        }
        lookup
    }

    pub fn target(&self) -> Id {
        self.target
    }

    /// Answers taken so far.
    pub fn hops(&self) -> u32 {
        self.hops
    }

    /// What to do now. Stays the same until the driver reports an answer or
    /// a failure for the node named in [`LookupStep::Ask`].
    pub fn next(&self) -> LookupStep {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        match self.current() {
            Some(c) => LookupStep::Ask(c.node.clone()),
            // `settle` sets an outcome whenever it empties the steps.
            None => LookupStep::Failed("no node left to ask".into()),
        }
    }

    /// The node asked answered with its route. An answer from any other node
    /// (a late reply to an earlier attempt) is ignored.
    pub fn on_route(&mut self, from: &NodeRef, route: Route) {
        if self.outcome.is_some() {
            return;
        }
        let Some(Candidate {
            node: asked,
            confirm_only,
        }) = self.current().cloned()
        else {
            return;
        };
        if asked.addr != from.addr {
            return;
        }
        self.hops += 1;
        self.asked.insert(asked.addr.clone());
        match route {
            Route::Owner(owner) => {
                self.outcome = Some(LookupStep::Done {
                    owner,
                    hops: self.hops,
                });
                return;
            }
            // A last-resort owner that does not claim the target knows a
            // node we could not reach or were not told of: no way forward.
            Route::Forward(_) if confirm_only => {}
            Route::Forward(candidates) => {
                if self.hops >= MAX_HOPS {
                    self.outcome = Some(LookupStep::Failed(format!(
                        "no owner found for {} within {MAX_HOPS} hops",
                        self.target.short()
                    )));
                    return;
                }
                let step = self.admit(candidates, Some(&asked.id));
                if !step.is_empty() {
                    self.steps.push(step);
                }
                // An empty step leaves `asked` at the front, already in
                // `asked`: `settle` moves on to its siblings.
            }
        }
        self.settle();
    }

    /// The node asked is dead or timed out: try the next candidate.
    pub fn on_failure(&mut self, peer: &NodeRef) {
        if self.outcome.is_some() {
            return;
        }
        self.asked.insert(peer.addr.clone());
        if !self.failed.iter().any(|n| n.addr == peer.addr) {
            self.failed.push(peer.clone());
        }
        self.settle();
    }

    /// Nodes that failed during this lookup, for the driver's [`RingState`].
    ///
    /// [`RingState`]: super::state::RingState
    pub fn failed_peers(&self) -> &[NodeRef] {
        &self.failed
    }

    fn current(&self) -> Option<&Candidate> {
        self.steps.last().and_then(|step| step.first())
    }

    /// Keeps the candidates worth asking: new to this lookup, distinct, and
    /// (when a proposer is given) strictly closer to the target than it,
    /// except for one last-resort owner, moved to the end.
    fn admit(&self, candidates: Vec<NodeRef>, proposer: Option<&Id>) -> Vec<Candidate> {
        let mut step: Vec<Candidate> = Vec::new();
        let mut last_resort: Option<Candidate> = None;
        for node in candidates.into_iter().take(MAX_CANDIDATES) {
            if self.asked.contains(&node.addr) || step.iter().any(|c| c.node.addr == node.addr) {
                continue;
            }
            match proposer {
                Some(p) if !node.id.in_open(p, &self.target) => {
                    if last_resort.is_none() && node.id != *p {
                        last_resort = Some(Candidate {
                            node,
                            confirm_only: true,
                        });
                    }
                }
                _ => step.push(Candidate {
                    node,
                    confirm_only: false,
                }),
            }
        }
        step.extend(last_resort.filter(|l| !step.iter().any(|c| c.node.addr == l.node.addr)));
        step
    }

    /// Drops candidates already asked from the current step; when a step
    /// runs out, its proposer is exhausted too, so backtracks to the
    /// proposer's siblings. Fails when nothing is left.
    fn settle(&mut self) {
        while let Some(step) = self.steps.last_mut() {
            step.retain(|c| !self.asked.contains(&c.node.addr));
            if !step.is_empty() {
                return;
            }
            self.steps.pop();
        }
        self.outcome = Some(LookupStep::Failed(format!(
            "no live node could route {} ({} failed)",
            self.target.short(),
            self.failed.len()
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::id::fixtures::{id, node as n};
    use crate::chord::id::ID_BYTES;

    fn fwd(nodes: &[u8]) -> Route {
        Route::Forward(nodes.iter().map(|&x| n(x)).collect())
    }

    fn done(owner: u8, hops: u32) -> LookupStep {
        LookupStep::Done {
            owner: n(owner),
            hops,
        }
    }

    fn ask(l: &Lookup) -> u8 {
        match l.next() {
            LookupStep::Ask(node) => node.id.as_bytes()[ID_BYTES - 1],
            other => panic!("expected an ask, got {other:?}"),
        }
    }

    #[test]
    fn local_owner_takes_no_hops() {
        let l = Lookup::new(id(5), Route::Owner(n(9)));
        assert_eq!(l.next(), done(9, 0));
        assert_eq!(l.target(), id(5));
    }

    #[test]
    fn walks_forward_and_counts_hops() {
        let mut l = Lookup::new(id(200), fwd(&[100, 50]));
        assert_eq!(ask(&l), 100);
        l.on_route(&n(100), fwd(&[180, 150]));
        assert_eq!(ask(&l), 180);
        l.on_route(&n(180), Route::Owner(n(210)));
        assert_eq!(l.next(), done(210, 2));
        // Late answers change nothing.
        l.on_route(&n(150), Route::Owner(n(1)));
        l.on_failure(&n(210));
        assert_eq!(l.next(), done(210, 2));
    }

    #[test]
    fn wraps_around_zero() {
        let mut l = Lookup::new(id(10), fwd(&[250]));
        l.on_route(&n(250), fwd(&[240, 5, 245]));
        // 240 and 245 are behind 250: no progress. The first is kept as a
        // last-resort owner, the second dropped.
        assert_eq!(ask(&l), 5);
        l.on_failure(&n(5));
        assert_eq!(ask(&l), 240);
        l.on_failure(&n(240));
        assert!(matches!(l.next(), LookupStep::Failed(_)));
        assert_eq!(l.failed_peers(), &[n(5), n(240)]);
    }

    #[test]
    fn failures_fall_back_then_backtrack() {
        let mut l = Lookup::new(id(200), fwd(&[100, 50]));
        l.on_route(&n(100), fwd(&[180, 150]));
        l.on_failure(&n(180));
        assert_eq!(ask(&l), 150);
        l.on_failure(&n(150));
        // Both of 100's candidates are dead: back to the start's fallback.
        assert_eq!(ask(&l), 50);
        // 50 proposes a dead node again and a new one.
        l.on_route(&n(50), fwd(&[180, 120]));
        assert_eq!(ask(&l), 120);
        l.on_route(&n(120), Route::Owner(n(201)));
        assert_eq!(l.next(), done(201, 3));
        assert_eq!(l.failed_peers(), &[n(180), n(150)]);
    }

    #[test]
    fn rejects_regress_repeats_and_answers_from_strangers() {
        let mut l = Lookup::new(id(200), fwd(&[100]));
        l.on_route(&n(99), fwd(&[150])); // not the node asked
        assert_eq!(ask(&l), 100);
        // Proposals: itself, then three nodes not between it and the target.
        // Only the first of those is kept, as a last-resort owner.
        l.on_route(&n(100), fwd(&[100, 90, 200, 220]));
        assert_eq!(ask(&l), 90);
        // It forwards instead of claiming the target: a dead end.
        l.on_route(&n(90), fwd(&[150]));
        assert!(matches!(l.next(), LookupStep::Failed(_)));
        assert_eq!(l.hops(), 2);
    }

    #[test]
    fn last_resort_owner_is_asked_after_the_rest_fail() {
        let mut l = Lookup::new(id(170), fwd(&[100]));
        // 100's successors 150 and 160 precede the target, 200 owns it.
        l.on_route(&n(100), fwd(&[200, 160, 150]));
        assert_eq!(ask(&l), 160);
        l.on_failure(&n(160));
        assert_eq!(ask(&l), 150);
        l.on_failure(&n(150));
        assert_eq!(ask(&l), 200);
        l.on_route(&n(200), Route::Owner(n(200)));
        assert_eq!(l.next(), done(200, 2));
    }

    #[test]
    fn last_resort_owner_is_not_asked_while_a_candidate_answers() {
        let mut l = Lookup::new(id(170), fwd(&[100]));
        l.on_route(&n(100), fwd(&[160, 200]));
        assert_eq!(ask(&l), 160);
        l.on_route(&n(160), Route::Owner(n(180)));
        assert_eq!(l.next(), done(180, 2));
    }

    #[test]
    fn a_loop_of_liars_ends() {
        // Every node forwards to the next one, one id closer: the walk must
        // end by running out or by the hop cap, never spin.
        let target = Id::MAX;
        let mut at = NodeRef::from_addr("liar-0");
        let mut l = Lookup::new(target, Route::Forward(vec![at.clone()]));
        for k in 1..=(MAX_HOPS + 10) {
            let LookupStep::Ask(node) = l.next() else {
                break;
            };
            assert_eq!(node, at);
            let mut next = NodeRef::from_addr(format!("liar-{k}"));
            // Make each proposal strictly closer so only the cap stops it.
            next.id = at.id.add_pow2(0);
            l.on_route(&at, Route::Forward(vec![next.clone()]));
            at = next;
        }
        assert!(matches!(l.next(), LookupStep::Failed(reason) if reason.contains("hops")));
        assert_eq!(l.hops(), MAX_HOPS);
    }

    #[test]
    fn keeps_at_most_max_candidates_per_step() {
        let mut l = Lookup::new(id(250), fwd(&[10]));
        l.on_route(&n(10), fwd(&[200, 190, 180, 170, 160, 150]));
        for want in [200, 190, 180, 170] {
            assert_eq!(ask(&l), want);
            l.on_failure(&n(want));
        }
        // The first step's only node is exhausted too.
        assert!(matches!(l.next(), LookupStep::Failed(_)));
    }

    #[test]
    fn empty_first_route_fails() {
        let l = Lookup::new(id(1), Route::Forward(vec![]));
        assert!(matches!(l.next(), LookupStep::Failed(_)));
    }
}
