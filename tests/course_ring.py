"""Drives idle chord-node processes the way the course's test scripts do.

Usage: course_ring.py HOST FIRST_PORT N

Speaks MessagePack-RPC over plain sockets (the `msgpack` package only):
checks that bad input gets an error or a closed connection, builds the
ring with `create` on the first node and `join` of each next node through
the one before it, checks `find_successor` from every node against the
owner computed from the `get_info` ids, `kill`s two nodes, waits for the
ring to heal and checks again. Prints "ok" last; any failure exits non-zero
with one line saying what was wrong. Every wait is bounded.
"""

import random
import socket
import sys
import time

import msgpack

# Deadline of one call; `join` may retry its bootstrap peer for longer.
CALL_TIMEOUT = 10.0
JOIN_TIMEOUT = 40.0
# How long nodes may take to start, and the ring to settle.
START_TIMEOUT = 30.0
SETTLE_TIMEOUT = 60.0
# How soon a node told to `kill` must stop answering.
KILL_GRACE = 3.0
# Random keys looked up from every node in one check.
KEYS_PER_NODE = 40


class RpcError(Exception):
    pass


class Node:
    """One course node, reached over MessagePack-RPC."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.msgid = 0

    def call(self, method, *params, timeout=CALL_TIMEOUT):
        self.msgid += 1
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(msgpack.packb([0, self.msgid, method, list(params)]))
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                data = s.recv(4096)
                if not data:
                    raise RpcError(f"{self.port}: connection closed during {method}")
                unpacker.feed(data)
                for msg in unpacker:
                    kind, msgid, error, result = msg
                    assert kind == 1 and msgid == self.msgid, msg
                    if error is not None:
                        raise RpcError(f"{self.port} {method}: {error}")
                    return result

    def __repr__(self):
        return f"{self.host}:{self.port}"


def raw_exchange(host, port, payload, timeout=5.0):
    """Sends raw bytes; returns the decoded replies until the server closes."""
    replies = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            unpacker.feed(data)
            replies.extend(unpacker)
    return replies


def check_bad_input(node):
    h, p = node.host, node.port
    for method, params, words in [
        ("no_such_method", [], "unknown method"),
        ("find_successor", [], "takes 1 params"),
        ("get_info", [1, 2], "takes 0 params"),
        ("find_successor", ["not an id"], "32-bit"),
        ("find_successor", [2**40], "32-bit"),
        ("join", [[]], "join takes a node"),
    ]:
        replies = raw_exchange(h, p, msgpack.packb([0, 9, method, params]))
        assert len(replies) == 1, (method, replies)
        kind, msgid, error, result = replies[0]
        assert kind == 1 and msgid == 9 and result is None, replies
        assert words in str(error), (method, error)
    # Not MessagePack-RPC after the first byte: the connection is closed.
    assert raw_exchange(h, p, bytes([0x94, 0xC1, 0xC1, 0xC1, 0xC1])) == []
    # Oversized: a 1 MiB string is never buffered whole.
    huge = b"\x94\x00\x01\xdb" + (1 << 20).to_bytes(4, "big") + b"x" * (1 << 20)
    try:
        assert raw_exchange(h, p, huge) == []
    except OSError:
        # Closed while we were still sending (broken pipe, reset, or not
        # connected by the time we shut our side): just as good.
        pass
    # Two requests in one packet are both answered, in order.
    two = msgpack.packb([0, 1, "get_info", []]) + msgpack.packb([0, 2, "get_info", []])
    assert [r[1] for r in raw_exchange(h, p, two)] == [1, 2]
    # The node still serves.
    node.call("get_info")


def wait_started(nodes):
    deadline = time.monotonic() + START_TIMEOUT
    for node in nodes:
        while True:
            try:
                node.call("get_info", timeout=2.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def owner(ids, key):
    """The first id >= key on the 32-bit circle: the truth of the course."""
    ids = sorted(ids)
    return next((i for i in ids if i >= key), ids[0])


def wrong_lookups(nodes, rng):
    """Lookups that named someone other than the true owner."""
    ids = [n.call("get_info")[2] for n in nodes]
    assert len(set(ids)) == len(ids), f"two nodes share their top 32 bits: {ids}"
    keys = [rng.randrange(2**32) for _ in range(KEYS_PER_NODE)]
    for i in ids:
        keys += [i, (i - 1) % 2**32, (i + 1) % 2**32]
    keys += [0, 2**32 - 1]
    wrong = []
    for node in nodes:
        for key in keys:
            try:
                got = node.call("find_successor", key)[2]
            except (OSError, RpcError) as e:
                wrong.append(f"{node} {key}: {e}")
                continue
            if got != owner(ids, key):
                wrong.append(f"{node} {key}: got {got}, truth {owner(ids, key)}")
    return wrong


def wait_correct(nodes, rng, what):
    deadline = time.monotonic() + SETTLE_TIMEOUT
    start = time.monotonic()
    while True:
        wrong = wrong_lookups(nodes, rng)
        if not wrong:
            print(f"{what}: every lookup from {len(nodes)} nodes named the true owner "
                  f"after {time.monotonic() - start:.1f} s", flush=True)
            return
        if time.monotonic() > deadline:
            sys.exit(f"{what}: {len(wrong)} wrong lookups, e.g. {wrong[:3]}")
        time.sleep(0.5)


def main():
    host, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(8)
    nodes = [Node(host, first + i) for i in range(n)]
    wait_started(nodes)
    check_bad_input(nodes[0])
    for node in nodes:
        try:
            node.call("find_successor", 1)
            sys.exit(f"{node}: an idle node answered find_successor")
        except RpcError as e:
            assert "idle" in str(e), e

    # The course's order: the first node creates, each next one joins
    # through the node before it.
    nodes[0].call("create")
    for prev, node in zip(nodes, nodes[1:]):
        info = prev.call("get_info")
        assert info[:2] == [prev.host, prev.port], info
        node.call("join", info, timeout=JOIN_TIMEOUT)
    wait_correct(nodes, rng, "built")
    # On a node already in a ring, create changes nothing (course scripts
    # call it before every upload) and join is refused.
    for node in nodes:
        node.call("create")
    wrong = wrong_lookups(nodes, rng)
    assert not wrong, f"create on a ring member moved it: {wrong[:3]}"
    try:
        nodes[1].call("join", nodes[0].call("get_info"))
        sys.exit("a node already in a ring joined again")
    except RpcError as e:
        assert "already in a ring" in str(e), e
    ids = [n.call("get_info")[2] for n in nodes]
    for node in nodes:
        assert node.call("get_predecessor")[2] in ids
        assert node.call("get_successor", 0)[2] in ids

    # Two nodes crash (not neighbours of each other in the list order).
    victims = [nodes[2], nodes[5]]
    for victim in victims:
        try:
            victim.call("kill")
        except (OSError, RpcError):
            pass  # the process may be gone before the answer is read
        print(f"killed {victim}", flush=True)
    alive = [node for node in nodes if node not in victims]
    # A killed node exits right after its answer is written; until the
    # process is gone its other threads may still answer a call (seen once
    # under load), so "dead" means "stops answering within a few seconds".
    for victim in victims:
        deadline = time.monotonic() + KILL_GRACE
        while True:
            try:
                victim.call("get_info", timeout=2.0)
            except (OSError, RpcError):
                break  # refused, or cut off as the process ended
            if time.monotonic() > deadline:
                sys.exit(f"{victim} still answers {KILL_GRACE} s after kill")
            time.sleep(0.05)
    wait_correct(alive, rng, "healed")
    print("ok")


if __name__ == "__main__":
    main()
