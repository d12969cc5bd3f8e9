"""Layer ``sync``: kernel-style primitives built on the runtime's traps, with kernel verbs.

Locks (spinlock_t, struct mutex, rwlock_t), RCU and SRCU, atomic words, refcount_t,
the page allocator, completions and wait queues -- and the checkers that live inside
them: lockdep, the RCU checks, use-after-free / double free / leaks, refcount_t
warnings and the data-race detector.
"""

from .alloc import (GFP_ATOMIC, GFP_KERNEL, GFP_NOWAIT, alloc_page, assert_no_leaks,  # noqa: F401
                    free_page, kfree, kzalloc, leak_check)
from .atomic import (MASK64, POISON, READ_ONCE, WRITE_ONCE, Atomic64, Words, cmpxchg,  # noqa: F401
                     smp_load_acquire, smp_store_release, try_cmpxchg, xchg)
from .lockdep import (in_atomic, lockdep_assert_held, lockdep_assert_in_rcu_read_lock, lockdep_assert_held_read,  # noqa: F401
                      lockdep_assert_held_write, lockdep_assert_not_held, lockdep_is_held,
                      lockdep_is_held_type, might_sleep)
from .locks import (Mutex, RwLock, SpinLock, cond_resched, cond_resched_rwlock_read,  # noqa: F401
                    cond_resched_rwlock_write, cpu_relax, mutex_lock, mutex_trylock,
                    mutex_unlock, need_resched, read_lock, read_trylock, read_unlock,
                    rwlock_needbreak, spin_lock, spin_trylock, spin_unlock, write_lock,
                    write_trylock, write_unlock)
from .rcu import (SrcuStruct, call_rcu, rcu_assign_pointer, rcu_barrier,  # noqa: F401
                  rcu_dereference, rcu_dereference_check, rcu_dereference_protected,
                  rcu_dereference_raw, rcu_pending_callbacks, rcu_read_lock, rcu_read_lock_held,
                  rcu_read_section, rcu_read_unlock, srcu_dereference, srcu_read_lock,
                  srcu_read_unlock, synchronize_rcu, synchronize_srcu)
from .refcount import (RefCount, refcount_add, refcount_dec, refcount_dec_and_test,  # noqa: F401
                       refcount_inc, refcount_inc_not_zero, refcount_read, refcount_set)
from .watchdog import resched_point, work  # noqa: F401
from .wait import Completion, WaitQueue, complete, wait_event, wait_for_completion, wake_up  # noqa: F401
from ..runtime.traps import (choose, current_task, defect, join, spawn)  # noqa: F401
from .locks import RwSemaphore, down_read, down_write, up_read, up_write  # noqa: F401,E402
from .lockdep import LockdepMap, lock_map_acquire, lock_map_release  # noqa: F401,E402
from .wait import RcuWait  # noqa: F401,E402
