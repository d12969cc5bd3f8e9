"""SPTE encoding: the bit layout of KVM x86 shadow/TDP page-table entries.

This module owns the *format* of an SPTE and nothing else: constants, the per-flavour
masks (EPT, EPT without hardware A/D bits, NPT), predicates that decode an SPTE, and
constructors that build one.  It mirrors ``arch/x86/kvm/mmu/spte.h`` and
``arch/x86/kvm/mmu/spte.c`` of a recent ("N", v6.15+) kernel, plus the few helpers that
live elsewhere but are pure bit manipulation (``get_mmio_spte_gfn`` from mmu.c,
``SPTE_INDEX``/``KVM_PAGES_PER_HPAGE``/``gfn_round_for_level`` from mmu.h and
kvm_host.h, ``kvm_tdp_mmu_spte_need_atomic_update`` from tdp_iter.h).  The facts used
are those of ``shared/reference/tdp-mmu.md`` section 2.

Everything here is a pure function on Python ints that are kept within 64 bits: no
scheduling points, no locks, no shared memory, no imports from other ``tdpmmu``
modules.  Reading and writing SPTEs in shared page tables is someone else's job.

Kernel names are preserved.  Deviations from the kernel, all deliberate:

* **Masks are a value, not globals.**  The kernel's ``shadow_*_mask`` __read_mostly
  globals (and ``kvm_ad_enabled``) are bundled into a frozen :class:`SpteMasks`, and
  every function that needs them takes it as its last parameter ``m`` (default
  :data:`EPT`).  ``kvm->arch.shadow_mmio_value`` (a per-VM copy used by TDX) is just
  ``m.mmio_value``.  :func:`kvm_mmu_set_ept_masks` and
  :func:`kvm_mmu_reset_all_pte_masks` build mask sets the way the kernel functions of
  the same names fill in the globals.
* **64-bit host, no dynamic physical mask.**  ``SHADOW_NONPRESENT_VALUE`` is bit 63 and
  ``SPTE_BASE_ADDR_MASK`` is bits 51:12 (no ``CONFIG_DYNAMIC_PHYSICAL_MASK``).
* **No L1TF relocation.**  ``shadow_nonpresent_or_rsvd_mask`` is taken to be 0, so
  :func:`make_mmio_spte` does not OR in the L1TF reserved bits nor copy colliding GPA
  bits 5 higher, and :func:`get_mmio_spte_gfn` does not undo that.  The model assumes
  host MAXPHYADDR <= 51 (needed anyway for NPT MMIO caching, which uses bit 51), so an
  MMIO SPTE holds its GFN in bits 50:12 (:data:`MMIO_SPTE_GPA_MASK`).
* **Memory type.**  There is no ``kvm_x86_ops.get_mt_mask``: :func:`make_spte` takes an
  explicit ``memtype`` (already shifted, i.e. SPTE bits 6:3) or uses
  ``m.default_memtype``.  For EPT the default is write-back without IPAT
  (``MTRR_TYPE_WRBACK << VMX_EPT_MT_EPTE_SHIFT`` = 0x30), i.e. what N's
  ``vmx_get_mt_mask`` returns for RAM when guest PAT is honoured; host-MMIO pfns being
  forced to UC is not modelled.  NPT has no memtype bits.
* **make_spte inputs.**  ``synchronizing`` is always false (TDP MMU).  The
  ``mmu_try_to_unsync_pages`` refusal (shadow pages at this gfn) is the boolean
  ``write_protect``.  WRPROT_ONLY (PML + guest mode) is produced by :func:`make_spte`
  when asked with ``ad_need_write_protect`` (kvm_mmu_page_ad_need_write_protect(sp)).
  The NX huge-page mitigation (``is_nx_huge_page_enabled``) is the boolean
  ``nx_huge_page_workaround``.  The
  effective ``role.ad_disabled`` is ``ad_disabled or not m.ad_enabled`` because a TDP
  root's role has ``ad_disabled = !kvm_ad_enabled``; asking for A/D-disabled SPTEs
  with NPT masks raises ``ValueError`` (bits 53:52 stay 0 on non-EPT SPTEs).  ``shadow_me_value`` is applied
  to every pfn (no host-MMIO pfn detection).  Dirty logging (``mark_page_dirty_in_slot``)
  and the host-MMIO tracking tail are left to the caller.
* **Warnings.**  ``KVM_MMU_WARN_ON``/``WARN_ONCE`` checks inside predicates are not
  raised (the predicates just compute).  :func:`check_spte_writable_invariants` returns
  a description of the violated invariant, or ``None``.  ``KVM_BUG_ON`` in
  :func:`make_small_spte`/:func:`make_huge_spte`, the reserved-bit WARN of make_spte
  (step 8; here: pfn out of range or not aligned to the level) and plainly invalid
  arguments raise ``ValueError``.
* **SPTE_INDEX takes a GFN**, not an address: ``(gfn >> 9*(level-1)) & 511``.
* **is_dirty_spte** no longer exists in N; here it is simply the D bit (N sets D as a
  software bit in every writable SPTE even when hardware A/D bits are off; the pre-6.13
  version fell back to the W bit for A/D-disabled SPTEs).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    # geometry
    "PAGE_SHIFT", "PAGE_SIZE", "PG_LEVEL_4K", "PG_LEVEL_2M", "PG_LEVEL_1G",
    "PT64_ROOT_MAX_LEVEL", "SPTE_LEVEL_BITS", "SPTE_ENT_PER_PAGE", "KVM_MAX_HUGEPAGE_LEVEL",
    "KVM_PAGES_PER_HPAGE", "gfn_round_for_level", "SPTE_INDEX", "level_name",
    # access bits
    "ACC_EXEC_MASK", "ACC_WRITE_MASK", "ACC_USER_MASK", "ACC_ALL",
    # architectural / software bits
    "U64_MASK", "PT_PRESENT_MASK", "PT_WRITABLE_MASK", "PT_USER_MASK", "PT_ACCESSED_MASK",
    "PT_DIRTY_MASK", "PT_PAGE_SIZE_MASK", "PT64_NX_MASK", "SPTE_MMU_PRESENT_MASK",
    "SPTE_BASE_ADDR_MASK", "SPTE_TDP_AD_SHIFT", "SPTE_TDP_AD_MASK", "SPTE_TDP_AD_ENABLED",
    "SPTE_TDP_AD_DISABLED", "SPTE_TDP_AD_WRPROT_ONLY", "SHADOW_NONPRESENT_VALUE",
    "FROZEN_SPTE", "SHADOW_ACC_TRACK_SAVED_BITS_MASK", "SHADOW_ACC_TRACK_SAVED_BITS_SHIFT",
    "DEFAULT_SPTE_HOST_WRITABLE", "DEFAULT_SPTE_MMU_WRITABLE", "EPT_SPTE_HOST_WRITABLE",
    "EPT_SPTE_MMU_WRITABLE", "VMX_EPT_READABLE_MASK", "VMX_EPT_WRITABLE_MASK",
    "VMX_EPT_EXECUTABLE_MASK", "VMX_EPT_RWX_MASK", "VMX_EPT_MT_EPTE_SHIFT", "VMX_EPT_MT_MASK",
    "VMX_EPT_IPAT_BIT", "VMX_EPT_ACCESS_BIT", "VMX_EPT_DIRTY_BIT", "VMX_EPT_SUPPRESS_VE_BIT",
    "VMX_EPT_MISCONFIG_WX_VALUE", "MTRR_TYPE_UNCACHABLE", "MTRR_TYPE_WRBACK",
    "NPT_MMIO_VALUE",
    # MMIO generation
    "MMIO_SPTE_GEN_LOW_START", "MMIO_SPTE_GEN_LOW_END", "MMIO_SPTE_GEN_HIGH_START",
    "MMIO_SPTE_GEN_HIGH_END", "MMIO_SPTE_GEN_LOW_MASK", "MMIO_SPTE_GEN_HIGH_MASK",
    "MMIO_SPTE_GEN_LOW_BITS", "MMIO_SPTE_GEN_HIGH_BITS", "MMIO_SPTE_GEN_LOW_SHIFT",
    "MMIO_SPTE_GEN_HIGH_SHIFT", "MMIO_SPTE_GEN_MASK", "SPTE_MMIO_ALLOWED_MASK",
    "MMIO_SPTE_GPA_MASK",
    # masks
    "SpteMasks", "kvm_mmu_set_ept_masks", "kvm_mmu_reset_all_pte_masks", "EPT", "EPT_NO_AD",
    "NPT",
    # predicates
    "is_shadow_present_pte", "is_large_pte", "is_last_spte", "is_frozen_spte", "spte_to_pfn",
    "is_writable_pte", "is_mmu_writable_spte", "is_host_writable_spte", "is_accessed_spte",
    "is_dirty_spte", "is_executable_pte", "spte_ad_enabled", "spte_ad_need_write_protect",
    "is_access_track_spte", "is_mmio_spte", "get_mmio_spte_generation", "get_mmio_spte_gfn",
    "check_spte_writable_invariants", "leaf_spte_change_needs_tlb_flush",
    "spte_needs_atomic_update", "kvm_tdp_mmu_spte_need_atomic_update",
    # constructors
    "generation_mmio_spte_mask", "make_mmio_spte", "make_spte", "make_nonleaf_spte",
    "make_small_spte", "make_huge_spte", "make_spte_executable", "make_spte_nonexecutable",
    "mark_spte_for_access_track", "restore_acc_track_spte", "spte_set_writable",
    # tracing
    "describe_spte",
]


def _bit(n: int) -> int:
    return 1 << n


def _genmask(hi: int, lo: int) -> int:
    """GENMASK_ULL(hi, lo): bits lo..hi inclusive."""
    return ((1 << (hi - lo + 1)) - 1) << lo


U64_MASK = (1 << 64) - 1

# --------------------------------------------------------------------------------------
# Geometry (mmu.h, kvm_host.h, spte.h)
# --------------------------------------------------------------------------------------

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

PG_LEVEL_4K = 1
PG_LEVEL_2M = 2
PG_LEVEL_1G = 3
PT64_ROOT_MAX_LEVEL = 5
KVM_MAX_HUGEPAGE_LEVEL = PG_LEVEL_1G

SPTE_LEVEL_BITS = 9
SPTE_ENT_PER_PAGE = 1 << SPTE_LEVEL_BITS

_LEVEL_NAMES = {1: "4K", 2: "2M", 3: "1G", 4: "512G", 5: "256T"}


def _check_level(level: int, hi: int = PT64_ROOT_MAX_LEVEL) -> None:
    if not isinstance(level, int) or not PG_LEVEL_4K <= level <= hi:
        raise ValueError(f"level {level!r} out of range 1..{hi}")


def KVM_PAGES_PER_HPAGE(level: int) -> int:
    """Number of 4K pages mapped by one entry at ``level``: 1 << 9*(level-1)."""
    if level.__class__ is not int or not 1 <= level <= PT64_ROOT_MAX_LEVEL:
        _check_level(level)
    return 1 << (SPTE_LEVEL_BITS * (level - 1))


def gfn_round_for_level(gfn: int, level: int) -> int:
    """Clear the low 9*(level-1) bits of ``gfn`` (align down to the level's span)."""
    return gfn & -KVM_PAGES_PER_HPAGE(level)


def SPTE_INDEX(gfn: int, level: int) -> int:
    """Index of ``gfn`` in the page table at ``level``.

    Deviation: the kernel macro takes an *address* (shifts by 12 + 9*(level-1)); this
    one takes a GFN, which is what every caller in the model has.
    """
    if level.__class__ is not int or not 1 <= level <= PT64_ROOT_MAX_LEVEL:
        _check_level(level)
    return (gfn >> (SPTE_LEVEL_BITS * (level - 1))) & (SPTE_ENT_PER_PAGE - 1)


def level_name(level: int) -> str:
    """"4K", "2M", "1G", "512G" or "256T"."""
    _check_level(level)
    return _LEVEL_NAMES[level]


# --------------------------------------------------------------------------------------
# Access bits (spte.h) -- the ``pte_access`` argument of make_spte
# --------------------------------------------------------------------------------------

ACC_EXEC_MASK = 1
ACC_WRITE_MASK = 2   # == PT_WRITABLE_MASK
ACC_USER_MASK = 4    # == PT_USER_MASK
ACC_ALL = ACC_EXEC_MASK | ACC_WRITE_MASK | ACC_USER_MASK

# --------------------------------------------------------------------------------------
# Bits shared by every flavour
# --------------------------------------------------------------------------------------

PT_PRESENT_MASK = _bit(0)
PT_WRITABLE_MASK = _bit(1)
PT_USER_MASK = _bit(2)
PT_ACCESSED_MASK = _bit(5)
PT_DIRTY_MASK = _bit(6)
PT_PAGE_SIZE_MASK = _bit(7)
PT64_NX_MASK = _bit(63)

# Software "MMU-present" bit, ignored by hardware in every SPTE flavour.
SPTE_MMU_PRESENT_MASK = _bit(11)

# PFN field; no CONFIG_DYNAMIC_PHYSICAL_MASK.
SPTE_BASE_ADDR_MASK = _genmask(51, PAGE_SHIFT)
_MAX_PFN = SPTE_BASE_ADDR_MASK >> PAGE_SHIFT

# A/D tracking type of a TDP SPTE (bits 53:52).  ENABLED must be 0.
SPTE_TDP_AD_SHIFT = 52
SPTE_TDP_AD_MASK = 3 << SPTE_TDP_AD_SHIFT
SPTE_TDP_AD_ENABLED = 0 << SPTE_TDP_AD_SHIFT
SPTE_TDP_AD_DISABLED = 1 << SPTE_TDP_AD_SHIFT
SPTE_TDP_AD_WRPROT_ONLY = 2 << SPTE_TDP_AD_SHIFT

# Access tracking without A/D bits saves R and X (bits 0 and 2) in bits 54 and 56.
SHADOW_ACC_TRACK_SAVED_BITS_MASK = _bit(0) | _bit(2)
SHADOW_ACC_TRACK_SAVED_BITS_SHIFT = 54
_ACC_TRACK_SAVED_MASK = SHADOW_ACC_TRACK_SAVED_BITS_MASK << SHADOW_ACC_TRACK_SAVED_BITS_SHIFT

# Host-writable / MMU-writable software bits.
DEFAULT_SPTE_HOST_WRITABLE = _bit(9)
DEFAULT_SPTE_MMU_WRITABLE = _bit(10)
EPT_SPTE_HOST_WRITABLE = _bit(57)
EPT_SPTE_MMU_WRITABLE = _bit(58)

# Non-present value on 64-bit hosts (suppresses #VE for TDX; ignored otherwise).
SHADOW_NONPRESENT_VALUE = _bit(63)

# Intermediate value a thread installs while it owns an SPTE (TDP MMU only).
FROZEN_SPTE = SHADOW_NONPRESENT_VALUE | 0x5A0

SHADOW_NONPRESENT_OR_RSVD_MASK_LEN = 5  # L1TF; recorded only (relocation not modelled)

# --------------------------------------------------------------------------------------
# VMX / EPT bits (asm/vmx.h) and MTRR types
# --------------------------------------------------------------------------------------

VMX_EPT_READABLE_MASK = _bit(0)
VMX_EPT_WRITABLE_MASK = _bit(1)
VMX_EPT_EXECUTABLE_MASK = _bit(2)
VMX_EPT_RWX_MASK = VMX_EPT_READABLE_MASK | VMX_EPT_WRITABLE_MASK | VMX_EPT_EXECUTABLE_MASK
VMX_EPT_MT_EPTE_SHIFT = 3
VMX_EPT_MT_MASK = 7 << VMX_EPT_MT_EPTE_SHIFT
VMX_EPT_IPAT_BIT = _bit(6)
VMX_EPT_ACCESS_BIT = _bit(8)
VMX_EPT_DIRTY_BIT = _bit(9)
VMX_EPT_SUPPRESS_VE_BIT = _bit(63)
VMX_EPT_MISCONFIG_WX_VALUE = VMX_EPT_WRITABLE_MASK | VMX_EPT_EXECUTABLE_MASK

MTRR_TYPE_UNCACHABLE = 0
MTRR_TYPE_WRBACK = 6

# NPT MMIO SPTEs: a reserved PA bit plus Present, so the access takes a #NPF with RSVD.
NPT_MMIO_VALUE = _bit(51) | PT_PRESENT_MASK

# --------------------------------------------------------------------------------------
# MMIO generation: 19 bits, gen[7:0] -> SPTE[10:3], gen[18:8] -> SPTE[62:52]
# --------------------------------------------------------------------------------------

MMIO_SPTE_GEN_LOW_START = 3
MMIO_SPTE_GEN_LOW_END = 10
MMIO_SPTE_GEN_HIGH_START = 52
MMIO_SPTE_GEN_HIGH_END = 62
MMIO_SPTE_GEN_LOW_MASK = _genmask(MMIO_SPTE_GEN_LOW_END, MMIO_SPTE_GEN_LOW_START)
MMIO_SPTE_GEN_HIGH_MASK = _genmask(MMIO_SPTE_GEN_HIGH_END, MMIO_SPTE_GEN_HIGH_START)
MMIO_SPTE_GEN_LOW_BITS = MMIO_SPTE_GEN_LOW_END - MMIO_SPTE_GEN_LOW_START + 1
MMIO_SPTE_GEN_HIGH_BITS = MMIO_SPTE_GEN_HIGH_END - MMIO_SPTE_GEN_HIGH_START + 1
MMIO_SPTE_GEN_LOW_SHIFT = MMIO_SPTE_GEN_LOW_START - 0
MMIO_SPTE_GEN_HIGH_SHIFT = MMIO_SPTE_GEN_HIGH_START - MMIO_SPTE_GEN_LOW_BITS
MMIO_SPTE_GEN_MASK = _genmask(MMIO_SPTE_GEN_LOW_BITS + MMIO_SPTE_GEN_HIGH_BITS - 1, 0)

# Bits an MMIO mask may use: bit 63, the PA bits, and the EPT RWX bits.
SPTE_MMIO_ALLOWED_MASK = _bit(63) | _genmask(51, 12) | _genmask(2, 0)

# GPA bits of an MMIO SPTE in the model (host MAXPHYADDR <= 51, no L1TF relocation);
# the kernel's shadow_nonpresent_or_rsvd_lower_gfn_mask is GENMASK(phys_bits-1, 12).
MMIO_SPTE_GPA_MASK = _genmask(50, PAGE_SHIFT)

# Static checks the kernel makes with static_assert / BUILD_BUG_ON.
assert SPTE_TDP_AD_ENABLED == 0
assert not (SPTE_TDP_AD_MASK & _ACC_TRACK_SAVED_MASK)
assert not ((EPT_SPTE_HOST_WRITABLE | EPT_SPTE_MMU_WRITABLE) & (SPTE_TDP_AD_MASK | _ACC_TRACK_SAVED_MASK))
assert not (SPTE_MMU_PRESENT_MASK & (MMIO_SPTE_GEN_LOW_MASK | MMIO_SPTE_GEN_HIGH_MASK))
assert not (SPTE_MMIO_ALLOWED_MASK
            & (SPTE_MMU_PRESENT_MASK | MMIO_SPTE_GEN_LOW_MASK | MMIO_SPTE_GEN_HIGH_MASK))
assert MMIO_SPTE_GEN_LOW_BITS == 8 and MMIO_SPTE_GEN_HIGH_BITS == 11
assert not (SHADOW_NONPRESENT_VALUE & SPTE_MMU_PRESENT_MASK)
assert not (FROZEN_SPTE & SPTE_MMU_PRESENT_MASK)
assert PT_WRITABLE_MASK == VMX_EPT_WRITABLE_MASK == ACC_WRITE_MASK
assert PT_USER_MASK == ACC_USER_MASK


# --------------------------------------------------------------------------------------
# Per-flavour masks
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpteMasks:
    """One flavour's ``shadow_*_mask`` values (spte.c globals) plus ``kvm_ad_enabled``.

    ``memtype_mask`` is ``shadow_memtype_mask`` (EPT MT bits 5:3 | IPAT); 0 means the
    flavour has no memtype bits.  ``default_memtype`` is what make_spte uses when the
    caller gives no memtype (stand-in for ``get_mt_mask``).  ``mmio_value == 0`` means
    MMIO caching is disabled.  Construction checks what ``kvm_mmu_set_mmio_spte_mask``
    and ``kvm_mmu_set_me_spte_mask`` check, raising ``ValueError`` instead of disabling.
    """

    name: str
    present_mask: int
    user_mask: int
    x_mask: int
    nx_mask: int
    accessed_mask: int
    dirty_mask: int
    host_writable_mask: int
    mmu_writable_mask: int
    acc_track_mask: int
    memtype_mask: int
    default_memtype: int
    mmio_value: int
    mmio_mask: int
    mmio_access_mask: int = 0
    me_value: int = 0
    ad_enabled: bool = True

    def __post_init__(self) -> None:
        for field in ("present_mask", "user_mask", "x_mask", "nx_mask", "accessed_mask",
                      "dirty_mask", "host_writable_mask", "mmu_writable_mask",
                      "acc_track_mask", "memtype_mask", "default_memtype", "mmio_value",
                      "mmio_mask", "mmio_access_mask", "me_value"):
            v = getattr(self, field)
            if not isinstance(v, int) or not 0 <= v <= U64_MASK:
                raise ValueError(f"{self.name}: {field}={v!r} is not a 64-bit value")
        if self.x_mask and self.nx_mask:
            raise ValueError(f"{self.name}: shadow_x_mask and shadow_nx_mask are exclusive")
        if self.default_memtype & ~self.memtype_mask:
            raise ValueError(f"{self.name}: default_memtype outside memtype_mask")
        if self.mmio_mask & ~SPTE_MMIO_ALLOWED_MASK:
            raise ValueError(f"{self.name}: mmio_mask uses bits outside SPTE_MMIO_ALLOWED_MASK")
        if self.mmio_value & ~self.mmio_mask:
            raise ValueError(f"{self.name}: mmio_value does not match itself under mmio_mask")
        if self.mmio_value and (FROZEN_SPTE & self.mmio_mask) == self.mmio_value:
            raise ValueError(f"{self.name}: FROZEN_SPTE would look like an MMIO SPTE")
        if self.mmio_access_mask > 0xFFFF_FFFF:
            raise ValueError(f"{self.name}: mmio_access_mask must fit in 32 bits")


def kvm_mmu_set_ept_masks(has_ad_bits: bool = True, has_exec_only: bool = False) -> SpteMasks:
    """The EPT mask set, as ``kvm_mmu_set_ept_masks`` (N) fills in the globals.

    In N the A and D masks are set even without hardware A/D bits; ``ad_enabled``
    records ``kvm_ad_enabled``.  Memtype default is WB without IPAT (see module doc).
    """
    return SpteMasks(
        name="ept" if has_ad_bits else "ept-noad",
        present_mask=(0 if has_exec_only else VMX_EPT_READABLE_MASK) | VMX_EPT_SUPPRESS_VE_BIT,
        user_mask=VMX_EPT_READABLE_MASK,
        x_mask=VMX_EPT_EXECUTABLE_MASK,
        nx_mask=0,
        accessed_mask=VMX_EPT_ACCESS_BIT,
        dirty_mask=VMX_EPT_DIRTY_BIT,
        host_writable_mask=EPT_SPTE_HOST_WRITABLE,
        mmu_writable_mask=EPT_SPTE_MMU_WRITABLE,
        acc_track_mask=VMX_EPT_RWX_MASK,
        memtype_mask=VMX_EPT_MT_MASK | VMX_EPT_IPAT_BIT,
        default_memtype=MTRR_TYPE_WRBACK << VMX_EPT_MT_EPTE_SHIFT,
        mmio_value=VMX_EPT_MISCONFIG_WX_VALUE,
        mmio_mask=VMX_EPT_RWX_MASK | VMX_EPT_SUPPRESS_VE_BIT,
        mmio_access_mask=0,
        me_value=0,
        ad_enabled=bool(has_ad_bits),
    )


def kvm_mmu_reset_all_pte_masks() -> SpteMasks:
    """The NPT / legacy mask set (``kvm_mmu_reset_all_pte_masks`` plus the MMIO setup
    for host MAXPHYADDR < 52: value = mask = bit 51 | P, access mask = W | U)."""
    return SpteMasks(
        name="npt",
        present_mask=PT_PRESENT_MASK,
        user_mask=PT_USER_MASK,
        x_mask=0,
        nx_mask=PT64_NX_MASK,
        accessed_mask=PT_ACCESSED_MASK,
        dirty_mask=PT_DIRTY_MASK,
        host_writable_mask=DEFAULT_SPTE_HOST_WRITABLE,
        mmu_writable_mask=DEFAULT_SPTE_MMU_WRITABLE,
        acc_track_mask=0,
        memtype_mask=0,
        default_memtype=0,
        mmio_value=NPT_MMIO_VALUE,
        mmio_mask=NPT_MMIO_VALUE,
        mmio_access_mask=ACC_WRITE_MASK | ACC_USER_MASK,
        me_value=0,
        ad_enabled=True,
    )


#: EPT with hardware A/D bits (the common configuration).
EPT = kvm_mmu_set_ept_masks(has_ad_bits=True)
#: EPT without hardware A/D bits (``kvm_ad_enabled`` false): access tracking by RWX.
EPT_NO_AD = kvm_mmu_set_ept_masks(has_ad_bits=False)
#: AMD NPT (legacy PTE format; always has A/D bits, NX instead of X).
NPT = kvm_mmu_reset_all_pte_masks()


# --------------------------------------------------------------------------------------
# Predicates (spte.h)
# --------------------------------------------------------------------------------------


def is_shadow_present_pte(spte: int) -> bool:
    """MMU-present (bit 11).  MMIO, frozen and non-present SPTEs are not present."""
    return bool(spte & SPTE_MMU_PRESENT_MASK)


def is_large_pte(spte: int) -> bool:
    """PS bit (7).  Only meaningful together with a level; see :func:`is_last_spte`."""
    return bool(spte & PT_PAGE_SIZE_MASK)


def is_last_spte(spte: int, level: int) -> bool:
    """A leaf: 4K level, or a large SPTE.  Does not check presence."""
    return level == PG_LEVEL_4K or is_large_pte(spte)


def is_frozen_spte(spte: int) -> bool:
    """Exact equality with FROZEN_SPTE."""
    return spte == FROZEN_SPTE


def spte_to_pfn(spte: int) -> int:
    return (spte & SPTE_BASE_ADDR_MASK) >> PAGE_SHIFT


def is_writable_pte(spte: int) -> bool:
    return bool(spte & PT_WRITABLE_MASK)


def is_mmu_writable_spte(spte: int, m: SpteMasks = EPT) -> bool:
    return bool(spte & m.mmu_writable_mask)


def is_host_writable_spte(spte: int, m: SpteMasks = EPT) -> bool:
    return bool(spte & m.host_writable_mask)


def is_accessed_spte(spte: int, m: SpteMasks = EPT) -> bool:
    """N: just the Accessed bit (set in software too when hardware A/D is off)."""
    return bool(spte & m.accessed_mask)


def is_dirty_spte(spte: int, m: SpteMasks = EPT) -> bool:
    """The Dirty bit (not in N; see the module docstring)."""
    return bool(spte & m.dirty_mask)


def is_executable_pte(spte: int, m: SpteMasks = EPT) -> bool:
    return (spte & (m.x_mask | m.nx_mask)) == m.x_mask


def spte_ad_enabled(spte: int) -> bool:
    """The A/D type is not DISABLED.  (KVM_MMU_WARN_ON for non-present not raised.)"""
    return (spte & SPTE_TDP_AD_MASK) != SPTE_TDP_AD_DISABLED


def spte_ad_need_write_protect(spte: int) -> bool:
    """The A/D type is not ENABLED (DISABLED or WRPROT_ONLY)."""
    return (spte & SPTE_TDP_AD_MASK) != SPTE_TDP_AD_ENABLED


def is_access_track_spte(spte: int, m: SpteMasks = EPT) -> bool:
    """A/D disabled and every ``shadow_acc_track_mask`` bit (EPT RWX) clear."""
    return not spte_ad_enabled(spte) and (spte & m.acc_track_mask) == 0


def is_mmio_spte(spte: int, m: SpteMasks = EPT) -> bool:
    """Matches this VM's MMIO pattern, and MMIO caching is enabled (value != 0)."""
    return m.mmio_value != 0 and (spte & m.mmio_mask) == m.mmio_value


def get_mmio_spte_generation(spte: int) -> int:
    gen = (spte & MMIO_SPTE_GEN_LOW_MASK) >> MMIO_SPTE_GEN_LOW_SHIFT
    gen |= (spte & MMIO_SPTE_GEN_HIGH_MASK) >> MMIO_SPTE_GEN_HIGH_SHIFT
    return gen


def get_mmio_spte_gfn(spte: int) -> int:
    """GFN of an MMIO SPTE (mmu.c); no L1TF high-bit relocation (see module doc)."""
    return (spte & MMIO_SPTE_GPA_MASK) >> PAGE_SHIFT


def check_spte_writable_invariants(spte: int, m: SpteMasks = EPT) -> str | None:
    """For a shadow-present leaf: MMU-writable implies host-writable, and writable
    implies MMU-writable.  Returns a description of the violation, else ``None``
    (the kernel WARN_ONCEs)."""
    if spte & m.mmu_writable_mask:
        if not spte & m.host_writable_mask:
            return f"MMU-writable SPTE is not Host-writable: {spte:#x}"
    elif is_writable_pte(spte):
        return f"Writable SPTE is not MMU-writable: {spte:#x}"
    return None


def leaf_spte_change_needs_tlb_flush(old_spte: int, new_spte: int, m: SpteMasks = EPT) -> bool:
    """N: flush only when MMU-writable is lost (W, A and D changes never flush)."""
    return is_mmu_writable_spte(old_spte, m) and not is_mmu_writable_spte(new_spte, m)


def spte_needs_atomic_update(spte: int, m: SpteMasks = EPT) -> bool:
    """N (was spte_has_volatile_bits): bits may change without mmu_lock.

    True if not writable but MMU-writable (fast page fault may set W); or A/D disabled
    (aging may access-track it and fast page fault restore it); or writable but not
    dirty (the CPU may set D).  The Accessed bit is deliberately ignored.  The caller
    checks presence and leafness.
    """
    if not is_writable_pte(spte) and is_mmu_writable_spte(spte, m):
        return True
    if not spte_ad_enabled(spte):
        return True
    return is_writable_pte(spte) and not (spte & m.dirty_mask)


def kvm_tdp_mmu_spte_need_atomic_update(spte: int, level: int, m: SpteMasks = EPT) -> bool:
    """tdp_iter.h: only present leaves need atomic updates (non-leaf A is unused)."""
    return (is_shadow_present_pte(spte) and is_last_spte(spte, level)
            and spte_needs_atomic_update(spte, m))


# --------------------------------------------------------------------------------------
# Constructors (spte.c)
# --------------------------------------------------------------------------------------


def _check_u64(name: str, v: int) -> None:
    if not isinstance(v, int) or not 0 <= v <= U64_MASK:
        raise ValueError(f"{name}={v!r} is not a 64-bit value")


def _check_pfn(name: str, pfn: int) -> None:
    if not isinstance(pfn, int) or not 0 <= pfn <= _MAX_PFN:
        raise ValueError(f"{name}={pfn!r} does not fit SPTE_BASE_ADDR_MASK")


def _ad_type(ad_disabled: bool, m: SpteMasks) -> int:
    """AD-type field for a new SPTE; role.ad_disabled = !kvm_ad_enabled for TDP."""
    if ad_disabled or not m.ad_enabled:
        if m.acc_track_mask == 0:
            raise ValueError(f"{m.name}: A/D-disabled SPTEs need an access-track mask "
                             f"(non-EPT SPTEs never carry AD-type bits)")
        return SPTE_TDP_AD_DISABLED
    return SPTE_TDP_AD_ENABLED


def generation_mmio_spte_mask(gen: int) -> int:
    """Scatter a 19-bit MMIO generation into SPTE bits 10:3 and 62:52."""
    if not isinstance(gen, int) or gen < 0 or gen & ~MMIO_SPTE_GEN_MASK:
        raise ValueError(f"MMIO generation {gen!r} is not a 19-bit value")
    mask = (gen << MMIO_SPTE_GEN_LOW_SHIFT) & MMIO_SPTE_GEN_LOW_MASK
    mask |= (gen << MMIO_SPTE_GEN_HIGH_SHIFT) & MMIO_SPTE_GEN_HIGH_MASK
    return mask


def make_mmio_spte(gfn: int, access: int, generation: int, m: SpteMasks = EPT) -> int:
    """An MMIO SPTE for ``gfn``: generation bits | mmio value | (access & access mask) | GPA.

    ``generation`` is the memslots generation; like the kernel it is masked with
    MMIO_SPTE_GEN_MASK (dropping e.g. the update-in-progress flag).  The L1TF
    ``shadow_nonpresent_or_rsvd_mask`` and the relocated GPA bits are not modelled.
    EPT: value W|X (EPT misconfiguration), access mask 0.  NPT: value bit51|P,
    access mask W|U.  Raises ``ValueError`` if MMIO caching is off for ``m`` or the
    GPA does not fit :data:`MMIO_SPTE_GPA_MASK`.
    """
    if not m.mmio_value:
        raise ValueError(f"{m.name}: MMIO caching is disabled (mmio_value == 0)")
    if not isinstance(generation, int) or generation < 0:
        raise ValueError(f"generation {generation!r} must be a non-negative int")
    gpa = gfn << PAGE_SHIFT if isinstance(gfn, int) and gfn >= 0 else -1
    if gpa < 0 or gpa & ~MMIO_SPTE_GPA_MASK:
        raise ValueError(f"gfn {gfn!r} does not fit an MMIO SPTE (bits 50:12)")
    spte = generation_mmio_spte_mask(generation & MMIO_SPTE_GEN_MASK)
    spte |= m.mmio_value | (access & m.mmio_access_mask)
    spte |= gpa
    return spte


def make_spte(*, level: int, gfn: int, pfn: int, pte_access: int = ACC_ALL,
              old_spte: int = SHADOW_NONPRESENT_VALUE, prefetch: bool = False,
              host_writable: bool = True, ad_disabled: bool = False,
              nx_huge_page_workaround: bool = False, memtype: int | None = None,
              write_protect: bool = False, m: SpteMasks = EPT,
              ad_need_write_protect: bool = False) -> tuple[bool, int]:
    """Build a leaf SPTE mapping ``pfn`` at ``level``; returns ``(wrprot, new_spte)``.

    Steps (tdp-mmu.md 2.4, N with synchronizing = false):

    1. MMU-present bit; AD-type DISABLED if ``ad_disabled`` (or ``m`` has no A/D),
       else WRPROT_ONLY if ``ad_need_write_protect``; ``shadow_present_mask``.
    2. Accessed unless ``prefetch``.
    3. Above 4K with the NX workaround, drop exec; X (or NX) from ``pte_access``; user
       bit if ACC_USER; PS above 4K; memtype (``memtype`` or ``m.default_memtype``).
    4. Host-writable bit if ``host_writable``, else drop ACC_WRITE.
    5. ``me_value``; pfn << 12.
    6. If write access remains: if the old SPTE is not a writable leaf and
       ``write_protect`` (stand-in for ``mmu_try_to_unsync_pages`` refusing), return
       wrprot = True and set no W; otherwise set W, MMU-writable and Dirty.
    7. If ``prefetch``, mark for access tracking.

    ``gfn`` is only range-checked.  Raises ``ValueError`` for a level outside 1..1G,
    a pfn that does not fit or is not aligned to the level (the reserved-bit WARN of
    step 8), a memtype outside ``m.memtype_mask``, or ``ad_disabled`` with a flavour
    that has no access-track form (NPT SPTEs never carry AD-type bits).
    """
    _check_level(level, KVM_MAX_HUGEPAGE_LEVEL)
    _check_pfn("pfn", pfn)
    _check_pfn("gfn", gfn)
    _check_u64("old_spte", old_spte)
    if pfn & (KVM_PAGES_PER_HPAGE(level) - 1):
        raise ValueError(f"pfn {pfn:#x} is not aligned to a {level_name(level)} page")
    if not isinstance(pte_access, int) or pte_access & ~ACC_ALL:
        raise ValueError(f"pte_access {pte_access!r} has bits outside ACC_ALL")
    if memtype is None:
        memtype = m.default_memtype
    elif not isinstance(memtype, int) or memtype < 0 or memtype & ~m.memtype_mask:
        raise ValueError(f"{m.name}: memtype {memtype!r} outside memtype_mask "
                         f"{m.memtype_mask:#x}")

    # 1.
    spte = SPTE_MMU_PRESENT_MASK | _ad_type(ad_disabled, m)
    if ad_need_write_protect and spte_ad_enabled(spte):
        spte |= SPTE_TDP_AD_WRPROT_ONLY
    spte |= m.present_mask
    # 2.
    if not prefetch:
        spte |= m.accessed_mask
    # 3.
    if level > PG_LEVEL_4K and (pte_access & ACC_EXEC_MASK) and nx_huge_page_workaround:
        pte_access &= ~ACC_EXEC_MASK
    spte |= m.x_mask if pte_access & ACC_EXEC_MASK else m.nx_mask
    if pte_access & ACC_USER_MASK:
        spte |= m.user_mask
    if level > PG_LEVEL_4K:
        spte |= PT_PAGE_SIZE_MASK
    if m.memtype_mask:
        spte |= memtype
    # 4.
    if host_writable:
        spte |= m.host_writable_mask
    else:
        pte_access &= ~ACC_WRITE_MASK
    # 5.
    spte |= m.me_value
    spte |= pfn << PAGE_SHIFT
    # 6.
    wrprot = False
    if pte_access & ACC_WRITE_MASK:
        old_is_writable_leaf = is_last_spte(old_spte, level) and is_writable_pte(old_spte)
        if not old_is_writable_leaf and write_protect:
            wrprot = True
        else:
            spte |= PT_WRITABLE_MASK | m.mmu_writable_mask | m.dirty_mask
    # 7.
    if prefetch:
        spte = mark_spte_for_access_track(spte, m)
    return wrprot, spte & U64_MASK


def make_nonleaf_spte(child_pfn: int, ad_disabled: bool = False, m: SpteMasks = EPT) -> int:
    """A non-leaf SPTE pointing at the page table in ``child_pfn``.

    Always fully permissive (present | W | user | X), no host/MMU-writable bits;
    AD_DISABLED or the Accessed bit.  (Takes the child's pfn instead of its virtual
    address; ``ad_disabled`` is forced when ``m`` has no A/D bits.)
    """
    _check_pfn("child_pfn", child_pfn)
    spte = SPTE_MMU_PRESENT_MASK
    spte |= (child_pfn << PAGE_SHIFT) | m.present_mask | PT_WRITABLE_MASK
    spte |= m.user_mask | m.x_mask | m.me_value
    if _ad_type(ad_disabled, m) == SPTE_TDP_AD_DISABLED:
        spte |= SPTE_TDP_AD_DISABLED
    else:
        spte |= m.accessed_mask
    return spte


def mark_spte_for_access_track(spte: int, m: SpteMasks = EPT) -> int:
    """Make an SPTE look not-accessed.

    A/D enabled: clear A.  Otherwise (unless already tracked) save R and X in bits
    54/56 and clear RWX and A; W is not saved (the next write takes a fault).  The
    kernel's WARNs (writable invariants, saved bits already set) are not raised.
    """
    _check_u64("spte", spte)
    if spte_ad_enabled(spte):
        return spte & ~m.accessed_mask
    if is_access_track_spte(spte, m):
        return spte
    spte |= (spte & SHADOW_ACC_TRACK_SAVED_BITS_MASK) << SHADOW_ACC_TRACK_SAVED_BITS_SHIFT
    spte &= ~(m.acc_track_mask | m.accessed_mask)
    return spte


def restore_acc_track_spte(spte: int, m: SpteMasks = EPT) -> int:
    """Undo :func:`mark_spte_for_access_track`: put the saved R/X back, clear the saved
    copies.  W and A are not restored (fast page fault ORs in A itself)."""
    _check_u64("spte", spte)
    saved = (spte >> SHADOW_ACC_TRACK_SAVED_BITS_SHIFT) & SHADOW_ACC_TRACK_SAVED_BITS_MASK
    spte &= ~m.acc_track_mask
    spte &= ~_ACC_TRACK_SAVED_MASK
    spte |= saved
    return spte


def _modify_spte_protections(spte: int, set_: int, clear: int, m: SpteMasks) -> int:
    tracked = is_access_track_spte(spte, m)
    if tracked:
        spte = restore_acc_track_spte(spte, m)
    assert not (set_ & clear)
    spte = (spte | set_) & ~clear
    if tracked:
        spte = mark_spte_for_access_track(spte, m)
    return spte


def make_spte_executable(spte: int, m: SpteMasks = EPT) -> int:
    """Set X / clear NX, going through the access-track form if needed."""
    return _modify_spte_protections(spte, m.x_mask, m.nx_mask, m)


def make_spte_nonexecutable(spte: int, m: SpteMasks = EPT) -> int:
    """Set NX / clear X, going through the access-track form if needed."""
    return _modify_spte_protections(spte, m.nx_mask, m.x_mask, m)


def make_small_spte(huge_spte: int, child_level: int, index: int,
                    nx_huge_page_workaround: bool = False, m: SpteMasks = EPT) -> int:
    """Child ``index`` (0..511) of a huge SPTE split into ``child_level`` pages.

    A copy of the huge SPTE with ``index * KVM_PAGES_PER_HPAGE(child_level)`` pages
    ORed into the address, so W, A, D, host/MMU-writable, AD type, memtype and
    access-track state are inherited.  At 4K the PS bit is cleared and, with the NX
    workaround (the TDP role allows exec), the child becomes executable.  Raises
    ``ValueError`` if the huge SPTE is not present or not large (KVM_BUG_ON in N).
    """
    _check_u64("huge_spte", huge_spte)
    _check_level(child_level, KVM_MAX_HUGEPAGE_LEVEL - 1)
    if not is_shadow_present_pte(huge_spte) or not is_large_pte(huge_spte):
        raise ValueError(f"make_small_spte: {huge_spte:#x} is not a present huge SPTE")
    if not isinstance(index, int) or not 0 <= index < SPTE_ENT_PER_PAGE:
        raise ValueError(f"index {index!r} out of range 0..511")
    child = huge_spte | ((index * KVM_PAGES_PER_HPAGE(child_level)) << PAGE_SHIFT)
    if child_level == PG_LEVEL_4K:
        child &= ~PT_PAGE_SIZE_MASK
        if nx_huge_page_workaround:
            child = make_spte_executable(child, m)
    return child


def make_huge_spte(small_spte: int, level: int, nx_huge_page_workaround: bool = False,
                   m: SpteMasks = EPT) -> int:
    """Collapse a present SPTE mapping part of a huge page into a ``level`` leaf.

    Sets PS, clears the address bits below the level's size, and makes it
    non-executable under the NX workaround.  Raises ``ValueError`` if the SPTE is not
    present or ``level`` is 4K (KVM_BUG_ON in N).
    """
    _check_u64("small_spte", small_spte)
    _check_level(level, KVM_MAX_HUGEPAGE_LEVEL)
    if not is_shadow_present_pte(small_spte) or level == PG_LEVEL_4K:
        raise ValueError(f"make_huge_spte: bad input {small_spte:#x} at level {level}")
    huge = small_spte | PT_PAGE_SIZE_MASK
    low_addr = (KVM_PAGES_PER_HPAGE(level) - 1) << PAGE_SHIFT
    huge &= ~low_addr
    if nx_huge_page_workaround:
        huge = make_spte_nonexecutable(huge, m)
    return huge


def spte_set_writable(spte: int, m: SpteMasks = EPT) -> int:
    """Fast page fault's ``new_spte |= PT_WRITABLE_MASK``: sets W, keeps all else.

    The caller must have checked MMU-writability (``m`` is taken for uniformity).
    """
    _check_u64("spte", spte)
    return spte | PT_WRITABLE_MASK


# --------------------------------------------------------------------------------------
# Tracing
# --------------------------------------------------------------------------------------


def describe_spte(spte: int, level: int, m: SpteMasks = EPT) -> str:
    """Short human description for traces.

    Examples: ``"leaf 2M pfn=0x1200 RWX A D hw mw"``, ``"table pfn=0x5"``,
    ``"nonpresent"``, ``"FROZEN"``, ``"mmio gen=3 gfn=0x10"``.
    """
    if is_frozen_spte(spte):
        return "FROZEN"
    if not is_shadow_present_pte(spte):
        if is_mmio_spte(spte, m):
            return f"mmio gen={get_mmio_spte_generation(spte)} gfn={get_mmio_spte_gfn(spte):#x}"
        if spte == SHADOW_NONPRESENT_VALUE:
            return "nonpresent"
        return f"nonpresent {spte:#x}"
    pfn = spte_to_pfn(spte)
    ad = (spte & SPTE_TDP_AD_MASK)
    ad_note = {SPTE_TDP_AD_ENABLED: "", SPTE_TDP_AD_DISABLED: " ad-off",
               SPTE_TDP_AD_WRPROT_ONLY: " ad-wp"}.get(ad, " ad-?")
    if not is_last_spte(spte, level):
        return f"table pfn={pfn:#x}{ad_note}"
    perms = ("R" if spte & PT_PRESENT_MASK else "-") \
        + ("W" if is_writable_pte(spte) else "-") \
        + ("X" if is_executable_pte(spte, m) else "-")
    parts = [f"leaf {level_name(level)} pfn={pfn:#x} {perms}"]
    if is_accessed_spte(spte, m):
        parts.append("A")
    if is_dirty_spte(spte, m):
        parts.append("D")
    if is_host_writable_spte(spte, m):
        parts.append("hw")
    if is_mmu_writable_spte(spte, m):
        parts.append("mw")
    out = " ".join(parts) + ad_note
    if is_access_track_spte(spte, m):
        out += " acc-track"
    return out
