/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hmm-rs: the HMM core's interface for device drivers written in C.
 *
 * A driver registers a device (its callbacks), then mirrors of the mms its
 * device works on. Every change to a mirrored CPU page table reaches the
 * device's update() callback as a typed event before the mirror's page
 * table changes; the device faults ranges into the mirror with
 * hmm_rs_mirror_fault() and reads the mirror with hmm_rs_mirror_walk().
 * Dirty bits of entries that lose write access are propagated to the pages.
 *
 * Lifetimes: a device must outlive its mirrors; unregister every mirror,
 * then the device. A driver using these symbols holds the hmm_rs module.
 */
#ifndef HMM_RS_H
#define HMM_RS_H

#include <linux/bits.h>
#include <linux/types.h>

struct device;
struct mm_struct;
struct page;

/* What happened to a range of a mirrored address space. */
enum hmm_rs_event_type {
	HMM_RS_FORK = 1,		/* fork: private pages became copy-on-write */
	HMM_RS_MIGRATE = 2,		/* pages move (reclaim, migration, COW break) */
	HMM_RS_MUNMAP = 3,		/* the range was unmapped */
	HMM_RS_DEVICE_READ_FAULT = 4,	/* hmm_rs_mirror_fault() for reading */
	HMM_RS_DEVICE_WRITE_FAULT = 5,	/* hmm_rs_mirror_fault() for writing */
	HMM_RS_WRITE_PROTECT = 6,	/* the range lost write access */
};

/* Flags of a mirror entry. */
#define HMM_RS_PT_VALID		BIT_ULL(0)	/* maps memory */
#define HMM_RS_PT_WRITE		BIT_ULL(1)	/* the device may write */
#define HMM_RS_PT_DIRTY		BIT_ULL(2)	/* the device (may have) written */
#define HMM_RS_PT_DEVICE	BIT_ULL(3)	/* the page is in device memory */
#define HMM_RS_PT_EXCLUSIVE	BIT_ULL(4)	/* the device has exclusive access */
#define HMM_RS_PT_DRIVER_SHIFT	8		/* 4 bits for the driver */

/*
 * An event: in [start, end), mirror entries keep only the flags in @keep;
 * an entry whose @keep lacks HMM_RS_PT_VALID is removed.
 */
struct hmm_rs_event {
	enum hmm_rs_event_type type;
	unsigned long start;
	unsigned long end;
	u64 keep;
};

struct hmm_rs_mirror;

/* update() started the device's invalidation; update_finish() waits for it. */
#define HMM_RS_UPDATE_PENDING	1

/*
 * An invalidation runs in three passes over the mm's mirrors, its mirror
 * list locked (mirrors neither come nor go meanwhile): every update() (a
 * mirror whose update() returned 0 has its table changed and update_end()
 * called right after, as always), then update_finish() of those that
 * returned HMM_RS_UPDATE_PENDING, then their tables change, dirty bits go
 * to the pages, and update_end() runs. So K devices that each take time to
 * flush cost the slowest, not the sum. A driver that returns pending must
 * not hold, from update() to update_end(), a lock that another of its
 * mirrors of the same mm takes in update().
 */
struct hmm_rs_device_ops {
	/*
	 * Before the mirror table changes: stop using what @event removes and
	 * return 0, or start doing so and return HMM_RS_UPDATE_PENDING (then
	 * update_finish() is required). Must not sleep unless @blockable; if
	 * the device cannot be stopped without sleeping, return -EAGAIN (only
	 * then): the mirror is left alone (no update_finish(), no
	 * update_end()) and mm retries the invalidation. Other errors are
	 * logged and the event stands. Must not unregister mirrors.
	 */
	int (*update)(struct hmm_rs_mirror *mirror,
		      const struct hmm_rs_event *event, bool blockable,
		      void *mirror_priv);
	/*
	 * The mm is exiting; the mirror is emptied after this. May sleep.
	 * Must not unregister mirrors (unregister them later, e.g. on close).
	 */
	void (*release)(struct hmm_rs_mirror *mirror, void *mirror_priv);
	/*
	 * Optional: after a successful update(), once the mirror reflects
	 * @event (same context). Keeping the device off the range from update()
	 * to here (e.g. holding a lock) keeps it off pages the CPU will free.
	 */
	void (*update_end)(struct hmm_rs_mirror *mirror,
			   const struct hmm_rs_event *event, void *mirror_priv);
	/*
	 * Optional: wait for the invalidation that update() started (after it
	 * returned HMM_RS_UPDATE_PENDING; every device's has started by now)
	 * and return 0. Must not sleep unless @blockable; if it cannot finish
	 * without sleeping, return -EAGAIN: this mirror's table is left alone,
	 * update_end() still runs, and mm retries the invalidation.
	 */
	int (*update_finish)(struct hmm_rs_mirror *mirror,
			     const struct hmm_rs_event *event, bool blockable,
			     void *mirror_priv);
};

struct hmm_rs_device;

/* Returns the device or an ERR_PTR(): -EINVAL (no ops), -ENOMEM. */
struct hmm_rs_device *hmm_rs_device_register(const struct hmm_rs_device_ops *ops);
/* Refused (with an error in the log) while the device has mirrors. */
void hmm_rs_device_unregister(struct hmm_rs_device *device);

/*
 * Mirrors @mm (which must have users, e.g. current->mm). May sleep.
 * @mirror_priv is passed to the callbacks and must stay valid until
 * hmm_rs_mirror_unregister() returns: release() may come first, from
 * whichever task tears the mm down.
 * Returns the mirror or an ERR_PTR(): -EINVAL, -ENOMEM.
 */
struct hmm_rs_mirror *hmm_rs_mirror_register(struct hmm_rs_device *device,
					     struct mm_struct *mm,
					     void *mirror_priv);
/* Empties the mirror, dirtying what the device wrote. May sleep. */
void hmm_rs_mirror_unregister(struct hmm_rs_mirror *mirror);

/*
 * Faults [start, end) in for @type HMM_RS_DEVICE_READ_FAULT or
 * HMM_RS_DEVICE_WRITE_FAULT. May sleep; faults may drop mmap_lock
 * (userfaultfd). Returns 0, -EINVAL (type, range), -EFAULT (unmapped, no
 * access), -EPERM (write to read-only), -ESRCH (mm exiting), -EINTR (fatal
 * signal), -ENOMEM or -EAGAIN (raced with invalidations too often).
 */
int hmm_rs_mirror_fault(struct hmm_rs_mirror *mirror,
			enum hmm_rs_event_type type,
			unsigned long start, unsigned long end);

/*
 * Calls @fn for each mapping of the mirror overlapping [start, end), in
 * address order: @order is 0 for 4 KiB, 9 for 2 MiB. Stops when @fn
 * returns non-zero and returns that. Runs under RCU: @fn must not sleep.
 */
typedef int (*hmm_rs_walk_fn)(void *arg, unsigned long addr, u64 pfn,
			      unsigned int order, u64 flags);
int hmm_rs_mirror_walk(struct hmm_rs_mirror *mirror, unsigned long start,
		       unsigned long end, hmm_rs_walk_fn fn, void *arg);

/*
 * hmm_rs_mirror_fault(), then @fn for each mapping of each chunk (at most
 * 2 MiB) the fault committed, right after committing it and under the
 * mirror's table lock: no invalidation can remove those mappings, or free
 * their pages, until @fn returns, so the device may use them there, as a
 * driver programs its page table under its notifier lock. This is how an
 * access makes progress however fast invalidations come: what @fn did
 * cannot be undone by one. @fn must not sleep; it returns 0, or a negative
 * errno that ends the fault and is returned. A chunk already done when a
 * later one fails stays done: the caller keeps track of what @fn saw.
 */
int hmm_rs_mirror_fault_walk(struct hmm_rs_mirror *mirror,
			     enum hmm_rs_event_type type,
			     unsigned long start, unsigned long end,
			     hmm_rs_walk_fn fn, void *arg);

/*
 * DMA-mapped mirrors. A mirror registered with hmm_rs_mirror_register_dma()
 * is bound to @dma_dev (a reference is held until it is unregistered): each
 * page a fault commits is DMA-mapped for @dma_dev (dma_map_page(), through
 * the IOMMU if it has one), a 2 MiB entry as one mapping of the whole huge
 * page; bidirectional for a write fault, to-device for a read fault. An
 * event that removes or write-protects entries unmaps their mappings after
 * update() and before the mirror table changes (the next device read maps
 * write-protected pages again, to-device); a 2 MiB mapping goes whole even
 * if the event covers part of it. Device-private pages and exclusive
 * entries are not mapped. A fault whose mapping fails returns -ENOMEM or
 * -EIO with nothing of that 2 MiB chunk mapped.
 *
 * hmm_rs_mirror_walk_dma() is hmm_rs_mirror_walk() with the DMA address of
 * each mapping's first page, or HMM_RS_DMA_NONE where the device has none
 * (device-private or exclusive entries, or a mapping an event removed:
 * fault the range again). A driver that keeps its device off the range from
 * update() to update_end() (as it must anyway) never uses an address after
 * it was unmapped.
 *
 * hmm_rs_mirror_unbind_dma(): @dma_dev is going away (its driver's remove):
 * every mapping is unmapped, and faults fail with -ENODEV from then on.
 * Returns 0, or -EINVAL for a mirror that is not DMA-mapped. Does not sleep.
 */
#define HMM_RS_DMA_NONE		(~0ULL)
typedef int (*hmm_rs_dma_walk_fn)(void *arg, unsigned long addr, u64 pfn, u64 dma,
				  unsigned int order, u64 flags);
struct hmm_rs_mirror *hmm_rs_mirror_register_dma(struct hmm_rs_device *device,
						 struct mm_struct *mm,
						 struct device *dma_dev,
						 void *mirror_priv);
int hmm_rs_mirror_walk_dma(struct hmm_rs_mirror *mirror, unsigned long start,
			   unsigned long end, hmm_rs_dma_walk_fn fn, void *arg);
int hmm_rs_mirror_unbind_dma(struct hmm_rs_mirror *mirror);

/*
 * What the CPU maps in [start, end) now, without faulting anything in: one
 * value per page into @out (room for (end - start) / PAGE_SIZE values).
 * Does not change the mirror. May sleep. Returns 0, -EINVAL, -ESRCH,
 * -ENOMEM or -EAGAIN.
 */
#define HMM_RS_SNAP_VALID	BIT(0)	/* the CPU maps the page */
#define HMM_RS_SNAP_WRITE	BIT(1)	/* ... writable */
#define HMM_RS_SNAP_ERROR	BIT(2)	/* no VMA, or one the CPU may not read */
#define HMM_RS_SNAP_ZERO	BIT(3)	/* the shared zero page */
#define HMM_RS_SNAP_DEVICE	BIT(4)	/* a device page: device-private, or */
#define HMM_RS_SNAP_COHERENT	BIT(5)	/* ... device-coherent */
#define HMM_RS_SNAP_REMOTE	BIT(6)	/* of another device than the mirror's */
#define HMM_RS_SNAP_ORDER(v)	((v) >> 8)	/* mapped by a page of this order */
int hmm_rs_mirror_snapshot(struct hmm_rs_mirror *mirror, unsigned long start,
			   unsigned long end, u32 *out);

/*
 * Gives the device exclusive access to [start, end) (private anonymous,
 * writable memory): the CPU must fault to touch those pages again, which
 * takes the access back (an HMM_RS_MIGRATE event). Mirror entries get
 * HMM_RS_PT_EXCLUSIVE, write access and DIRTY. May sleep. Returns 0,
 * -EINVAL, -EFAULT or -EBUSY (memory that cannot be made exclusive),
 * -ESRCH or -ENOMEM.
 */
int hmm_rs_mirror_make_exclusive(struct hmm_rs_mirror *mirror, unsigned long start,
				 unsigned long end);

/*
 * The device wrote [start, end): marks the writable entries dirty.
 * Returns how many entries changed, or -EINVAL.
 */
int hmm_rs_mirror_set_dirty(struct hmm_rs_mirror *mirror, unsigned long start,
			    unsigned long end);

/*
 * Device memory: @npages device-private (ZONE_DEVICE) pages of @device,
 * which the CPU cannot address. The device moves data with its copy
 * callbacks; page @index is 0..npages-1. A CPU access to a device page
 * migrates it back to system memory (copy_from_device()); the mirrors of
 * @device see its device pages as they are (HMM_RS_PT_DEVICE entries,
 * HMM_RS_SNAP_DEVICE), other devices' faults pull them back.
 */
struct hmm_rs_devmem_ops {
	/* Fill device page @index from @src, or with zeros if @src is NULL. */
	int (*copy_to_device)(void *devmem_priv, unsigned long index, struct page *src);
	/* Copy device page @index into @dst. */
	int (*copy_from_device)(void *devmem_priv, unsigned long index, struct page *dst);
	/* Optional: device page @index holds nothing any more. Must not sleep. */
	void (*free)(void *devmem_priv, unsigned long index);
	/*
	 * Optional: the same for a huge folio, the 1 << @order pages from
	 * @index, from or into the 1 << @order system pages from @src / @dst
	 * (one transfer for a DMA engine). Without them, the core copies page
	 * by page. Pages are still freed one by one (the kernel may split a
	 * huge device folio).
	 */
	int (*copy_folio_to_device)(void *devmem_priv, unsigned long index, struct page *src,
				    unsigned int order);
	int (*copy_folio_from_device)(void *devmem_priv, unsigned long index, struct page *dst,
				      unsigned int order);
};

struct hmm_rs_devmem;

/* Returns the device memory or an ERR_PTR(): -EINVAL, -ENOMEM... May sleep. */
struct hmm_rs_devmem *hmm_rs_devmem_create(struct hmm_rs_device *device,
					   unsigned long npages,
					   const struct hmm_rs_devmem_ops *ops,
					   void *devmem_priv);
/*
 * The same for device-coherent memory (MEMORY_DEVICE_COHERENT): @npages
 * pages at physical address @start (2 MiB aligned, not System RAM, e.g.
 * reserved with memmap=), which the CPU addresses directly: mirrors map its
 * pages as ordinary pages (no HMM_RS_PT_DEVICE), CPU accesses do not move
 * them, and the copy callbacks may use hmm_rs_devmem_pfn().
 */
struct hmm_rs_devmem *hmm_rs_devmem_create_coherent(struct hmm_rs_device *device,
						    phys_addr_t start, unsigned long npages,
						    const struct hmm_rs_devmem_ops *ops,
						    void *devmem_priv);
/* The pfn of page @index of @mem, or 0 if out of range. */
u64 hmm_rs_devmem_pfn(struct hmm_rs_devmem *mem, unsigned long index);
/* Evicts every page to system memory, then frees the memory. May sleep. */
void hmm_rs_devmem_destroy(struct hmm_rs_devmem *mem);
/* Migrates every page in use back to system memory: how many, or -errno. */
long hmm_rs_devmem_evict(struct hmm_rs_devmem *mem);
/* The index of device page @pfn (a mirror entry's), or -EINVAL if not ours. */
long hmm_rs_devmem_index(struct hmm_rs_devmem *mem, u64 pfn);

/*
 * Migrates what can move of [start, end) (readable VMAs) to @mem, which
 * must be the mirror's device's, and mirrors the device pages it got.
 * Shared, pinned or other devices' pages stay, as do pages once @mem is
 * full. Each step raises an HMM_RS_MIGRATE event. May sleep. Returns the
 * number of pages moved, or -EINVAL (range, VMA, @mem), -ESRCH, -ENOMEM,
 * -EINTR (the task is being killed; it stops between 2 MiB steps).
 */
long hmm_rs_mirror_migrate_to_device(struct hmm_rs_mirror *mirror,
				     struct hmm_rs_devmem *mem,
				     unsigned long start, unsigned long end);
/* Migrates the mirror's device's pages in [start, end) back, likewise. */
long hmm_rs_mirror_migrate_to_system(struct hmm_rs_mirror *mirror,
				     unsigned long start, unsigned long end);

#endif /* HMM_RS_H */
