"""Kernel doubly linked lists (include/linux/list.h) with CONFIG_DEBUG_LIST checks.

A :class:`ListHead` is a ``struct list_head``: a list head or a node embedded in an
object (its ``owner``).  ``list_add`` / ``list_add_tail`` / ``list_del`` /
``list_del_init`` check the pointers they are about to rewrite exactly as
lib/list_debug.c does (``__list_add_valid_or_report``, ``__list_del_entry_valid_or_report``)
and report a :class:`~tdpmmu.runtime.errors.ListCorruption` with the kernel's text:

* adding: ``next->prev`` must be ``prev`` and ``prev->next`` must be ``next``; neither
  may be NULL; the new node must not already be ``prev`` or ``next`` (double add);
* deleting: the entry's ``next`` / ``prev`` must not be NULL (a node that was never
  initialised or added: kzalloc'ed memory) nor LIST_POISON1 / LIST_POISON2 (deleted
  already), and its neighbours must point back at it.

``list_del`` poisons the entry (``next = LIST_POISON1``, ``prev = LIST_POISON2``) as the
kernel does, so a second ``list_del`` is caught; ``list_del_init`` re-initialises it.
A node whose owner allocation was freed reports a use-after-free when touched.

Deviates: the pointers are plain Python attributes and the operations are not
scheduling points: every kernel list used this way is protected by a lock, and taking
that lock is the scheduling point.  A head created with ``lock=`` asserts it is held
(lockdep_assert_held), as the kernel's callers do.
"""

from __future__ import annotations

from ..runtime.errors import ListCorruption, UseAfterFree
from .lockdep import lockdep_assert_held


class _Poison:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: what list_del leaves in a deleted entry (include/linux/poison.h)
LIST_POISON1 = _Poison("LIST_POISON1")
LIST_POISON2 = _Poison("LIST_POISON2")


class ListHead:
    """``struct list_head``.

    ``init=True`` is INIT_LIST_HEAD / LIST_HEAD (an empty list: both pointers to itself);
    ``init=False`` is zeroed memory (kzalloc): both pointers NULL until the node is
    added.  ``owner`` is the object the node is embedded in (``list_entry`` returns it);
    ``mem`` the allocation holding it, if any (touching it once freed is a use-after-free).
    Invariant: on a list, ``self.next.prev is self and self.prev.next is self``.
    Written only under: the lock protecting the list (``lock`` of the head).
    """

    __slots__ = ("name", "next", "prev", "owner", "mem", "lock")

    def __init__(self, name: str, owner=None, *, init: bool = True, mem=None, lock=None):
        self.name = name
        self.owner = owner
        self.mem = mem
        self.lock = lock
        self.next = self if init else None
        self.prev = self if init else None

    def __repr__(self) -> str:
        return f"<list_head {self.name}>"


def _ptr(p) -> str:
    return "NULL" if p is None else (p.name if isinstance(p, (ListHead, _Poison)) else repr(p))


def _check_live(node: ListHead, verb: str) -> None:
    mem = node.mem
    if mem is not None and mem.freed:
        raise UseAfterFree(f"use-after-free: {verb} on {node.name}, inside {mem.name} which "
                           f"was freed")


def _corrupt(msg: str, *nodes: ListHead) -> None:
    v = ListCorruption(msg)
    for n in nodes:
        if isinstance(n, ListHead):
            v.add_evidence("node", f"{n.name}: next={_ptr(n.next)} prev={_ptr(n.prev)}")
    raise v


def INIT_LIST_HEAD(head: ListHead) -> None:
    _check_live(head, "INIT_LIST_HEAD")
    head.next = head
    head.prev = head


def list_empty(head: ListHead) -> bool:
    _check_live(head, "list_empty")
    return head.next is head


def __list_add_valid_or_report(new: ListHead, prev, next) -> None:
    """lib/list_debug.c: the checks before linking ``new`` between ``prev`` and ``next``."""
    if next is None:
        _corrupt(f"list_add corruption. next is NULL (adding {new.name} after {_ptr(prev)})",
                 new, prev)
    if prev is None:
        _corrupt(f"list_add corruption. prev is NULL (adding {new.name} before {_ptr(next)})",
                 new, next)
    if next.prev is not prev:
        _corrupt(f"list_add corruption. next->prev should be prev ({_ptr(prev)}), but was "
                 f"{_ptr(next.prev)}. (next={_ptr(next)})", new, prev, next)
    if prev.next is not next:
        _corrupt(f"list_add corruption. prev->next should be next ({_ptr(next)}), but was "
                 f"{_ptr(prev.next)}. (prev={_ptr(prev)})", new, prev, next)
    if new is prev or new is next:
        _corrupt(f"list_add double add: new={new.name}, prev={_ptr(prev)}, next={_ptr(next)}",
                 new)


def _list_add(new: ListHead, prev: ListHead, next: ListHead) -> None:
    _check_live(new, "list_add")
    __list_add_valid_or_report(new, prev, next)
    next.prev = new
    new.next = next
    new.prev = prev
    prev.next = new


def _assert_lock(head: ListHead) -> None:
    if head.lock is not None:
        lockdep_assert_held(head.lock)


def list_add(new: ListHead, head: ListHead) -> None:
    """Insert ``new`` right after ``head`` (a stack)."""
    _assert_lock(head)
    _check_live(head, "list_add")
    _list_add(new, head, head.next)


def list_add_tail(new: ListHead, head: ListHead) -> None:
    """Insert ``new`` right before ``head`` (a queue)."""
    _assert_lock(head)
    _check_live(head, "list_add_tail")
    _list_add(new, head.prev, head)


def __list_del_entry_valid_or_report(entry: ListHead) -> None:
    """lib/list_debug.c: the checks before unlinking ``entry``."""
    prev, next = entry.prev, entry.next
    if next is None:
        _corrupt(f"list_del corruption, {entry.name}->next is NULL", entry)
    if prev is None:
        _corrupt(f"list_del corruption, {entry.name}->prev is NULL", entry)
    if next is LIST_POISON1:
        _corrupt(f"list_del corruption, {entry.name}->next is LIST_POISON1 (deleted twice?)",
                 entry)
    if prev is LIST_POISON2:
        _corrupt(f"list_del corruption, {entry.name}->prev is LIST_POISON2 (deleted twice?)",
                 entry)
    if prev.next is not entry:
        _corrupt(f"list_del corruption. prev->next should be {entry.name}, but was "
                 f"{_ptr(prev.next)}. (prev={_ptr(prev)})", entry, prev)
    if next.prev is not entry:
        _corrupt(f"list_del corruption. next->prev should be {entry.name}, but was "
                 f"{_ptr(next.prev)}. (next={_ptr(next)})", entry, next)


def __list_del_entry(entry: ListHead) -> None:
    _check_live(entry, "list_del")
    __list_del_entry_valid_or_report(entry)
    entry.next.prev = entry.prev
    entry.prev.next = entry.next


def list_del(entry: ListHead) -> None:
    """Unlink ``entry`` and poison it."""
    __list_del_entry(entry)
    entry.next = LIST_POISON1
    entry.prev = LIST_POISON2


def list_del_init(entry: ListHead) -> None:
    """Unlink ``entry`` and leave it an empty list (may be added again)."""
    __list_del_entry(entry)
    INIT_LIST_HEAD(entry)


def list_for_each_entry(head: ListHead) -> list:
    """The owners of the nodes on the list, first to last (a snapshot: the caller holds
    the list's lock, so nothing changes while it walks)."""
    _assert_lock(head)
    out = []
    pos = head.next
    while pos is not head:
        if pos is None or isinstance(pos, _Poison):
            _corrupt(f"list walk of {head.name} reached {_ptr(pos)}", head)
        out.append(pos.owner)
        pos = pos.next
    return out


def list_count_nodes(head: ListHead) -> int:
    """How many nodes are on the list (no lock assertion: for quiescent-point checks)."""
    n = 0
    pos = head.next
    while pos is not head and isinstance(pos, ListHead):
        n += 1
        pos = pos.next
    return n
