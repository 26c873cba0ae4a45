// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs for Rust drivers: the C half of rust/hmm_rs_driver.rs, linked into
 * each driver module that includes it.
 *
 * Two things Rust cannot do itself out of tree: reach a page's contents by
 * pfn (pfn_to_page(), kmap_local_page() and friends are macros and inline
 * functions that bindings does not carry for modules), and see what the C
 * compiler makes of hmm_rs.h. The second is the layout check: each
 * HMM_RS_DRV_* line below fails the build if hmm_rs.h disagrees with the
 * number written there, and rust/hmm_rs_driver.rs asserts the same numbers
 * on its #[repr(C)] copies (scripts/check-c-api.py --driver checks that the
 * two lists are the same), so the header and the Rust copies cannot drift.
 */
#include <linux/build_bug.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/sched/mm.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/stddef.h>

#include "hmm_rs.h"
#include "rust/hmm_rs_driver_helpers.h"

/**
 * hmm_rs_drv_page_read() - copy from a page
 * @pfn: the page
 * @offset: where in it (@offset + @len within the page, checked by Rust)
 * @dst: where to
 * @len: how many bytes
 */
void hmm_rs_drv_page_read(u64 pfn, size_t offset, void *dst, size_t len)
{
	memcpy_from_page(dst, pfn_to_page(pfn), offset, len);
}

/**
 * hmm_rs_drv_page_write() - copy into a page
 * @pfn: the page
 * @offset: where in it (@offset + @len within the page, checked by Rust)
 * @src: where from
 * @len: how many bytes
 */
void hmm_rs_drv_page_write(u64 pfn, size_t offset, const void *src, size_t len)
{
	memcpy_to_page(pfn_to_page(pfn), offset, src, len);
}

/**
 * hmm_rs_drv_pages_zero() - fill pages with zeros
 * @pfn: the first page
 * @n: how many pages, from @pfn on
 */
void hmm_rs_drv_pages_zero(u64 pfn, unsigned long n)
{
	unsigned long k;

	for (k = 0; k < n; k++)
		clear_highpage(pfn_to_page(pfn + k));
}

/**
 * hmm_rs_drv_pages_copy() - copy pages
 * @dst: the first page copied to
 * @src: the first page copied from
 * @n: how many pages, from @dst and @src on
 */
void hmm_rs_drv_pages_copy(u64 dst, u64 src, unsigned long n)
{
	unsigned long k;

	for (k = 0; k < n; k++)
		copy_highpage(pfn_to_page(dst + k), pfn_to_page(src + k));
}

/**
 * hmm_rs_drv_page_alloc() - allocate a page, as for user memory
 * @pfn: its pfn, on success
 *
 * Return: whether one came.
 */
bool hmm_rs_drv_page_alloc(u64 *pfn)
{
	struct page *page = alloc_page(GFP_HIGHUSER);

	if (page)
		*pfn = page_to_pfn(page);
	return page;
}

/**
 * hmm_rs_drv_page_free() - free a page hmm_rs_drv_page_alloc() gave
 * @pfn: the page
 */
void hmm_rs_drv_page_free(u64 pfn)
{
	__free_page(pfn_to_page(pfn));
}

/**
 * hmm_rs_drv_folio_alloc() - allocate a folio, if one comes cheaply
 * @order: of 1 << @order pages
 * @pfn: its first pfn, on success
 *
 * Without retrying or warning: a driver that asks for a huge folio falls
 * back to single pages rather than stall on compaction.
 *
 * Return: whether one came.
 */
bool hmm_rs_drv_folio_alloc(unsigned int order, u64 *pfn)
{
	struct folio *folio = folio_alloc(GFP_HIGHUSER | __GFP_NORETRY | __GFP_NOWARN, order);

	if (folio)
		*pfn = folio_pfn(folio);
	return folio;
}

/**
 * hmm_rs_drv_folio_put() - let go of a folio hmm_rs_drv_folio_alloc() gave
 * @pfn: any of its pages
 */
void hmm_rs_drv_folio_put(u64 pfn)
{
	folio_put(page_folio(pfn_to_page(pfn)));
}

/**
 * hmm_rs_drv_page_pfn() - the pfn of a page
 * @page: the page
 *
 * Return: its pfn.
 */
u64 hmm_rs_drv_page_pfn(struct page *page)
{
	return page_to_pfn(page);
}

/**
 * hmm_rs_drv_fatal_signal_pending() - whether the current task is being killed
 *
 * Return: fatal_signal_pending(current).
 */
bool hmm_rs_drv_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

/**
 * hmm_rs_drv_cond_resched() - let others run in a long loop
 */
void hmm_rs_drv_cond_resched(void)
{
	cond_resched();
}

/**
 * hmm_rs_drv_user_end() - the end of user space
 *
 * Return: TASK_SIZE_MAX, which depends on the paging mode on x86.
 */
unsigned long hmm_rs_drv_user_end(void)
{
	return TASK_SIZE_MAX;
}

/**
 * hmm_rs_drv_next_vma() - where the next VMA starts
 * @mm: the address space (mmgrab()ed by the caller)
 * @addr: from where
 * @end: up to where
 *
 * Return: @addr if a VMA holds it, else where the first VMA above it
 * starts, or @end if none starts below @end; -ESRCH once @mm has no users,
 * -EINTR for a fatal signal.
 */
long hmm_rs_drv_next_vma(struct mm_struct *mm, unsigned long addr, unsigned long end)
{
	struct vm_area_struct *vma;
	unsigned long next = end;

	if (!mmget_not_zero(mm))
		return -ESRCH;
	if (mmap_read_lock_killable(mm)) {
		mmput(mm);
		return -EINTR;
	}
	vma = find_vma(mm, addr);
	if (vma && vma->vm_start < end)
		next = max(vma->vm_start, addr);
	mmap_read_unlock(mm);
	mmput(mm);
	return next;
}

/*
 * The layout check. Each line names a structure of hmm_rs.h and one number:
 * its size, or a member's offset; or a constant and its value. The same
 * lines, in Rust's spelling, are in rust/hmm_rs_driver.rs.
 */
#define HMM_RS_DRV_SIZE(s, n)		static_assert(sizeof(struct s) == (n))
#define HMM_RS_DRV_OFFSET(s, m, n)	static_assert(offsetof(struct s, m) == (n))
#define HMM_RS_DRV_VALUE(c, n)		static_assert((c) == (n))

HMM_RS_DRV_SIZE(hmm_rs_event, 32);
HMM_RS_DRV_OFFSET(hmm_rs_event, type, 0);
HMM_RS_DRV_OFFSET(hmm_rs_event, start, 8);
HMM_RS_DRV_OFFSET(hmm_rs_event, end, 16);
HMM_RS_DRV_OFFSET(hmm_rs_event, keep, 24);
HMM_RS_DRV_SIZE(hmm_rs_device_ops, 32);
HMM_RS_DRV_OFFSET(hmm_rs_device_ops, update, 0);
HMM_RS_DRV_OFFSET(hmm_rs_device_ops, release, 8);
HMM_RS_DRV_OFFSET(hmm_rs_device_ops, update_end, 16);
HMM_RS_DRV_OFFSET(hmm_rs_device_ops, update_finish, 24);
HMM_RS_DRV_SIZE(hmm_rs_devmem_ops, 40);
HMM_RS_DRV_OFFSET(hmm_rs_devmem_ops, copy_to_device, 0);
HMM_RS_DRV_OFFSET(hmm_rs_devmem_ops, copy_from_device, 8);
HMM_RS_DRV_OFFSET(hmm_rs_devmem_ops, free, 16);
HMM_RS_DRV_OFFSET(hmm_rs_devmem_ops, copy_folio_to_device, 24);
HMM_RS_DRV_OFFSET(hmm_rs_devmem_ops, copy_folio_from_device, 32);
HMM_RS_DRV_SIZE(hmm_rs_fault_req, 24);
HMM_RS_DRV_OFFSET(hmm_rs_fault_req, addr, 0);
HMM_RS_DRV_OFFSET(hmm_rs_fault_req, npages, 8);
HMM_RS_DRV_OFFSET(hmm_rs_fault_req, flags, 12);
HMM_RS_DRV_OFFSET(hmm_rs_fault_req, result, 16);
HMM_RS_DRV_OFFSET(hmm_rs_fault_req, pad, 20);

HMM_RS_DRV_VALUE(HMM_RS_FORK, 1);
HMM_RS_DRV_VALUE(HMM_RS_MIGRATE, 2);
HMM_RS_DRV_VALUE(HMM_RS_MUNMAP, 3);
HMM_RS_DRV_VALUE(HMM_RS_DEVICE_READ_FAULT, 4);
HMM_RS_DRV_VALUE(HMM_RS_DEVICE_WRITE_FAULT, 5);
HMM_RS_DRV_VALUE(HMM_RS_WRITE_PROTECT, 6);
HMM_RS_DRV_VALUE(HMM_RS_PT_VALID, 1);
HMM_RS_DRV_VALUE(HMM_RS_PT_WRITE, 2);
HMM_RS_DRV_VALUE(HMM_RS_PT_DIRTY, 4);
HMM_RS_DRV_VALUE(HMM_RS_PT_DEVICE, 8);
HMM_RS_DRV_VALUE(HMM_RS_PT_EXCLUSIVE, 16);
HMM_RS_DRV_VALUE(HMM_RS_UPDATE_PENDING, 1);
HMM_RS_DRV_VALUE(HMM_RS_FAULT_REQ_WRITE, 1);
HMM_RS_DRV_VALUE(HMM_RS_FAULT_BATCH_MAX, 4096);
HMM_RS_DRV_VALUE(HMM_RS_SNAP_VALID, 1);
HMM_RS_DRV_VALUE(HMM_RS_SNAP_WRITE, 2);
HMM_RS_DRV_VALUE(HMM_RS_SNAP_ERROR, 4);
HMM_RS_DRV_VALUE(HMM_RS_SNAP_ZERO, 8);
HMM_RS_DRV_VALUE(HMM_RS_SNAP_DEVICE, 16);
HMM_RS_DRV_VALUE(HMM_RS_SNAP_COHERENT, 32);
HMM_RS_DRV_VALUE(HMM_RS_SNAP_REMOTE, 64);
/* HMM_RS_SNAP_ORDER() is a shift, which Rust spells as one. */
#define HMM_RS_SNAP_ORDER_SHIFT	8
HMM_RS_DRV_VALUE(HMM_RS_SNAP_ORDER(1U << HMM_RS_SNAP_ORDER_SHIFT), 1);
HMM_RS_DRV_VALUE(HMM_RS_SNAP_ORDER_SHIFT, 8);
HMM_RS_DRV_VALUE(HMM_RS_DEVMEM_EVICT, 1);
HMM_RS_DRV_VALUE(HMM_RS_ADVICE_PREFER_DEVICE, 1);
HMM_RS_DRV_VALUE(HMM_RS_ADVICE_PREFER_SYSTEM, 2);
HMM_RS_DRV_VALUE(HMM_RS_ADVICE_READ_ONLY, 4);
HMM_RS_DRV_VALUE(HMM_RS_DEVMEM_SIZE, 0);
HMM_RS_DRV_VALUE(HMM_RS_DEVMEM_IN_USE, 1);
HMM_RS_DRV_VALUE(HMM_RS_DEVMEM_MIGRATED, 2);
HMM_RS_DRV_VALUE(HMM_RS_DEVMEM_EVICTED, 3);
HMM_RS_DRV_VALUE(HMM_RS_DEVMEM_EVICT_SKIPPED, 4);
HMM_RS_DRV_VALUE(HMM_RS_DEVMEM_NOT_PLACED, 5);
HMM_RS_DRV_VALUE(HMM_RS_DEVMEM_THRASH_HELD, 6);
HMM_RS_DRV_VALUE(HMM_RS_DEVMEM_THRASH_DETECTED, 7);
