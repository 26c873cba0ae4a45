// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs C shim: only what Rust cannot do from outside the kernel tree
 * (inline helpers and macros; declared in hmm_shim.h and again in
 * shim.rs). Device memory is in hmm_shim_devmem.c, DMA mappings in
 * hmm_shim_dma.c, the exports of the C API in hmm_rs_api.c, the
 * tracepoints in hmm_rs_events.c. Keep it thin.
 */
#include <linux/highmem.h>
#include <linux/hmm.h>
#include <linux/kconfig.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/rcupdate.h>
#include <linux/rmap.h>
#include <linux/sched.h>

#include "hmm_rs_compat.h"
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
#if !IS_ENABLED(CONFIG_DEVICE_PRIVATE)
#error "hmm-rs needs CONFIG_DEVICE_PRIVATE (device memory)"
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

/*
 * Called for a DIRTY mirror entry that loses write access, while the CPU
 * still maps the page (so it cannot be truncated under us), like
 * zap_pte_range() does for dirty ptes.
 */
void hmm_rs_mark_pfn_dirty(unsigned long pfn)
{
	if (pfn_valid(pfn))
		folio_mark_dirty(page_folio(pfn_to_page(pfn)));
}

struct page *hmm_rs_pfn_to_page(unsigned long pfn)
{
	return pfn_valid(pfn) ? pfn_to_page(pfn) : NULL;
}

bool hmm_rs_page_dirty(struct page *page)
{
	return folio_test_dirty(page_folio(page));
}

/* hmm_range_fault() output bits; linux/hmm.h is not in Rust's bindings. */
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

/* A device fault's interval notifier: [start, end) of @mirror's mm. */
int hmm_rs_interval_insert_range(struct mmu_interval_notifier *sub,
				 struct mmu_interval_notifier *mirror, unsigned long start,
				 unsigned long end, const struct mmu_interval_notifier_ops *ops)
{
	struct mm_struct *mm = mirror->mm;
	int ret;

	if (!mmget_not_zero(mm))
		return -ESRCH;
	ret = mmu_interval_notifier_insert(sub, mm, start, end - start, ops);
	mmput(mm);
	return ret;
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
 * for a fatal signal. Device-private pages of @owner are reported as they
 * are, others are migrated back to system memory.
 * Returns the sequence to check with hmm_rs_interval_read_retry() under
 * the mirror's lock before using them. -EBUSY: an invalidation raced, retry;
 * -ESRCH: the mm is exiting.
 */
int hmm_rs_range_fault(struct mmu_interval_notifier *sub, unsigned long start,
		       unsigned long end, unsigned long *pfns, unsigned int how,
		       void *owner, unsigned long *seq)
{
	struct hmm_range range = {
		.notifier = sub,
		.start = start,
		.end = end,
		.hmm_pfns = pfns,
		.dev_private_owner = owner,
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

/* Whether the current task is being killed: long operations stop then. */
bool hmm_rs_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
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

bool hmm_rs_pfn_is_device_private(unsigned long pfn)
{
	return pfn_valid(pfn) && is_device_private_page(pfn_to_page(pfn));
}

#define HMM_RS_DEVICE_PRIVATE	BIT(0)
#define HMM_RS_DEVICE_COHERENT	BIT(1)
#define HMM_RS_DEVICE_REMOTE	BIT(2)

/*
 * What device memory @pfn is: 0 none, else HMM_RS_DEVICE_PRIVATE or
 * HMM_RS_DEVICE_COHERENT, with HMM_RS_DEVICE_REMOTE if not @owner's.
 */
static unsigned int hmm_rs_pfn_device_kind(unsigned long pfn, void *owner)
{
	struct page *page = pfn_valid(pfn) ? pfn_to_page(pfn) : NULL;
	unsigned int kind;

	if (page && is_device_private_page(page))
		kind = HMM_RS_DEVICE_PRIVATE;
	else if (page && is_device_coherent_page(page))
		kind = HMM_RS_DEVICE_COHERENT;
	else
		return 0;
	return kind | (page_pgmap(page)->owner != owner ? HMM_RS_DEVICE_REMOTE : 0);
}

/*
 * A snapshot's @n hmm pfns as HMM_RS_SNAP_* values, for a mirror of device
 * @owner. Only pfns in [@dev_lo, @dev_hi) may be device pages: the others'
 * struct pages are left alone. In C, for the inline helpers, once per chunk.
 */
void hmm_rs_snap_decode(const unsigned long *pfns, u32 *out, unsigned long n, void *owner,
			unsigned long dev_lo, unsigned long dev_hi)
{
	unsigned long i;

	for (i = 0; i < n; i++) {
		unsigned long p = pfns[i], pfn = p & ~HMM_PFN_FLAGS;
		unsigned int kind = 0;
		u32 v;

		if (p & HMM_PFN_ERROR) {
			out[i] = HMM_RS_SNAP_ERROR;
			continue;
		}
		if (!(p & HMM_PFN_VALID)) {
			out[i] = 0;
			continue;
		}
		if (pfn >= dev_lo && pfn < dev_hi)
			kind = hmm_rs_pfn_device_kind(pfn, owner);
		v = HMM_RS_SNAP_VALID | (hmm_pfn_to_map_order(p) << 8);
		if (p & HMM_PFN_WRITE)
			v |= HMM_RS_SNAP_WRITE;
		if (is_zero_pfn(pfn))
			v |= HMM_RS_SNAP_ZERO;
		if (kind)
			v |= HMM_RS_SNAP_DEVICE;
		if (kind & HMM_RS_DEVICE_COHERENT)
			v |= HMM_RS_SNAP_COHERENT;
		if (kind & HMM_RS_DEVICE_REMOTE)
			v |= HMM_RS_SNAP_REMOTE;
		out[i] = v;
	}
}

unsigned long hmm_rs_interval_read_begin(struct mmu_interval_notifier *sub)
{
	return mmu_interval_read_begin(sub);
}

/* How many address bits user space has: 47, or 56 with 5-level paging. */
unsigned int hmm_rs_user_address_bits(void)
{
	return ilog2(TASK_SIZE_MAX - 1) + 1;
}
