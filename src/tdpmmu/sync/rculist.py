"""RCU-protected doubly linked lists (include/linux/rculist.h), as much as the TDP MMU needs.

Readers follow ``next`` pointers with ``rcu_dereference`` (so they must be inside an
RCU read-side section, or hold the list's protecting lock); writers add and delete
under the protecting lock, which :class:`RcuList` asserts.  ``list_del_rcu`` leaves the
deleted node's ``next`` pointer intact so a reader standing on it can carry on -- which
is why the node may only be freed after a grace period.

Each node carries its own ``next`` cell (a :class:`Words` that can live inside the
node's allocation, so walking onto a freed node is a use-after-free).
"""

from __future__ import annotations

from .atomic import Words
from .lockdep import lockdep_assert_held, lockdep_is_held
from .rcu import (rcu_assign_pointer, rcu_dereference_check, rcu_dereference_protected,
                  rcu_read_lock_held)


class RcuListNode:
    """Mix-in state for a list element: ``link`` is its ``next`` pointer cell."""

    def init_link(self, name: str, owner: Words | None = None) -> None:
        self.link = Words(f"{name}.link", 1, None, owner=owner)
        self.link_prev = None
        self.on_list = False


class RcuList:
    """``struct list_head`` used with the _rcu list primitives.

    ``lock`` is the lock that serialises writers (list_add_rcu / list_del_rcu assert
    it); ``reader_lock`` is a lock whose holders may read without RCU (the kernel's
    lockdep condition on the list walk), or None.
    """

    def __init__(self, name: str, lock, reader_lock=None):
        self.name = name
        self.head = Words(name, 1, None)
        self.lock = lock
        self.reader_lock = reader_lock
        self._last = None

    def _cond(self) -> bool:
        return lockdep_is_held(self.lock) or (
            self.reader_lock is not None and lockdep_is_held(self.reader_lock))

    # -- writers (hold self.lock) ------------------------------------------------

    def list_add_rcu(self, node) -> None:
        """Add at the head (newest first), publishing with rcu_assign_pointer."""
        lockdep_assert_held(self.lock)
        first = rcu_dereference_protected(self.head, 0, True)
        node.link.write(0, first)           # private until published
        node.link_prev = None
        if first is not None:
            first.link_prev = node
        node.on_list = True
        rcu_assign_pointer(self.head, 0, node)

    def list_del_rcu(self, node) -> None:
        """Unlink; the node's own next pointer stays valid for concurrent readers."""
        lockdep_assert_held(self.lock)
        nxt = rcu_dereference_protected(node.link, 0, True)
        prev = node.link_prev
        cell = self.head if prev is None else prev.link
        rcu_assign_pointer(cell, 0, nxt)
        if nxt is not None:
            nxt.link_prev = prev
        node.link_prev = None
        node.on_list = False

    # -- readers ------------------------------------------------------------------

    def list_first_or_null_rcu(self):
        return rcu_dereference_check(self.head, 0, self._cond(), f"{self.lock.name} held")

    def list_next_or_null_rcu(self, node):
        return rcu_dereference_check(node.link, 0, self._cond(), f"{self.lock.name} held")

    def list_for_each_entry_rcu(self):
        """Walk under RCU (or the protecting lock)."""
        node = self.list_first_or_null_rcu()
        while node is not None:
            yield node
            node = self.list_next_or_null_rcu(node)

    def list_for_each_entry(self, protected_by: bool, what: str):
        """A plain walk, legal only when ``protected_by`` holds (e.g. the write lock)."""
        node = rcu_dereference_protected(self.head, 0, protected_by, what)
        while node is not None:
            yield node
            node = rcu_dereference_protected(node.link, 0, protected_by, what)

    def list_empty(self) -> bool:
        return self.head.read_once(0) is None

    def peek_all(self) -> list:
        """Every node, without scheduling points or checks (oracles, reports)."""
        out = []
        node = self.head.peek(0)
        while node is not None:
            out.append(node)
            node = node.link.peek(0)
        return out

    def __str__(self) -> str:
        return self.name


__all__ = ["RcuList", "RcuListNode", "rcu_read_lock_held"]
