/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hmm-rs: what differs between the kernels it builds for (Linux 7.2 and
 * 7.3), in one place. The code uses 7.3's interfaces; this provides them
 * where the kernel lacks one (found by Kbuild in the kernel's headers, not
 * by version: a backport counts). The next kernel should be a small change
 * here. (Rust: `bindings::rcu_barrier`, not 7.3's kernel::sync::rcu one.)
 */
#ifndef HMM_RS_COMPAT_H
#define HMM_RS_COMPAT_H

#include <linux/hmm.h>
#include <linux/jiffies.h>
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/oom.h>
#include <linux/sched/signal.h>

/* Kbuild probes the kernel's headers for each HMM_RS_HAVE_* below. */
#ifndef HMM_RS_HAVE_RANGE_FAULT_UNLOCKED
/*
 * 7.2 has no hmm_range_fault_unlocked_timeout(): the same retry discipline
 * over hmm_range_fault() under mmap_read_lock (killable, -EFAULT once the
 * mm is being torn down, -EBUSY retried until @timeout jiffies, 0: no
 * limit; -EINTR for a fatal signal between tries). What 7.2 cannot do is
 * let a fault handler drop mmap_lock (userfaultfd): such faults fail as
 * they do for hmm_range_fault() callers there.
 */
static inline int hmm_range_fault_unlocked_timeout(struct hmm_range *range,
						   unsigned long timeout)
{
	struct mm_struct *mm = range->notifier->mm;
	unsigned long deadline = jiffies + timeout;
	int ret;

	do {
		if (fatal_signal_pending(current))
			return -EINTR;
		range->notifier_seq = mmu_interval_read_begin(range->notifier);
		ret = mmap_read_lock_killable(mm);
		if (ret)
			return ret;
		if (check_stable_address_space(mm)) {
			mmap_read_unlock(mm);
			return -EFAULT;
		}
		if (timeout && time_after(jiffies, deadline)) {
			mmap_read_unlock(mm);
			return -EBUSY;
		}
		ret = hmm_range_fault(range);
		mmap_read_unlock(mm);
	} while (ret == -EBUSY);
	return ret;
}
#endif

#endif /* HMM_RS_COMPAT_H */
