"""Which token prefixes have key/value states cached, and where: a token trie over slots.

Every node is one token at one position of some cached sequence; its `slot` is where that
token's keys and values sit in the arena (`kv_arena.KVArena`). A request's cached part is the
path from the root to the deepest node matching it; its attention reads exactly the slots on
that path. Nodes are shared by every sequence through them, so a prompt's trunk, the covers of
a prompt and many sequences after one template are stored once.

Eviction is least-recently-used over leaves: a node is stamped whenever a request reads
through it, and only leaves are evicted (a parent goes once its last child has), so whatever
stays cached is still a whole prefix.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

__all__ = ["RadixNode", "RadixTree"]


class RadixNode:
    __slots__ = ("token", "parent", "children", "slot", "depth", "stamp")

    def __init__(self, token: int, parent: RadixNode | None, slot: int, depth: int, stamp: int) -> None:
        self.token = token
        self.parent = parent
        self.children: dict[int, RadixNode] = {}
        self.slot = slot
        """Position of this token's keys/values in the arena."""
        self.depth = depth
        """Position of the token in its sequence (its position id); the root is -1."""
        self.stamp = stamp
        """Clock value of the last request that read through this node (LRU)."""


class RadixTree:
    def __init__(self) -> None:
        self.root = RadixNode(-1, None, -1, -1, 0)
        self.clock = 0
        self.size = 0
        """Nodes below the root (cached tokens)."""

    def tick(self) -> int:
        """Advance the clock (once per batch) and return the new time."""
        self.clock += 1
        return self.clock

    def match(self, seq: Sequence[int]) -> tuple[RadixNode, int]:
        """Deepest node along `seq` and the number of tokens it covers."""
        node, n = self.root, 0
        for t in seq:
            child = node.children.get(t)
            if child is None:
                break
            node, n = child, n + 1
        return node, n

    def path(self, node: RadixNode) -> list[RadixNode]:
        """Nodes from the root's child down to `node`, stamped with the current clock."""
        out: list[RadixNode] = []
        while node.parent is not None:
            node.stamp = self.clock
            out.append(node)
            node = node.parent
        out.reverse()
        return out

    def add(self, parent: RadixNode, token: int, slot: int) -> RadixNode:
        """The child of `parent` for `token`, now at `slot` (an existing child is re-pointed:
        its states were just recomputed, the old slot becomes garbage)."""
        child = parent.children.get(token)
        if child is None:
            child = RadixNode(token, parent, slot, parent.depth + 1, self.clock)
            parent.children[token] = child
            self.size += 1
        else:
            child.slot, child.stamp = slot, self.clock
        return child

    def nodes(self) -> Iterator[RadixNode]:
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def evict(self, count: int, *, before: int) -> int:
        """Remove up to `count` least recently used leaves (repeatedly: a parent whose children
        are all gone becomes a leaf), never one stamped at or after `before`. Returns how many
        nodes went; their slots are garbage from then on."""
        leaves = [(n.stamp, id(n), n) for n in self.nodes() if not n.children and n.stamp < before]
        heapq.heapify(leaves)
        gone = 0
        while leaves and gone < count:
            _, _, node = heapq.heappop(leaves)
            parent = node.parent
            assert parent is not None
            del parent.children[node.token]
            node.parent = None
            gone += 1
            if parent.parent is not None and not parent.children and parent.stamp < before:
                heapq.heappush(leaves, (parent.stamp, id(parent), parent))
        self.size -= gone
        return gone

    def clear(self) -> None:
        self.root.children.clear()
        self.size = 0
