// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs C shim: only what Rust cannot do from outside the kernel tree
 * (inline helpers, EXPORT_SYMBOL_GPL, tracepoints). Keep it thin.
 */
#include <linux/export.h>
#include <linux/hmm.h>
#include <linux/kconfig.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/rcupdate.h>
#include <linux/rmap.h>
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

/*
 * Called for a DIRTY mirror entry that loses write access, while the CPU
 * still maps the page (so it cannot be truncated under us), like
 * zap_pte_range() does for dirty ptes.
 */
/*
 * Whether a PROTECTION_VMA invalidation leaves [start, end) readable by the
 * CPU: mprotect() sets the new vm_flags before changing the page tables, and
 * NUMA hinting keeps them. The VMA is only looked at when the range's mm is
 * this task's, whose mmap_lock is held then (every PROTECTION_VMA raiser in
 * 7.3 holds it); otherwise the answer is false, which removes everything.
 */
bool hmm_rs_range_stays_readable(const struct mmu_notifier_range *range)
{
	struct vm_area_struct *vma;

	if (range->event != MMU_NOTIFY_PROTECTION_VMA || current->mm != range->mm ||
	    !rwsem_is_locked(&range->mm->mmap_lock))
		return false;
	vma = vma_lookup(range->mm, range->start);
	return vma && range->end <= vma->vm_end && (vma->vm_flags & VM_READ);
}

void hmm_rs_mark_pfn_dirty(unsigned long pfn)
{
	if (pfn_valid(pfn))
		folio_mark_dirty(page_folio(pfn_to_page(pfn)));
}

struct page *hmm_rs_pfn_to_page(unsigned long pfn)
{
	return pfn_valid(pfn) ? pfn_to_page(pfn) : NULL;
}

bool hmm_rs_pfn_is_zero(unsigned long pfn)
{
	return is_zero_pfn(pfn);
}

bool hmm_rs_page_dirty(struct page *page)
{
	return folio_test_dirty(page_folio(page));
}

/* hmm_range_fault() output bits; linux/hmm.h is not in Rust's bindings. */
const unsigned long hmm_rs_pfn_valid = HMM_PFN_VALID;
const unsigned long hmm_rs_pfn_write = HMM_PFN_WRITE;
const unsigned long hmm_rs_pfn_error = HMM_PFN_ERROR;
const unsigned long hmm_rs_pfn_flags = HMM_PFN_FLAGS;

unsigned int hmm_rs_pfn_order(unsigned long hmm_pfn)
{
	return hmm_pfn_to_map_order(hmm_pfn);
}

/* A mirror's interval notifier spans all of user space. */
int hmm_rs_interval_insert(struct mmu_interval_notifier *sub, struct mm_struct *mm,
			   const struct mmu_interval_notifier_ops *ops)
{
	return mmu_interval_notifier_insert(sub, mm, 0, TASK_SIZE_MAX, ops);
}

bool hmm_rs_interval_read_retry(struct mmu_interval_notifier *sub, unsigned long seq)
{
	return mmu_interval_read_retry(sub, seq);
}

void hmm_rs_interval_set_seq(struct mmu_interval_notifier *sub, unsigned long cur_seq)
{
	mmu_interval_set_seq(sub, cur_seq);
}

/*
 * Faults [start, end) of the notifier's mm in (for @how HMM_RS_FAULT_READ,
 * or with HMM_RS_FAULT_WRITE too; 0 only snapshots what is mapped now),
 * filling one hmm pfn per page. Faults go through
 * hmm_range_fault_unlocked_timeout(), which lets fault handlers drop
 * mmap_lock (userfaultfd) and retries invalidated walks itself; -EINTR
 * for a fatal signal.
 * and returns the sequence to check with hmm_rs_interval_read_retry() under
 * the mirror's lock before using them. -EBUSY: an invalidation raced, retry;
 * -ESRCH: the mm is exiting.
 */
int hmm_rs_range_fault(struct mmu_interval_notifier *sub, unsigned long start,
		       unsigned long end, unsigned long *pfns, unsigned int how,
		       unsigned long *seq)
{
	struct hmm_range range = {
		.notifier = sub,
		.start = start,
		.end = end,
		.hmm_pfns = pfns,
		.default_flags = (how & HMM_RS_FAULT_READ ? HMM_PFN_REQ_FAULT : 0) |
				 (how & HMM_RS_FAULT_WRITE ? HMM_PFN_REQ_WRITE : 0),
	};
	struct mm_struct *mm = sub->mm;
	int ret;

	if (!mmget_not_zero(mm))
		return -ESRCH;
	if (how) {
		ret = hmm_range_fault_unlocked_timeout(&range, 0);
	} else {
		range.notifier_seq = mmu_interval_read_begin(sub);
		mmap_read_lock(mm);
		ret = hmm_range_fault(&range);
		mmap_read_unlock(mm);
	}
	mmput(mm);
	*seq = range.notifier_seq;
	return ret;
}

/* Holds the notifier's mm and its mmap_lock for reading. */
int hmm_rs_mm_lock(struct mmu_interval_notifier *sub)
{
	if (!mmget_not_zero(sub->mm))
		return -ESRCH;
	mmap_read_lock(sub->mm);
	return 0;
}

void hmm_rs_mm_unlock(struct mmu_interval_notifier *sub)
{
	mmap_read_unlock(sub->mm);
	mmput(sub->mm);
}

/*
 * Under hmm_rs_mm_lock(): makes the page at @addr exclusive to the device
 * and returns its pfn, or an errno. The folio stays locked and referenced,
 * so the CPU cannot take the access back, until hmm_rs_exclusive_done().
 */
long hmm_rs_make_exclusive(struct mmu_interval_notifier *sub, unsigned long addr,
			   void *owner, struct folio **foliop)
{
	struct page *page = make_device_exclusive(sub->mm, addr, owner, foliop);

	return IS_ERR(page) ? PTR_ERR(page) : (long)page_to_pfn(page);
}

void hmm_rs_exclusive_done(struct folio *folio)
{
	folio_unlock(folio);
	folio_put(folio);
}

/* How many address bits user space has: 47, or 56 with 5-level paging. */
unsigned int hmm_rs_user_address_bits(void)
{
	return ilog2(TASK_SIZE_MAX - 1) + 1;
}

/* hmm_rs.h's entry flags, for a KUnit check against the Rust ones. */
const u64 hmm_rs_c_pt_flags[5] = {
	HMM_RS_PT_VALID, HMM_RS_PT_WRITE, HMM_RS_PT_DIRTY, HMM_RS_PT_DEVICE,
	HMM_RS_PT_EXCLUSIVE,
};

/* hmm_rs.h's snapshot flags, for a KUnit check against the Rust ones. */
const u32 hmm_rs_c_snap_flags[4] = {
	HMM_RS_SNAP_VALID, HMM_RS_SNAP_WRITE, HMM_RS_SNAP_ERROR, HMM_RS_SNAP_ZERO,
};

/* The exported C API: see hmm_rs.h. */
struct hmm_rs_device *hmm_rs_device_register(const struct hmm_rs_device_ops *ops)
{
	return hmm_rs_rust_device_register(ops);
}
EXPORT_SYMBOL_GPL(hmm_rs_device_register);

void hmm_rs_device_unregister(struct hmm_rs_device *device)
{
	hmm_rs_rust_device_unregister(device);
}
EXPORT_SYMBOL_GPL(hmm_rs_device_unregister);

struct hmm_rs_mirror *hmm_rs_mirror_register(struct hmm_rs_device *device,
					     struct mm_struct *mm,
					     void *mirror_priv)
{
	return hmm_rs_rust_mirror_register(device, mm, mirror_priv);
}
EXPORT_SYMBOL_GPL(hmm_rs_mirror_register);

void hmm_rs_mirror_unregister(struct hmm_rs_mirror *mirror)
{
	hmm_rs_rust_mirror_unregister(mirror);
}
EXPORT_SYMBOL_GPL(hmm_rs_mirror_unregister);

int hmm_rs_mirror_fault(struct hmm_rs_mirror *mirror, enum hmm_rs_event_type type,
			unsigned long start, unsigned long end)
{
	return hmm_rs_rust_mirror_fault(mirror, type, start, end);
}
EXPORT_SYMBOL_GPL(hmm_rs_mirror_fault);

int hmm_rs_mirror_walk(struct hmm_rs_mirror *mirror, unsigned long start,
		       unsigned long end, hmm_rs_walk_fn fn, void *arg)
{
	return hmm_rs_rust_mirror_walk(mirror, start, end, fn, arg);
}
EXPORT_SYMBOL_GPL(hmm_rs_mirror_walk);

int hmm_rs_mirror_set_dirty(struct hmm_rs_mirror *mirror, unsigned long start,
			    unsigned long end)
{
	return hmm_rs_rust_mirror_set_dirty(mirror, start, end);
}
EXPORT_SYMBOL_GPL(hmm_rs_mirror_set_dirty);

int hmm_rs_mirror_snapshot(struct hmm_rs_mirror *mirror, unsigned long start,
			   unsigned long end, u32 *out)
{
	return hmm_rs_rust_mirror_snapshot(mirror, start, end, out);
}
EXPORT_SYMBOL_GPL(hmm_rs_mirror_snapshot);

int hmm_rs_mirror_make_exclusive(struct hmm_rs_mirror *mirror, unsigned long start,
				 unsigned long end)
{
	return hmm_rs_rust_mirror_make_exclusive(mirror, start, end);
}
EXPORT_SYMBOL_GPL(hmm_rs_mirror_make_exclusive);
