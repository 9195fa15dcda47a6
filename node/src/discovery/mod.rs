//! How a node finds its ring. Static mode is the flags (`--join` or create);
//! AWS mode ([`aws`]) lists the Auto Scaling group and applies the pure rules
//! here, which are what the unit tests pin down.
//!
//! Invariants of [`bootstrap`]: a live, answering node is always joined rather
//! than a second ring made; when none is live, exactly one member (the lowest
//! instance id among the pending and in-service ones) creates the ring, so
//! instances that boot together never make two rings; members on their way
//! out of the group are never joined and never create.
//!
//! [`rejoin_via`] decides when a node that finds itself alone goes back to the
//! others, with a tie-break so two lone nodes never chase each other.

pub mod aws;
pub mod lifecycle;

/// A group member's place in its group's lifecycle, as discovery needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Booting into the group.
    Pending,
    InService,
    /// Terminating, terminated, detaching or in standby: not a ring member
    /// to rely on.
    Leaving,
}

/// One member of the group, as seen by the node deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub instance_id: String,
    pub state: MemberState,
    /// Where its node serves, when known.
    pub addr: Option<String>,
    /// Its node answered (it is in a ring and serving).
    pub live: bool,
    /// Its node is a ring of one (its successor is itself).
    pub alone: bool,
}

/// What a booting node should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Join the ring through this address.
    Join(String),
    /// No node is live and this instance is the one to create the ring.
    Create,
    /// No node is live and `creator` (a lower instance id) should create it:
    /// ask again shortly.
    Wait { creator: String },
}

/// The deterministic bootstrap rule for instance `me` given its group.
pub fn bootstrap(me: &str, members: &[Member]) -> Bootstrap {
    if let Some(addr) = live_peers(me, members).first() {
        return Bootstrap::Join(addr.to_string());
    }
    // `me` takes part even when the group's listing lags behind our boot.
    let creator = members
        .iter()
        .filter(|m| m.state != MemberState::Leaving)
        .map(|m| m.instance_id.as_str())
        .chain(std::iter::once(me))
        .min()
        .unwrap_or(me);
    if creator == me {
        Bootstrap::Create
    } else {
        Bootstrap::Wait {
            creator: creator.to_owned(),
        }
    }
}

/// Whom a node that is alone in its ring should re-join through, if anyone.
/// A live node that is part of a larger ring is always a good target; a live
/// node that is alone too is one only if its instance id is lower, so of two
/// lone nodes exactly one moves.
pub fn rejoin_via(me: &str, members: &[Member]) -> Option<String> {
    let mut candidates: Vec<&Member> = eligible(me, members)
        .into_iter()
        .filter(|m| !m.alone || m.instance_id.as_str() < me)
        .collect();
    candidates.sort_by_key(|m| order(m));
    candidates.first().and_then(|m| m.addr.clone())
}

/// Addresses of the live peers a node may join, best first: in-service before
/// pending, then by instance id.
pub fn live_peers<'a>(me: &str, members: &'a [Member]) -> Vec<&'a str> {
    let mut peers = eligible(me, members);
    peers.sort_by_key(|m| order(m));
    peers
        .into_iter()
        .filter_map(|m| m.addr.as_deref())
        .collect()
}

/// Live members other than `me` that can be reached and are not leaving.
fn eligible<'a>(me: &str, members: &'a [Member]) -> Vec<&'a Member> {
    members
        .iter()
        .filter(|m| {
            m.instance_id != me && m.live && m.addr.is_some() && m.state != MemberState::Leaving
        })
        .collect()
}

fn order(m: &Member) -> (bool, &str) {
    (m.state != MemberState::InService, m.instance_id.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use MemberState::{InService, Leaving, Pending};

    fn m(id: &str, state: MemberState, live: bool) -> Member {
        Member {
            instance_id: id.into(),
            state,
            addr: Some(format!("addr-{id}")),
            live,
            alone: false,
        }
    }

    #[test]
    fn bootstrap_rule() {
        struct Case {
            name: &'static str,
            me: &'static str,
            members: Vec<Member>,
            want: Bootstrap,
        }
        let join = |id: &str| Bootstrap::Join(format!("addr-{id}"));
        let wait = |id: &str| Bootstrap::Wait { creator: id.into() };
        let cases = vec![
            Case {
                name: "alone in the group creates",
                me: "i-5",
                members: vec![m("i-5", Pending, false)],
                want: Bootstrap::Create,
            },
            Case {
                name: "not yet listed, empty group: creates",
                me: "i-5",
                members: vec![],
                want: Bootstrap::Create,
            },
            Case {
                name: "three boot together: the lowest creates",
                me: "i-1",
                members: vec![
                    m("i-3", Pending, false),
                    m("i-1", Pending, false),
                    m("i-2", Pending, false),
                ],
                want: Bootstrap::Create,
            },
            Case {
                name: "three boot together: the others wait for the lowest",
                me: "i-3",
                members: vec![
                    m("i-3", Pending, false),
                    m("i-1", Pending, false),
                    m("i-2", InService, false),
                ],
                want: wait("i-1"),
            },
            Case {
                name: "a live node is joined, even by the lowest id",
                me: "i-1",
                members: vec![m("i-1", Pending, false), m("i-7", InService, true)],
                want: join("i-7"),
            },
            Case {
                name: "in-service live nodes are preferred over pending ones",
                me: "i-9",
                members: vec![
                    m("i-2", Pending, true),
                    m("i-8", InService, true),
                    m("i-4", InService, true),
                ],
                want: join("i-4"),
            },
            Case {
                name: "a terminating lowest id neither creates nor is waited for",
                me: "i-2",
                members: vec![m("i-1", Leaving, false), m("i-2", Pending, false)],
                want: Bootstrap::Create,
            },
            Case {
                name: "a live but terminating node is not joined",
                me: "i-2",
                members: vec![m("i-1", Leaving, true), m("i-2", Pending, false)],
                want: Bootstrap::Create,
            },
            Case {
                name: "a live node without an address cannot be joined",
                me: "i-3",
                members: vec![
                    Member {
                        addr: None,
                        ..m("i-1", InService, true)
                    },
                    m("i-3", Pending, false),
                ],
                want: wait("i-1"),
            },
            Case {
                name: "our own entry never counts as a live peer",
                me: "i-1",
                members: vec![m("i-1", InService, true)],
                want: Bootstrap::Create,
            },
        ];
        for c in cases {
            assert_eq!(bootstrap(c.me, &c.members), c.want, "{}", c.name);
        }
    }

    #[test]
    fn rejoin_rule() {
        let alone = |id: &str| Member {
            alone: true,
            ..m(id, InService, true)
        };
        // A ring of several exists: go to it.
        assert_eq!(
            rejoin_via("i-5", &[alone("i-5"), m("i-6", InService, true)]).as_deref(),
            Some("addr-i-6")
        );
        // Two lone nodes: the higher id moves, the lower stays.
        assert_eq!(
            rejoin_via("i-5", &[alone("i-5"), alone("i-3")]).as_deref(),
            Some("addr-i-3")
        );
        assert_eq!(rejoin_via("i-3", &[alone("i-5"), alone("i-3")]), None);
        // Nobody else live, or only leaving ones: stay.
        assert_eq!(
            rejoin_via("i-5", &[alone("i-5"), m("i-6", InService, false)]),
            None
        );
        assert_eq!(
            rejoin_via("i-5", &[alone("i-5"), m("i-6", Leaving, true)]),
            None
        );
    }
}
