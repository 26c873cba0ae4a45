/* SPDX-License-Identifier: GPL-2.0 */
/**
 * DOC: hmm-rs C API
 *
 * The HMM core's interface for device drivers written in C.
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

/**
 * enum hmm_rs_event_type - what happened to a range of a mirrored address space
 * @HMM_RS_FORK: fork: private pages became copy-on-write
 * @HMM_RS_MIGRATE: pages move (reclaim, migration, COW break)
 * @HMM_RS_MUNMAP: the range was unmapped
 * @HMM_RS_DEVICE_READ_FAULT: hmm_rs_mirror_fault() for reading
 * @HMM_RS_DEVICE_WRITE_FAULT: hmm_rs_mirror_fault() for writing
 * @HMM_RS_WRITE_PROTECT: the range lost write access
 *
 * The values are part of the API and never change.
 */
enum hmm_rs_event_type {
	HMM_RS_FORK = 1,
	HMM_RS_MIGRATE = 2,
	HMM_RS_MUNMAP = 3,
	HMM_RS_DEVICE_READ_FAULT = 4,
	HMM_RS_DEVICE_WRITE_FAULT = 5,
	HMM_RS_WRITE_PROTECT = 6,
};

/* Flags of a mirror entry. */
#define HMM_RS_PT_VALID		BIT_ULL(0)	/* maps memory */
#define HMM_RS_PT_WRITE		BIT_ULL(1)	/* the device may write */
#define HMM_RS_PT_DIRTY		BIT_ULL(2)	/* the device (may have) written */
#define HMM_RS_PT_DEVICE	BIT_ULL(3)	/* the page is in device memory */
#define HMM_RS_PT_EXCLUSIVE	BIT_ULL(4)	/* the device has exclusive access */
#define HMM_RS_PT_DRIVER_SHIFT	8		/* 4 bits for the driver */

/**
 * struct hmm_rs_event - a change to a range of a mirror
 * @type: what happened
 * @start: first address of the range
 * @end: the address after the range
 * @keep: the HMM_RS_PT_* flags the entries keep
 *
 * In [@start, @end), mirror entries keep only the flags in @keep; an entry
 * whose @keep lacks HMM_RS_PT_VALID is removed.
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

/**
 * struct hmm_rs_device_ops - a device's callbacks for its mirrors
 * @update: before the mirror table changes: stop using what @event removes
 *	and return 0, or start doing so and return HMM_RS_UPDATE_PENDING
 *	(then @update_finish is required). Must not sleep unless @blockable;
 *	if the device cannot be stopped without sleeping, return -EAGAIN
 *	(only then): the mirror is left alone (no @update_finish, no
 *	@update_end) and mm retries the invalidation. Other errors are logged
 *	and the event stands. Must not unregister mirrors.
 * @release: the mm is exiting; the mirror is emptied after this. May sleep.
 *	Must not unregister mirrors (unregister them later, e.g. on close).
 * @update_end: optional: after @update (but one that returned -EAGAIN,
 *	see above; after another error too), once the mirror reflects @event
 *	(same context). Keeping the device off the range from
 *	@update to here (e.g. holding a lock) keeps it off pages the CPU will
 *	free.
 * @update_finish: optional: wait for the invalidation that @update started
 *	(after it returned HMM_RS_UPDATE_PENDING; every device's has started by
 *	now) and return 0. Must not sleep unless @blockable; if it cannot
 *	finish without sleeping, return -EAGAIN: this mirror's table is left
 *	alone, @update_end still runs, and mm retries the invalidation.
 *
 * Each callback gets the mirror, and the @mirror_priv it was registered
 * with.
 *
 * An invalidation runs in three passes over the mm's mirrors, its mirror
 * list locked (mirrors neither come nor go meanwhile): every @update (a
 * mirror whose @update returned 0 has its table changed and @update_end
 * called right after, as always), then @update_finish of those that
 * returned HMM_RS_UPDATE_PENDING, then their tables change, dirty bits go
 * to the pages, and @update_end runs. So K devices that each take time to
 * flush cost the slowest, not the sum. A driver that returns pending must
 * not hold, from @update to @update_end, a lock that another of its
 * mirrors of the same mm takes in @update.
 */
struct hmm_rs_device_ops {
	int (*update)(struct hmm_rs_mirror *mirror,
		      const struct hmm_rs_event *event, bool blockable,
		      void *mirror_priv);
	void (*release)(struct hmm_rs_mirror *mirror, void *mirror_priv);
	void (*update_end)(struct hmm_rs_mirror *mirror,
			   const struct hmm_rs_event *event, void *mirror_priv);
	int (*update_finish)(struct hmm_rs_mirror *mirror,
			     const struct hmm_rs_event *event, bool blockable,
			     void *mirror_priv);
};

struct hmm_rs_device;

/**
 * hmm_rs_device_register() - register a device
 * @ops: the device's callbacks, valid until hmm_rs_device_unregister()
 *
 * Return: the device, or an ERR_PTR(): -EINVAL (no @ops), -ENOMEM.
 */
struct hmm_rs_device *hmm_rs_device_register(const struct hmm_rs_device_ops *ops);

/**
 * hmm_rs_device_unregister() - unregister a device
 * @device: a device of hmm_rs_device_register()
 *
 * Refused (with an error in the log) while the device has mirrors or
 * device memory.
 */
void hmm_rs_device_unregister(struct hmm_rs_device *device);

/**
 * hmm_rs_mirror_register() - mirror an address space for a device
 * @device: the device whose callbacks the mirror calls
 * @mm: the address space, which must have users (e.g. current->mm)
 * @mirror_priv: passed to the callbacks; must stay valid until
 *	hmm_rs_mirror_unregister() returns: release() may come first, from
 *	whichever task tears the mm down
 *
 * May sleep.
 *
 * Return: the mirror, or an ERR_PTR(): -EINVAL, -ENOMEM.
 */
struct hmm_rs_mirror *hmm_rs_mirror_register(struct hmm_rs_device *device,
					     struct mm_struct *mm,
					     void *mirror_priv);

/**
 * hmm_rs_mirror_unregister() - stop mirroring
 * @mirror: a mirror of hmm_rs_mirror_register() or
 *	hmm_rs_mirror_register_dma()
 *
 * Empties the mirror, dirtying what the device wrote. May sleep.
 */
void hmm_rs_mirror_unregister(struct hmm_rs_mirror *mirror);

/**
 * hmm_rs_mirror_fault() - fault a range into a mirror
 * @mirror: the mirror
 * @type: HMM_RS_DEVICE_READ_FAULT or HMM_RS_DEVICE_WRITE_FAULT
 * @start: first address of the range
 * @end: the address after the range
 *
 * May sleep; faults may drop mmap_lock (userfaultfd). Where advice says
 * PREFER_DEVICE, the fault first migrates the 2 MiB blocks around the range
 * to the preferred device memory (hmm_rs_mirror_advise()): it then calls
 * the memory's copy callbacks and may evict other processes' pages, whose
 * mirrors' update() it calls, so a driver must not hold across a fault a
 * lock those take.
 *
 * Return: 0, -EINVAL (type, range), -EFAULT (unmapped, no access), -EPERM
 * (write to read-only memory, or where advice says READ_ONLY), -ESRCH (mm
 * exiting), -EINTR (fatal signal), -ENOMEM or -EAGAIN (raced with
 * invalidations too often).
 */
int hmm_rs_mirror_fault(struct hmm_rs_mirror *mirror,
			enum hmm_rs_event_type type,
			unsigned long start, unsigned long end);

/**
 * typedef hmm_rs_walk_fn - called for each mapping of a mirror walk
 * @arg: the walk's @arg
 * @addr: the mapping's first address
 * @pfn: the pfn of its first page
 * @order: 0 for 4 KiB, 9 for 2 MiB
 * @flags: its HMM_RS_PT_* flags
 *
 * Return: 0 to go on, non-zero to stop the walk.
 */
typedef int (*hmm_rs_walk_fn)(void *arg, unsigned long addr, u64 pfn,
			      unsigned int order, u64 flags);

/**
 * hmm_rs_mirror_walk() - read the mappings of a mirror
 * @mirror: the mirror
 * @start: first address of the range
 * @end: the address after the range
 * @fn: called for each mapping overlapping [@start, @end), in address order
 * @arg: passed to @fn
 *
 * Runs under RCU: @fn must not sleep.
 *
 * Return: what @fn returned when it stopped the walk, else 0; or a
 * negative errno of the walk (-EINVAL).
 */
int hmm_rs_mirror_walk(struct hmm_rs_mirror *mirror, unsigned long start,
		       unsigned long end, hmm_rs_walk_fn fn, void *arg);

/**
 * hmm_rs_mirror_fault_walk() - fault a range in, and use it before it can go
 * @mirror: the mirror
 * @type: HMM_RS_DEVICE_READ_FAULT or HMM_RS_DEVICE_WRITE_FAULT
 * @start: first address of the range
 * @end: the address after the range
 * @fn: called for each mapping of each chunk the fault committed
 * @arg: passed to @fn
 *
 * hmm_rs_mirror_fault(), then @fn for each mapping of each chunk (at most
 * 2 MiB) the fault committed, right after committing it and under the
 * mirror's table lock: no invalidation can remove those mappings, or free
 * their pages, until @fn returns, so the device may use them there, as a
 * driver programs its page table under its notifier lock. This is how an
 * access makes progress however fast invalidations come: what @fn did
 * cannot be undone by one. @fn must not sleep; it returns 0, or a negative
 * errno that ends the fault. A chunk already done when a later one fails
 * stays done: the caller keeps track of what @fn saw.
 *
 * Return: as hmm_rs_mirror_fault(), or the errno @fn returned.
 */
int hmm_rs_mirror_fault_walk(struct hmm_rs_mirror *mirror,
			     enum hmm_rs_event_type type,
			     unsigned long start, unsigned long end,
			     hmm_rs_walk_fn fn, void *arg);

/* hmm_rs_fault_req.flags: the device writes (else it reads). */
#define HMM_RS_FAULT_REQ_WRITE	BIT(0)

/* The most requests hmm_rs_mirror_fault_batch() takes at once. */
#define HMM_RS_FAULT_BATCH_MAX	4096

/**
 * struct hmm_rs_fault_req - one request of a batch of device faults
 * @addr: the first page's address (page aligned)
 * @npages: how many pages from @addr; 0 means 1
 * @flags: HMM_RS_FAULT_REQ_WRITE or 0; other bits are refused (-EINVAL)
 * @result: out: 0, or what hmm_rs_mirror_fault() of this request alone
 *	would have returned (negative errno)
 * @pad: must be 0
 */
struct hmm_rs_fault_req {
	u64 addr;
	u32 npages;
	u32 flags;
	s32 result;
	u32 pad;
};

/**
 * hmm_rs_mirror_fault_batch() - fault a batch of requests into a mirror
 * @mirror: the mirror
 * @reqs: the requests, e.g. as copied from a device's fault buffer: any
 *	order, duplicates and overlaps allowed; each gets its @result
 * @n: how many (at most HMM_RS_FAULT_BATCH_MAX)
 *
 * Sorts the requests by address (their order in @reqs is kept) and merges
 * them into windows: each covers, in one 2 MiB block, the pages from the
 * lowest to the highest requested there (the pages between are faulted
 * too), and crosses into the next block only where a request does. A
 * window with a write request faults all its pages for writing (write wins
 * over read). Each window is faulted once, like hmm_rs_mirror_fault() of
 * its range: one walk, one sequence check and one commit per 2 MiB chunk; a
 * chunk the CPU maps with a 2 MiB page grows to it (one huge entry).
 *
 * Results: every request of a window that succeeded gets 0. If a window
 * fails, its requests are faulted one by one (reads first, then writes:
 * write wins there too), so that each gets what
 * hmm_rs_mirror_fault() of it alone returns: one bad request (unmapped,
 * beyond user space, a write to read-only memory) fails alone. Malformed
 * requests get -EINVAL; after a fatal signal, the requests not done get
 * -EINTR. Requests are done in address order; a request that got 0 was
 * mirrored, and may have been invalidated since, as after any fault. May
 * sleep.
 *
 * Return: 0 when every request has its @result; or -EINVAL (@n too large,
 * no @reqs) or -ENOMEM, and the results are not to be used.
 */
int hmm_rs_mirror_fault_batch(struct hmm_rs_mirror *mirror,
			      struct hmm_rs_fault_req *reqs, unsigned int n);

/**
 * DOC: DMA-mapped mirrors
 *
 * A mirror registered with hmm_rs_mirror_register_dma() is bound to a
 * device for DMA (a reference is held until it is unregistered): each page
 * a fault commits is DMA-mapped for it (dma_map_page(), through the IOMMU
 * if it has one), a 2 MiB entry as one mapping of the whole huge page;
 * bidirectional for a write fault, to-device for a read fault. An event
 * that removes or write-protects entries unmaps their mappings after
 * update() and before the mirror table changes (the next device read maps
 * write-protected pages again, to-device); a 2 MiB mapping goes whole even
 * if the event covers part of it. Device-private pages and exclusive
 * entries are not mapped. A fault whose mapping fails returns -ENOMEM or
 * -EIO with nothing of that 2 MiB chunk mapped.
 *
 * A driver that keeps its device off the range from update() to
 * update_end() (as it must anyway) never uses an address after it was
 * unmapped.
 */

/* hmm_rs_mirror_walk_dma(): the device has no DMA address for the mapping. */
#define HMM_RS_DMA_NONE		(~0ULL)

/**
 * typedef hmm_rs_dma_walk_fn - called for each mapping of a DMA mirror walk
 * @arg: the walk's @arg
 * @addr: the mapping's first address
 * @pfn: the pfn of its first page
 * @dma: the DMA address of its first page, or HMM_RS_DMA_NONE
 * @order: 0 for 4 KiB, 9 for 2 MiB
 * @flags: its HMM_RS_PT_* flags
 *
 * Return: 0 to go on, non-zero to stop the walk.
 */
typedef int (*hmm_rs_dma_walk_fn)(void *arg, unsigned long addr, u64 pfn, u64 dma,
				  unsigned int order, u64 flags);

/**
 * hmm_rs_mirror_register_dma() - mirror an address space, DMA-mapped
 * @device: the device whose callbacks the mirror calls
 * @mm: the address space, which must have users (e.g. current->mm)
 * @dma_dev: the device the mirrored pages are DMA-mapped for
 * @mirror_priv: as for hmm_rs_mirror_register()
 *
 * hmm_rs_mirror_register() for a mirror whose pages are DMA-mapped for
 * @dma_dev (see "DMA-mapped mirrors" above). May sleep.
 *
 * Return: the mirror, or an ERR_PTR(): -EINVAL, -ENOMEM.
 */
struct hmm_rs_mirror *hmm_rs_mirror_register_dma(struct hmm_rs_device *device,
						 struct mm_struct *mm,
						 struct device *dma_dev,
						 void *mirror_priv);

/**
 * hmm_rs_mirror_walk_dma() - read the mappings of a mirror, with DMA addresses
 * @mirror: the mirror
 * @start: first address of the range
 * @end: the address after the range
 * @fn: called for each mapping overlapping [@start, @end), in address order
 * @arg: passed to @fn
 *
 * hmm_rs_mirror_walk() with the DMA address of each mapping's first page,
 * or HMM_RS_DMA_NONE where the device has none (device-private or
 * exclusive entries, or a mapping an event removed: fault the range
 * again). Runs under RCU: @fn must not sleep.
 *
 * Return: as hmm_rs_mirror_walk().
 */
int hmm_rs_mirror_walk_dma(struct hmm_rs_mirror *mirror, unsigned long start,
			   unsigned long end, hmm_rs_dma_walk_fn fn, void *arg);

/**
 * hmm_rs_mirror_unbind_dma() - the DMA device is going away
 * @mirror: a mirror of hmm_rs_mirror_register_dma()
 *
 * For the DMA device's driver's remove(): every mapping is unmapped, and
 * faults fail with -ENODEV from then on. Does not sleep.
 *
 * Return: 0, or -EINVAL for a mirror that is not DMA-mapped.
 */
int hmm_rs_mirror_unbind_dma(struct hmm_rs_mirror *mirror);

#define HMM_RS_SNAP_VALID	BIT(0)	/* the CPU maps the page */
#define HMM_RS_SNAP_WRITE	BIT(1)	/* ... writable */
#define HMM_RS_SNAP_ERROR	BIT(2)	/* no VMA, or one the CPU may not read */
#define HMM_RS_SNAP_ZERO	BIT(3)	/* the shared zero page */
#define HMM_RS_SNAP_DEVICE	BIT(4)	/* a device page: device-private, or */
#define HMM_RS_SNAP_COHERENT	BIT(5)	/* ... device-coherent */
#define HMM_RS_SNAP_REMOTE	BIT(6)	/* of another device than the mirror's */
#define HMM_RS_SNAP_ORDER(v)	((v) >> 8)	/* mapped by a page of this order */

/**
 * hmm_rs_mirror_snapshot() - what the CPU maps in a range now
 * @mirror: the mirror
 * @start: first address of the range
 * @end: the address after the range
 * @out: room for (@end - @start) / PAGE_SIZE values
 *
 * One HMM_RS_SNAP_* value per page into @out, without faulting anything
 * in. Does not change the mirror. May sleep.
 *
 * Return: 0, -EINVAL, -ESRCH, -ENOMEM or -EAGAIN.
 */
int hmm_rs_mirror_snapshot(struct hmm_rs_mirror *mirror, unsigned long start,
			   unsigned long end, u32 *out);

/**
 * hmm_rs_mirror_make_exclusive() - give the device exclusive access
 * @mirror: the mirror
 * @start: first address of the range (private anonymous, writable memory)
 * @end: the address after the range
 *
 * The CPU must fault to touch those pages again, which takes the access
 * back (an HMM_RS_MIGRATE event). Mirror entries get HMM_RS_PT_EXCLUSIVE,
 * write access and DIRTY. May sleep.
 *
 * Return: 0, -EINVAL, -EFAULT or -EBUSY (memory that cannot be made
 * exclusive), -ESRCH or -ENOMEM.
 */
int hmm_rs_mirror_make_exclusive(struct hmm_rs_mirror *mirror, unsigned long start,
				 unsigned long end);

/**
 * hmm_rs_mirror_set_dirty() - the device wrote a range
 * @mirror: the mirror
 * @start: first address of the range
 * @end: the address after the range
 *
 * Marks the writable entries of [@start, @end) dirty.
 *
 * Return: how many entries changed, or -EINVAL.
 */
int hmm_rs_mirror_set_dirty(struct hmm_rs_mirror *mirror, unsigned long start,
			    unsigned long end);

/**
 * struct hmm_rs_devmem_ops - how the core moves data to and from device memory
 * @copy_to_device: fill device page @index from @src, or with zeros if
 *	@src is NULL
 * @copy_from_device: copy device page @index into @dst
 * @free: optional: device page @index holds nothing any more. Must not sleep.
 * @copy_folio_to_device: optional: @copy_to_device for a huge folio, the
 *	1 << @order pages from @index, from the 1 << @order system pages from
 *	@src (one transfer for a DMA engine)
 * @copy_folio_from_device: optional: likewise for @copy_from_device
 *
 * Device memory: device-private (ZONE_DEVICE) pages of a device, which the
 * CPU cannot address. The device moves data with its copy callbacks; page
 * indexes are 0..npages-1. A CPU access to a device page migrates it back to
 * system memory (@copy_from_device); the mirrors of the device see its
 * device pages as they are (HMM_RS_PT_DEVICE entries, HMM_RS_SNAP_DEVICE),
 * other devices' faults pull them back. Without the folio callbacks, the
 * core copies page by page. Pages are still freed one by one (the kernel
 * may split a huge device folio). Each callback gets the @devmem_priv the
 * memory was created with.
 */
struct hmm_rs_devmem_ops {
	int (*copy_to_device)(void *devmem_priv, unsigned long index, struct page *src);
	int (*copy_from_device)(void *devmem_priv, unsigned long index, struct page *dst);
	void (*free)(void *devmem_priv, unsigned long index);
	int (*copy_folio_to_device)(void *devmem_priv, unsigned long index, struct page *src,
				    unsigned int order);
	int (*copy_folio_from_device)(void *devmem_priv, unsigned long index, struct page *dst,
				      unsigned int order);
};

struct hmm_rs_devmem;

/*
 * Flags of hmm_rs_devmem_create(). HMM_RS_DEVMEM_EVICT: a migration that
 * finds the memory full evicts its least-recently-used 2 MiB blocks (of
 * any mm) back to system memory to make room; without it, the pages that
 * do not fit stay in system memory.
 */
#define HMM_RS_DEVMEM_EVICT	1U

/**
 * hmm_rs_devmem_create() - create device-private memory
 * @device: the device whose memory it is
 * @npages: how many pages
 * @ops: the copy callbacks, valid until the memory is gone: at
 *	hmm_rs_devmem_destroy(), or when the last mirror whose advice names it
 *	(hmm_rs_mirror_advise()) is unregistered, whichever is later
 * @devmem_priv: passed to the callbacks
 * @flags: 0 or HMM_RS_DEVMEM_EVICT
 *
 * May sleep.
 *
 * Return: the device memory, or an ERR_PTR(): -EINVAL (also for unknown
 * @flags), -ENOMEM...
 */
struct hmm_rs_devmem *hmm_rs_devmem_create(struct hmm_rs_device *device,
					   unsigned long npages,
					   const struct hmm_rs_devmem_ops *ops,
					   void *devmem_priv, unsigned int flags);

/**
 * hmm_rs_devmem_create_coherent() - create device-coherent memory
 * @device: the device whose memory it is
 * @start: its physical address (2 MiB aligned, not System RAM, e.g.
 *	reserved with memmap=)
 * @npages: how many pages
 * @ops: the copy callbacks, as for hmm_rs_devmem_create()
 * @devmem_priv: passed to the callbacks
 * @flags: as for hmm_rs_devmem_create()
 *
 * hmm_rs_devmem_create() for MEMORY_DEVICE_COHERENT memory, which the CPU
 * addresses directly: mirrors map its pages as ordinary pages (no
 * HMM_RS_PT_DEVICE), CPU accesses do not move them, and the copy callbacks
 * may use hmm_rs_devmem_pfn(). May sleep.
 *
 * Return: the device memory, or an ERR_PTR(): -EINVAL, -ENOMEM...
 */
struct hmm_rs_devmem *hmm_rs_devmem_create_coherent(struct hmm_rs_device *device,
						    phys_addr_t start, unsigned long npages,
						    const struct hmm_rs_devmem_ops *ops,
						    void *devmem_priv, unsigned int flags);

/**
 * hmm_rs_devmem_pfn() - the pfn of a device page
 * @mem: the device memory
 * @index: the page's index
 *
 * Return: the pfn of page @index of @mem, or 0 if out of range.
 */
u64 hmm_rs_devmem_pfn(struct hmm_rs_devmem *mem, unsigned long index);

/**
 * hmm_rs_devmem_destroy() - destroy device memory
 * @mem: the device memory
 *
 * Evicts every page to system memory, then frees the memory (once no
 * mirror's advice names it; until then it takes no pages). May sleep.
 */
void hmm_rs_devmem_destroy(struct hmm_rs_devmem *mem);

/**
 * hmm_rs_devmem_evict() - empty device memory
 * @mem: the device memory
 *
 * Migrates every page in use back to system memory. May sleep.
 *
 * Return: how many pages moved, or a negative errno.
 */
long hmm_rs_devmem_evict(struct hmm_rs_devmem *mem);

/**
 * hmm_rs_devmem_evict_lru() - evict least-recently-used device memory
 * @mem: the device memory
 * @npages: how many pages to move back at least
 *
 * Migrates the pages of @mem's least-recently-used 2 MiB blocks back to
 * system memory, whole blocks, until @npages moved or every block in use
 * was tried once (what a device-memory shrinker's scan wants; it allocates
 * system memory with GFP_KERNEL, so not from the kernel's own reclaim).
 * Recency: when pages arrive and when a
 * device fault maps them. A block with pages it cannot move (locked by a
 * CPU fault or another migration, pinned) is skipped and counted
 * (HMM_RS_DEVMEM_EVICT_SKIPPED): it never waits for one. May sleep.
 *
 * Return: how many pages moved, or -ENOMEM, -EINTR (a fatal signal; it
 * stops between blocks).
 */
long hmm_rs_devmem_evict_lru(struct hmm_rs_devmem *mem, unsigned long npages);

/**
 * hmm_rs_devmem_evict_range() - evict part of device memory
 * @mem: the device memory
 * @index: the first page
 * @npages: how many pages
 *
 * hmm_rs_devmem_evict() of the 2 MiB blocks of @mem that [@index, @index +
 * @npages) overlaps (huge folios move whole, so whole blocks do). May sleep.
 *
 * Return: how many pages moved, or -EINVAL (beyond the memory), -ENOMEM.
 */
long hmm_rs_devmem_evict_range(struct hmm_rs_devmem *mem, unsigned long index,
			       unsigned long npages);

/**
 * hmm_rs_devmem_set_thrash() - thrash control of device memory
 * @mem: the device memory
 * @window_us: a 2 MiB block that moves to @mem again within this of its
 *	last move there is held back; 0: thrash control off (the default)
 * @backoff_us: the first hold; it doubles with each repeat (up to 1024
 *	times) and halves when the block settles
 *
 * Per mirror and 2 MiB block of its address space: a migration to @mem of
 * a held block leaves it in system memory, where device faults map it
 * (HMM_RS_DEVMEM_THRASH_HELD counts its pages, the hmm_rs_thrash
 * tracepoint names it). Never sleeps.
 *
 * Return: 0, or -EINVAL for a window without a backoff.
 */
int hmm_rs_devmem_set_thrash(struct hmm_rs_devmem *mem, unsigned int window_us,
			     unsigned int backoff_us);

/* Counters of hmm_rs_devmem_stat(). */
enum hmm_rs_devmem_stat {
	HMM_RS_DEVMEM_SIZE,		/* pages in all */
	HMM_RS_DEVMEM_IN_USE,		/* pages in use now */
	HMM_RS_DEVMEM_MIGRATED,		/* pages moved in by migrations */
	HMM_RS_DEVMEM_EVICTED,		/* pages moved back by eviction */
	HMM_RS_DEVMEM_EVICT_SKIPPED,	/* blocks eviction could not empty */
	HMM_RS_DEVMEM_NOT_PLACED,	/* pages a migration left for lack of room */
	HMM_RS_DEVMEM_THRASH_HELD,	/* pages not moved: their block was held */
	HMM_RS_DEVMEM_THRASH_DETECTED,	/* blocks that moved again too soon */
};

/**
 * hmm_rs_devmem_stat() - a counter of device memory
 * @mem: the device memory
 * @which: an enum hmm_rs_devmem_stat
 *
 * Return: the counter, or U64_MAX for an unknown @which.
 */
u64 hmm_rs_devmem_stat(struct hmm_rs_devmem *mem, unsigned int which);

/*
 * Advice (hmm_rs_mirror_advise()). PREFER_DEVICE: a device fault there
 * first migrates what is not in the preferred device memory yet;
 * hmm_rs_mirror_prefetch() moves it there. PREFER_SYSTEM: prefetch moves
 * the device's pages back. READ_ONLY: device write faults fail with
 * -EPERM and the mirror maps nothing there writable, so device reads never
 * break copy-on-write. The two PREFER_ flags exclude each other.
 */
#define HMM_RS_ADVICE_PREFER_DEVICE	BIT(0)
#define HMM_RS_ADVICE_PREFER_SYSTEM	BIT(1)
#define HMM_RS_ADVICE_READ_ONLY		BIT(2)

/**
 * hmm_rs_mirror_advise() - set the advice of a range
 * @mirror: the mirror
 * @start: first address of the range (page aligned)
 * @end: the address after it
 * @advice: HMM_RS_ADVICE_* flags; 0 drops the range's advice
 * @mem: device memory of the mirror's device for PREFER_DEVICE (NULL: the
 *	one given before); the mirror holds a reference to it until it is
 *	unregistered or another replaces it
 *
 * Replaces the advice of [@start, @end), splitting and merging the advised
 * ranges as needed; munmap drops it. May sleep.
 *
 * Return: 0, or -EINVAL (range, flags, PREFER_DEVICE without device memory
 * or with another device's), -ENOMEM.
 */
int hmm_rs_mirror_advise(struct hmm_rs_mirror *mirror, unsigned long start,
			 unsigned long end, unsigned int advice,
			 struct hmm_rs_devmem *mem);

/**
 * hmm_rs_mirror_advice() - the advice at an address
 * @mirror: the mirror
 * @addr: the address
 * @start: NULL, or where to store the first address with the same advice
 * @end: NULL, or where to store the address after them
 *
 * For an address without advice, [@start, @end) is the gap between advised
 * ranges.
 *
 * Return: its HMM_RS_ADVICE_* flags (0: none).
 */
int hmm_rs_mirror_advice(struct hmm_rs_mirror *mirror, unsigned long addr,
			 unsigned long *start, unsigned long *end);

/**
 * hmm_rs_mirror_prefetch() - move a range where its advice prefers
 * @mirror: the mirror
 * @start: first address of the range
 * @end: the address after it
 *
 * Migrates the PREFER_DEVICE parts of [@start, @end) to the preferred
 * device memory and the device's pages of its PREFER_SYSTEM parts back;
 * parts without advice stay. May sleep.
 *
 * Return: the number of pages moved, or as
 * hmm_rs_mirror_migrate_to_device().
 */
long hmm_rs_mirror_prefetch(struct hmm_rs_mirror *mirror, unsigned long start,
			    unsigned long end);

/**
 * hmm_rs_devmem_index() - the index of a device page
 * @mem: the device memory
 * @pfn: a device page's pfn (a mirror entry's)
 *
 * Return: the index of @pfn in @mem, or -EINVAL if it is not @mem's.
 */
long hmm_rs_devmem_index(struct hmm_rs_devmem *mem, u64 pfn);

/**
 * hmm_rs_mirror_migrate_to_device() - move a range to device memory
 * @mirror: the mirror
 * @mem: device memory of the mirror's device
 * @start: first address of the range (readable VMAs)
 * @end: the address after the range
 *
 * Migrates what can move of [@start, @end) to @mem and mirrors the device
 * pages it got. Shared, pinned or other devices' pages stay, as do pages
 * once @mem is full (with HMM_RS_DEVMEM_EVICT, only once nothing more can
 * be evicted) and the 2 MiB blocks thrash control holds. Each step raises
 * an HMM_RS_MIGRATE event, except to @mirror itself, which maps what moved
 * and whose old pages are freed: its device must keep off the range until
 * this returns. May sleep.
 *
 * Return: the number of pages moved, or -EINVAL (range, VMA, @mem),
 * -ESRCH, -ENOMEM, -EINTR (the task is being killed; it stops between
 * 2 MiB steps).
 */
long hmm_rs_mirror_migrate_to_device(struct hmm_rs_mirror *mirror,
				     struct hmm_rs_devmem *mem,
				     unsigned long start, unsigned long end);

/**
 * hmm_rs_mirror_migrate_to_system() - move a range back to system memory
 * @mirror: the mirror
 * @start: first address of the range
 * @end: the address after the range
 *
 * Migrates the mirror's device's pages in [@start, @end) back, as
 * hmm_rs_mirror_migrate_to_device() moves them there. May sleep.
 *
 * Return: as hmm_rs_mirror_migrate_to_device().
 */
long hmm_rs_mirror_migrate_to_system(struct hmm_rs_mirror *mirror,
				     unsigned long start, unsigned long end);

#endif /* HMM_RS_H */
