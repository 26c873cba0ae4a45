// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs C shim, device memory (hmm_mirror/devmem.rs, migrate.rs): the
 * ZONE_DEVICE pagemaps and the steps of migrate_vma_*() and
 * migrate_device_*(), whose structures and inline helpers Rust cannot
 * reach from outside the kernel tree.
 */
#include <linux/delay.h>
#include <linux/hmm.h>
#include <linux/ioport.h>
#include <linux/ktime.h>
#include <linux/memremap.h>
#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/overflow.h>
#include <linux/slab.h>

#include "hmm_shim.h"

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

/* The monotonic clock in nanoseconds, for thrash control. */
u64 hmm_rs_now_ns(void)
{
	return ktime_get_ns();
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
