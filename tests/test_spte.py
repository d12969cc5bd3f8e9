"""SPTE encoding (tdpmmu.mmu.spte): constants, round trips, predicates, constructors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdpmmu.mmu import spte as S
from tdpmmu.mmu.spte import (
    ACC_ALL, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, EPT, EPT_NO_AD, FROZEN_SPTE,
    KVM_PAGES_PER_HPAGE, NPT, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K, PT_PAGE_SIZE_MASK,
    PT_WRITABLE_MASK, SHADOW_NONPRESENT_VALUE, SPTE_MMU_PRESENT_MASK, SPTE_TDP_AD_DISABLED,
    SPTE_TDP_AD_ENABLED, SPTE_TDP_AD_MASK, SPTE_TDP_AD_WRPROT_ONLY,
    check_spte_writable_invariants, describe_spte, get_mmio_spte_generation,
    get_mmio_spte_gfn, gfn_round_for_level, is_access_track_spte, is_accessed_spte,
    is_dirty_spte, is_executable_pte, is_frozen_spte, is_host_writable_spte, is_large_pte,
    is_last_spte, is_mmio_spte, is_mmu_writable_spte, is_shadow_present_pte,
    is_writable_pte, kvm_tdp_mmu_spte_need_atomic_update, leaf_spte_change_needs_tlb_flush,
    level_name, make_huge_spte, make_mmio_spte, make_nonleaf_spte, make_small_spte,
    make_spte, mark_spte_for_access_track, restore_acc_track_spte, spte_ad_enabled,
    spte_ad_need_write_protect, spte_needs_atomic_update, spte_set_writable, spte_to_pfn,
    SPTE_INDEX,
)

ALL_MASKS = [EPT, EPT_NO_AD, NPT]
MASK_IDS = [m.name for m in ALL_MASKS]
U64 = (1 << 64) - 1
# The model's hosts have MAXPHYADDR <= 51 (NPT MMIO uses bit 51): pfns below 2^39.
MAX_PFN_BITS = 39

FAST = settings(max_examples=200, deadline=None)

masks_st = st.sampled_from(ALL_MASKS)
levels_st = st.integers(PG_LEVEL_4K, PG_LEVEL_1G)
u64_st = st.integers(0, U64)
gen_st = st.integers(0, S.MMIO_SPTE_GEN_MASK)
mmio_gfn_st = st.integers(0, (1 << MAX_PFN_BITS) - 1)


@st.composite
def leaf_args(draw, m=None, level=None):
    """Keyword arguments for make_spte (valid for the drawn masks)."""
    m = draw(masks_st) if m is None else m
    level = draw(levels_st) if level is None else level
    pages = KVM_PAGES_PER_HPAGE(level)
    pfn = draw(st.integers(0, (1 << MAX_PFN_BITS) - 1)) & -pages
    gfn = draw(st.integers(0, (1 << MAX_PFN_BITS) - 1)) & -pages
    return dict(
        level=level, gfn=gfn, pfn=pfn, m=m,
        pte_access=draw(st.integers(0, ACC_ALL)),
        prefetch=draw(st.booleans()),
        host_writable=draw(st.booleans()),
        ad_disabled=draw(st.booleans()) if m.acc_track_mask else False,
        nx_huge_page_workaround=draw(st.booleans()),
        write_protect=draw(st.booleans()),
    )


def leaf(m=EPT, level=PG_LEVEL_4K, pfn=0x1000, **kw):
    kw.setdefault("gfn", pfn)
    wrprot, spte = make_spte(level=level, pfn=pfn, m=m, **kw)
    assert not wrprot
    return spte


# --------------------------------------------------------------------------------------
# Constants and masks
# --------------------------------------------------------------------------------------


def test_known_constants():
    assert FROZEN_SPTE == 0x8000_0000_0000_05A0
    assert SHADOW_NONPRESENT_VALUE == 1 << 63
    assert PT_WRITABLE_MASK == 1 << 1
    assert PT_PAGE_SIZE_MASK == 1 << 7
    assert SPTE_MMU_PRESENT_MASK == 1 << 11
    assert S.SPTE_BASE_ADDR_MASK == 0x000F_FFFF_FFFF_F000
    assert S.SPTE_TDP_AD_SHIFT == 52
    assert SPTE_TDP_AD_MASK == 3 << 52
    assert (SPTE_TDP_AD_ENABLED, SPTE_TDP_AD_DISABLED, SPTE_TDP_AD_WRPROT_ONLY) == (0, 1 << 52, 2 << 52)
    assert S.MMIO_SPTE_GEN_LOW_MASK == 0x7F8                   # bits 10:3
    assert S.MMIO_SPTE_GEN_HIGH_MASK == 0x7FF0_0000_0000_0000  # bits 62:52
    assert S.MMIO_SPTE_GEN_MASK == (1 << 19) - 1
    assert (S.PAGE_SHIFT, S.PT64_ROOT_MAX_LEVEL, S.SPTE_ENT_PER_PAGE, S.KVM_MAX_HUGEPAGE_LEVEL) == (12, 5, 512, 3)
    assert (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G) == (1, 2, 3)
    assert (ACC_EXEC_MASK, ACC_WRITE_MASK, ACC_USER_MASK, ACC_ALL) == (1, 2, 4, 7)


def test_ept_masks():
    assert EPT.name == "ept" and EPT.ad_enabled
    assert EPT.present_mask == (1 << 0) | (1 << 63)
    assert EPT.user_mask == 1 << 0
    assert EPT.x_mask == 1 << 2 and EPT.nx_mask == 0
    assert EPT.accessed_mask == 1 << 8 and EPT.dirty_mask == 1 << 9
    assert EPT.host_writable_mask == 1 << 57 and EPT.mmu_writable_mask == 1 << 58
    assert EPT.acc_track_mask == 0b111
    assert EPT.memtype_mask == 0b111_1000 and EPT.default_memtype == 6 << 3
    assert EPT.mmio_value == 0b110 and EPT.mmio_mask == 0b111 | (1 << 63)
    assert EPT.mmio_access_mask == 0 and EPT.me_value == 0
    assert dataclasses.replace(EPT_NO_AD, name="ept", ad_enabled=True) == EPT
    assert not EPT_NO_AD.ad_enabled


def test_npt_masks():
    assert NPT.name == "npt" and NPT.ad_enabled
    assert NPT.present_mask == 1 and NPT.user_mask == 1 << 2
    assert NPT.accessed_mask == 1 << 5 and NPT.dirty_mask == 1 << 6
    assert NPT.nx_mask == 1 << 63 and NPT.x_mask == 0
    assert NPT.host_writable_mask == 1 << 9 and NPT.mmu_writable_mask == 1 << 10
    assert NPT.acc_track_mask == 0 and NPT.memtype_mask == 0 and NPT.default_memtype == 0
    assert NPT.mmio_value == NPT.mmio_mask == (1 << 51) | 1


@pytest.mark.parametrize("bad", [
    dict(mmio_value=1 << 5),                # value not matching itself under the mask
    dict(mmio_mask=1 << 40 | 1 << 5),       # mask outside SPTE_MMIO_ALLOWED_MASK
    dict(mmio_value=1 << 63, mmio_mask=1 << 63),  # FROZEN_SPTE would match
    dict(nx_mask=1 << 63),                  # x and nx both set
    dict(default_memtype=1 << 20),
    dict(present_mask=1 << 64),
])
def test_mask_validation(bad):
    with pytest.raises(ValueError):
        dataclasses.replace(EPT, **bad)


def test_mask_builders():
    assert S.kvm_mmu_set_ept_masks() == EPT
    assert S.kvm_mmu_set_ept_masks(has_ad_bits=False) == EPT_NO_AD
    assert S.kvm_mmu_reset_all_pte_masks() == NPT
    exec_only = S.kvm_mmu_set_ept_masks(has_exec_only=True)
    assert exec_only.present_mask == 1 << 63
    # Execute-only: readability comes from ACC_USER through shadow_user_mask.
    s = leaf(exec_only, pte_access=ACC_EXEC_MASK)
    assert not s & 1 and is_executable_pte(s, exec_only)


# --------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------


def test_geometry_examples():
    assert [KVM_PAGES_PER_HPAGE(lv) for lv in range(1, 6)] == [1, 512, 512**2, 512**3, 512**4]
    assert [level_name(lv) for lv in range(1, 6)] == ["4K", "2M", "1G", "512G", "256T"]
    assert SPTE_INDEX(0x12345, 1) == 0x145 and SPTE_INDEX(0x12345, 2) == 0x91
    assert gfn_round_for_level(0x12345, 2) == 0x12200
    assert gfn_round_for_level(0x12345, 1) == 0x12345
    for bad in (0, 6):
        with pytest.raises(ValueError):
            level_name(bad)


@FAST
@given(gfn=st.integers(0, (1 << 45) - 1))
def test_spte_index_decomposes_gfn(gfn):
    assert sum(SPTE_INDEX(gfn, lv) << (9 * (lv - 1)) for lv in range(1, 6)) == gfn
    for lv in range(1, 6):
        r = gfn_round_for_level(gfn, lv)
        assert r <= gfn < r + KVM_PAGES_PER_HPAGE(lv)
        assert r % KVM_PAGES_PER_HPAGE(lv) == 0
        assert all(SPTE_INDEX(r, k) == 0 for k in range(1, lv))
        assert all(SPTE_INDEX(r, k) == SPTE_INDEX(gfn, k) for k in range(lv, 6))


# --------------------------------------------------------------------------------------
# Special values: non-present, frozen, MMIO
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", ALL_MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_nonpresent_and_frozen(m, level):
    for v in (SHADOW_NONPRESENT_VALUE, FROZEN_SPTE):
        assert not is_shadow_present_pte(v)
        assert not is_mmio_spte(v, m)
        assert not (is_shadow_present_pte(v) and is_last_spte(v, level))
        assert not kvm_tdp_mmu_spte_need_atomic_update(v, level, m)
    assert is_frozen_spte(FROZEN_SPTE)
    assert not is_frozen_spte(SHADOW_NONPRESENT_VALUE)
    assert not FROZEN_SPTE & S.SPTE_BASE_ADDR_MASK
    assert not FROZEN_SPTE & S.VMX_EPT_RWX_MASK
    assert describe_spte(FROZEN_SPTE, level, m) == "FROZEN"
    assert describe_spte(SHADOW_NONPRESENT_VALUE, level, m) == "nonpresent"


@FAST
@given(m=masks_st, gen=gen_st, gfn=mmio_gfn_st, access=st.integers(0, ACC_ALL))
def test_mmio_round_trip(m, gen, gfn, access):
    s = make_mmio_spte(gfn, access, gen, m)
    assert 0 <= s <= U64
    assert is_mmio_spte(s, m)
    assert not is_shadow_present_pte(s) and not is_frozen_spte(s)
    assert get_mmio_spte_generation(s) == gen
    assert get_mmio_spte_gfn(s) == gfn
    assert s & m.mmio_mask == m.mmio_value
    assert s & ~(S.MMIO_SPTE_GEN_LOW_MASK | S.MMIO_SPTE_GEN_HIGH_MASK | S.MMIO_SPTE_GPA_MASK
                 | m.mmio_value | m.mmio_access_mask) == 0
    assert describe_spte(s, PG_LEVEL_4K, m) == f"mmio gen={gen} gfn={gfn:#x}"


def test_mmio_generation_round_trip_exhaustive():
    gen_mask = S.generation_mmio_spte_mask
    low, high = S.MMIO_SPTE_GEN_LOW_MASK, S.MMIO_SPTE_GEN_HIGH_MASK
    both = low | high
    # Round trip for every 19-bit generation (which also makes the encoding injective).
    assert all(get_mmio_spte_generation(gen_mask(g)) == g and not gen_mask(g) & ~both
               for g in range(S.MMIO_SPTE_GEN_MASK + 1))
    # Every generation also makes an MMIO SPTE that is not present (spot check ends).
    for gen in (0, 1, 0xFF, 0x100, S.MMIO_SPTE_GEN_MASK):
        for m in ALL_MASKS:
            s = make_mmio_spte(0x10, 0, gen, m)
            assert is_mmio_spte(s, m) and not is_shadow_present_pte(s)
            assert get_mmio_spte_generation(s) == gen


def test_mmio_details():
    # The generation is masked to 19 bits, like memslots->generation & MMIO_SPTE_GEN_MASK.
    assert get_mmio_spte_generation(make_mmio_spte(1, 0, (1 << 63) | 5)) == 5
    # EPT: W|X misconfiguration, no SUPPRESS_VE, access bits dropped.
    s = make_mmio_spte(0x10, ACC_ALL, 3, EPT)
    assert s & 0b111 == 0b110 and not s & (1 << 63)
    assert s == S.generation_mmio_spte_mask(3) | 0b110 | (0x10 << 12)
    # NPT: bit 51 | P plus W|U access bits.
    s = make_mmio_spte(0x10, ACC_ALL, 0, NPT)
    assert s == (1 << 51) | 1 | ACC_WRITE_MASK | ACC_USER_MASK | (0x10 << 12)
    with pytest.raises(ValueError):
        make_mmio_spte(1 << 39, 0, 0)
    with pytest.raises(ValueError):
        make_mmio_spte(1, 0, 0, dataclasses.replace(EPT, mmio_value=0))


@FAST
@given(m=masks_st, data=st.data())
def test_present_sptes_are_not_mmio(m, data):
    args = data.draw(leaf_args(m=m))
    _, s = make_spte(**args)
    assert not is_mmio_spte(s, m)
    assert not is_mmio_spte(make_nonleaf_spte(args["pfn"], m=m), m)


# --------------------------------------------------------------------------------------
# make_spte
# --------------------------------------------------------------------------------------


@FAST
@given(args=leaf_args())
def test_make_spte_properties(args):
    m, level, pfn = args["m"], args["level"], args["pfn"]
    wrprot, s = make_spte(**args)
    assert 0 <= s <= U64
    assert is_shadow_present_pte(s) and not is_frozen_spte(s) and not is_mmio_spte(s, m)
    assert spte_to_pfn(s) == pfn
    assert is_last_spte(s, level)
    assert is_large_pte(s) == (level > PG_LEVEL_4K)
    # Writable invariants hold for every output.
    assert check_spte_writable_invariants(s, m) is None
    if is_writable_pte(s):
        assert is_mmu_writable_spte(s, m) and is_host_writable_spte(s, m)
        assert is_dirty_spte(s, m)
    assert is_host_writable_spte(s, m) == args["host_writable"]
    want_write = bool(args["pte_access"] & ACC_WRITE_MASK) and args["host_writable"]
    assert wrprot == (want_write and args["write_protect"])
    assert is_mmu_writable_spte(s, m) == (want_write and not wrprot)
    assert is_writable_pte(s) == (want_write and not wrprot and
                                  not (args["prefetch"] and not spte_ad_enabled(s)))
    # A/D type.
    ad_off = args["ad_disabled"] or not m.ad_enabled
    assert s & SPTE_TDP_AD_MASK == (SPTE_TDP_AD_DISABLED if ad_off else SPTE_TDP_AD_ENABLED)
    assert spte_ad_enabled(s) == (not ad_off)
    assert spte_ad_need_write_protect(s) == ad_off
    # Accessed unless prefetched; prefetch + A/D off -> access-tracked.
    assert is_accessed_spte(s, m) == (not args["prefetch"])
    assert is_access_track_spte(s, m) == (args["prefetch"] and ad_off)
    # Exec: dropped at huge levels by the NX workaround.
    want_exec = bool(args["pte_access"] & ACC_EXEC_MASK) and not (
        level > PG_LEVEL_4K and args["nx_huge_page_workaround"])
    if not is_access_track_spte(s, m):
        assert is_executable_pte(s, m) == want_exec
        assert bool(s & m.user_mask) == bool(args["pte_access"] & ACC_USER_MASK or
                                              m.user_mask & m.present_mask)
    else:
        saved = (s >> S.SHADOW_ACC_TRACK_SAVED_BITS_SHIFT) & S.SHADOW_ACC_TRACK_SAVED_BITS_MASK
        assert bool(saved & S.VMX_EPT_EXECUTABLE_MASK) == want_exec
    # Memtype only for EPT.
    assert s & m.memtype_mask == m.default_memtype


@pytest.mark.parametrize("m", ALL_MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("level", [1, 2, 3])
def test_make_spte_ps_bit(m, level):
    s = leaf(m, level, pfn=KVM_PAGES_PER_HPAGE(level) * 3)
    assert bool(s & PT_PAGE_SIZE_MASK) == (level > 1)
    assert is_last_spte(s, level)
    assert spte_to_pfn(s) == KVM_PAGES_PER_HPAGE(level) * 3


@pytest.mark.parametrize("m", ALL_MASKS, ids=MASK_IDS)
def test_make_spte_host_not_writable(m):
    wrprot, s = make_spte(level=1, gfn=5, pfn=5, host_writable=False, m=m)
    assert not wrprot
    assert not is_writable_pte(s) and not is_mmu_writable_spte(s, m)
    assert not is_host_writable_spte(s, m) and not is_dirty_spte(s, m)
    assert check_spte_writable_invariants(s, m) is None


@pytest.mark.parametrize("m", ALL_MASKS, ids=MASK_IDS)
def test_make_spte_write_protect(m):
    wrprot, s = make_spte(level=1, gfn=5, pfn=5, write_protect=True, m=m)
    assert wrprot
    assert not is_writable_pte(s) and not is_mmu_writable_spte(s, m)
    assert is_host_writable_spte(s, m) and not is_dirty_spte(s, m)
    # Overwriting a writable leaf skips the unsync check.
    old = leaf(m, pfn=5)
    wrprot, s2 = make_spte(level=1, gfn=5, pfn=5, write_protect=True, old_spte=old, m=m)
    assert not wrprot and is_writable_pte(s2) and s2 == old


def test_make_spte_exact_values():
    # EPT 4K RWX: SUPPRESS_VE | hw | mw | pfn | present | D | A | WB | RWX
    assert leaf(EPT, pfn=0x1234) == (1 << 63) | (3 << 57) | (0x1234 << 12) | 0xB37
    assert leaf(EPT_NO_AD, pfn=0x1234) == leaf(EPT, pfn=0x1234) | SPTE_TDP_AD_DISABLED
    # NPT 4K RWX: hw(9) | mw(10) | present(11) | D | A | U | W | P
    assert leaf(NPT, pfn=0x1234) == (0x1234 << 12) | 0xE67
    assert leaf(NPT, pfn=0x1234, pte_access=ACC_WRITE_MASK | ACC_USER_MASK) & (1 << 63)
    # Explicit memtype (UC, IPAT).
    s = leaf(EPT, memtype=S.VMX_EPT_IPAT_BIT)
    assert s & EPT.memtype_mask == S.VMX_EPT_IPAT_BIT


@pytest.mark.parametrize("kw", [
    dict(level=4), dict(level=0), dict(level=2, pfn=0x201), dict(pfn=1 << 40),
    dict(pfn=-1), dict(pte_access=8), dict(memtype=1), dict(m=NPT, memtype=0x30),
    dict(m=NPT, ad_disabled=True), dict(gfn=-1),
])
def test_make_spte_rejects(kw):
    args = dict(level=1, gfn=0, pfn=0x200)
    args.update(kw)
    with pytest.raises(ValueError):
        make_spte(**args)


# --------------------------------------------------------------------------------------
# make_nonleaf_spte
# --------------------------------------------------------------------------------------


@FAST
@given(m=masks_st, pfn=st.integers(0, (1 << MAX_PFN_BITS) - 1), ad_disabled=st.booleans(),
       level=st.integers(2, 5))
def test_nonleaf_round_trip(m, pfn, ad_disabled, level):
    ad_disabled = ad_disabled and bool(m.acc_track_mask)
    s = make_nonleaf_spte(pfn, ad_disabled, m)
    assert 0 <= s <= U64
    assert spte_to_pfn(s) == pfn
    assert is_shadow_present_pte(s) and not is_last_spte(s, level) and not is_large_pte(s)
    assert is_writable_pte(s) and is_executable_pte(s, m) and s & m.user_mask
    assert not is_mmu_writable_spte(s, m) and not is_host_writable_spte(s, m)
    ad_off = ad_disabled or not m.ad_enabled
    assert spte_ad_enabled(s) == (not ad_off)
    assert is_accessed_spte(s, m) == (not ad_off)
    assert not kvm_tdp_mmu_spte_need_atomic_update(s, level, m)
    assert describe_spte(s, level, m).startswith(f"table pfn={pfn:#x}")


def test_nonleaf_exact():
    assert make_nonleaf_spte(5) == (1 << 63) | (5 << 12) | 0x800 | 0x100 | 0b111
    assert make_nonleaf_spte(5, m=NPT) == (5 << 12) | 0x800 | 0x20 | 0b111
    assert make_nonleaf_spte(5, m=EPT_NO_AD) == (1 << 63) | (1 << 52) | (5 << 12) | 0x800 | 0b111
    assert describe_spte(make_nonleaf_spte(5), 2) == "table pfn=0x5"


# --------------------------------------------------------------------------------------
# Huge pages: NX workaround, split and collapse
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", ALL_MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("prefetch", [False, True])
def test_nx_workaround(m, prefetch):
    huge = leaf(m, PG_LEVEL_2M, pfn=0x400, nx_huge_page_workaround=True, prefetch=prefetch)
    small = leaf(m, PG_LEVEL_4K, pfn=0x400, nx_huge_page_workaround=True, prefetch=prefetch)
    tracked = is_access_track_spte(huge, m)
    view = (lambda s: restore_acc_track_spte(s, m)) if tracked else (lambda s: s)
    assert not is_executable_pte(view(huge), m)
    assert is_executable_pte(view(small), m)
    assert is_executable_pte(view(leaf(m, PG_LEVEL_2M, pfn=0x400, prefetch=prefetch)), m)
    child = make_small_spte(huge, PG_LEVEL_4K, 7, nx_huge_page_workaround=True, m=m)
    assert is_access_track_spte(child, m) == tracked
    assert is_executable_pte(view(child), m)
    # Without the workaround the child keeps the (non-executable) huge permissions.
    child = make_small_spte(huge, PG_LEVEL_4K, 7, m=m)
    assert not is_executable_pte(view(child), m)
    # 1G -> 2M children stay huge, so they stay non-executable.
    huge1g = leaf(m, PG_LEVEL_1G, pfn=0x40000, nx_huge_page_workaround=True, prefetch=prefetch)
    child = make_small_spte(huge1g, PG_LEVEL_2M, 3, nx_huge_page_workaround=True, m=m)
    assert not is_executable_pte(view(child), m) and is_large_pte(child)


@FAST
@given(m=masks_st, data=st.data(), child_level=st.integers(1, 2))
def test_split_covers_huge_page(m, data, child_level):
    args = data.draw(leaf_args(m=m, level=child_level + 1))
    _, huge = make_spte(**args)
    nx = args["nx_huge_page_workaround"]
    children = [make_small_spte(huge, child_level, i, nx, m) for i in range(512)]
    step = KVM_PAGES_PER_HPAGE(child_level)
    assert [spte_to_pfn(c) for c in children] == [args["pfn"] + i * step for i in range(512)]
    keep = (PT_WRITABLE_MASK | m.dirty_mask | m.accessed_mask | m.host_writable_mask
            | m.mmu_writable_mask | SPTE_TDP_AD_MASK | m.memtype_mask | SPTE_MMU_PRESENT_MASK
            | S.VMX_EPT_READABLE_MASK << S.SHADOW_ACC_TRACK_SAVED_BITS_SHIFT)  # saved R
    assert {c & keep for c in children} == {huge & keep}
    assert all(0 <= c <= U64 for c in children)
    for c in (children[0], children[1], children[300], children[511]):
        assert is_large_pte(c) == (child_level > PG_LEVEL_4K)
        assert is_last_spte(c, child_level)
        assert is_access_track_spte(c, m) == is_access_track_spte(huge, m)
        assert check_spte_writable_invariants(c, m) is None
        if not (child_level == PG_LEVEL_4K and nx):
            assert c & ~S.SPTE_BASE_ADDR_MASK & ~PT_PAGE_SIZE_MASK == \
                huge & ~S.SPTE_BASE_ADDR_MASK & ~PT_PAGE_SIZE_MASK
    # Collapsing any child back gives the huge SPTE (NX workaround undone/redone too).
    for i in (0, 1, 255, 511):
        assert make_huge_spte(children[i], child_level + 1, nx, m) == huge


def test_split_and_collapse_reject():
    with pytest.raises(ValueError):
        make_small_spte(leaf(EPT, PG_LEVEL_4K), PG_LEVEL_4K, 0)        # not large
    with pytest.raises(ValueError):
        make_small_spte(FROZEN_SPTE, PG_LEVEL_4K, 0)                   # not present
    with pytest.raises(ValueError):
        make_small_spte(leaf(EPT, PG_LEVEL_2M, pfn=0x200), PG_LEVEL_4K, 512)
    with pytest.raises(ValueError):
        make_huge_spte(leaf(EPT), PG_LEVEL_4K)
    with pytest.raises(ValueError):
        make_huge_spte(SHADOW_NONPRESENT_VALUE, PG_LEVEL_2M)


def test_make_huge_spte_example():
    small = leaf(EPT, PG_LEVEL_4K, pfn=0x12345)
    huge = make_huge_spte(small, PG_LEVEL_2M, nx_huge_page_workaround=True)
    assert spte_to_pfn(huge) == 0x12200 and is_large_pte(huge)
    assert not is_executable_pte(huge)
    assert huge & ~S.SPTE_BASE_ADDR_MASK == (small | PT_PAGE_SIZE_MASK) & ~S.SPTE_BASE_ADDR_MASK & ~0b100
    assert spte_to_pfn(make_huge_spte(small, PG_LEVEL_1G)) == 0


# --------------------------------------------------------------------------------------
# Access tracking
# --------------------------------------------------------------------------------------


@FAST
@given(data=st.data(), m=st.sampled_from([EPT_NO_AD, EPT]))
def test_access_track_round_trip_ad_disabled(data, m):
    args = data.draw(leaf_args(m=m))
    args["prefetch"] = False
    if m is EPT:
        args["ad_disabled"] = True   # A/D-disabled SPTEs under an A/D-capable MMU (nested)
    _, s = make_spte(**args)
    assert not spte_ad_enabled(s) and not is_access_track_spte(s, m)
    t = mark_spte_for_access_track(s, m)
    assert is_access_track_spte(t, m) and is_shadow_present_pte(t)   # still MMU-present
    assert t & S.VMX_EPT_RWX_MASK == 0 and not is_accessed_spte(t, m)
    assert spte_to_pfn(t) == spte_to_pfn(s)
    assert check_spte_writable_invariants(t, m) is None
    assert mark_spte_for_access_track(t, m) == t                  # idempotent
    r = restore_acc_track_spte(t, m)
    # W and A are not saved; everything else comes back.
    assert r == s & ~(PT_WRITABLE_MASK | m.accessed_mask)
    assert not is_access_track_spte(r, m)
    # The fast-page-fault restore (| A, then W if MMU-writable) gets the original back.
    back = r | m.accessed_mask
    if is_mmu_writable_spte(s, m):
        back = spte_set_writable(back, m)
    assert back == s


@FAST
@given(args=leaf_args())
def test_access_track_ad_enabled_clears_only_accessed(args):
    args["ad_disabled"] = False
    args["m"] = m = EPT if args["m"] is EPT_NO_AD else args["m"]
    _, s = make_spte(**args)
    t = mark_spte_for_access_track(s, m)
    assert t == s & ~m.accessed_mask
    assert not is_access_track_spte(t, m)
    assert not leaf_spte_change_needs_tlb_flush(s, t, m)


def test_prefetch_examples():
    s = leaf(EPT, prefetch=True)
    assert not is_accessed_spte(s) and is_writable_pte(s) and not is_access_track_spte(s)
    s = leaf(EPT_NO_AD, prefetch=True)
    assert is_access_track_spte(s, EPT_NO_AD) and not is_writable_pte(s)
    assert is_mmu_writable_spte(s, EPT_NO_AD) and is_host_writable_spte(s, EPT_NO_AD)
    assert describe_spte(s, 1, EPT_NO_AD).endswith("ad-off acc-track")


# --------------------------------------------------------------------------------------
# TLB flush and atomic-update rules
# --------------------------------------------------------------------------------------


@FAST
@given(m=masks_st, old=u64_st, new=u64_st)
def test_tlb_flush_only_when_mmu_writable_lost(m, old, new):
    assert leaf_spte_change_needs_tlb_flush(old, new, m) == (
        bool(old & m.mmu_writable_mask) and not new & m.mmu_writable_mask)


@pytest.mark.parametrize("m", ALL_MASKS, ids=MASK_IDS)
def test_tlb_flush_examples(m):
    s = leaf(m)
    assert not leaf_spte_change_needs_tlb_flush(s, s & ~PT_WRITABLE_MASK, m)   # dirty logging
    assert not leaf_spte_change_needs_tlb_flush(s, s & ~m.accessed_mask, m)    # aging
    assert not leaf_spte_change_needs_tlb_flush(s, s & ~m.dirty_mask, m)
    assert leaf_spte_change_needs_tlb_flush(s, s & ~(PT_WRITABLE_MASK | m.mmu_writable_mask), m)
    wp = s & ~PT_WRITABLE_MASK
    assert leaf_spte_change_needs_tlb_flush(wp, wp & ~m.mmu_writable_mask, m)  # stale W TLB
    assert leaf_spte_change_needs_tlb_flush(s, SHADOW_NONPRESENT_VALUE, m)
    ro = leaf(m, host_writable=False)
    assert not leaf_spte_change_needs_tlb_flush(ro, SHADOW_NONPRESENT_VALUE, m)


@pytest.mark.parametrize("m", [EPT, NPT], ids=["ept", "npt"])
def test_spte_needs_atomic_update_cases(m):
    s = leaf(m)                                      # writable + dirty, A/D on
    assert not spte_needs_atomic_update(s, m)
    assert not spte_needs_atomic_update(s & ~m.accessed_mask, m)   # A ignored
    assert spte_needs_atomic_update(s & ~m.dirty_mask, m)          # CPU may set D
    assert spte_needs_atomic_update(s & ~PT_WRITABLE_MASK, m)      # fast PF may set W
    wp = s & ~(PT_WRITABLE_MASK | m.mmu_writable_mask)
    assert not spte_needs_atomic_update(wp, m)                     # only slow path
    assert not spte_needs_atomic_update(leaf(m, host_writable=False), m)
    assert not spte_needs_atomic_update(leaf(m, pte_access=ACC_EXEC_MASK | ACC_USER_MASK), m)
    if m.acc_track_mask:
        assert spte_needs_atomic_update(wp | SPTE_TDP_AD_DISABLED, m)   # A/D disabled
        assert spte_needs_atomic_update(leaf(EPT_NO_AD, host_writable=False), EPT_NO_AD)
        assert spte_needs_atomic_update(s | SPTE_TDP_AD_WRPROT_ONLY, m) is False
        assert spte_ad_need_write_protect(s | SPTE_TDP_AD_WRPROT_ONLY)
        assert spte_ad_enabled(s | SPTE_TDP_AD_WRPROT_ONLY)
    # The TDP MMU wrapper: only present leaves.
    d = s & ~m.dirty_mask
    assert kvm_tdp_mmu_spte_need_atomic_update(d, PG_LEVEL_4K, m)
    assert not kvm_tdp_mmu_spte_need_atomic_update(d, PG_LEVEL_2M, m)   # looks non-leaf
    assert not kvm_tdp_mmu_spte_need_atomic_update(d & ~SPTE_MMU_PRESENT_MASK, PG_LEVEL_4K, m)


@FAST
@given(m=masks_st, s=u64_st)
def test_spte_needs_atomic_update_definition(m, s):
    w = bool(s & PT_WRITABLE_MASK)
    expect = (not w and bool(s & m.mmu_writable_mask)) \
        or (s & SPTE_TDP_AD_MASK) == SPTE_TDP_AD_DISABLED \
        or (w and not s & m.dirty_mask)
    assert spte_needs_atomic_update(s, m) == expect
    assert spte_needs_atomic_update(s ^ m.accessed_mask, m) == expect


# --------------------------------------------------------------------------------------
# Invariant checker, writable helper, describe
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", ALL_MASKS, ids=MASK_IDS)
def test_writable_invariants_violations(m):
    s = leaf(m)
    assert check_spte_writable_invariants(s, m) is None
    msg = check_spte_writable_invariants(s & ~m.host_writable_mask, m)
    assert msg and "not Host-writable" in msg
    msg = check_spte_writable_invariants(s & ~m.mmu_writable_mask, m)
    assert msg and "not MMU-writable" in msg
    assert check_spte_writable_invariants(s & ~(PT_WRITABLE_MASK | m.mmu_writable_mask), m) is None


def test_spte_set_writable():
    s = leaf(EPT) & ~PT_WRITABLE_MASK
    assert spte_set_writable(s) == s | PT_WRITABLE_MASK
    assert check_spte_writable_invariants(spte_set_writable(s)) is None


def test_describe_examples():
    assert describe_spte(leaf(EPT, PG_LEVEL_2M, pfn=0x1200), 2) == "leaf 2M pfn=0x1200 RWX A D hw mw"
    assert describe_spte(leaf(NPT, pfn=0x7), 1, NPT) == "leaf 4K pfn=0x7 RWX A D hw mw"
    assert describe_spte(leaf(EPT, host_writable=False), 1) == "leaf 4K pfn=0x1000 R-X A"
    assert describe_spte(make_mmio_spte(0x10, 0, 3), 1) == "mmio gen=3 gfn=0x10"
    assert describe_spte(0, 1) == "nonpresent 0x0"


@FAST
@given(m=masks_st, s=u64_st, level=st.integers(1, 5))
def test_describe_never_fails(m, s, level):
    assert isinstance(describe_spte(s, level, m), str)
