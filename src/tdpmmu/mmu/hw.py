"""The hardware: per-vCPU TLBs, the page walker with its A/D-bit assists, guest accesses.

A guest access (read, write or instruction fetch at a GPA, in normal mode or SMM)
goes: enter guest mode (handling pending requests, loading a root if needed) ->
TLB lookup -> hardware walk of the loaded root -> on a missing or insufficient
translation an EPT violation / NPF exit -> ``kvm_mmu_page_fault`` -> retry.

The walker is ordinary model code running as its own scheduling points: every SPTE
it reads is a READ_ONCE, and setting the Accessed/Dirty bits is an atomic OR (the
hardware uses locked RMWs), so it races with software exactly where the kernel says
it can (hence xchg for volatile SPTEs).  It is not an RCU reader: what keeps a walk
off freed page tables is that remote TLB flushes and KVM_REQ_* requests with WAIT
wait for vCPUs to leave guest mode.

A TLB caches the final translation of a walk (gfn at the leaf's level -> pfn,
writable, executable) until the vCPU flushes it (KVM_REQ_TLB_FLUSH, or loading a new
root).  Beside it, the paging-structure caches (SDM 4.10.3 / 28.4.2): every non-leaf
entry a walk used is kept as the table it points to, tagged by the root (the EPTP), and
the next walk of an address under it starts at the deepest cached table without reading
the entries above -- so a table KVM unlinked stays reachable by the vCPU until its next
flush, which is why KVM must flush before a freed table can be reused (before it leaves
the RCU read-side section that defers the free).  Deviates: the TLB is tagged by nothing
(each vCPU flushes on root load, as KVM does); Accessed bits are set on the leaf only.
"""

from __future__ import annotations

from ..runtime import traps
from ..runtime.errors import ModelInternalError
from ..runtime.ops import READ, WRITE
from ..sync import cond_resched, srcu_read_lock, srcu_read_unlock
from . import fastpath, oracles
from . import spte as S
from .kvm import KVM_REQ_MMU_FREE_OBSOLETE_ROOTS, KVM_REQ_TLB_FLUSH, KvmVcpu
from .mmu import (IN_GUEST_MODE, OUTSIDE_GUEST_MODE, kvm_check_request, kvm_request_pending,
                  kvm_mmu_free_obsolete_roots, kvm_mmu_page_fault, kvm_mmu_reload,
                  kvm_mmu_unload)
from .locking import requires
from .mmu_internal import (PFERR_FETCH_MASK, PFERR_PRESENT_MASK, PFERR_RSVD_MASK, PFERR_WRITE_MASK,
                           RET_PF_EMULATE, RET_PF_WRITE_PROTECTED)

READ_ACCESS = "r"
WRITE_ACCESS = "w"
EXEC_ACCESS = "x"
#: a guest access's scheduling point when not tracing (no per-access label)
_ACCESS_OPS = {a: (WRITE if a == WRITE_ACCESS else READ, None, f"guest {a}", None)
               for a in (READ_ACCESS, WRITE_ACCESS, EXEC_ACCESS)}
#: hardware_walk's answer for an MMIO SPTE (an EPT misconfiguration / reserved-bit NPF)
MMIO = "mmio"


class TlbEntry:
    """One cached translation.  It doubles as the aging oracle's record of the walk
    that made it (``kvm.young_walks``): the leaf it came from and the root walked."""
    __slots__ = ("gfn", "level", "pfn", "writable", "executable", "as_id", "pt", "idx",
                 "root", "dirty")

    def __init__(self, gfn, level, pfn, writable, executable, as_id, pt=None, idx=0,
                 root=None, dirty=False):
        self.gfn = gfn
        self.level = level
        self.pfn = pfn
        self.writable = writable
        self.executable = executable
        self.as_id = as_id
        #: the leaf SPTE the translation came from (for the Dirty-bit assist and aging)
        self.pt = pt
        self.idx = idx
        #: the root the walk started from
        self.root = root
        #: whether the cached translation already has D set (else a write sets it)
        self.dirty = dirty

    @property
    def sptep(self):
        return (self.pt, self.idx)

    def __repr__(self) -> str:
        return (f"<tlb gfn={self.gfn:#x} {S.level_name(self.level)} pfn={self.pfn:#x}"
                f"{' W' if self.writable else ''}{' X' if self.executable else ''}>")


_ALIGN_2M = -S.KVM_PAGES_PER_HPAGE(S.PG_LEVEL_2M)
_ALIGN_1G = -S.KVM_PAGES_PER_HPAGE(S.PG_LEVEL_1G)


class Tlb:
    """One vCPU's TLB: translations by (level-aligned gfn, level); and its
    paging-structure caches (``psc``): (root table, level, gfn >> 9 * level) -> the page
    table of that level covering the gfn, as a walk found it.  Like the CPU's caches it
    also keeps the logical AND of the upper entries' write and execute rights: a bare
    table when they granted both (what KVM's non-leaf SPTEs always do), else a tuple
    ``(table, writable, executable)``."""

    def __init__(self, vcpu: KvmVcpu):
        self.vcpu = vcpu
        self.entries: dict[tuple[int, int], TlbEntry] = {}
        self.psc: dict[tuple[object, int, int], object] = {}
        self.flushes = 0

    def lookup(self, gfn: int) -> TlbEntry | None:
        """The entry for ``gfn`` at 4K, else 2M, else 1G."""
        get = self.entries.get
        return (get((gfn, S.PG_LEVEL_4K)) or get((gfn & _ALIGN_2M, S.PG_LEVEL_2M))
                or get((gfn & _ALIGN_1G, S.PG_LEVEL_1G)))

    def insert(self, e: TlbEntry) -> None:
        self.entries[(e.gfn, e.level)] = e

    def flush(self) -> None:
        self.entries.clear()
        self.psc.clear()
        self.flushes += 1


def _allowed(e: TlbEntry, access: str) -> bool:
    if access == WRITE_ACCESS:
        return e.writable
    if access == EXEC_ACCESS:
        return e.executable
    return True


def vcpu_enter_guest(vcpu: KvmVcpu) -> None:
    """Handle requests, make sure a root is loaded, enter guest mode."""
    while True:
        if kvm_request_pending(vcpu):
            if kvm_check_request(KVM_REQ_MMU_FREE_OBSOLETE_ROOTS, vcpu):
                kvm_mmu_free_obsolete_roots(vcpu)
            if kvm_check_request(KVM_REQ_TLB_FLUSH, vcpu):
                vcpu.tlb.flush()
        kvm_mmu_reload(vcpu)
        vcpu.mode.write_once(0, IN_GUEST_MODE)
        # smp_mb(); then re-check: a request made before we published guest mode
        if vcpu.requests.read_once(0) == 0:
            return
        vcpu_exit_guest(vcpu)


def vcpu_exit_guest(vcpu: KvmVcpu) -> None:
    if vcpu.pml_buffer:
        vmx_flush_pml_buffer(vcpu)
    vcpu.mode.write_once(0, OUTSIDE_GUEST_MODE)
    vcpu.guest_exits += 1
    if vcpu.guest_exit_waiters:
        waiters, vcpu.guest_exit_waiters = vcpu.guest_exit_waiters, []
        for t in waiters:
            traps.wake(t)


@requires("none")
def hardware_walk(vcpu: KvmVcpu, gfn: int, access: str):
    """Walk the loaded root for ``gfn``.  Returns a TlbEntry, or the error code of the
    EPT violation to raise.

    Requires: nothing -- this is the CPU, not KVM.  What keeps it off freed tables is
    that flushes and requests with WAIT wait for the vCPU to leave guest mode.
    """
    kvm = vcpu.kvm
    m = kvm.masks
    root = vcpu.root
    top = root.spt
    psc = vcpu.tlb.psc
    pt = None
    w_ok = x_ok = True      # the AND of the rights of the entries above (EPT and NPT)
    for level in range(1, root.role.level):     # the deepest cached table first
        pt = psc.get((top, level, gfn >> (9 * level)))
        if pt is not None:
            if pt.__class__ is tuple:
                pt, w_ok, x_ok = pt
            break
    if pt is None:
        pt = top
        level = root.role.level
    pt_by_pfn = kvm.pt_by_pfn
    while True:
        idx = (gfn >> (9 * (level - 1))) & 511
        spte = pt.read_once(idx)
        if S.is_mmio_spte(spte, m):
            # EPT misconfiguration (W|X without R) / NPT reserved-bit fault (bit 51 with
            # P set: the NPT MMIO SPTE is *present* to the CPU): KVM emulates the access
            return MMIO
        if not spte & S.PT_PRESENT_MASK:
            # not present to the CPU (EPT: R clear -- includes access-tracked SPTEs,
            # whose R/X bits KVM saved and cleared; NPT: P clear)
            return 0
        if level == 1 or spte & S.PT_PAGE_SIZE_MASK:
            break
        if not spte & S.PT_WRITABLE_MASK:
            w_ok = False
        if not S.is_executable_pte(spte, m):
            x_ok = False
        pt = pt_by_pfn[(spte & S.SPTE_BASE_ADDR_MASK) >> 12].spt
        level -= 1
        # the paging-structure cache, with the rights granted so far
        psc[(top, level, gfn >> (9 * level))] = pt if w_ok and x_ok else (pt, w_ok, x_ok)
    # a write (fetch) needs W (X) in every entry of the walk, not only in the leaf
    writable = w_ok and S.is_writable_pte(spte)
    executable = x_ok and S.is_executable_pte(spte, m)
    if (access == WRITE_ACCESS and not writable) or (access == EXEC_ACCESS and not executable):
        return PFERR_PRESENT_MASK
    dirty = bool(spte & m.dirty_mask)
    if m.ad_enabled and S.spte_ad_enabled(spte):
        bits = m.accessed_mask | (m.dirty_mask if access == WRITE_ACCESS else 0)
        if spte & bits != bits:
            pt.atomic_or(idx, bits)             # the A/D assist: a locked RMW
            if bits & ~spte & m.dirty_mask:
                pml_log_write(vcpu, gfn)
        dirty = dirty or access == WRITE_ACCESS
    e = TlbEntry(S.gfn_round_for_level(gfn, level), level, S.spte_to_pfn(spte), writable,
                 executable, root.as_id, pt, idx, root, dirty)
    kvm.young_walks[(root.as_id, gfn)] = e       # the aging oracle's record
    return e


def dirty_bit_assist(vcpu: KvmVcpu, e: TlbEntry, gfn: int | None = None) -> bool:
    """A write through a cached translation whose D bit is clear: the CPU sets D in the
    SPTE with a locked RMW (no mmu_lock: this is what makes writable-clean SPTEs
    volatile).  If the SPTE no longer holds that translation, the CPU walks again
    instead; returns False then."""
    m = vcpu.kvm.masks
    pt, idx = e.pt, e.idx
    spte = pt.read_once(idx)
    if (not S.is_shadow_present_pte(spte) or S.spte_to_pfn(spte) != e.pfn
            or not S.is_writable_pte(spte)):
        return False
    if not spte & m.dirty_mask:
        pt.atomic_or(idx, m.dirty_mask)
        if gfn is not None:
            pml_log_write(vcpu, gfn)
    e.dirty = True
    return True


def guest_access(vcpu: KvmVcpu, gpa: int, access: str = READ_ACCESS) -> int | None:
    """One guest memory access; returns the host pfn it reached (4K granularity), None
    when KVM emulated it (MMIO: no memslot backs the gpa), or a negative errno when
    KVM_RUN failed (-EFAULT: a write to host memory mapped read-only).

    Retries until the access completes, as a vCPU does; each VM exit that handled a
    fault is followed by a voluntary reschedule point (vcpu_run's
    xfer_to_guest_mode_handle_work).  A vCPU that can never complete its access is a
    livelock, caught by the step bound.
    """
    gfn = gpa >> S.PAGE_SHIFT
    if fastpath.enabled():
        pfn = _free_run_fault_access(vcpu, gfn, access)
        if pfn is not None:
            return pfn
    while True:
        vcpu_enter_guest(vcpu)
        e = vcpu.tlb.lookup(gfn)
        if e is not None and _allowed(e, access):
            oracles.check_tlb_hit(vcpu, e, gfn, access)
            if (access == WRITE_ACCESS and not e.dirty and vcpu.kvm.masks.ad_enabled
                    and not dirty_bit_assist(vcpu, e, gfn)):
                vcpu.tlb.entries.pop((e.gfn, e.level), None)
                e = None
        if e is None or not _allowed(e, access):
            w = hardware_walk(vcpu, gfn, access)
            if isinstance(w, TlbEntry):
                e = w
                vcpu.tlb.insert(e)
            else:
                vcpu_exit_guest(vcpu)
                code = (PFERR_RSVD_MASK if w == MMIO else w) | (
                    PFERR_WRITE_MASK if access == WRITE_ACCESS else 0) | (
                    PFERR_FETCH_MASK if access == EXEC_ACCESS else 0)
                idx = srcu_read_lock(vcpu.kvm.srcu)
                r = kvm_mmu_page_fault(vcpu, gpa, code)
                srcu_read_unlock(vcpu.kvm.srcu, idx)
                if r < 0:
                    return r          # KVM_RUN fails (-EFAULT): userspace decides
                if r in (RET_PF_EMULATE, RET_PF_WRITE_PROTECTED):
                    return None       # emulated (MMIO, or a write-tracked page)
                cond_resched()
                continue
        return _complete_access(vcpu, e, gfn, access)


def _free_run_fault_access(vcpu: KvmVcpu, gfn: int, access: str) -> int | None:
    """Free-run only (mmu/fastpath.py): an access whose TLB lookup misses and whose
    fault the fast path can do, completed in one step -- the first walk and its EPT
    violation, the fault, the retried walk with its A/D assist and TLB fill, the access.
    Returns the pfn reached, or None (nothing changed: take the faithful path)."""
    tlb = vcpu.tlb
    e = tlb.lookup(gfn)
    if e is not None and _allowed(e, access):
        return None                         # a TLB hit: no fault to do
    write = access == WRITE_ACCESS
    walk = fastpath.free_run_fault_walk(vcpu, gfn, write, access == EXEC_ACCESS)
    if walk is None:
        return None
    root = vcpu.root
    top = root.spt
    top_level = root.role.level
    tables = walk[0]
    psc = tlb.psc
    start = top_level                       # where both hardware walks start
    if psc:
        depth = len(tables)
        for level in range(1, top_level):
            pt = psc.get((top, level, gfn >> (9 * level)))
            if pt is not None:               # both walks start at the deepest one
                if top_level - level >= depth or tables[top_level - level] is not pt:
                    # a stale cached table, or one cached with reduced rights (a tuple):
                    return None             # the walks differ
                start = level
                break
    kind, pt, idx, level = fastpath.free_run_page_fault(vcpu, gfn, walk)
    for k in range(level, start):           # the tables both walks cached
        psc[(top, k, gfn >> (9 * k))] = tables[top_level - k]
    kvm = vcpu.kvm
    m = kvm.masks
    spte = pt.vals[idx]
    dirty = bool(spte & m.dirty_mask)
    if m.ad_enabled and (spte & S.SPTE_TDP_AD_MASK) != S.SPTE_TDP_AD_DISABLED:
        bits = m.accessed_mask | (m.dirty_mask if write else 0)
        if spte & bits != bits:
            spte = pt.vals[idx] = spte | bits   # the A/D assist (no PML: see fastpath)
        dirty = dirty or write
    pfn = (spte & S.SPTE_BASE_ADDR_MASK) >> S.PAGE_SHIFT
    as_id = 1 if vcpu.smm else 0
    base = gfn & -(1 << (9 * level - 9))
    e = TlbEntry(base, level, pfn, bool(spte & S.PT_WRITABLE_MASK),
                 (spte & (m.x_mask | m.nx_mask)) == m.x_mask, as_id, pt, idx, root, dirty)
    if not _allowed(e, access):
        raise ModelInternalError(f"the free-run fault of gfn {gfn:#x} ({kind}) left {e!r}")
    kvm.young_walks[(as_id, gfn)] = e
    tlb.entries[(base, level)] = e
    # the access, then the exit; the EPT violation's exit before it left vcpu->mode
    # OUTSIDE_GUEST_MODE as it is now, with no PML entry and no waiter (see fastpath)
    pfn += gfn - base
    traps.schedule_point(_ACCESS_OPS[access])
    oracles.check_host_access(vcpu, gfn, pfn, e)
    if access == EXEC_ACCESS:
        oracles.check_exec_mapping(vcpu, e)
    elif write:
        if kvm.write_track_enforced:
            oracles.check_write_tracked(vcpu, gfn, e)
        oracles.note_guest_write(vcpu, gfn)
    vcpu.guest_exits += 2
    return pfn


def _complete_access(vcpu: KvmVcpu, e: TlbEntry, gfn: int, access: str) -> int:
    """The access through translation ``e`` happens; the vCPU leaves the guest."""
    pfn = e.pfn + (gfn - e.gfn)
    if traps._EX.tracing:
        traps.schedule_point((WRITE if access == WRITE_ACCESS else READ, None,
                              f"guest {access} gfn {gfn:#x} -> pfn {pfn:#x}", None))
    else:                                   # the label is for traces only
        traps.schedule_point(_ACCESS_OPS[access])
    oracles.check_host_access(vcpu, gfn, pfn, e)
    if access == EXEC_ACCESS:
        oracles.check_exec_mapping(vcpu, e)
    if access == WRITE_ACCESS:
        if vcpu.kvm.write_track_enforced:
            oracles.check_write_tracked(vcpu, gfn, e)
        oracles.note_guest_write(vcpu, gfn)
    vcpu_exit_guest(vcpu)
    return pfn


def kvm_smm_transition(vcpu: KvmVcpu, smm: bool) -> None:
    """Enter or leave SMM: the MMU context is reset, so the root is unloaded and the
    next entry loads the root of the other address space."""
    if vcpu.smm == smm:
        return
    vcpu.smm = smm
    kvm_mmu_unload(vcpu)


# -- PML and nested guests (VMX) ---------------------------------------------------------

def pml_log_write(vcpu: KvmVcpu, gfn: int) -> None:
    """Page-modification logging: a write that set a D bit in a leaf SPTE appends its
    GPA to the vCPU's PML buffer -- only while PML is enabled in the current VMCS,
    which it never is for L2 (prepare_vmcs02_early clears SECONDARY_EXEC_ENABLE_PML).
    Deviates: no PML-full exit (the buffer is flushed at every exit anyway)."""
    if vcpu.kvm.enable_pml and not vcpu.guest_mode:
        vcpu.pml_buffer.append(gfn)


def vmx_flush_pml_buffer(vcpu: KvmVcpu) -> None:
    """At VM exit, kvm_vcpu_mark_page_dirty every logged GPA (vmx_flush_pml_buffer).

    Deviates: runs before vcpu->mode becomes OUTSIDE_GUEST_MODE and without a step of
    its own (kvm_arch_sync_dirty_log's kick before a harvest is then not needed: every
    model access exits); the slot lookup uses the published memslots without an SRCU
    step (vcpu_run holds kvm->srcu around the exit handler)."""
    from .mmu import mark_page_dirty_in_slot
    kvm = vcpu.kvm
    logged, vcpu.pml_buffer = vcpu.pml_buffer, []
    for gfn in logged:
        slot = kvm.gfn_to_memslot(vcpu.as_id, gfn)
        if slot is not None:
            mark_page_dirty_in_slot(kvm, slot, gfn)


def kvm_nested_transition(vcpu: KvmVcpu, guest_mode: bool) -> None:
    """Nested VM-entry (L1 runs L2) or VM-exit back to L1, with L1 not using EPT: KVM
    maps L2 with its own TDP roots, whose role has guest_mode set (L2's GPAs are L1's,
    so they share L1's memslots).  The MMU context is reset: the root is unloaded and
    the next entry loads the root for the new role."""
    if vcpu.guest_mode == guest_mode:
        return
    vcpu.guest_mode = guest_mode
    kvm_mmu_unload(vcpu)
