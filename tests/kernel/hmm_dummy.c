// SPDX-License-Identifier: GPL-2.0
/*
 * hmm_dummy: a device driver on the hmm-rs exported API, used as a GPU
 * driver would use it, speaking lib/test_hmm_uapi.h so that user space can
 * drive a mirror. Each open of /dev/hmm_dmirror0 or /dev/hmm_dmirror1
 * mirrors the opener's mm.
 *
 * HMM_DMIRROR_READ, READ_UNLOCKED and WRITE (the "device" copies the
 * mirrored pages through a bounce buffer, faulting what is missing),
 * HMM_DMIRROR_SNAPSHOT (what the CPU maps, as test_hmm reports it),
 * HMM_DMIRROR_EXCLUSIVE and HMM_DMIRROR_CHECK_EXCLUSIVE, MIGRATE_TO_DEV and
 * MIGRATE_TO_SYS (to and from the device's memory, hmm_rs_devmem), RELEASE
 * (evicts the device's memory), FLAGS, mmap() of zeroed pages, and
 * HMM_DUMMY_EVENTS (hmm_dummy_uapi.h), the typed events the mirror received.
 *
 * Each device node is its own device with its own memory: 512 MiB of
 * device-private pages whose contents live in system pages allocated as
 * pages are filled (a real device would DMA into its own memory). Given
 * spm_addr_dev0 and spm_addr_dev1 (as test_hmm takes them: 256 MiB each of
 * memory that is not System RAM, e.g. reserved with memmap=), there are
 * also /dev/hmm_dmirror2 and 3 with device-coherent memory there, whose
 * pages hold their own contents.
 *
 * The device touches mirrored pages only under dev_lock, and not while an
 * invalidation is between update() and update_end() (@stopped), so it never
 * touches a page the CPU is about to free. No lock is held from update() to
 * update_end(): with two passes, one mm's invalidation has every device's
 * update() run before any update_end(). Nothing that may fault or allocate
 * runs under dev_lock, since reclaim can call update().
 */
#include <linux/highmem.h>
#include <linux/hrtimer.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "hmm_rs.h"
#include "hmm_dummy_uapi.h"
#include "test_hmm_uapi.h"

#define DUMMY_LOG_SIZE		256
#define DUMMY_NDEVICES		4
#define DUMMY_DEVMEM_PAGES	((512UL << 20) >> PAGE_SHIFT)
#define DUMMY_COHERENT_PAGES	((256UL << 20) >> PAGE_SHIFT)
#define DUMMY_HUGE_ORDER	(PMD_SHIFT - PAGE_SHIFT)

static unsigned long spm_addr_dev0;
module_param(spm_addr_dev0, long, 0644);
MODULE_PARM_DESC(spm_addr_dev0, "Start of 256 MiB of device-coherent memory for hmm_dmirror2");
static unsigned long spm_addr_dev1;
module_param(spm_addr_dev1, long, 0644);
MODULE_PARM_DESC(spm_addr_dev1, "Start of 256 MiB of device-coherent memory for hmm_dmirror3");
static unsigned int invalidate_latency_us;
module_param(invalidate_latency_us, uint, 0444);
MODULE_PARM_DESC(invalidate_latency_us,
		 "Time each device takes to stop using memory it is told to (HMM_DUMMY_SET_LATENCY changes it per device)");
static bool two_pass;
module_param(two_pass, bool, 0444);
MODULE_PARM_DESC(two_pass, "Devices start their flush in update() and wait in update_finish()");

struct dummy_device {
	struct miscdevice misc;
	bool coherent;			/* memory the CPU addresses: no backing */
	struct hmm_rs_device *dev;
	struct hmm_rs_devmem *mem;
	/*
	 * Page index -> the system page holding it (device-private memory), as
	 * test_hmm keeps one in each device page's zone_device_data. The core
	 * hands an index to one user at a time, from fill to free.
	 */
	struct page **backing;
	unsigned long npages;
	/*
	 * Per 2 MiB block whose pages are backed by one huge folio: how many
	 * of them still are (the folio goes with the last).
	 */
	atomic_t *huge_live;
	/* HMM_DUMMY_SET_LATENCY */
	unsigned int latency_us;
	bool two_pass;
};

static struct dummy_device dummy_devices[DUMMY_NDEVICES];
static int ndevices;

struct dummy_file {
	struct dummy_device *ddev;
	struct hmm_rs_mirror *mirror;
	u64 flags;			/* HMM_DMIRROR_FLAGS */
	struct mutex dev_lock;		/* the device touches pages; @stopped up */
	/*
	 * Invalidations in update()..update_end(): raised under @dev_lock (so
	 * no access is under way), lowered without it, since update_end() of
	 * a non-blockable invalidation must not sleep on the mutex.
	 */
	atomic_t stopped;
	wait_queue_head_t resume;	/* @stopped went to 0 */
	ktime_t flush_done;		/* when the simulated flushes end */
	spinlock_t log_lock;		/* log, log_len, log_lost */
	unsigned int log_len;
	u64 log_lost;
	struct hmm_dummy_event log[DUMMY_LOG_SIZE];
};

static void dummy_log(struct dummy_file *df, const struct hmm_rs_event *event)
{
	spin_lock(&df->log_lock);
	if (df->log_len < DUMMY_LOG_SIZE) {
		df->log[df->log_len++] = (struct hmm_dummy_event) {
			.type = event->type,
			.start = event->start,
			.end = event->end,
			.keep = event->keep,
		};
	} else {
		df->log_lost++;
	}
	spin_unlock(&df->log_lock);
}

/*
 * Waits for the device's flushes to end (an hrtimer wakes the sleeper);
 * without sleeping if not @blockable.
 */
static void dummy_flush_wait(struct dummy_file *df, bool blockable)
{
	ktime_t done = READ_ONCE(df->flush_done);

	while (ktime_before(ktime_get(), done)) {
		if (!blockable) {
			cpu_relax();
			continue;
		}
		set_current_state(TASK_UNINTERRUPTIBLE);
		schedule_hrtimeout(&done, HRTIMER_MODE_ABS);
	}
}

static int dummy_update(struct hmm_rs_mirror *mirror,
			const struct hmm_rs_event *event, bool blockable,
			void *mirror_priv)
{
	struct dummy_file *df = mirror_priv;
	unsigned int latency = READ_ONCE(df->ddev->latency_us);

	if (blockable)
		mutex_lock(&df->dev_lock);
	else if (!mutex_trylock(&df->dev_lock))
		return -EAGAIN;
	atomic_inc(&df->stopped);
	dummy_log(df, event);
	/* The device's flush starts now and takes @latency. */
	if (latency)
		WRITE_ONCE(df->flush_done, ktime_add_us(ktime_get(), latency));
	mutex_unlock(&df->dev_lock);
	if (!latency)
		return 0;
	if (READ_ONCE(df->ddev->two_pass))
		return HMM_RS_UPDATE_PENDING;
	dummy_flush_wait(df, blockable);
	return 0;
}

static int dummy_update_finish(struct hmm_rs_mirror *mirror,
			       const struct hmm_rs_event *event, bool blockable,
			       void *mirror_priv)
{
	dummy_flush_wait(mirror_priv, blockable);
	return 0;
}

static void dummy_update_end(struct hmm_rs_mirror *mirror,
			     const struct hmm_rs_event *event, void *mirror_priv)
{
	struct dummy_file *df = mirror_priv;

	if (atomic_dec_and_test(&df->stopped))
		wake_up_all(&df->resume);
}

static const struct hmm_rs_device_ops dummy_ops = {
	.update = dummy_update,
	.update_end = dummy_update_end,
	.update_finish = dummy_update_finish,
};

/* The system page standing in for device page @index, allocated on demand. */
static struct page *dummy_backing(struct dummy_device *ddev, unsigned long index,
				  bool alloc)
{
	struct page *page;

	if (ddev->coherent)
		return pfn_to_page(hmm_rs_devmem_pfn(ddev->mem, index));
	if (index >= ddev->npages)
		return NULL;
	page = READ_ONCE(ddev->backing[index]);
	if (page || !alloc)
		return page;
	page = alloc_page(GFP_HIGHUSER);
	if (page)
		WRITE_ONCE(ddev->backing[index], page);
	return page;
}

static int dummy_copy_to_device(void *priv, unsigned long index, struct page *src)
{
	struct page *dst = dummy_backing(priv, index, true);

	if (!dst)
		return -ENOMEM;
	if (src)
		copy_highpage(dst, src);
	else
		clear_highpage(dst);
	return 0;
}

static int dummy_copy_from_device(void *priv, unsigned long index, struct page *dst)
{
	struct page *src = dummy_backing(priv, index, false);

	if (!src)
		return -EIO;
	copy_highpage(dst, src);
	return 0;
}

/* Lets go of backing page @page of device page @index. */
static void dummy_put_backing(struct dummy_device *ddev, unsigned long index, struct page *page)
{
	struct folio *folio = page_folio(page);

	if (!folio_test_large(folio))
		__free_page(page);
	else if (atomic_dec_and_test(&ddev->huge_live[index >> DUMMY_HUGE_ORDER]))
		folio_put(folio);
}

static void dummy_free(void *priv, unsigned long index)
{
	struct dummy_device *ddev = priv;
	struct page *page;

	if (ddev->coherent || index >= ddev->npages)
		return;
	page = xchg(&ddev->backing[index], NULL);
	if (page)
		dummy_put_backing(ddev, index, page);
}

/*
 * A huge folio at once: backed by one huge system folio, as test_hmm has
 * it, freed with the last of its pages (the kernel may split the device
 * folio and free its pages one by one). Freeing it whole keeps system
 * memory unfragmented for the huge folios that come back.
 */
static int dummy_copy_folio_to_device(void *priv, unsigned long index, struct page *src,
				      unsigned int order)
{
	struct dummy_device *ddev = priv;
	unsigned long k, n = 1UL << order;
	struct folio *dst = NULL;

	if (!ddev->coherent && (index + n > ddev->npages || index % n))
		return -EINVAL;
	/* A huge folio if one comes without compacting, else page by page. */
	if (!ddev->coherent && order == DUMMY_HUGE_ORDER)
		dst = folio_alloc(GFP_HIGHUSER | __GFP_NORETRY | __GFP_NOWARN, order);
	if (!dst) {
		for (k = 0; k < n; k++) {
			int ret = dummy_copy_to_device(priv, index + k, src ? src + k : NULL);

			if (ret)
				return ret;
		}
		return 0;
	}
	atomic_set(&ddev->huge_live[index >> order], n);
	for (k = 0; k < n; k++) {
		struct page *old = xchg(&ddev->backing[index + k], folio_page(dst, k));

		if (old)
			dummy_put_backing(ddev, index + k, old);
		if (src)
			copy_highpage(folio_page(dst, k), src + k);
		else
			clear_highpage(folio_page(dst, k));
	}
	return 0;
}

static int dummy_copy_folio_from_device(void *priv, unsigned long index, struct page *dst,
					unsigned int order)
{
	unsigned long k;

	for (k = 0; k < 1UL << order; k++) {
		int ret = dummy_copy_from_device(priv, index + k, dst + k);

		if (ret)
			return ret;
	}
	return 0;
}

static const struct hmm_rs_devmem_ops dummy_devmem_ops = {
	.copy_to_device = dummy_copy_to_device,
	.copy_from_device = dummy_copy_from_device,
	.free = dummy_free,
	.copy_folio_to_device = dummy_copy_folio_to_device,
	.copy_folio_from_device = dummy_copy_folio_from_device,
};

/* One device access: copy between the bounce buffer and mirrored pages. */
struct dummy_access {
	struct dummy_device *ddev;
	unsigned long start;
	unsigned long end;
	char *bounce;
	bool write;
	unsigned long pages;
};

static int dummy_copy_mapping(void *arg, unsigned long addr, u64 pfn,
			      unsigned int order, u64 flags)
{
	struct dummy_access *a = arg;
	unsigned long i, n = 1UL << order;

	if (a->write && !(flags & HMM_RS_PT_WRITE))
		return 0;
	for (i = 0; i < n; i++) {
		unsigned long va = addr + i * PAGE_SIZE;
		struct page *page = pfn_to_page(pfn + i);

		if (va < a->start || va >= a->end)
			continue;
		/* A page in the device's memory: use what holds it. */
		if (flags & HMM_RS_PT_DEVICE) {
			long index = hmm_rs_devmem_index(a->ddev->mem, pfn + i);

			page = index < 0 ? NULL : dummy_backing(a->ddev, index, false);
			if (!page)
				return -EIO;
		}
		if (a->write)
			memcpy_to_page(page, 0, a->bounce + (va - a->start), PAGE_SIZE);
		else
			memcpy_from_page(a->bounce + (va - a->start), page, 0, PAGE_SIZE);
		a->pages++;
	}
	return 0;
}

/*
 * The bounce buffer of one access: vmalloc() in 4 KiB pages, as test_hmm
 * has it. kvmalloc() may back a large buffer with 2 MiB pages, whose
 * allocation compacts memory: measured, that made a READ of 8 MiB of 4 KiB
 * pages about 8 times slower than test_hmm's.
 */
/*
 * The size comes from user space: a huge one fails with -ENOMEM, quietly
 * (without __GFP_NOWARN, vmalloc() dumps a stack for it: found by the
 * fuzzer).
 */
static char *dummy_bounce_alloc(unsigned long size)
{
	return __vmalloc(size, GFP_KERNEL | __GFP_NOWARN);
}

/* The device reads or writes [start, end); -ENOENT if not all is mirrored. */
static int dummy_access(struct dummy_file *df, struct dummy_access *a)
{
	int ret;

	a->pages = 0;
	mutex_lock(&df->dev_lock);
	while (atomic_read(&df->stopped)) {
		mutex_unlock(&df->dev_lock);
		wait_event(df->resume, !atomic_read(&df->stopped));
		mutex_lock(&df->dev_lock);
	}
	ret = hmm_rs_mirror_walk(df->mirror, a->start, a->end, dummy_copy_mapping, a);
	mutex_unlock(&df->dev_lock);
	if (ret)
		return ret;
	return a->pages == (a->end - a->start) >> PAGE_SHIFT ? 0 : -ENOENT;
}

static int dummy_find_exclusive(void *arg, unsigned long addr, u64 pfn,
				unsigned int order, u64 flags)
{
	return flags & HMM_RS_PT_EXCLUSIVE ? -EPERM : 0;
}

/* -EPERM while the device still has exclusive access to part of the range. */
static int dummy_check_exclusive(struct dummy_file *df, struct hmm_dmirror_cmd *cmd,
				 unsigned long end)
{
	if (cmd->npages == 0)
		return -EINVAL;
	return hmm_rs_mirror_walk(df->mirror, cmd->addr, end, dummy_find_exclusive, NULL);
}

static int dummy_read_write(struct dummy_file *df, struct hmm_dmirror_cmd *cmd,
			    unsigned long end, bool write, bool exclusive)
{
	void __user *uptr = u64_to_user_ptr(cmd->ptr);
	struct dummy_access a = {
		.ddev = df->ddev, .start = cmd->addr, .end = end, .write = write
	};
	enum hmm_rs_event_type fault = write ? HMM_RS_DEVICE_WRITE_FAULT :
					       HMM_RS_DEVICE_READ_FAULT;
	unsigned long size;
	int ret;

	if (cmd->npages == 0)
		return -EINVAL;
	size = a.end - a.start;
	a.bounce = dummy_bounce_alloc(size);
	if (!a.bounce)
		return -ENOMEM;
	if (write && copy_from_user(a.bounce, uptr, size)) {
		ret = -EFAULT;
		goto out;
	}
	/* Exclusive access, then a read of what the device now owns. */
	if (exclusive) {
		ret = hmm_rs_mirror_make_exclusive(df->mirror, a.start, a.end);
		if (ret)
			goto out;
	}
	for (;;) {
		ret = dummy_access(df, &a);
		if (ret != -ENOENT)
			break;
		ret = hmm_rs_mirror_fault(df->mirror, fault, a.start, a.end);
		if (ret)
			break;
		cmd->faults++;
	}
	if (!ret && !write && copy_to_user(uptr, a.bounce, size))
		ret = -EFAULT;
	if (!ret)
		cmd->cpages = cmd->npages;
out:
	vfree(a.bounce);
	return ret;
}

/* A hmm_rs snapshot value as test_hmm reports it. */
static u8 dummy_perm(u32 snap)
{
	u8 perm;

	if (snap & HMM_RS_SNAP_ERROR)
		return HMM_DMIRROR_PROT_ERROR;
	if (!(snap & HMM_RS_SNAP_VALID))
		return HMM_DMIRROR_PROT_NONE;
	if (snap & HMM_RS_SNAP_COHERENT)
		perm = snap & HMM_RS_SNAP_REMOTE ? HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE :
						   HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL;
	else if (snap & HMM_RS_SNAP_DEVICE)
		perm = snap & HMM_RS_SNAP_REMOTE ? HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE :
						   HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	else if (snap & HMM_RS_SNAP_ZERO)
		perm = HMM_DMIRROR_PROT_ZERO;
	else
		perm = HMM_DMIRROR_PROT_NONE;
	perm |= snap & HMM_RS_SNAP_WRITE ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ;
	if (HMM_RS_SNAP_ORDER(snap) + PAGE_SHIFT == PMD_SHIFT)
		perm |= HMM_DMIRROR_PROT_PMD;
	else if (HMM_RS_SNAP_ORDER(snap) + PAGE_SHIFT == PUD_SHIFT)
		perm |= HMM_DMIRROR_PROT_PUD;
	return perm;
}

/* Pages per snapshot call: the 2 MiB hmm_rs walks at a time. */
#define DUMMY_SNAP_CHUNK	512

struct dummy_snap {
	u32 snap[DUMMY_SNAP_CHUNK];
	u8 perm[DUMMY_SNAP_CHUNK];
};

static int dummy_snapshot(struct dummy_file *df, struct hmm_dmirror_cmd *cmd,
			  unsigned long end)
{
	char __user *uptr = u64_to_user_ptr(cmd->ptr);
	struct dummy_snap *s;
	unsigned long addr, next, i, n;
	int ret = 0;

	s = kmalloc_obj(*s, GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	for (addr = cmd->addr; addr < end; addr = next) {
		/* A large snapshot stops for a kill. */
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			break;
		}
		cond_resched();
		next = min(addr + (DUMMY_SNAP_CHUNK << PAGE_SHIFT), end);
		n = (next - addr) >> PAGE_SHIFT;
		ret = hmm_rs_mirror_snapshot(df->mirror, addr, next, s->snap);
		if (ret)
			break;
		for (i = 0; i < n; i++)
			s->perm[i] = dummy_perm(s->snap[i]);
		if (copy_to_user(uptr, s->perm, n)) {
			ret = -EFAULT;
			break;
		}
		uptr += n;
		cmd->cpages += n;
	}
	kfree(s);
	return ret;
}

/*
 * To the device's memory, then what the device now reads there (pages that
 * could not move are read from where they are mirrored; -ENOENT if some
 * are not mirrored at all), as test_hmm does.
 */
static int dummy_migrate_to_device(struct dummy_file *df, struct hmm_dmirror_cmd *cmd,
				   unsigned long end)
{
	struct dummy_access a = { .ddev = df->ddev, .start = cmd->addr, .end = end };
	long moved;
	int ret;

	if (cmd->npages == 0)
		return -EINVAL;
	moved = hmm_rs_mirror_migrate_to_device(df->mirror, df->ddev->mem, a.start, a.end);
	if (moved < 0)
		return moved;
	a.bounce = dummy_bounce_alloc(a.end - a.start);
	if (!a.bounce)
		return -ENOMEM;
	ret = dummy_access(df, &a);
	if (!ret && copy_to_user(u64_to_user_ptr(cmd->ptr), a.bounce, a.end - a.start))
		ret = -EFAULT;
	cmd->cpages = a.pages;
	vfree(a.bounce);
	return ret;
}

static int dummy_migrate_to_system(struct dummy_file *df, struct hmm_dmirror_cmd *cmd,
				   unsigned long end)
{
	long moved;

	if (cmd->npages == 0)
		return -EINVAL;
	moved = hmm_rs_mirror_migrate_to_system(df->mirror, cmd->addr, end);
	if (moved < 0)
		return moved;
	cmd->cpages = moved;
	return 0;
}

static int dummy_events(struct dummy_file *df, void __user *uarg)
{
	struct hmm_dummy_events req;
	struct hmm_dummy_event *copy;
	unsigned int n;
	int ret = 0;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	n = min_t(unsigned int, req.max, DUMMY_LOG_SIZE);
	copy = kzalloc_objs(*copy, max(n, 1U), GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	spin_lock(&df->log_lock);
	n = min(n, df->log_len);
	memcpy(copy, df->log, n * sizeof(*copy));
	req.count = n;
	req.lost = df->log_lost + (df->log_len - n);
	df->log_len = 0;
	df->log_lost = 0;
	spin_unlock(&df->log_lock);
	if (copy_to_user(u64_to_user_ptr(req.ptr), copy, n * sizeof(*copy)) ||
	    copy_to_user(uarg, &req, sizeof(req)))
		ret = -EFAULT;
	kfree(copy);
	return ret;
}

static int dummy_set_latency(struct dummy_file *df, void __user *uarg)
{
	struct hmm_dummy_latency req;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	/* At most a second: an invalidation must not wedge the process. */
	if (req.flags || req.two_pass > 1 || req.latency_us > USEC_PER_SEC)
		return -EINVAL;
	WRITE_ONCE(df->ddev->latency_us, req.latency_us);
	WRITE_ONCE(df->ddev->two_pass, req.two_pass);
	return 0;
}

static long dummy_ioctl(struct file *file, unsigned int command, unsigned long arg)
{
	struct dummy_file *df = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct hmm_dmirror_cmd cmd;
	unsigned long end;
	int ret;

	switch (command) {
	case HMM_DMIRROR_READ:
#ifdef HMM_DMIRROR_READ_UNLOCKED	/* Linux 7.3's uapi, not 7.2's */
	case HMM_DMIRROR_READ_UNLOCKED:	/* hmm_rs faults "unlocked" always */
#endif
	case HMM_DMIRROR_WRITE:
	case HMM_DMIRROR_SNAPSHOT:
	case HMM_DMIRROR_EXCLUSIVE:
	case HMM_DMIRROR_CHECK_EXCLUSIVE:
	case HMM_DMIRROR_MIGRATE_TO_DEV:
	case HMM_DMIRROR_MIGRATE_TO_SYS:
	case HMM_DMIRROR_RELEASE:
	case HMM_DMIRROR_FLAGS:
		break;
	case HMM_DUMMY_EVENTS:
		return dummy_events(df, uarg);
	case HMM_DUMMY_SET_LATENCY:
		return dummy_set_latency(df, uarg);
	default:
		return -ENOTTY;
	}
	if (copy_from_user(&cmd, uarg, sizeof(cmd)))
		return -EFAULT;
	/*
	 * [addr, end): page aligned, not wrapping, within user space (so that
	 * a huge range fails at once, not after a walk of all user space).
	 */
	if (cmd.addr & ~PAGE_MASK || cmd.npages > (ULONG_MAX >> PAGE_SHIFT) ||
	    check_add_overflow(cmd.addr, cmd.npages << PAGE_SHIFT, &end) ||
	    end > TASK_SIZE_MAX)
		return -EINVAL;
	cmd.cpages = 0;
	cmd.faults = 0;
	switch (command) {
	case HMM_DMIRROR_SNAPSHOT:
		ret = dummy_snapshot(df, &cmd, end);
		break;
	case HMM_DMIRROR_CHECK_EXCLUSIVE:
		ret = dummy_check_exclusive(df, &cmd, end);
		break;
	case HMM_DMIRROR_MIGRATE_TO_DEV:
		ret = dummy_migrate_to_device(df, &cmd, end);
		break;
	case HMM_DMIRROR_MIGRATE_TO_SYS:
		ret = dummy_migrate_to_system(df, &cmd, end);
		break;
	case HMM_DMIRROR_RELEASE:
		/* Every page of the device's memory back to system memory. */
		ret = hmm_rs_devmem_evict(df->ddev->mem);
		ret = min(ret, 0);
		break;
	case HMM_DMIRROR_FLAGS:
		/*
		 * HMM_DMIRROR_FLAG_FAIL_ALLOC makes test_hmm's next huge
		 * device allocation fail; hmm_rs migrates 4 KiB pages only,
		 * so there is no such allocation to fail.
		 */
		df->flags = cmd.npages;
		ret = 0;
		break;
	default:
		ret = dummy_read_write(df, &cmd, end, command == HMM_DMIRROR_WRITE,
				       command == HMM_DMIRROR_EXCLUSIVE);
	}
	if (ret)
		return ret;
	if (copy_to_user(uarg, &cmd, sizeof(cmd)))
		return -EFAULT;
	return 0;
}

static int dummy_open(struct inode *inode, struct file *file)
{
	struct dummy_file *df;

	df = kzalloc_obj(*df, GFP_KERNEL);
	if (!df)
		return -ENOMEM;
	/* misc_open() left the miscdevice here. */
	df->ddev = container_of(file->private_data, struct dummy_device, misc);
	mutex_init(&df->dev_lock);
	spin_lock_init(&df->log_lock);
	init_waitqueue_head(&df->resume);
	df->mirror = hmm_rs_mirror_register(df->ddev->dev, current->mm, df);
	if (IS_ERR(df->mirror)) {
		int ret = PTR_ERR(df->mirror);

		kfree(df);
		return ret;
	}
	file->private_data = df;
	return 0;
}

static int dummy_release(struct inode *inode, struct file *file)
{
	struct dummy_file *df = file->private_data;

	hmm_rs_mirror_unregister(df->mirror);
	kfree(df);
	return 0;
}

/*
 * Mapping the device file gives zeroed kernel pages (a VM_MIXEDMAP vma), as
 * test_hmm does, so that mirroring such mappings can be tested.
 */
static int dummy_mmap(struct file *file, struct vm_area_struct *vma)
{
	unsigned long addr;
	int ret;

	for (addr = vma->vm_start; addr < vma->vm_end; addr += PAGE_SIZE) {
		struct page *page = alloc_page(GFP_KERNEL | __GFP_ZERO);

		if (!page)
			return -ENOMEM;
		ret = vm_insert_page(vma, addr, page);
		/* The mapping holds its own reference, if it took the page. */
		put_page(page);
		if (ret)
			return ret;
	}
	return 0;
}

static const struct file_operations dummy_fops = {
	.owner = THIS_MODULE,
	.open = dummy_open,
	.release = dummy_release,
	.mmap = dummy_mmap,
	.unlocked_ioctl = dummy_ioctl,
	.llseek = noop_llseek,
};

static const char *const dummy_names[DUMMY_NDEVICES] = {
	"hmm_dmirror0", "hmm_dmirror1", "hmm_dmirror2", "hmm_dmirror3"
};

static void dummy_device_remove(struct dummy_device *ddev)
{
	unsigned long index;

	misc_deregister(&ddev->misc);
	/* Evicts what processes still have on the device. */
	hmm_rs_devmem_destroy(ddev->mem);
	hmm_rs_device_unregister(ddev->dev);
	for (index = 0; index < ddev->npages; index++)
		if (ddev->backing[index])
			dummy_put_backing(ddev, index, ddev->backing[index]);
	kvfree(ddev->backing);
	kvfree(ddev->huge_live);
}

/* @spm: 0 for device-private memory, else where device-coherent memory is. */
static int dummy_device_init(struct dummy_device *ddev, const char *name, unsigned long spm)
{
	int ret;

	ddev->coherent = spm;
	ddev->latency_us = min_t(unsigned int, invalidate_latency_us, USEC_PER_SEC);
	ddev->two_pass = two_pass;
	ddev->npages = spm ? 0 : DUMMY_DEVMEM_PAGES;
	ddev->backing = kvcalloc(ddev->npages, sizeof(*ddev->backing), GFP_KERNEL);
	ddev->huge_live = kvcalloc(ddev->npages >> DUMMY_HUGE_ORDER, sizeof(*ddev->huge_live),
				   GFP_KERNEL);
	if (ddev->npages && (!ddev->backing || !ddev->huge_live)) {
		ret = -ENOMEM;
		goto free;
	}
	ddev->dev = hmm_rs_device_register(&dummy_ops);
	if (IS_ERR(ddev->dev)) {
		ret = PTR_ERR(ddev->dev);
		goto free;
	}
	if (spm)
		ddev->mem = hmm_rs_devmem_create_coherent(ddev->dev, spm, DUMMY_COHERENT_PAGES,
							  &dummy_devmem_ops, ddev);
	else
		ddev->mem = hmm_rs_devmem_create(ddev->dev, DUMMY_DEVMEM_PAGES,
						 &dummy_devmem_ops, ddev);
	if (IS_ERR(ddev->mem)) {
		ret = PTR_ERR(ddev->mem);
		goto unregister;
	}
	ddev->misc = (struct miscdevice) {
		.minor = MISC_DYNAMIC_MINOR, .name = name, .fops = &dummy_fops,
	};
	ret = misc_register(&ddev->misc);
	if (ret)
		goto destroy;
	return 0;
destroy:
	hmm_rs_devmem_destroy(ddev->mem);
unregister:
	hmm_rs_device_unregister(ddev->dev);
free:
	kvfree(ddev->backing);
	kvfree(ddev->huge_live);
	return ret;
}

static int __init hmm_dummy_init(void)
{
	int i, ret;

	/* The uapi repeats hmm_rs.h's values. */
	BUILD_BUG_ON(HMM_DUMMY_FORK - HMM_RS_FORK);
	BUILD_BUG_ON(HMM_DUMMY_MIGRATE - HMM_RS_MIGRATE);
	BUILD_BUG_ON(HMM_DUMMY_MUNMAP - HMM_RS_MUNMAP);
	BUILD_BUG_ON(HMM_DUMMY_DEVICE_READ_FAULT - HMM_RS_DEVICE_READ_FAULT);
	BUILD_BUG_ON(HMM_DUMMY_DEVICE_WRITE_FAULT - HMM_RS_DEVICE_WRITE_FAULT);
	BUILD_BUG_ON(HMM_DUMMY_WRITE_PROTECT - HMM_RS_WRITE_PROTECT);
	BUILD_BUG_ON(HMM_DUMMY_KEEP_VALID - HMM_RS_PT_VALID);
	BUILD_BUG_ON(HMM_DUMMY_KEEP_WRITE - HMM_RS_PT_WRITE);
	for (i = 0; i < DUMMY_NDEVICES; i++) {
		unsigned long spm = i == 2 ? spm_addr_dev0 : i == 3 ? spm_addr_dev1 : 0;

		/* The coherent devices only with their memory, as in test_hmm. */
		if (i >= 2 && (!spm_addr_dev0 || !spm_addr_dev1))
			break;
		ret = dummy_device_init(&dummy_devices[i], dummy_names[i], spm);
		if (ret)
			goto fail;
	}
	ndevices = i;
	return 0;
fail:
	while (--i >= 0)
		dummy_device_remove(&dummy_devices[i]);
	return ret;
}

static void __exit hmm_dummy_exit(void)
{
	int i;

	for (i = 0; i < ndevices; i++)
		dummy_device_remove(&dummy_devices[i]);
}

module_init(hmm_dummy_init);
module_exit(hmm_dummy_exit);
MODULE_DESCRIPTION("HMM dummy device on the hmm-rs exported API");
MODULE_LICENSE("GPL");
