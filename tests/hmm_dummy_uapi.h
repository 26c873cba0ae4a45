/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * hmm_dummy's own ioctls, beside those of lib/test_hmm_uapi.h: the typed
 * events the mirror of an open /dev/hmm_dmirror* received, in order; and
 * how long the device takes to stop using a range it is told to.
 */
#ifndef HMM_DUMMY_UAPI_H
#define HMM_DUMMY_UAPI_H

#include <linux/const.h>
#include <linux/ioctl.h>
#include <linux/types.h>

/* Event types: the values of enum hmm_rs_event_type (hmm_rs.h). */
#define HMM_DUMMY_FORK			1
#define HMM_DUMMY_MIGRATE		2
#define HMM_DUMMY_MUNMAP		3
#define HMM_DUMMY_DEVICE_READ_FAULT	4
#define HMM_DUMMY_DEVICE_WRITE_FAULT	5
#define HMM_DUMMY_WRITE_PROTECT		6

/* Mirror entry flags kept by an event (@keep); see hmm_rs.h. */
#define HMM_DUMMY_KEEP_VALID		_BITULL(0)
#define HMM_DUMMY_KEEP_WRITE		_BITULL(1)

struct hmm_dummy_event {
	__u32 type;
	__u32 pad;
	__u64 start;
	__u64 end;
	__u64 keep;
};

/*
 * In: @ptr, an array of @max events. Out: @count events written there,
 * oldest first, and @lost, how many did not fit in the driver's log since
 * the last call. The log is emptied.
 */
struct hmm_dummy_events {
	__u64 ptr;
	__u32 max;
	__u32 count;
	__u64 lost;
};

#define HMM_DUMMY_EVENTS	_IOWR('H', 0x40, struct hmm_dummy_events)

/*
 * The simulated invalidation latency of the device (all its mirrors):
 * each update() takes @latency_us, timed by an hrtimer, as a device's TLB
 * flush would. @two_pass 0: update() waits for it (single pass); 1:
 * update() starts it and answers pending, update_finish() waits, so the
 * devices of an mm flush in parallel. Unknown @flags bits: -EINVAL.
 */
struct hmm_dummy_latency {
	__u32 latency_us;
	__u32 two_pass;
	__u64 flags;
};

#define HMM_DUMMY_SET_LATENCY	_IOW('H', 0x41, struct hmm_dummy_latency)

/*
 * With edu=1 (the devices are QEMU edu PCI devices, their mirrors
 * DMA-mapped by the core):
 *
 * HMM_DUMMY_DMA_INFO: in @ptr, one __u64 per page of [@addr, @addr +
 * @npages pages): the DMA address the mirror has for that page ORed with
 * the order of the mapping holding it (0 or 9), or HMM_DUMMY_DMA_NONE.
 * -ENODEV on a device that is not DMA-mapped.
 *
 * HMM_DUMMY_DMA_PROBE: the device's DMA engine reads (@write 0) or writes
 * (@write 1, zeros) the 4 KiB at DMA address @dma, whatever it maps: for
 * tests that show that an address the core unmapped faults in the IOMMU.
 *
 * HMM_DUMMY_FAULT: faults [@addr, @addr + @npages pages) into the mirror
 * (for writing if @write), mapping it for DMA on an edu device, without
 * the device touching it: what a fault costs (the benchmark).
 */
#define HMM_DUMMY_DMA_NONE	(~0ULL)

struct hmm_dummy_range {
	__u64 addr;
	__u64 npages;
	__u64 ptr;
	__u32 write;
	__u32 pad;
};

struct hmm_dummy_dma_probe {
	__u64 dma;
	__u32 write;
	__u32 pad;
};

#define HMM_DUMMY_DMA_INFO	_IOW('H', 0x42, struct hmm_dummy_range)
#define HMM_DUMMY_DMA_PROBE	_IOW('H', 0x43, struct hmm_dummy_dma_probe)
#define HMM_DUMMY_FAULT		_IOW('H', 0x44, struct hmm_dummy_range)

/*
 * HMM_DUMMY_BATCH: the device accesses one page per entry, as after taking
 * @count faults at once from its fault buffer. @entries points to @count
 * entries (any order; duplicates allowed), @data to @count pages: entry i
 * reads its page into page i of @data (@write 0), or writes page i of
 * @data to its page (@write 1). All entries are faulted with one
 * hmm_rs_mirror_fault_batch(), then accessed in order; an entry whose
 * mapping went away (or, for a write, lost write access) before its access
 * is faulted and accessed again alone after the others, and so is every
 * later entry of its page, in order (counted in @refaults): each page's
 * accesses keep the batch's order. Out: each entry's @status, 0 or what
 * hmm_rs_mirror_fault() of that page alone fails with (-EFAULT unmapped,
 * including above user space; -EPERM a write to read-only memory; -EINVAL
 * unaligned, beyond what a mirror maps, or @write > 1; -EINTR...); the
 * pages read, into @data. The ioctl itself fails (-EINVAL
 * for @count > HMM_DUMMY_BATCH_MAX, -EFAULT, -ENOMEM) only when no entry
 * has its status.
 *
 * @data 0: the entries are only faulted, as a GPU's fault handler makes
 * the mappings present and lets the GPU replay the accesses itself; nothing
 * is read or written, and @refaults stays 0.
 */
#define HMM_DUMMY_BATCH_MAX	4096

struct hmm_dummy_batch_entry {
	__u64 addr;
	__u32 write;
	__s32 status;
};

struct hmm_dummy_batch {
	__u64 entries;
	__u64 data;
	__u32 count;
	__u32 refaults;
};

#define HMM_DUMMY_BATCH		_IOWR('H', 0x45, struct hmm_dummy_batch)

/*
 * Device memory under pressure. hmm_dummy's device memory is
 * devmem_mib MiB per device (module parameter, default 512), created with
 * the core's LRU eviction (HMM_RS_DEVMEM_EVICT) unless evict=0: a
 * migration to a full device evicts the least-recently-used 2 MiB blocks
 * of any mm back to system memory to make room.
 *
 * HMM_DUMMY_ADVISE: sets the advice of [@addr, @addr + @npages pages) of
 * this file's mirror to @flags (0 clears it), replacing what was there.
 * PREFER_DEVICE (this device's memory) and PREFER_SYSTEM exclude each
 * other; READ_ONLY: device write faults there fail with -EPERM and device
 * read faults never map writable, so reading never breaks COW. A device
 * fault (READ, WRITE, HMM_DUMMY_FAULT) in a PREFER_DEVICE range first
 * migrates what is not on the device yet. munmap drops the advice.
 * -EINVAL: bad range or unknown flags.
 *
 * HMM_DUMMY_ADVICE_GET: in @addr; out @flags, the advice there, and
 * [@addr, @addr + @npages pages), the extent around it with that advice
 * (for no advice: the gap between advised ranges, up to user space's end).
 *
 * HMM_DUMMY_PREFETCH: migrates the advised parts of [@addr, @addr +
 * @npages pages) to their preferred location now; out @moved, pages moved.
 */
#define HMM_DUMMY_ADVICE_PREFER_DEVICE	_BITUL(0)
#define HMM_DUMMY_ADVICE_PREFER_SYSTEM	_BITUL(1)
#define HMM_DUMMY_ADVICE_READ_ONLY	_BITUL(2)

struct hmm_dummy_advice {
	__u64 addr;
	__u64 npages;
	__u32 flags;
	__u32 pad;
	__u64 moved;
};

#define HMM_DUMMY_ADVISE	_IOW('H', 0x46, struct hmm_dummy_advice)
#define HMM_DUMMY_ADVICE_GET	_IOWR('H', 0x47, struct hmm_dummy_advice)
#define HMM_DUMMY_PREFETCH	_IOWR('H', 0x48, struct hmm_dummy_advice)

/*
 * HMM_DUMMY_SET_THRASH: thrash control of the device's memory (all its
 * mirrors). A 2 MiB block that moves to the device again within
 * @window_us of its last move there (it came back in between: a CPU
 * access or an eviction) is held in system memory for a backoff, first
 * @backoff_us, doubling with each repeat (up to 1024 times), halving when
 * the block settles (its next move is more than @window_us after its hold
 * ended); migrations to the device skip it meanwhile (device faults map
 * it in system memory). 0 @window_us: off (the default).
 *
 * HMM_DUMMY_DEVMEM: the device memory's counters (out); in @evict, how many
 * pages to evict first (least recently used blocks first; 0: none), out
 * @evicted_now, how many moved. Counters: @size and @in_use in pages;
 * @migrated pages moved to the device by migrations;
 * @evicted pages moved back by eviction; @evict_skipped blocks eviction
 * could not empty (busy pages) and went past; @not_placed pages a
 * migration left in system memory for lack of room; @thrash_held pages
 * (2 MiB steps) not moved because their block was held; @thrash_detected
 * repeats seen.
 */
struct hmm_dummy_thrash {
	__u32 window_us;
	__u32 backoff_us;
};

struct hmm_dummy_devmem {
	__u64 evict;
	__u64 evicted_now;
	__u64 size;
	__u64 in_use;
	__u64 migrated;
	__u64 evicted;
	__u64 evict_skipped;
	__u64 not_placed;
	__u64 thrash_held;
	__u64 thrash_detected;
};

#define HMM_DUMMY_SET_THRASH	_IOW('H', 0x49, struct hmm_dummy_thrash)
#define HMM_DUMMY_DEVMEM	_IOWR('H', 0x4a, struct hmm_dummy_devmem)

#endif /* HMM_DUMMY_UAPI_H */
