// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs C shim: only what Rust cannot do from outside the kernel tree
 * (inline helpers and macros). The C API's exports are in hmm_rs_api.c,
 * the tracepoints in hmm_rs_events.c. Keep it thin.
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/fault-inject.h>
#include <linux/highmem.h>
#include <linux/hmm.h>
#include <linux/ioport.h>
#include <linux/kconfig.h>
#include <linux/ktime.h>
#include <linux/memremap.h>
#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/overflow.h>
#include <linux/rcupdate.h>
#include <linux/rmap.h>
#include <linux/sched.h>
#include <linux/slab.h>

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

/*
 * Device-private memory: a ZONE_DEVICE pagemap over a free physical range,
 * whose pages' lifetime callbacks go to the Rust DevMem at @rust.
 */
struct hmm_rs_pagemap {
	struct dev_pagemap pgmap;
	struct resource *res;
	void *rust;
};

static struct hmm_rs_pagemap *to_pagemap(struct page *page)
{
	return container_of(page_pgmap(page), struct hmm_rs_pagemap, pgmap);
}

static const struct dev_pagemap_ops hmm_rs_devmem_ops;

static void hmm_rs_devmem_folio_free(struct folio *folio)
{
	hmm_rs_rust_devmem_free(to_pagemap(&folio->page)->rust, folio_pfn(folio),
				folio_order(folio));
}

static vm_fault_t hmm_rs_devmem_migrate_to_ram(struct vm_fault *vmf)
{
	int ret = hmm_rs_rust_devmem_fault(to_pagemap(vmf->page)->rust, vmf);

	if (ret == -ENOMEM)
		return VM_FAULT_OOM;
	return ret ? VM_FAULT_SIGBUS : 0;
}

static const struct dev_pagemap_ops hmm_rs_devmem_ops = {
	.folio_free = hmm_rs_devmem_folio_free,
	.migrate_to_ram = hmm_rs_devmem_migrate_to_ram,
};

/*
 * Returns the pagemap of @npages pages or an ERR_PTR(): device-private
 * memory over a free physical range if @phys is 0, else device-coherent
 * memory (CPU-addressable, e.g. reserved with memmap=) at @phys.
 */
struct hmm_rs_pagemap *hmm_rs_pagemap_create(unsigned long npages, void *owner,
					     u64 phys, unsigned long *first_pfn)
{
	struct hmm_rs_pagemap *pm;
	void *ret;

	pm = kzalloc_obj(*pm, GFP_KERNEL);
	if (!pm)
		return ERR_PTR(-ENOMEM);
	if (phys) {
		u64 end;

		/*
		 * memremap_pages() WARNs on System RAM: refuse it (and ranges
		 * that wrap) before it is asked.
		 */
		ret = ERR_PTR(-EINVAL);
		if (check_add_overflow(phys, (u64)npages << PAGE_SHIFT, &end) ||
		    region_intersects(phys, npages << PAGE_SHIFT, IORESOURCE_SYSTEM_RAM,
				      IORES_DESC_NONE) != REGION_DISJOINT)
			goto free;
		pm->pgmap.type = MEMORY_DEVICE_COHERENT;
		pm->pgmap.range.start = phys;
		pm->pgmap.range.end = phys + (npages << PAGE_SHIFT) - 1;
	} else {
		pm->res = request_free_mem_region(&iomem_resource, npages << PAGE_SHIFT,
						  "hmm_rs");
		if (IS_ERR(pm->res)) {
			ret = pm->res;
			goto free;
		}
		pm->pgmap.type = MEMORY_DEVICE_PRIVATE;
		pm->pgmap.range.start = pm->res->start;
		pm->pgmap.range.end = pm->res->end;
	}
	pm->pgmap.nr_range = 1;
	pm->pgmap.ops = &hmm_rs_devmem_ops;
	pm->pgmap.owner = owner;
	ret = memremap_pages(&pm->pgmap, numa_node_id());
	if (IS_ERR(ret))
		goto release;
	*first_pfn = PHYS_PFN(pm->pgmap.range.start);
	return pm;
release:
	if (pm->res)
		release_mem_region(pm->res->start, resource_size(pm->res));
free:
	kfree(pm);
	return ret;
}

/* Before any page is handed out: where the callbacks go. */
void hmm_rs_pagemap_set_rust(struct hmm_rs_pagemap *pm, void *rust)
{
	pm->rust = rust;
}

/* Once no page is in use: waits for the last reference. */
void hmm_rs_pagemap_destroy(struct hmm_rs_pagemap *pm)
{
	memunmap_pages(&pm->pgmap);
	if (pm->res)
		release_mem_region(pm->res->start, resource_size(pm->res));
	kfree(pm);
}

/*
 * Free device pages at @pfn become a used folio of @order, referenced once.
 * The page may have been a tail of a huge folio before: page_folio() would
 * still find the old head, so the page itself is initialised.
 */
void hmm_rs_devpage_init(struct hmm_rs_pagemap *pm, unsigned long pfn, unsigned int order)
{
	struct page *page = pfn_to_page(pfn);

	zone_device_page_init(page, &pm->pgmap, order);
	if (order)
		folio_set_large_rmappable(page_folio(page));
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

/*
 * One step of a migration between system and device-private memory: at
 * most HMM_RS_MIGRATE_MAX pages of one VMA (migrate_vma_*), or of a device
 * pfn range (migrate_device_*).
 */
struct hmm_rs_migrate {
	struct migrate_vma args;
	unsigned long npages;
	bool device_range;
	unsigned long src[HMM_RS_MIGRATE_MAX];
	unsigned long dst[HMM_RS_MIGRATE_MAX];
	unsigned long hmm_pfns[HMM_RS_MIGRATE_MAX];	/* hmm_rs_migrate_dropped() */
};

struct hmm_rs_migrate *hmm_rs_migrate_alloc(void)
{
	return kvzalloc_obj(struct hmm_rs_migrate, GFP_KERNEL);
}

void hmm_rs_migrate_free(struct hmm_rs_migrate *m)
{
	kvfree(m);
}

static long hmm_rs_migrate_vma(struct hmm_rs_migrate *m, struct vm_area_struct *vma,
			       unsigned long start, unsigned long end, void *owner,
			       unsigned long flags, struct page *fault_page)
{
	int ret;

	memset(m->src, 0, sizeof(m->src));
	memset(m->dst, 0, sizeof(m->dst));
	m->args = (struct migrate_vma) {
		.vma = vma,
		.start = start,
		.end = end,
		.src = m->src,
		.dst = m->dst,
		.pgmap_owner = owner,
		.flags = flags,
		.fault_page = fault_page,
	};
	m->device_range = false;
	m->npages = (end - start) >> PAGE_SHIFT;
	ret = migrate_vma_setup(&m->args);
	return ret ? ret : m->npages;
}

/*
 * Under hmm_rs_mm_lock(): collects [addr, end) of the notifier's mm, cut to
 * one VMA and HMM_RS_MIGRATE_MAX pages, for system to device memory
 * (@to_device; @owner names the invalidation) or back (device pages of
 * @owner). Returns the number of pages or -EINVAL (no readable VMA at @addr).
 */
long hmm_rs_migrate_setup(struct hmm_rs_migrate *m, struct mmu_interval_notifier *sub,
			  unsigned long addr, unsigned long end, void *owner, bool to_device)
{
	struct vm_area_struct *vma = vma_lookup(sub->mm, addr);

	if (!vma || !(vma->vm_flags & VM_READ))
		return -EINVAL;
	end = min3(end, vma->vm_end, addr + (HMM_RS_MIGRATE_MAX << PAGE_SHIFT));
	return hmm_rs_migrate_vma(m, vma, addr, end, owner,
				  (to_device ? MIGRATE_VMA_SELECT_SYSTEM :
					       MIGRATE_VMA_SELECT_DEVICE_PRIVATE |
					       MIGRATE_VMA_SELECT_DEVICE_COHERENT) |
				  MIGRATE_VMA_SELECT_COMPOUND, NULL);
}

/*
 * The CPU faulted on a device-private page: collect that page, or its whole
 * huge folio if a PMD maps it.
 */
long hmm_rs_migrate_setup_fault(struct hmm_rs_migrate *m, struct vm_fault *vmf)
{
	unsigned int order = vmf->pte ? 0 : folio_order(page_folio(vmf->page));
	unsigned long start = ALIGN_DOWN(vmf->address, PAGE_SIZE << order);

	return hmm_rs_migrate_vma(m, vmf->vma, start, start + (PAGE_SIZE << order),
				  page_pgmap(vmf->page)->owner,
				  MIGRATE_VMA_SELECT_DEVICE_PRIVATE |
				  (order ? MIGRATE_VMA_SELECT_COMPOUND : 0), vmf->page);
}

/* Collects the device pages [pfn, pfn + npages) wherever they are mapped. */
long hmm_rs_migrate_setup_device(struct hmm_rs_migrate *m, unsigned long pfn,
				 unsigned long npages)
{
	int ret;

	npages = min_t(unsigned long, npages, HMM_RS_MIGRATE_MAX);
	memset(m->src, 0, sizeof(m->src));
	memset(m->dst, 0, sizeof(m->dst));
	m->device_range = true;
	m->npages = npages;
	ret = migrate_device_range(m->src, pfn, npages);
	return ret ? ret : npages;
}

/*
 * The src and dst arrays of @m (HMM_RS_MIGRATE_MAX entries each), which
 * Rust reads and fills between the calls above and below, and the
 * MIGRATE_PFN_* encoding of their entries.
 */
unsigned long *hmm_rs_migrate_src_pfns(struct hmm_rs_migrate *m)
{
	return m->src;
}

unsigned long *hmm_rs_migrate_dst_pfns(struct hmm_rs_migrate *m)
{
	return m->dst;
}

const unsigned long hmm_rs_migrate_pfn_bits[5] = {
	MIGRATE_PFN_VALID, MIGRATE_PFN_MIGRATE, MIGRATE_PFN_WRITE, MIGRATE_PFN_COMPOUND,
	MIGRATE_PFN_SHIFT,
};

/*
 * A locked system folio of @order (0 or HPAGE_PMD_ORDER) for page @i, near
 * its address: its pfn, or 0. Eviction of single pages cannot fail: device
 * memory is going away.
 */
unsigned long hmm_rs_migrate_alloc_system(struct hmm_rs_migrate *m, unsigned long i,
					  unsigned int order)
{
	struct folio *folio;

	if (order && !IS_ENABLED(CONFIG_TRANSPARENT_HUGEPAGE))
		return 0;
	if (m->device_range)
		folio = folio_alloc(GFP_HIGHUSER_MOVABLE | (order ? __GFP_NOWARN : __GFP_NOFAIL),
				    order);
	else
		folio = vma_alloc_folio(GFP_HIGHUSER_MOVABLE | (order ? __GFP_NOWARN : 0), order,
					m->args.vma, m->args.start + (i << PAGE_SHIFT));
	if (!folio)
		return 0;
	folio_lock(folio);
	return folio_pfn(folio);
}

/* Moves what has a destination; then page @i migrated iff src says so. */
void hmm_rs_migrate_pages(struct hmm_rs_migrate *m)
{
	if (m->device_range)
		migrate_device_pages(m->src, m->dst, m->npages);
	else
		migrate_vma_pages(&m->args);
}

/*
 * Before trying busy pages again: let whoever holds them finish. Returns the
 * nanoseconds slept.
 */
u64 hmm_rs_migrate_backoff(void)
{
	u64 t0 = ktime_get_ns();

	usleep_range(1000, 2000);
	return ktime_get_ns() - t0;
}

/**
 * hmm_rs_migrate_dropped() - pages a step left out for now
 * @m: a step set up by hmm_rs_migrate_setup(), not finalized
 * @sub: the mirror's interval notifier (its mm's mmap_lock is held)
 * @owner: the device memory's owner (a step back to system memory)
 * @to_device: a step to device memory, else back
 *
 * migrate_vma_setup() leaves out (src 0) a page whose folio it cannot lock,
 * isolate or account for all references of just now: on several CPUs, one
 * that compaction or khugepaged holds at that moment, or that waits in
 * another CPU's per-CPU LRU batch, or a huge folio it could not lock or
 * split. Unlike page-cache, swapped-out or another device's pages, such a
 * page (to the device: an anonymous system page the CPU maps; back: a
 * page of @owner's device memory) can move on another try.
 *
 * Return: how many of the step's pages are such.
 */
long hmm_rs_migrate_dropped(struct hmm_rs_migrate *m, struct mmu_interval_notifier *sub,
			    void *owner, bool to_device)
{
	struct hmm_range range = {
		.notifier = sub,
		.start = m->args.start,
		.end = m->args.end,
		.hmm_pfns = m->hmm_pfns,
		.dev_private_owner = to_device ? NULL : owner,
	};
	unsigned long i;
	long n = 0;

	if (m->device_range)
		return 0;
	memset(m->hmm_pfns, 0, sizeof(m->hmm_pfns));
	range.notifier_seq = mmu_interval_read_begin(sub);
	/* No fault asked: it does not wait on the step's migration entries. */
	if (hmm_range_fault(&range))
		return 0;
	for (i = 0; i < m->npages; i++) {
		struct page *page;

		if (m->src[i] || !(m->hmm_pfns[i] & HMM_PFN_VALID))
			continue;
		page = hmm_pfn_to_page(m->hmm_pfns[i]);
		if (to_device ? !is_zone_device_page(page) && folio_test_anon(page_folio(page)) :
				(is_device_private_page(page) || is_device_coherent_page(page)) &&
				page_pgmap(page)->owner == owner)
			n++;
	}
	return n;
}

/* Ends the step: restores the CPU mappings, drops the old pages. */
void hmm_rs_migrate_finalize(struct hmm_rs_migrate *m)
{
	if (m->device_range)
		migrate_device_finalize(m->src, m->dst, m->npages);
	else
		migrate_vma_finalize(&m->args);
}

/* Frees a folio of hmm_rs_migrate_alloc_system() that was not used. */
void hmm_rs_migrate_drop_page(unsigned long pfn)
{
	struct folio *folio = pfn_folio(pfn);

	folio_unlock(folio);
	folio_put(folio);
}

/* The Rust DevMem of a device-private page of ours. */
void *hmm_rs_pfn_devmem(unsigned long pfn)
{
	struct page *page = pfn_to_page(pfn);

	if (!is_zone_device_page(page) || page_pgmap(page)->ops != &hmm_rs_devmem_ops)
		return NULL;
	return to_pagemap(page)->rust;
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

/* hmm_rs.h's entry flags, for a KUnit check against the Rust ones. */
const u64 hmm_rs_c_pt_flags[5] = {
	HMM_RS_PT_VALID, HMM_RS_PT_WRITE, HMM_RS_PT_DIRTY, HMM_RS_PT_DEVICE,
	HMM_RS_PT_EXCLUSIVE,
};

/* hmm_rs.h's snapshot flags, for a KUnit check against the Rust ones. */
const u32 hmm_rs_c_snap_flags[7] = {
	HMM_RS_SNAP_VALID, HMM_RS_SNAP_WRITE, HMM_RS_SNAP_ERROR, HMM_RS_SNAP_ZERO,
	HMM_RS_SNAP_DEVICE, HMM_RS_SNAP_COHERENT, HMM_RS_SNAP_REMOTE,
};

/*
 * DMA mappings of mirrored pages (hmm_mirror/dma.rs): one mapping per
 * mirror entry, 4 KiB or a whole 2 MiB folio. A device that may write gets
 * a bidirectional mapping, a reader a to-device one.
 *
 * Mapping failures can be injected (CONFIG_FAULT_INJECTION_DEBUG_FS):
 * /sys/kernel/debug/hmm_rs_fail_dma/ holds the usual probability,
 * interval, times and task-filter knobs of the kernel's fault injection.
 */
#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
static DECLARE_FAULT_ATTR(hmm_rs_fail_dma);
static struct dentry *hmm_rs_fail_dma_dir;
#endif

static bool hmm_rs_dma_should_fail(size_t size)
{
#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
	return should_fail(&hmm_rs_fail_dma, size);
#else
	return false;
#endif
}

void hmm_rs_shim_init(void)
{
#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
	/* Without the knobs, mappings simply never fail on purpose. */
	hmm_rs_fail_dma_dir = fault_create_debugfs_attr("hmm_rs_fail_dma", NULL,
							&hmm_rs_fail_dma);
#endif
}

void hmm_rs_shim_exit(void)
{
#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
	debugfs_remove_recursive(hmm_rs_fail_dma_dir);
#endif
}

static enum dma_data_direction hmm_rs_dma_dir(bool write)
{
	return write ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE;
}

int hmm_rs_dma_map(struct device *dev, unsigned long pfn, unsigned int order, bool write,
		   u64 *dma)
{
	size_t size = PAGE_SIZE << order;
	dma_addr_t addr;

	if (hmm_rs_dma_should_fail(size))
		return -ENOMEM;
	addr = dma_map_page_attrs(dev, pfn_to_page(pfn), 0, size, hmm_rs_dma_dir(write), 0);
	if (dma_mapping_error(dev, addr))
		return -EIO;
	*dma = addr;
	return 0;
}

void hmm_rs_dma_unmap(struct device *dev, u64 dma, unsigned int order, bool write)
{
	dma_unmap_page_attrs(dev, dma, PAGE_SIZE << order, hmm_rs_dma_dir(write), 0);
}
