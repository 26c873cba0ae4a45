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
 * HMM_DUMMY_EVENTS (hmm_dummy_uapi.h), the typed events the mirror received,
 * and HMM_DUMMY_BATCH, accesses of scattered pages faulted as one batch
 * (hmm_rs_mirror_fault_batch()), as from a device's fault buffer.
 *
 * Each device node is its own device with its own memory: 512 MiB of
 * device-private pages whose contents live in system pages allocated as
 * pages are filled (a real device would DMA into its own memory). Given
 * spm_addr_dev0 and spm_addr_dev1 (as test_hmm takes them: 256 MiB each of
 * memory that is not System RAM, e.g. reserved with memmap=), there are
 * also /dev/hmm_dmirror2 and 3 with device-coherent memory there, whose
 * pages hold their own contents.
 *
 * With edu=1, /dev/hmm_dmirror0 and 1 are QEMU edu PCI devices (1234:11e8;
 * two of them if there are two): their mirrors are DMA-mapped by the core
 * (hmm_rs_mirror_register_dma()), and READ and WRITE move each page with
 * the edu's DMA engine at the DMA address the mirror has for it (memory to
 * the edu's 4 KiB buffer, then to a coherent bounce page, or back), through
 * the IOMMU if the machine has one; accesses larger than edu_max_pages are
 * copied by the CPU at the IOMMU's translation of the same addresses (the
 * engine takes 100 ms of QEMU's clock per page). Device-private pages and
 * exclusive entries, which the core does not map, are copied by the CPU as
 * without edu. Unbinding an edu device unmaps its mirrors (their accesses fail with
 * -ENODEV); binding one again serves new opens.
 *
 * The device touches mirrored pages only under dev_lock, and not while an
 * invalidation is between update() and update_end() (@stopped), so it never
 * touches a page the CPU is about to free. No lock is held from update() to
 * update_end(): with two passes, one mm's invalidation has every device's
 * update() run before any update_end(). Nothing that may fault or allocate
 * runs under dev_lock, since reclaim can call update().
 */
#include <linux/completion.h>
#include <linux/dma-mapping.h>
#include <linux/highmem.h>
#include <linux/hrtimer.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/iommu.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
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
#define DUMMY_COHERENT_PAGES	((256UL << 20) >> PAGE_SHIFT)
#define DUMMY_HUGE_ORDER	(PMD_SHIFT - PAGE_SHIFT)

static unsigned int devmem_mib = 512;
module_param(devmem_mib, uint, 0444);
MODULE_PARM_DESC(devmem_mib, "Device-private memory per device, in MiB (2 to 4096)");
static bool evict = true;
module_param(evict, bool, 0444);
MODULE_PARM_DESC(evict, "A migration to full device memory evicts its least-recently-used 2 MiB blocks (else the pages that do not fit stay)");

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

static bool edu;
module_param(edu, bool, 0444);
MODULE_PARM_DESC(edu, "Devices 0 and 1 are QEMU edu PCI devices: DMA-mapped mirrors, READ/WRITE by their DMA engines");

/*
 * An edu transfer takes 100 ms of QEMU's clock (4 KiB each): an access of
 * more pages than this is copied by the CPU instead, at the same DMA
 * addresses translated by the IOMMU's page table (iommu_iova_to_phys()), so
 * that an address the core did not map, or no longer maps, still fails.
 */
static unsigned int edu_max_pages = 16;
module_param(edu_max_pages, uint, 0644);
MODULE_PARM_DESC(edu_max_pages, "Larger edu accesses are copied by the CPU through the IOMMU's translation");

/* The QEMU edu device (QEMU's docs/specs/edu.rst). */
#define EDU_REG_IRQ_STATUS	0x24
#define EDU_REG_IRQ_ACK		0x64
#define EDU_REG_DMA_SRC		0x80
#define EDU_REG_DMA_DST		0x88
#define EDU_REG_DMA_COUNT	0x90
#define EDU_REG_DMA_CMD		0x98
#define EDU_DMA_RUN		BIT(0)
#define EDU_DMA_TO_RAM		BIT(1)	/* from its buffer to RAM, else back */
#define EDU_DMA_IRQ		BIT(2)
#define EDU_IRQ_DMA		0x100
#define EDU_BUFFER		0x40000	/* its 4 KiB buffer, in its own space */
#define EDU_DMA_TIMEOUT		(10 * HZ)
#define EDU_MAX			2

/* One edu device: a DMA engine moving 4 KiB at a time. */
struct dummy_edu {
	struct pci_dev *pdev;
	void __iomem *mmio;
	struct mutex lock;		/* one transfer at a time */
	struct completion done;		/* the transfer's interrupt */
	void *bounce;			/* a coherent page the engine copies to/from */
	dma_addr_t bounce_dma;
	u64 transfers;
};

/* Probed edu devices, by slot (dummy device i uses slot i % found). */
static DEFINE_MUTEX(edu_lock);
static struct dummy_edu *dummy_edus[EDU_MAX];

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
	int edu_slot;			/* edu=1: its edu device's slot */
	struct mutex files_lock;	/* files */
	struct list_head files;		/* open dummy_files (unbind unmaps them) */
};

static struct dummy_device dummy_devices[DUMMY_NDEVICES];

struct dummy_file {
	struct dummy_device *ddev;
	struct hmm_rs_mirror *mirror;
	struct mm_struct *mm;		/* the mirrored mm (mmgrab()ed) */
	struct list_head node;		/* in ddev->files */
	struct dummy_edu *edu;		/* edu=1, until unbound; under dev_lock */
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

static irqreturn_t edu_irq(int irq, void *data)
{
	struct dummy_edu *e = data;
	u32 status = readl(e->mmio + EDU_REG_IRQ_STATUS);

	if (!(status & EDU_IRQ_DMA))
		return IRQ_NONE;
	writel(status, e->mmio + EDU_REG_IRQ_ACK);
	complete(&e->done);
	return IRQ_HANDLED;
}

/* One 4 KiB transfer between the edu's buffer and DMA address @dma. */
static int edu_transfer(struct dummy_edu *e, u64 dma, bool to_ram)
{
	reinit_completion(&e->done);
	writeq(to_ram ? EDU_BUFFER : dma, e->mmio + EDU_REG_DMA_SRC);
	writeq(to_ram ? dma : EDU_BUFFER, e->mmio + EDU_REG_DMA_DST);
	writeq(PAGE_SIZE, e->mmio + EDU_REG_DMA_COUNT);
	writeq(EDU_DMA_RUN | EDU_DMA_IRQ | (to_ram ? EDU_DMA_TO_RAM : 0),
	       e->mmio + EDU_REG_DMA_CMD);
	if (!wait_for_completion_timeout(&e->done, EDU_DMA_TIMEOUT)) {
		dev_err(&e->pdev->dev, "DMA at %#llx did not complete\n", dma);
		return -EIO;
	}
	e->transfers++;
	return 0;
}

/*
 * The device reads the page at @dma into @buf (@write false) or writes
 * @buf there: through its buffer and the bounce page, two transfers.
 */
static int edu_copy(struct dummy_edu *e, u64 dma, void *buf, bool write)
{
	int ret;

	mutex_lock(&e->lock);
	if (write) {
		memcpy(e->bounce, buf, PAGE_SIZE);
		ret = edu_transfer(e, e->bounce_dma, false);
		if (!ret)
			ret = edu_transfer(e, dma, true);
	} else {
		ret = edu_transfer(e, dma, false);
		if (!ret)
			ret = edu_transfer(e, e->bounce_dma, true);
		if (!ret)
			memcpy(buf, e->bounce, PAGE_SIZE);
	}
	mutex_unlock(&e->lock);
	return ret;
}

/*
 * The same copy by the CPU, at the page the IOMMU translates @dma to
 * (without an IOMMU, x86 DMA addresses are physical addresses).
 */
static int edu_cpu_copy(struct dummy_edu *e, u64 dma, void *buf, bool write)
{
	struct iommu_domain *domain = iommu_get_domain_for_dev(&e->pdev->dev);
	phys_addr_t phys = domain ? iommu_iova_to_phys(domain, dma) : dma;
	struct page *page;

	if (!phys || !pfn_valid(PHYS_PFN(phys))) {
		dev_err(&e->pdev->dev, "DMA address %#llx is not mapped by the IOMMU\n", dma);
		return -EIO;
	}
	page = pfn_to_page(PHYS_PFN(phys));
	if (write)
		memcpy_to_page(page, offset_in_page(phys), buf, PAGE_SIZE);
	else
		memcpy_from_page(buf, page, offset_in_page(phys), PAGE_SIZE);
	return 0;
}

static int ndevices;

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct dummy_edu *e;
	int slot, i, ret;

	e = devm_kzalloc(&pdev->dev, sizeof(*e), GFP_KERNEL);
	if (!e)
		return -ENOMEM;
	e->pdev = pdev;
	mutex_init(&e->lock);
	init_completion(&e->done);
	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	pci_set_master(pdev);
	e->mmio = pcim_iomap_region(pdev, 0, "hmm_dummy_edu");
	if (IS_ERR(e->mmio))
		return PTR_ERR(e->mmio);
	/* QEMU's edu takes 64-bit addresses with dma_mask=0xff..ff. */
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		return ret;
	e->bounce = dmam_alloc_coherent(&pdev->dev, PAGE_SIZE, &e->bounce_dma, GFP_KERNEL);
	if (!e->bounce)
		return -ENOMEM;
	ret = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSI | PCI_IRQ_INTX);
	if (ret < 0)
		return ret;
	ret = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, 0), edu_irq, IRQF_SHARED,
			       "hmm_dummy_edu", e);
	if (ret)
		return ret;
	mutex_lock(&edu_lock);
	for (slot = 0; slot < EDU_MAX && dummy_edus[slot]; slot++)
		;
	if (slot < EDU_MAX)
		dummy_edus[slot] = e;
	mutex_unlock(&edu_lock);
	if (slot == EDU_MAX) {
		dev_info(&pdev->dev, "hmm_dummy uses %d edu devices; not this one\n", EDU_MAX);
		return -EBUSY;
	}
	pci_set_drvdata(pdev, e);
	for (i = 0; i < ndevices; i++)
		if (dummy_devices[i].edu_slot == slot)
			dev_info(&pdev->dev, "serves /dev/%s\n", dummy_devices[i].misc.name);
	return 0;
}

/*
 * The edu device goes: every mirror mapped for it is unmapped (after any
 * access in flight, under its dev_lock) and its accesses fail from now on.
 */
static void edu_remove(struct pci_dev *pdev)
{
	struct dummy_edu *e = pci_get_drvdata(pdev);
	struct dummy_file *df;
	int i, slot;

	mutex_lock(&edu_lock);
	for (slot = 0; slot < EDU_MAX && dummy_edus[slot] != e; slot++)
		;
	if (slot < EDU_MAX)
		dummy_edus[slot] = NULL;
	mutex_unlock(&edu_lock);
	for (i = 0; i < ndevices; i++) {
		struct dummy_device *ddev = &dummy_devices[i];

		mutex_lock(&ddev->files_lock);
		list_for_each_entry(df, &ddev->files, node) {
			mutex_lock(&df->dev_lock);
			if (df->edu == e) {
				hmm_rs_mirror_unbind_dma(df->mirror);
				df->edu = NULL;
			}
			mutex_unlock(&df->dev_lock);
		}
		mutex_unlock(&ddev->files_lock);
	}
	/* The interrupt and its vectors go with the device's managed resources. */
	dev_info(&pdev->dev, "unbound after %llu transfers\n", e->transfers);
}

static const struct pci_device_id edu_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },
	{ }
};
MODULE_DEVICE_TABLE(pci, edu_ids);

static struct pci_driver edu_driver = {
	.name = "hmm_dummy_edu",
	.id_table = edu_ids,
	.probe = edu_probe,
	.remove = edu_remove,
};

/* The edu device of @ddev now, or NULL (none bound in its slot). */
static struct dummy_edu *dummy_edu_of(struct dummy_device *ddev)
{
	struct dummy_edu *e;
	int found = 0, i;

	mutex_lock(&edu_lock);
	for (i = 0; i < EDU_MAX; i++)
		found += !!dummy_edus[i];
	/* One edu serves both devices; two, one each. */
	e = dummy_edus[found == 1 && !dummy_edus[ddev->edu_slot] ? !ddev->edu_slot :
		       ddev->edu_slot];
	mutex_unlock(&edu_lock);
	return e;
}

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

/*
 * One device access: copy between the bounce buffer and mirrored pages.
 * @done (if not NULL) has a bit per page copied, kept across rounds, so
 * that a round copies only what earlier ones could not; @pages counts them.
 */
struct dummy_access {
	struct dummy_device *ddev;
	unsigned long start;
	unsigned long end;
	char *bounce;
	bool write;
	unsigned long pages;
	unsigned long *done;
	bool cpu_copy;		/* edu: by the CPU, whatever the size */
};

/* Whether page @va of @a is to be copied now: claims it if so. */
static bool dummy_claim(struct dummy_access *a, unsigned long va)
{
	unsigned long k = (va - a->start) >> PAGE_SHIFT;

	if (va < a->start || va >= a->end)
		return false;
	if (a->done && __test_and_set_bit(k, a->done))
		return false;
	a->pages++;
	return true;
}

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

		if (!dummy_claim(a, va))
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
 * (without __GFP_NOWARN, vmalloc() dumps a stack for it).
 */
static char *dummy_bounce_alloc(unsigned long size)
{
	return __vmalloc(size, GFP_KERNEL | __GFP_NOWARN);
}

/* What the edu path collects of one chunk of pages, under RCU. */
#define EDU_CHUNK	512
struct edu_chunk {
	unsigned long start;
	unsigned long n;
	struct {
		u64 pfn;
		u64 dma;
		u64 flags;
		unsigned int order;	/* of the mirror entry */
	} page[EDU_CHUNK];
};

static int edu_collect(void *arg, unsigned long addr, u64 pfn, u64 dma,
		       unsigned int order, u64 flags)
{
	struct edu_chunk *c = arg;
	unsigned long i, n = 1UL << order;

	for (i = 0; i < n; i++) {
		unsigned long va = addr + i * PAGE_SIZE;
		unsigned long k = (va - c->start) >> PAGE_SHIFT;

		if (va < c->start || k >= c->n)
			continue;
		c->page[k].pfn = pfn + i;
		c->page[k].dma = dma == HMM_RS_DMA_NONE ? dma : dma + i * PAGE_SIZE;
		c->page[k].flags = flags;
		c->page[k].order = order;
	}
	return 0;
}

/*
 * The edu path of dummy_access(), under dev_lock: per chunk, the mirror's
 * entries and DMA addresses, then one DMA copy per page (by the CPU for
 * device-private pages and exclusive entries, which have no DMA address).
 */
static int edu_access(struct dummy_file *df, struct dummy_access *a, struct edu_chunk *c)
{
	bool engine = !a->cpu_copy &&
		      (a->end - a->start) >> PAGE_SHIFT <= READ_ONCE(edu_max_pages);
	unsigned long addr, k;
	int ret;

	for (addr = a->start; addr < a->end; addr += c->n << PAGE_SHIFT) {
		c->start = addr;
		c->n = min_t(unsigned long, EDU_CHUNK, (a->end - addr) >> PAGE_SHIFT);
		for (k = 0; k < c->n; k++)
			c->page[k].flags = 0;
		ret = hmm_rs_mirror_walk_dma(df->mirror, addr, addr + (c->n << PAGE_SHIFT),
					     edu_collect, c);
		if (ret)
			return ret;
		for (k = 0; k < c->n; k++) {
			u64 flags = c->page[k].flags;
			char *buf = a->bounce + (addr - a->start) + k * PAGE_SIZE;
			unsigned long va = addr + k * PAGE_SIZE;

			if (!(flags & HMM_RS_PT_VALID) || (a->write && !(flags & HMM_RS_PT_WRITE)))
				continue;
			if (c->page[k].dma == HMM_RS_DMA_NONE) {
				if (!(flags & (HMM_RS_PT_DEVICE | HMM_RS_PT_EXCLUSIVE)))
					continue;	/* unmapped: fault again */
				ret = dummy_copy_mapping(a, va, c->page[k].pfn, 0, flags);
				if (ret)
					return ret;
				continue;
			}
			if (!dummy_claim(a, va))
				continue;
			ret = engine ? edu_copy(df->edu, c->page[k].dma, buf, a->write) :
				       edu_cpu_copy(df->edu, c->page[k].dma, buf, a->write);
			if (ret)
				return ret;
		}
	}
	return 0;
}

/* Takes dev_lock once no invalidation is between update() and update_end(). */
static void dummy_device_lock(struct dummy_file *df)
{
	mutex_lock(&df->dev_lock);
	while (atomic_read(&df->stopped)) {
		mutex_unlock(&df->dev_lock);
		wait_event(df->resume, !atomic_read(&df->stopped));
		mutex_lock(&df->dev_lock);
	}
}

/* dummy_access() under dev_lock; @c: the edu path's chunk, NULL without edu. */
static int dummy_access_locked(struct dummy_file *df, struct dummy_access *a,
			       struct edu_chunk *c)
{
	if (!c)
		return hmm_rs_mirror_walk(df->mirror, a->start, a->end, dummy_copy_mapping, a);
	if (!df->edu)
		return -ENODEV;	/* its edu device was unbound */
	return edu_access(df, a, c);
}

/*
 * The device reads or writes what is mirrored of [start, end) and not done
 * yet; -ENOENT if some of it is not mirrored.
 */
static int dummy_access(struct dummy_file *df, struct dummy_access *a)
{
	struct edu_chunk *c = NULL;
	int ret;

	if (df->ddev->edu_slot >= 0) {
		c = kmalloc_obj(*c, GFP_KERNEL);
		if (!c)
			return -ENOMEM;
	}
	dummy_device_lock(df);
	ret = dummy_access_locked(df, a, c);
	mutex_unlock(&df->dev_lock);
	kfree(c);
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

/*
 * One round of a device access that found pages not mirrored: faults in
 * what is not done yet, from the first such page on, and copies it. On the
 * CPU's path the copy is done by hmm_rs_mirror_fault_walk()'s callback,
 * under the mirror's lock, where no invalidation can take a committed
 * chunk away first; the edu engine sleeps, so there the fault comes first
 * and the copy after, of what is still mirrored then.
 */
static int dummy_fault_round(struct dummy_file *df, struct dummy_access *a,
			     enum hmm_rs_event_type fault)
{
	unsigned long first = find_first_zero_bit(a->done, (a->end - a->start) >> PAGE_SHIFT);
	unsigned long start = a->start + (first << PAGE_SHIFT);
	int ret;

	if (df->ddev->edu_slot >= 0) {
		ret = hmm_rs_mirror_fault(df->mirror, fault, start, a->end);
		return ret ? ret : dummy_access(df, a);
	}
	ret = hmm_rs_mirror_fault_walk(df->mirror, fault, start, a->end, dummy_copy_mapping, a);
	if (ret)
		return ret;
	return a->pages == (a->end - a->start) >> PAGE_SHIFT ? 0 : -ENOENT;
}

/*
 * READ, WRITE and EXCLUSIVE's read. Makes progress under any rate of
 * invalidations: pages copied stay copied across rounds (@done), each
 * round faults only the rest, and a fatal signal ends it. -EAGAIN from a
 * fault (invalidations kept racing with one chunk) is one more round.
 */
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
	a.done = bitmap_zalloc(size >> PAGE_SHIFT, GFP_KERNEL | __GFP_NOWARN);
	if (!a.bounce || !a.done) {
		ret = -ENOMEM;
		goto out;
	}
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
	ret = dummy_access(df, &a);
	while (ret == -ENOENT || ret == -EAGAIN) {
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			break;
		}
		cond_resched();
		ret = dummy_fault_round(df, &a, fault);
		if (ret != -EAGAIN)
			cmd->faults++;
	}
	if (!ret && !write && copy_to_user(uptr, a.bounce, size))
		ret = -EFAULT;
	if (!ret)
		cmd->cpages = cmd->npages;
out:
	bitmap_free(a.done);
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

/*
 * Where the first VMA at or above @addr starts (@addr if it is in one), or
 * @end if none starts below @end; a negative errno for a kill.
 */
static long dummy_next_vma(struct dummy_file *df, unsigned long addr, unsigned long end)
{
	struct vm_area_struct *vma;
	unsigned long next = end;

	if (!mmget_not_zero(df->mm))
		return -ESRCH;
	if (mmap_read_lock_killable(df->mm)) {
		mmput(df->mm);
		return -EINTR;
	}
	vma = find_vma(df->mm, addr);
	if (vma && vma->vm_start < end)
		next = max(vma->vm_start, addr);
	mmap_read_unlock(df->mm);
	mmput(df->mm);
	return next;
}

/*
 * SNAPSHOT costs what its result buffer can hold, not what @npages says:
 * a hole between VMAs is no walk, only its bytes (errors) written, and the
 * first byte the buffer cannot take ends it (-EFAULT).
 */
static int dummy_snapshot(struct dummy_file *df, struct hmm_dmirror_cmd *cmd,
			  unsigned long end)
{
	char __user *uptr = u64_to_user_ptr(cmd->ptr);
	struct dummy_snap *s;
	unsigned long addr, next, i, n, vma = 0;
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
		if (vma <= addr) {
			long v = dummy_next_vma(df, addr, end);

			if (v < 0) {
				ret = v;
				break;
			}
			vma = v;
		}
		if (vma >= next) {
			memset(s->perm, HMM_DMIRROR_PROT_ERROR, n);
		} else {
			ret = hmm_rs_mirror_snapshot(df->mirror, addr, next, s->snap);
			if (ret)
				break;
			for (i = 0; i < n; i++)
				s->perm[i] = dummy_perm(s->snap[i]);
		}
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
/*
 * Says in the log which page a migration left neither moved nor mirrored,
 * and what the CPU maps there now: what a driver needs to know of a
 * partial migration.
 */
static void dummy_report_left(struct dummy_file *df, struct dummy_access *a, long moved)
{
	unsigned long k = find_first_zero_bit(a->done, (a->end - a->start) >> PAGE_SHIFT);
	unsigned long va = a->start + (k << PAGE_SHIFT);
	u32 snap = 0;
	int ret;

	ret = hmm_rs_mirror_snapshot(df->mirror, va, va + PAGE_SIZE, &snap);
	pr_warn_ratelimited("hmm_dummy: %s: migration of [0x%lx, 0x%lx) to the device moved %ld of %lu pages and left 0x%lx neither moved nor mirrored (%lu of them); the CPU maps it: %d, snapshot 0x%x\n",
			    df->ddev->misc.name, a->start, a->end, moved,
			    (a->end - a->start) >> PAGE_SHIFT, va,
			    ((a->end - a->start) >> PAGE_SHIFT) - a->pages, ret, snap);
}

/*
 * After a migration, the pages of the range that are in this device's
 * memory but no longer mirrored: an invalidation took their entries after
 * the migration made them (on Debian's kernels, khugepaged trying to
 * collapse the 2 MiB range: it invalidates the range before it finds
 * device pages there and gives up). They are the device's own, so it
 * faults them in (which moves nothing) and reads them. Pages that did not
 * move stay unread: -ENOENT, as test_hmm.
 */
static int dummy_refault_own(struct dummy_file *df, struct dummy_access *a)
{
	unsigned long n = (a->end - a->start) >> PAGE_SHIFT, k;
	const u32 own = HMM_RS_SNAP_VALID | HMM_RS_SNAP_DEVICE;
	int ret;

	for_each_clear_bit(k, a->done, n) {
		unsigned long va = a->start + (k << PAGE_SHIFT);
		u32 snap;

		if (fatal_signal_pending(current))
			return -EINTR;
		ret = hmm_rs_mirror_snapshot(df->mirror, va, va + PAGE_SIZE, &snap);
		if (ret)
			return ret;
		if ((snap & (own | HMM_RS_SNAP_REMOTE)) != own)
			continue;
		ret = hmm_rs_mirror_fault_walk(df->mirror, HMM_RS_DEVICE_READ_FAULT, va,
					       va + PAGE_SIZE, dummy_copy_mapping, a);
		if (ret && ret != -EAGAIN && ret != -EFAULT)
			return ret;
	}
	return a->pages == n ? 0 : -ENOENT;
}

static int dummy_migrate_to_device(struct dummy_file *df, struct hmm_dmirror_cmd *cmd,
				   unsigned long end)
{
	struct dummy_access a = { .ddev = df->ddev, .start = cmd->addr, .end = end };
	long moved;
	u64 held;
	int ret;

	if (cmd->npages == 0)
		return -EINVAL;
	held = hmm_rs_devmem_stat(df->ddev->mem, HMM_RS_DEVMEM_THRASH_HELD);
	moved = hmm_rs_mirror_migrate_to_device(df->mirror, df->ddev->mem, a.start, a.end);
	if (moved < 0)
		return moved;
	held = hmm_rs_devmem_stat(df->ddev->mem, HMM_RS_DEVMEM_THRASH_HELD) - held;
	a.bounce = dummy_bounce_alloc(a.end - a.start);
	a.done = bitmap_zalloc((a.end - a.start) >> PAGE_SHIFT, GFP_KERNEL | __GFP_NOWARN);
	if (!a.bounce || !a.done) {
		ret = -ENOMEM;
		goto out;
	}
	ret = dummy_access(df, &a);
	if (ret == -ENOENT)
		ret = dummy_refault_own(df, &a);
	/*
	 * Blocks thrash control held stay in system memory, where the device
	 * reads them as it does any page (what the data read back shows).
	 */
	while (held && (ret == -ENOENT || ret == -EAGAIN)) {
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			break;
		}
		cond_resched();
		ret = dummy_fault_round(df, &a, HMM_RS_DEVICE_READ_FAULT);
	}
	if (ret == -ENOENT)
		dummy_report_left(df, &a, moved);
	if (!ret && copy_to_user(u64_to_user_ptr(cmd->ptr), a.bounce, a.end - a.start))
		ret = -EFAULT;
	cmd->cpages = a.pages;
out:
	bitmap_free(a.done);
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

/* Copies in and checks an hmm_dummy_range: [*start, *end). */
static int dummy_range(struct hmm_dummy_range *r, void __user *uarg, unsigned long *start,
		       unsigned long *end)
{
	if (copy_from_user(r, uarg, sizeof(*r)))
		return -EFAULT;
	if (r->addr & ~PAGE_MASK || !r->npages || r->npages > (ULONG_MAX >> PAGE_SHIFT) ||
	    check_add_overflow(r->addr, r->npages << PAGE_SHIFT, end) || *end > TASK_SIZE_MAX ||
	    r->write > 1 || r->pad)
		return -EINVAL;
	*start = r->addr;
	return 0;
}

static int dummy_dma_info(struct dummy_file *df, void __user *uarg)
{
	struct hmm_dummy_range r;
	struct edu_chunk *c;
	unsigned long start, end, addr, k;
	u64 __user *out;
	int ret;

	ret = dummy_range(&r, uarg, &start, &end);
	if (ret)
		return ret;
	if (df->ddev->edu_slot < 0)
		return -ENODEV;
	c = kmalloc_obj(*c, GFP_KERNEL);
	if (!c)
		return -ENOMEM;
	out = u64_to_user_ptr(r.ptr);
	for (addr = start; addr < end && !ret; addr += c->n << PAGE_SHIFT) {
		c->start = addr;
		c->n = min_t(unsigned long, EDU_CHUNK, (end - addr) >> PAGE_SHIFT);
		for (k = 0; k < c->n; k++) {
			c->page[k].dma = HMM_RS_DMA_NONE;
			c->page[k].flags = 0;
		}
		ret = hmm_rs_mirror_walk_dma(df->mirror, addr, addr + (c->n << PAGE_SHIFT),
					     edu_collect, c);
		for (k = 0; k < c->n && !ret; k++) {
			u64 v = c->page[k].dma;

			if (v != HMM_RS_DMA_NONE)
				v |= c->page[k].order;
			if (put_user(v, out + ((addr - start) >> PAGE_SHIFT) + k))
				ret = -EFAULT;
		}
	}
	kfree(c);
	return ret;
}

static int dummy_dma_probe(struct dummy_file *df, void __user *uarg)
{
	struct hmm_dummy_dma_probe p;
	void *page;
	int ret;

	if (copy_from_user(&p, uarg, sizeof(p)))
		return -EFAULT;
	if (p.write > 1 || p.pad || p.dma & ~PAGE_MASK)
		return -EINVAL;
	page = (void *)get_zeroed_page(GFP_KERNEL);
	if (!page)
		return -ENOMEM;
	mutex_lock(&df->dev_lock);
	ret = df->edu ? edu_copy(df->edu, p.dma, page, p.write) : -ENODEV;
	mutex_unlock(&df->dev_lock);
	free_page((unsigned long)page);
	return ret;
}

static int dummy_fault(struct dummy_file *df, void __user *uarg)
{
	struct hmm_dummy_range r;
	unsigned long start, end;
	int ret;

	ret = dummy_range(&r, uarg, &start, &end);
	if (ret)
		return ret;
	return hmm_rs_mirror_fault(df->mirror, r.write ? HMM_RS_DEVICE_WRITE_FAULT :
				   HMM_RS_DEVICE_READ_FAULT, start, end);
}

/*
 * One entry of a batch, alone, after its mapping went away between the
 * batch's fault and its access: as one round of READ or WRITE, until it is
 * copied or its fault fails.
 */
static int dummy_batch_refault(struct dummy_file *df, struct dummy_access *a)
{
	enum hmm_rs_event_type fault = a->write ? HMM_RS_DEVICE_WRITE_FAULT :
						  HMM_RS_DEVICE_READ_FAULT;
	int ret;

	do {
		if (fatal_signal_pending(current))
			return -EINTR;
		cond_resched();
		if (df->ddev->edu_slot >= 0) {
			ret = hmm_rs_mirror_fault(df->mirror, fault, a->start, a->end);
			if (!ret)
				ret = dummy_access(df, a);
		} else {
			ret = hmm_rs_mirror_fault_walk(df->mirror, fault, a->start, a->end,
						       dummy_copy_mapping, a);
			if (!ret && !a->pages)
				ret = -ENOENT;
		}
	} while (ret == -ENOENT || ret == -EAGAIN);
	return ret;
}

/* Whether an entry before @i, of the same page, was left for its refault. */
static bool dummy_batch_deferred(const struct hmm_dummy_batch_entry *e, unsigned int i)
{
	unsigned int j;

	for (j = 0; j < i; j++)
		if (e[j].status == -ENOENT && !((e[j].addr ^ e[i].addr) & PAGE_MASK))
			return true;
	return false;
}

/*
 * The batch's accesses, under dev_lock: of the entries faulted in (@status
 * 0). One that finds its page not mirrored (or a write that finds it
 * read-only: a fork may have write-protected it since the fault) is left
 * for its refault (-ENOENT), and so is every later entry of that page:
 * each page's accesses stay in the batch's order.
 */
static int dummy_batch_access(struct dummy_file *df, struct hmm_dummy_batch_entry *e,
			      unsigned int n, char *data, struct dummy_access *a)
{
	struct edu_chunk *c = NULL;
	bool deferred = false;
	unsigned int i;
	int ret = 0;

	if (df->ddev->edu_slot >= 0) {
		c = kmalloc_obj(*c, GFP_KERNEL);
		if (!c)
			return -ENOMEM;
	}
	dummy_device_lock(df);
	for (i = 0; i < n && !ret; i++) {
		if (e[i].status)
			continue;
		if (deferred && dummy_batch_deferred(e, i)) {
			e[i].status = -ENOENT;
			continue;
		}
		a->start = e[i].addr;
		a->end = a->start + PAGE_SIZE;
		a->bounce = data + ((unsigned long)i << PAGE_SHIFT);
		a->write = e[i].write;
		a->pages = 0;
		ret = dummy_access_locked(df, a, c);
		if (!ret && !a->pages) {
			e[i].status = -ENOENT;	/* not mirrored any more */
			deferred = true;
		}
	}
	mutex_unlock(&df->dev_lock);
	kfree(c);
	return ret;
}

static int dummy_batch(struct dummy_file *df, void __user *uarg)
{
	struct hmm_dummy_batch b;
	struct hmm_dummy_batch_entry *e = NULL;
	struct hmm_rs_fault_req *reqs = NULL;
	struct dummy_access a = { .ddev = df->ddev };
	char __user *udata;
	char *data = NULL;
	bool fault_only;
	unsigned int i;
	int ret;

	if (copy_from_user(&b, uarg, sizeof(b)))
		return -EFAULT;
	if (b.count > HMM_DUMMY_BATCH_MAX)
		return -EINVAL;
	b.refaults = 0;
	udata = u64_to_user_ptr(b.data);
	fault_only = !b.data;
	/* Large batches are copied by the CPU on edu, as large READs are. */
	a.cpu_copy = b.count > READ_ONCE(edu_max_pages);
	e = kvmalloc_array(max(b.count, 1U), sizeof(*e), GFP_KERNEL);
	reqs = kvcalloc(max(b.count, 1U), sizeof(*reqs), GFP_KERNEL);
	if (!fault_only)
		data = dummy_bounce_alloc(max_t(unsigned long, b.count, 1) << PAGE_SHIFT);
	if (!e || !reqs || (!fault_only && !data)) {
		ret = -ENOMEM;
		goto out;
	}
	if (copy_from_user(e, u64_to_user_ptr(b.entries), b.count * sizeof(*e))) {
		ret = -EFAULT;
		goto out;
	}
	for (i = 0; i < b.count; i++) {
		unsigned long off = (unsigned long)i << PAGE_SHIFT;

		reqs[i].addr = e[i].addr;
		reqs[i].npages = 1;
		/* @write > 1: unknown flags, which the core refuses (-EINVAL). */
		reqs[i].flags = e[i].write > 1 ? U32_MAX : e[i].write ? HMM_RS_FAULT_REQ_WRITE : 0;
		if (!fault_only && e[i].write &&
		    copy_from_user(data + off, udata + off, PAGE_SIZE)) {
			ret = -EFAULT;
			goto out;
		}
	}
	ret = hmm_rs_mirror_fault_batch(df->mirror, reqs, b.count);
	if (ret)
		goto out;
	for (i = 0; i < b.count; i++)
		e[i].status = reqs[i].result;
	if (fault_only)
		goto done;
	ret = dummy_batch_access(df, e, b.count, data, &a);
	if (ret)
		goto out;
	for (i = 0; i < b.count; i++) {
		unsigned long off = (unsigned long)i << PAGE_SHIFT;

		if (e[i].status == -ENOENT) {
			b.refaults++;
			a.start = e[i].addr;
			a.end = a.start + PAGE_SIZE;
			a.bounce = data + off;
			a.write = e[i].write;
			a.pages = 0;
			e[i].status = dummy_batch_refault(df, &a);
		}
		if (e[i].status || e[i].write)
			continue;
		if (copy_to_user(udata + off, data + off, PAGE_SIZE)) {
			ret = -EFAULT;
			goto out;
		}
	}
done:
	if (copy_to_user(u64_to_user_ptr(b.entries), e, b.count * sizeof(*e)) ||
	    copy_to_user(uarg, &b, sizeof(b)))
		ret = -EFAULT;
out:
	vfree(data);
	kvfree(reqs);
	kvfree(e);
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

/* HMM_DUMMY_ADVISE, HMM_DUMMY_ADVICE_GET, HMM_DUMMY_PREFETCH. */
static int dummy_advice(struct dummy_file *df, unsigned int command, void __user *uarg)
{
	struct hmm_dummy_advice a;
	unsigned long start, end;
	long ret;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (command == HMM_DUMMY_ADVICE_GET) {
		ret = hmm_rs_mirror_advice(df->mirror, a.addr, &start, &end);
		if (ret < 0)
			return ret;
		a.flags = ret;
		a.addr = start;
		a.npages = (end - start) >> PAGE_SHIFT;
		return copy_to_user(uarg, &a, sizeof(a)) ? -EFAULT : 0;
	}
	if (a.addr & ~PAGE_MASK || !a.npages || a.npages > (ULONG_MAX >> PAGE_SHIFT) ||
	    check_add_overflow(a.addr, a.npages << PAGE_SHIFT, &end) || end > TASK_SIZE_MAX)
		return -EINVAL;
	if (command == HMM_DUMMY_ADVISE)
		return hmm_rs_mirror_advise(df->mirror, a.addr, end, a.flags,
					    a.flags & HMM_DUMMY_ADVICE_PREFER_DEVICE ?
					    df->ddev->mem : NULL);
	ret = hmm_rs_mirror_prefetch(df->mirror, a.addr, end);
	if (ret < 0)
		return ret;
	a.moved = ret;
	return copy_to_user(uarg, &a, sizeof(a)) ? -EFAULT : 0;
}

static int dummy_set_thrash(struct dummy_file *df, void __user *uarg)
{
	struct hmm_dummy_thrash t;

	if (copy_from_user(&t, uarg, sizeof(t)))
		return -EFAULT;
	return hmm_rs_devmem_set_thrash(df->ddev->mem, t.window_us, t.backoff_us);
}

/* HMM_DUMMY_DEVMEM: evict first if asked, then the counters. */
static int dummy_devmem(struct dummy_file *df, void __user *uarg)
{
	struct hmm_rs_devmem *mem = df->ddev->mem;
	struct hmm_dummy_devmem d;
	long ret = 0;

	if (copy_from_user(&d, uarg, sizeof(d)))
		return -EFAULT;
	if (d.evict) {
		ret = hmm_rs_devmem_evict_lru(mem, d.evict);
		if (ret < 0)
			return ret;
	}
	d.evicted_now = ret;
	d.size = hmm_rs_devmem_stat(mem, HMM_RS_DEVMEM_SIZE);
	d.in_use = hmm_rs_devmem_stat(mem, HMM_RS_DEVMEM_IN_USE);
	d.migrated = hmm_rs_devmem_stat(mem, HMM_RS_DEVMEM_MIGRATED);
	d.evicted = hmm_rs_devmem_stat(mem, HMM_RS_DEVMEM_EVICTED);
	d.evict_skipped = hmm_rs_devmem_stat(mem, HMM_RS_DEVMEM_EVICT_SKIPPED);
	d.not_placed = hmm_rs_devmem_stat(mem, HMM_RS_DEVMEM_NOT_PLACED);
	d.thrash_held = hmm_rs_devmem_stat(mem, HMM_RS_DEVMEM_THRASH_HELD);
	d.thrash_detected = hmm_rs_devmem_stat(mem, HMM_RS_DEVMEM_THRASH_DETECTED);
	return copy_to_user(uarg, &d, sizeof(d)) ? -EFAULT : 0;
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
	case HMM_DUMMY_DMA_INFO:
		return dummy_dma_info(df, uarg);
	case HMM_DUMMY_DMA_PROBE:
		return dummy_dma_probe(df, uarg);
	case HMM_DUMMY_FAULT:
		return dummy_fault(df, uarg);
	case HMM_DUMMY_BATCH:
		return dummy_batch(df, uarg);
	case HMM_DUMMY_ADVISE:
	case HMM_DUMMY_ADVICE_GET:
	case HMM_DUMMY_PREFETCH:
		return dummy_advice(df, command, uarg);
	case HMM_DUMMY_SET_THRASH:
		return dummy_set_thrash(df, uarg);
	case HMM_DUMMY_DEVMEM:
		return dummy_devmem(df, uarg);
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
	if (df->ddev->edu_slot < 0) {
		df->mirror = hmm_rs_mirror_register(df->ddev->dev, current->mm, df);
	} else {
		/* Bound under files_lock, which edu_remove() takes to unbind. */
		mutex_lock(&df->ddev->files_lock);
		df->edu = dummy_edu_of(df->ddev);
		df->mirror = df->edu ? hmm_rs_mirror_register_dma(df->ddev->dev, current->mm,
								  &df->edu->pdev->dev, df) :
				       ERR_PTR(-ENODEV);
		if (!IS_ERR(df->mirror))
			list_add(&df->node, &df->ddev->files);
		mutex_unlock(&df->ddev->files_lock);
	}
	if (IS_ERR(df->mirror)) {
		int ret = PTR_ERR(df->mirror);

		kfree(df);
		return ret;
	}
	df->mm = current->mm;
	mmgrab(df->mm);
	file->private_data = df;
	return 0;
}

static int dummy_release(struct inode *inode, struct file *file)
{
	struct dummy_file *df = file->private_data;

	if (df->ddev->edu_slot >= 0) {
		mutex_lock(&df->ddev->files_lock);
		list_del(&df->node);
		mutex_unlock(&df->ddev->files_lock);
	}
	hmm_rs_mirror_unregister(df->mirror);
	mmdrop(df->mm);
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
	unsigned int flags = evict ? HMM_RS_DEVMEM_EVICT : 0;
	int ret;

	ddev->coherent = spm;
	ddev->edu_slot = edu && ddev - dummy_devices < 2 ? ddev - dummy_devices : -1;
	mutex_init(&ddev->files_lock);
	INIT_LIST_HEAD(&ddev->files);
	ddev->latency_us = min_t(unsigned int, invalidate_latency_us, USEC_PER_SEC);
	ddev->two_pass = two_pass;
	ddev->npages = spm ? 0 : (unsigned long)devmem_mib << (20 - PAGE_SHIFT);
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
							  &dummy_devmem_ops, ddev, flags);
	else
		ddev->mem = hmm_rs_devmem_create(ddev->dev, ddev->npages, &dummy_devmem_ops,
						 ddev, flags);
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
	BUILD_BUG_ON(HMM_DUMMY_ADVICE_PREFER_DEVICE - HMM_RS_ADVICE_PREFER_DEVICE);
	BUILD_BUG_ON(HMM_DUMMY_ADVICE_PREFER_SYSTEM - HMM_RS_ADVICE_PREFER_SYSTEM);
	BUILD_BUG_ON(HMM_DUMMY_ADVICE_READ_ONLY - HMM_RS_ADVICE_READ_ONLY);
	if (devmem_mib < 2 || devmem_mib > 4096) {
		pr_err("hmm_dummy: devmem_mib=%u: 2 to 4096\n", devmem_mib);
		return -EINVAL;
	}
	if (edu) {
		ret = pci_register_driver(&edu_driver);
		if (ret)
			return ret;
		if (!dummy_edus[0]) {
			pr_err("hmm_dummy: edu=1, but no QEMU edu device (PCI 1234:11e8) could be bound\n");
			pci_unregister_driver(&edu_driver);
			return -ENODEV;
		}
	}
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
	if (edu)
		pci_unregister_driver(&edu_driver);
	return ret;
}

static void __exit hmm_dummy_exit(void)
{
	int i;

	for (i = 0; i < ndevices; i++)
		dummy_device_remove(&dummy_devices[i]);
	if (edu)
		pci_unregister_driver(&edu_driver);
}

module_init(hmm_dummy_init);
module_exit(hmm_dummy_exit);
MODULE_DESCRIPTION("HMM dummy device on the hmm-rs exported API");
MODULE_LICENSE("GPL");
