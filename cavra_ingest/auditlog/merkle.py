"""The RFC 9162 §2.1 Merkle tree: hashes, the ranges a proof is made of, and proof verification."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
Range = tuple[int, int]  # leaves [start, end)


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """Return the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Decompose MTH(D[start:end]) into complete subtrees (start, size), left to right.

    Every range a proof from the root names starts on a multiple of its first subtree's size, so each
    subtree is aligned: the node at level log2(size), index start // size.
    """
    out = []
    while end > start:
        size = end - start
        k = size if size & (size - 1) == 0 else split(size)
        out.append((start, k))
        start += k
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes of `subtrees(...)`, left to right, into the range's MTH."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (for small lists and tests)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose MTHs make up PATH(index, D[0:size]), leaf first (RFC 9162 §2.1.3.1)."""
    ranges: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index - start < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return ranges[::-1]


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The ranges whose MTHs make up PROOF(first, D[0:second]) (RFC 9162 §2.1.4.1)."""

    def subproof(m: int, start: int, end: int, whole: bool) -> list[Range]:
        n = end - start
        if m == n:
            return [] if whole else [(start, end)]
        k = split(n)
        if m <= k:
            return [*subproof(m, start, start + k, whole), (start + k, end)]
        return [*subproof(m - k, start + k, end, False), (start, start + k)]

    return subproof(first, 0, second, True) if 0 < first < second else []


class Compact:
    """The perfect subtrees left of the next leaf: roots of every prefix in O(log n) each, leaves fed in order."""

    def __init__(self) -> None:
        self.size = 0
        self.peaks: list[tuple[int, bytes]] = []  # (size, hash), sizes strictly decreasing

    def append(self, leaf: bytes) -> None:
        size, value = 1, leaf
        while self.peaks and self.peaks[-1][0] == size:
            left = self.peaks.pop()[1]
            size, value = size * 2, node_hash(left, value)
        self.peaks.append((size, value))
        self.size += 1

    def root(self) -> bytes:
        return fold([value for _, value in self.peaks])


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root_hash: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root_hash


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2 (equal sizes: an empty proof and equal roots)."""
    if first == second:
        return not path and first_root == second_root
    if first == 0 or first > second or not path:
        return False
    path = list(path)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0
