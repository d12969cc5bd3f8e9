"""Model-level oracles: TLB coherence, SPTE atomicity, structure and statistics.

These complement the checkers built into the primitives (lockdep, RCU, use-after-free,
refcount_t, races): they know what an SPTE, a TLB entry and a page table are.

* **TLB coherence** (:func:`note_leaf_change`, :func:`note_flush`, :func:`check_tlb_hit`).
  A leaf change in a valid root that leaves a translation a vCPU may have cached
  (zapped, pfn changed, write access removed) creates a *flush obligation* owned by the
  task that made it.  The kernel's rule: the obligation must be met (a remote TLB flush)
  before that task drops mmu_lock -- at a yield, or at the end of its critical section.
  A guest access that hits a TLB entry whose translation is stale, while an obligation
  covering it is *overdue* (its owner no longer holds mmu_lock), is a
  :class:`TlbIncoherence` naming the stale translation.
* **SPTE atomicity** (:func:`check_plain_store`): a non-atomic SPTE store that overwrites
  a value other than the one the writer read lost a concurrent update (hardware A/D
  assist, fast page fault).  The Accessed bit is exempt: the kernel deliberately does not
  treat it as volatile (``spte_needs_atomic_update``).
* **Structure and stats** (:func:`check_mmu_structure`), at quiescent points: every
  present non-leaf SPTE points to a live page table of the level below whose gfn and
  parent pointer match; leaves above 4K are large and aligned; no live table holds a
  FROZEN_SPTE once every task has finished with it; ``pages_4k/2m/1g`` equal the leaves
  the tables hold and ``tdp_mmu_pages`` the linked non-root tables.

All oracle state is per VM and costs nothing unless the paths run.
"""

from __future__ import annotations

from array import array

import numpy as np

from ..runtime import traps
from ..runtime.errors import InvariantViolation
from ..runtime.execution import format_site
from . import spte as S
from .mmu_internal import HDR_INVALID


class TlbIncoherence(InvariantViolation):
    summary = "a vCPU used a TLB entry whose required flush is overdue (stale translation)"


class SpteLostUpdate(InvariantViolation):
    summary = "a non-atomic SPTE store overwrote a concurrent update (hardware A/D, fast fault)"


class FastFaultUnsafe(InvariantViolation):
    summary = ("a lockless fast-page-fault fix resurrected a changed SPTE or made writable "
               "one that must stay write-protected")


class StructureViolation(InvariantViolation):
    summary = "the page tables or the MMU statistics are inconsistent at a quiescent point"


class PendingFlush:
    __slots__ = ("as_id", "gfn", "npages", "old", "task", "step", "site")

    def __init__(self, as_id, gfn, npages, old, task, step, site):
        self.as_id = as_id
        self.gfn = gfn
        self.npages = npages
        self.old = old
        self.task = task
        self.step = step
        self.site = site

    def covers(self, as_id: int, gfn: int) -> bool:
        return as_id == self.as_id and self.gfn <= gfn < self.gfn + self.npages


def _needs_flush(old: int, new: int, level: int, m) -> bool:
    """Would a vCPU that cached ``old`` translate differently from ``new``?"""
    if not (S.is_shadow_present_pte(old) and S.is_last_spte(old, level)):
        return False
    if not (S.is_shadow_present_pte(new) and S.is_last_spte(new, level)):
        return True
    if S.spte_to_pfn(old) != S.spte_to_pfn(new):
        return True
    if S.is_writable_pte(old) and not S.is_writable_pte(new):
        return S.leaf_spte_change_needs_tlb_flush(old, new, m)
    return False


def _same_translation_split(kvm, old: int, new: int, level: int) -> bool:
    """``new`` links a table that maps exactly what the huge leaf ``old`` mapped, with at
    least its rights (a huge-page split): a vCPU that cached ``old`` translates the same,
    which is why splitting never flushes."""
    if not (S.is_shadow_present_pte(new) and not S.is_last_spte(new, level)):
        return False
    child = kvm.pt_by_pfn.get(S.spte_to_pfn(new))
    if child is None:
        return False
    step = S.KVM_PAGES_PER_HPAGE(level - 1)
    base = S.spte_to_pfn(old)
    a = np.frombuffer(child.spt.vals, dtype=np.uint64) if isinstance(
        child.spt.vals, array) else np.array(child.spt.vals, dtype=np.uint64)
    m = kvm.masks
    if not (np.all(a & np.uint64(S.SPTE_MMU_PRESENT_MASK))
            and (level - 1 == S.PG_LEVEL_4K or np.all(a & np.uint64(S.PT_PAGE_SIZE_MASK)))):
        return False
    pfns = (a & np.uint64(S.SPTE_BASE_ADDR_MASK)) >> np.uint64(S.PAGE_SHIFT)
    want = np.uint64(base) + np.arange(S.SPTE_ENT_PER_PAGE, dtype=np.uint64) * np.uint64(step)
    if not np.array_equal(pfns, want):
        return False
    if S.is_writable_pte(old):
        for c in a[(a & np.uint64(S.PT_WRITABLE_MASK)) == 0].tolist():
            if S.leaf_spte_change_needs_tlb_flush(old, c, m):
                return False
    return True


def note_leaf_change(kvm, as_id: int, gfn: int, old: int, new: int, level: int) -> None:
    """Called by handle_changed_spte for every SPTE change."""
    if not _needs_flush(old, new, level, kvm.masks):
        return
    if _same_translation_split(kvm, old, new, level):
        return
    task = traps.current_task()
    kvm.pending_flushes.append(PendingFlush(as_id, gfn, S.KVM_PAGES_PER_HPAGE(level), old,
                                            task, traps.now(), traps.site()))


def note_flush(kvm) -> None:
    """A remote TLB flush meets every obligation made so far."""
    kvm.pending_flushes.clear()


def _holds_mmu_lock(task, kvm) -> bool:
    ts = task.ext
    if ts is None:
        return False
    return any(h.lock is kvm.mmu_lock for h in ts.held)


def peek_translation(kvm, root, gfn: int):
    """The leaf SPTE mapping ``gfn`` in ``root`` and its level (no scheduling points)."""
    pt = root.spt
    level = root.role.level
    while True:
        spte = pt.vals[S.SPTE_INDEX(gfn, level)]
        if not S.is_shadow_present_pte(spte):
            return None, level
        if S.is_last_spte(spte, level):
            return spte, level
        sp = kvm.pt_by_pfn.get(S.spte_to_pfn(spte))
        if sp is None or sp.spt.freed:
            return None, level
        pt = sp.spt
        level -= 1


def check_range_unmapped(kvm, as_id: int, start: int, end: int) -> None:
    """The mmu_notifier contract, when invalidate_range_start is about to return: no
    SPTE of any root of ``as_id`` -- valid or invalid -- maps a gfn of [start, end), for
    the host takes those pages back next (no scheduling points)."""
    for root in kvm.arch.tdp_mmu_roots.peek_all():
        if root.as_id != as_id or root.spt.freed:
            continue
        gfn = start
        while gfn < end:
            spte, level = peek_translation(kvm, root, gfn)
            if spte is not None:
                raise HostSafetyViolation(
                    f"invalidate_range_start of gfns [{start:#x}, {end:#x}) (address space "
                    f"{as_id}) is returning, but {root.spt.name}"
                    f"{' (invalid)' if root.hdr.peek(HDR_INVALID) else ''} still maps gfn "
                    f"{gfn:#x} with a {S.level_name(level)} SPTE {spte:#x}: the host takes "
                    f"the page back next")
            gfn = S.gfn_round_for_level(gfn, level) + S.KVM_PAGES_PER_HPAGE(level)


def check_tlb_hit(vcpu, entry, gfn: int, access: str) -> None:
    """A guest access is about to use ``entry`` from the vCPU's TLB."""
    kvm = vcpu.kvm
    if not kvm.pending_flushes:
        return
    spte, level = None, 0
    if vcpu.root is not None and not vcpu.root.spt.freed:
        spte, level = peek_translation(kvm, vcpu.root, gfn)
    pfn = entry.pfn + (gfn - entry.gfn)
    fresh = (spte is not None
             and S.spte_to_pfn(spte) + (gfn - S.gfn_round_for_level(gfn, level)) == pfn
             and (access != "w" or S.is_writable_pte(spte)))
    if fresh:
        return
    for p in kvm.pending_flushes:
        if p.covers(entry.as_id, gfn) and not _holds_mmu_lock(p.task, kvm):
            v = TlbIncoherence(
                f"{vcpu.name} used a stale TLB entry for gfn {gfn:#x} -> pfn {pfn:#x} "
                f"({access}): {p.task.name} changed that translation at step {p.step} and "
                f"released mmu_lock without flushing TLBs")
            v.add_evidence("stale", f"{entry!r} in {vcpu.name}'s TLB")
            v.add_evidence("changed", f"step {p.step} by {p.task.name}: old SPTE {p.old:#x}"
                           + (f" at {format_site(p.site)}" if p.site else ""))
            v.add_evidence("now", "SPTE " + (f"{spte:#x}" if spte is not None else "not present"))
            raise v


def check_plain_store(kvm, pt, idx: int, expected: int, found: int) -> None:
    """A non-atomic store expected ``expected`` in memory and found ``found``."""
    diff = (expected ^ found) & ~kvm.masks.accessed_mask
    if expected == found or not diff:
        return
    v = SpteLostUpdate(
        f"non-atomic store to {pt.name}[{idx}] by {traps.current_task().name} overwrote "
        f"{found:#x}, but the writer had read {expected:#x}: the concurrent change "
        f"(bits {diff:#x}) is lost")
    raise v


_FROZEN = np.uint64(S.FROZEN_SPTE)
_PRESENT = np.uint64(S.SPTE_MMU_PRESENT_MASK)


def _stale_leaf(kvm, as_id: int, gfn: int, level: int, pfn: int) -> str | None:
    """Why a present leaf does not map what the memslots of ``as_id`` say now (every gfn
    it covers, to the host page backing it), or None."""
    n = S.KVM_PAGES_PER_HPAGE(level)
    what = f"{S.level_name(level)} leaf of gfn {gfn:#x} (address space {as_id})"
    slot = kvm.gfn_to_memslot(as_id, gfn)
    if slot is None:
        return f"{what} maps host pfn {pfn:#x}, but no memslot covers that gfn"
    if gfn + n > slot.base_gfn + slot.npages:
        return f"{what} extends beyond {slot.name}"
    want = slot.gfn_to_pfn(gfn)
    if want != pfn:
        return f"{what} maps host pfn {pfn:#x}, but {slot.name} backs it with {want:#x}"
    g = slot.moved_alone(gfn, n) if n > 1 else None
    if g is not None:
        return (f"{what} maps gfn {g:#x} to host pfn {pfn + (g - gfn):#x}, but the host "
                f"moved that page to {slot.gfn_to_pfn(g):#x}")
    return None


def check_mmu_structure(kvm, where: str) -> None:
    """Walk every root on tdp_mmu_roots (no scheduling points) and check the structure
    and the statistics; and, when no invalidation or memslot update is in progress,
    that every present leaf maps what the memslots say (HostSafetyViolation: an SPTE
    survived the invalidation or memslot change that should have zapped it).  Call only
    at quiescent points."""
    leaves = {1: 0, 2: 0, 3: 0}
    tables = 0
    problems: list[str] = []
    stale: list[str] = []
    translations = not (kvm.mmu_invalidate_in_progress or kvm.memslot_updates_in_progress)
    as_id = 0

    def walk(sp, level):
        nonlocal tables
        pt = sp.spt
        if pt.freed:
            problems.append(f"{pt.name} (level {level}) is reachable but freed")
            return
        step = S.KVM_PAGES_PER_HPAGE(level)
        vals = pt.vals
        a = np.frombuffer(vals, dtype=np.uint64)
        # the entries the loop below looks at (in order): frozen or present
        for i in np.flatnonzero((a == _FROZEN) | ((a & _PRESENT) != 0)).tolist():
            v = vals[i]
            if v == S.FROZEN_SPTE:
                problems.append(f"{pt.name}[{i}] is FROZEN_SPTE with nobody working on it")
                continue
            if not S.is_shadow_present_pte(v):
                continue
            gfn = sp.gfn + i * step
            if S.is_last_spte(v, level):
                if level > 1 and S.spte_to_pfn(v) % step:
                    problems.append(f"{pt.name}[{i}]: huge leaf pfn {S.spte_to_pfn(v):#x} "
                                    f"not aligned to level {level}")
                if level in leaves:
                    leaves[level] += 1
                if translations:
                    why = _stale_leaf(kvm, as_id, gfn, level, S.spte_to_pfn(v))
                    if why is not None:
                        stale.append(f"{pt.name}[{i}]: {why}")
                continue
            child = kvm.pt_by_pfn.get(S.spte_to_pfn(v))
            if child is None:
                problems.append(f"{pt.name}[{i}] points to pfn {S.spte_to_pfn(v):#x}, not a "
                                f"page table")
                continue
            if child.role.level != level - 1 or child.gfn != gfn or child.ptep != (pt, i):
                problems.append(f"{pt.name}[{i}] -> {child.spt.name}: level {child.role.level} "
                                f"gfn {child.gfn:#x}, expected level {level - 1} gfn {gfn:#x} "
                                f"linked here")
            tables += 1
            walk(child, level - 1)

    for root in kvm.arch.tdp_mmu_roots.peek_all():
        as_id = root.as_id
        walk(root, root.role.level)
    st = kvm.stat
    for level, have in ((1, st.pages_4k), (2, st.pages_2m), (3, st.pages_1g)):
        if have != leaves[level]:
            problems.append(f"pages_{S.level_name(level).lower()} = {have} but the tables "
                            f"hold {leaves[level]} such leaves")
    if kvm.arch.tdp_mmu_pages != tables:
        problems.append(f"tdp_mmu_pages = {kvm.arch.tdp_mmu_pages} but {tables} non-root "
                        f"tables are linked")
    if problems:
        v = StructureViolation(f"MMU structure inconsistent {where}: {problems[0]}")
        for p in problems[:8]:
            v.add_evidence("problem", p)
        raise v
    if stale:
        v = HostSafetyViolation(f"stale SPTE {where}: {stale[0]}")
        for p in stale[:8]:
            v.add_evidence("stale", p)
        raise v


def check_fast_fix(kvm, pt, idx: int, read: int, found: int, new: int) -> None:
    """A lockless fast-page-fault fix stored ``new`` where its walk had read ``read``,
    overwriting ``found``."""
    m = kvm.masks
    if found != read:
        raise FastFaultUnsafe(
            f"fast page fault stored {new:#x} into {pt.name}[{idx}] over {found:#x}, but its "
            f"lockless walk had read {read:#x}: a concurrent "
            + ("zap" if not S.is_shadow_present_pte(found) else "change")
            + " was undone")
    if S.is_writable_pte(new) and not S.is_writable_pte(read) and not S.is_mmu_writable_spte(read, m):
        raise FastFaultUnsafe(
            f"fast page fault made {pt.name}[{idx}] writable ({read:#x} -> {new:#x}) although "
            f"it is not MMU-writable: it must stay write-protected until the slow path")


class DirtyLogIncomplete(InvariantViolation):
    summary = "a guest write to a dirty-logged page was missing from the dirty-log harvest"


#: "no write": the step of a page nobody wrote since the last harvest
_NO_WRITE = int(np.iinfo(np.int64).max)


class DirtyWriteLog:
    """The dirty-log oracle's record of one slot, one entry per page (offset in the
    slot): the step and the writer of the earliest completed guest write since the last
    harvest (``first``/``who``), and the writes the last harvest did not settle
    (``carry``: they raced with it and its page was not reported, or userspace left their
    page set).  Only the earliest write of a page matters: if it completed before a
    harvest started, the page must be reported, and reporting it settles the later ones
    too (a racing write to a reported page may be lost: KVM's documented tolerance)."""

    __slots__ = ("first", "who", "names", "index", "carry", "carry_who")

    def __init__(self, npages: int):
        self.first = array("q", [_NO_WRITE]) * npages
        self.who = array("i", [0]) * npages
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.carry = None
        self.carry_who = None

    def writer(self, name: str) -> int:
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.names)
            self.names.append(name)
        return i


def note_guest_write(vcpu, gfn: int) -> None:
    """A guest write to ``gfn`` completed (called by the hardware model)."""
    slot = vcpu.kvm.gfn_to_memslot(vcpu.as_id, gfn)
    if slot is not None and slot.logging_active:
        log = slot.dirty_writes
        if log is None:
            log = slot.dirty_writes = DirtyWriteLog(slot.npages)
        i = gfn - slot.base_gfn
        if log.first[i] == _NO_WRITE:
            log.first[i] = traps.now()
            log.who[i] = log.writer(traps.current_task().name)


def _slot_mask(slot, gfns) -> np.ndarray:
    """``gfns`` (a DirtyBitmap, or an iterable of gfns) as a bool array over the slot."""
    from .kvm import DirtyBitmap
    return DirtyBitmap.from_gfns(slot.base_gfn, slot.npages, gfns).mask


def _report_lost(log: DirtyWriteLog, base: int, lost: np.ndarray, steps, who, why: str) -> None:
    """Raise DirtyLogIncomplete naming the earliest of the ``lost`` writes, if any."""
    if lost.any():
        i = int(np.argmin(np.where(lost, steps, _NO_WRITE)))
        raise DirtyLogIncomplete(f"guest write to gfn {base + i:#x} by {log.names[who[i]]} at "
                                 f"step {int(steps[i])} {why}")


def note_harvest(kvm, slot, harvested, start: int, pending=None) -> None:
    """A harvest (GET_DIRTY_LOG) that took the bitmap at step ``start`` returned
    ``harvested``.  A write that completed before ``start`` must be in it.  A write that
    raced with the harvest (completed after ``start``) may be reported by the next
    harvest instead -- or by none, if this harvest reported its page, because userspace
    copies reported pages only after the harvest returned (KVM's documented tolerance).

    ``pending``: for KVM_CLEAR_DIRTY_LOG, the bits still set in the bitmap after the
    clear.  Userspace may clear only part of what GET reported; a page it left set is
    not lost but still to be harvested, so its writes carry over to the next harvest."""
    log = slot.dirty_writes
    if log is None:
        return
    base = slot.base_gfn
    got = _slot_mask(slot, harvested)
    left = _slot_mask(slot, pending) if pending is not None else np.zeros_like(got)
    first = np.frombuffer(log.first, dtype=np.int64)
    who = np.frombuffer(log.who, dtype=np.int32)
    carry = log.carry
    if carry is not None:
        unsettled = (carry != _NO_WRITE) & ~got
        _report_lost(log, base, unsettled & ~left, carry, log.carry_who,
                     "(during a harvest) was reported by neither that harvest nor the next one")
    _report_lost(log, base, (first < start) & ~got & ~left, first, who,
                 f"completed before the harvest started (step {start}) but the harvest does "
                 f"not report it")
    # racing writes, and writes to pages still set in the bitmap: they must be in the
    # next harvest (a carried write whose page stays set stays carried)
    new = np.where(~got, first, _NO_WRITE)
    new_who = who.copy()
    if carry is not None:
        keep = unsettled & left & (carry < new)
        new = np.where(keep, carry, new)
        new_who = np.where(keep, log.carry_who, new_who)
    log.carry, log.carry_who = new, new_who
    first[:] = _NO_WRITE


def _how(how) -> str:
    """A description, or the TLB entry an access used (formatted only for a report:
    the check runs on every guest access)."""
    return how if isinstance(how, str) else f"a translation cached as {how!r}"


class HostSafetyViolation(InvariantViolation):
    summary = ("a guest access reached host memory KVM had given back (deleted memslot, "
               "migrated page): a stale SPTE or TLB entry survived the invalidation")


def check_host_access(vcpu, gfn: int, pfn: int | None, how) -> None:
    """A guest access is about to touch host page ``pfn`` (None: emulated as MMIO)
    through ``how`` (a description, or the TLB entry used: described only if reported).

    Two rules: never a page the host took back; and, while no MMU-notifier invalidation
    and no memslot DELETE/MOVE is in progress, exactly the page the memslots say the gfn
    is backed by now (MMIO when no slot covers it) -- a translation left over from an
    earlier layout is a stale mapping."""
    kvm = vcpu.kvm
    if pfn is not None:
        for first, n, why in kvm.freed_host_ranges:
            if first <= pfn < first + n:
                raise HostSafetyViolation(
                    f"{vcpu.name} accessed gfn {gfn:#x} -> host pfn {pfn:#x} through {_how(how)}, "
                    f"but that page was given back to the host ({why})")
    if kvm.mmu_invalidate_in_progress or kvm.memslot_updates_in_progress:
        return
    slot = kvm.gfn_to_memslot(vcpu.as_id, gfn)
    want = slot.gfn_to_pfn(gfn) if slot is not None else None
    if want != pfn:
        now = f"host pfn {want:#x}" if want is not None else "no memslot (MMIO)"
        got = f"host pfn {pfn:#x}" if pfn is not None else "emulated MMIO"
        raise HostSafetyViolation(
            f"{vcpu.name} accessed gfn {gfn:#x} -> {got} through {_how(how)}, but the memslots "
            f"of address space {vcpu.as_id} map that gfn to {now}: a stale translation "
            f"survived a memslot update or host remap")


def check_host_page_touch(kvm, pfn: int, how: str) -> None:
    """KVM itself is about to touch the struct page of host page ``pfn`` (``how``: e.g.
    kvm_set_pfn_dirty when a zapped leaf hands its Dirty bit back).  The host got the
    page back once the mmu_notifier invalidation (or memslot deletion) covering it
    returned; from then on no SPTE may map it, so nothing may write its state back."""
    for first, n, why in kvm.freed_host_ranges:
        if first <= pfn < first + n:
            v = HostSafetyViolation(
                f"{traps.current_task().name}: {how} on host pfn {pfn:#x}, but that page "
                f"was given back to the host ({why}): an SPTE mapping it survived the "
                f"invalidation")
            v.add_evidence("touched", f"{how}({pfn:#x}) at {format_site(traps.site())}")
            raise v


class WriteTrackBypassed(InvariantViolation):
    summary = ("a guest write reached a write-tracked page without being emulated: a "
               "writable SPTE (or TLB entry) survived, or came back after, write-tracking")


def check_write_tracked(vcpu, gfn: int, how) -> None:
    """A guest write through ``how`` is about to complete.  Once starting to track a gfn
    has returned (its SPTEs write-protected, MMU-writable cleared, TLBs flushed), every
    write to it must exit to KVM and be emulated (page_fault_handle_page_track)."""
    if gfn in vcpu.kvm.write_track_enforced:
        raise WriteTrackBypassed(
            f"{vcpu.name} wrote gfn {gfn:#x} through {_how(how)}, but that gfn is "
            f"write-tracked: the write had to fault and be emulated")


class NxHugePageViolation(InvariantViolation):
    summary = ("a guest instruction fetch used an executable huge page while the NX huge "
               "page (iTLB multihit) mitigation was enforced")


def check_exec_mapping(vcpu, e) -> None:
    """A guest instruction fetch through TLB entry ``e``."""
    if e.level > S.PG_LEVEL_4K and vcpu.kvm.nx_enforced:
        raise NxHugePageViolation(
            f"{vcpu.name} fetched instructions at gfn {e.gfn:#x} through an executable "
            f"{S.level_name(e.level)} mapping ({e!r}) although the NX huge page mitigation "
            f"is on (every executable mapping must be 4K)")


class AgingMissedAccess(InvariantViolation):
    summary = ("an MMU-notifier age (clear_young / test_young) reported a range old although "
               "the guest accessed a page of it since the last age")


class AgeCall:
    """One clear_young / test_young in progress, with what it must report."""
    __slots__ = ("start", "end", "clears", "step", "task", "demands", "excused")

    def __init__(self, start: int, end: int, clears: bool):
        self.start, self.end, self.clears = start, end, clears
        self.step = traps.now()
        self.task = traps.current_task().name
        self.demands: dict = {}
        self.excused = False


def _leaf_intact(kvm, rec) -> bool:
    """The leaf a walk used is still mapped in a valid root (invalid roots are not aged:
    the kernel's deliberate choice since late 2024)."""
    pt, idx, pfn, root = rec.pt, rec.idx, rec.pfn, rec.root
    if pt.freed or root.spt.freed or root.hdr.vals[HDR_INVALID]:
        return False
    spte = pt.vals[idx]
    return S.is_shadow_present_pte(spte) and S.spte_to_pfn(spte) == pfn


def aging_begin(kvm, start: int, end: int, clears: bool) -> AgeCall:
    """An age of guest frames [start, end) (every address space) starts.  It must report
    young if a hardware walk since the last age used a leaf that is still there: the
    walk set its Accessed bit (or found it set)."""
    call = AgeCall(start, end, clears)
    for other in kvm.age_calls:
        if other.start < end and start < other.end:
            if clears:
                other.excused = True     # we may clear an A bit it has not reached yet
            if other.clears:
                call.excused = True
    for key, rec in kvm.young_walks.items():
        if start <= key[1] < end and _leaf_intact(kvm, rec):
            call.demands[key] = rec
    kvm.age_calls.append(call)
    return call


def aging_disturbed(kvm, as_id: int, gfn: int, level: int) -> None:
    """KVM changed an SPTE covering [gfn, gfn + pages(level)) of ``as_id`` while ages run:
    the Accessed state of those pages may legitimately be lost (zap, replace)."""
    end = gfn + S.KVM_PAGES_PER_HPAGE(level)
    for call in kvm.age_calls:
        for key in [k for k in call.demands if k[0] == as_id and gfn <= k[1] < end]:
            del call.demands[key]


def aging_end(kvm, call: AgeCall, young: bool) -> None:
    """The age returned ``young``; a clearing age starts a new aging period."""
    kvm.age_calls.remove(call)
    if call.clears:
        for key in [k for k in kvm.young_walks if call.start <= k[1] < call.end]:
            del kvm.young_walks[key]
    if young or call.excused:
        return
    missed = [(k, r) for k, r in call.demands.items() if _leaf_intact(kvm, r)]
    if not missed:
        return
    (as_id, gfn), rec = missed[0]
    what = "test_young" if not call.clears else "clear_young"
    v = AgingMissedAccess(
        f"{what} of gfns [{call.start:#x}, {call.end:#x}) by {call.task} (from step "
        f"{call.step}) reported old, but the guest accessed gfn {gfn:#x} (as_id {as_id}) "
        f"through a leaf SPTE that is still mapped")
    v.add_evidence("walked", f"{rec.pt.name}[{rec.idx}] -> pfn {rec.pfn:#x}, now "
                   f"{rec.pt.vals[rec.idx]:#x}")
    raise v
