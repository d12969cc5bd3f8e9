"""Layer ``mmu``: the executable model of KVM x86's TDP MMU.

Modules mirror the kernel's files: ``spte`` (spte.h/spte.c), ``tdp_iter``
(tdp_iter.c/.h), ``tdp_mmu`` (tdp_mmu.c), ``mmu`` (the mmu.c callers), ``kvm`` and
``mmu_internal`` (the structures), ``hw`` (TLBs and the hardware walker), ``locking``
(the declared lock requirements behind ``tdpmmu locks``).
"""

from . import fastpath, spte  # noqa: F401
from .hw import (EXEC_ACCESS, READ_ACCESS, WRITE_ACCESS, guest_access,  # noqa: F401
                 kvm_smm_transition)
from .kvm import Kvm, KvmMemorySlot, KvmVcpu  # noqa: F401
from .locking import REGISTRY, lock_table, lock_table_markdown, requires  # noqa: F401
from .mmu import (kvm_create_vcpu, kvm_create_vm, kvm_destroy_vm, kvm_flush_remote_tlbs,  # noqa: F401
                  kvm_mmu_load, kvm_mmu_page_fault, kvm_mmu_unload, kvm_mmu_zap_all,
                  kvm_mmu_zap_all_fast, kvm_set_memory_region, kvm_zap_gfn_range)
