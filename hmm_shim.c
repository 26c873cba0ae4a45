// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs C shim: only what Rust cannot do from outside the kernel tree
 * (inline helpers, EXPORT_SYMBOL_GPL, tracepoints). Keep it thin.
 */
#include <linux/kconfig.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>

#include "hmm_shim.h"

/* Fail the build early and clearly on a kernel that cannot host the core. */
#if !IS_ENABLED(CONFIG_RUST)
#error "hmm-rs needs CONFIG_RUST"
#endif
#if !IS_ENABLED(CONFIG_MMU_NOTIFIER)
#error "hmm-rs needs CONFIG_MMU_NOTIFIER (select it with CONFIG_HMM_MIRROR)"
#endif
#if !IS_ENABLED(CONFIG_HMM_MIRROR)
#error "hmm-rs needs CONFIG_HMM_MIRROR"
#endif

void *hmm_rs_page_address(struct page *page)
{
	return page_address(page);
}

struct page *hmm_rs_virt_to_page(const void *addr)
{
	return virt_to_page(addr);
}

static void hmm_rs_free_page_rcu_cb(struct rcu_head *head)
{
	__free_page(container_of(head, struct page, rcu_head));
}

/* Page-table directories: freed once RCU readers can no longer see them. */
void hmm_rs_free_page_rcu(struct page *page)
{
	call_rcu(&page->rcu_head, hmm_rs_free_page_rcu_cb);
}

/* The mm's single HMM notifier, created by ops->alloc_notifier if needed. */
struct mmu_notifier *hmm_rs_mmu_notifier_get(const struct mmu_notifier_ops *ops,
					     struct mm_struct *mm)
{
	return mmu_notifier_get(ops, mm);
}

bool hmm_rs_range_blockable(const struct mmu_notifier_range *range)
{
	return mmu_notifier_range_blockable(range);
}

/*
 * Whether a PROTECTION_PAGE invalidation comes from fork(): dup_mmap() runs
 * in a task of the mm with its mmap_lock held; writeback's folio_mkclean()
 * runs in flushers, or in a syncing task that does not hold it (see
 * hmm_event.rs for the limits).
 */
bool hmm_rs_range_in_fork(const struct mmu_notifier_range *range)
{
	return range->event == MMU_NOTIFY_PROTECTION_PAGE &&
	       current->mm == range->mm &&
	       rwsem_is_locked(&range->mm->mmap_lock);
}
