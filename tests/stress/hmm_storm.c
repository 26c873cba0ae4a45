// SPDX-License-Identifier: GPL-2.0
/*
 * hmm_storm: the core under racing CPU page-table changes, with an oracle.
 *
 *   hmm_storm [-t SECONDS] [-s SEED] [-j THREADS] [-i] [-e | -u]
 *
 * Several mirrors of this process's mm (three opens of /dev/hmm_dmirror0,
 * one of /dev/hmm_dmirror1) and REGIONS regions of 16 pages. Worker
 * threads pick a region and an operation at random (seeded: -s reproduces
 * a run's choices, not its timing): CPU writes, device reads and writes
 * through any mirror, munmap, mmap fresh, MADV_DONTNEED, mprotect
 * (read-only, none, read-write), mremap, fork (the child writes its copy
 * first, or the parent writes its own by CPU or device while the child
 * holds the old one), migration to the device and back (through another
 * mirror than the one that migrated), snapshots, exclusive access, and
 * batches (HMM_DUMMY_BATCH: 1 to BATCH_MAX single-page reads and writes of
 * random pages, unsorted, with repeats, over the region and sometimes its
 * neighbours, their unmapped slots included, faulted as one batch); one
 * more thread forks children that work on their own mirrors (batches
 * included) and kills them mid-ioctl, with pauses between children.
 *
 * The oracle cannot false-alarm: an operation on a region runs under that
 * region's lock, so when it completes the region's state (mapping,
 * protection, generation of its bytes) is known exactly. Every write
 * (CPU, device, fork child) gets a new generation of its region, never
 * reused (not after munmap, mmap or MADV_DONTNEED, which leave zeros), and
 * each 64-bit word names its region, generation, page and place: a stale
 * page of any earlier generation or of another region reads as wrong. The
 * oracle keeps a generation per page: a batch writes single pages, each
 * with a generation of its own.
 *
 * A device read (also the one behind exclusive access and the read-back
 * of a migration) must return exactly the current generation's bytes, or
 * the errno the state demands (EFAULT unmapped or PROT_NONE, EPERM for a
 * write to read-only memory); a device write must be what the CPU reads
 * next. A batch is checked entry by entry, in the order the device
 * accesses them: each status as that of a read or write of its page alone
 * (and EFAULT for a page of a slot no region maps, EINVAL for a malformed
 * entry), each page read as its generation at that point of the batch
 * (after the writes before it), and the regions written as the CPU reads
 * them after it. A fork child must see the bytes of the fork and exit
 * cleanly, and neither side's later writes may reach the other. A snapshot
 * must match the state: all HMM_DMIRROR_PROT_ERROR if unmapped or
 * PROT_NONE; else no error, never writable if read-only, the zero page
 * only where nothing was written since the region was last zeroed, device
 * pages only if it was migrated since the CPU last touched all of it, and
 * every page writable if the CPU wrote it last and the region was left
 * alone since.
 *
 * Some answers are only right if a competitor explains them: a fork of
 * this mm (a worker's or the killer's, from fork() until its child is
 * reaped), which shares and write-protects every page; the kernel moving
 * pages itself (compaction, THP, reclaim: their /proc/vmstat counters); or
 * earlier device pages or exclusive entries that another mirror holds.
 * Without one, a migration to the device must move the whole region (no
 * ENOENT, and a snapshot after it shows only device pages) and exclusive
 * access must not answer EBUSY. Explained ones are counted.
 *
 * -i: allocation failures are being injected (scripts/guest-init.sh sets
 * up failslab and fail_page_alloc for this task): an operation may then
 * also fail cleanly with ENOMEM or EAGAIN, a migration with ENOENT and
 * exclusive access with EBUSY; data must still never be wrong, and a
 * failed device write leaves its region's bytes unknown until the CPU
 * writes it again. EFAULT only where a CPU fault can fail that way: 7.3's
 * hmm_range_fault() reports VM_FAULT_OOM as ENOMEM (vm_fault_to_errno()),
 * but SIGBUS as EFAULT, and hmm_rs's migrate_to_ram answers SIGBUS for any
 * failure but ENOMEM; so EFAULT is explained where pages may be in device
 * memory (or, for a write refused on read-only memory, where the read
 * fault hmm_rs then tries may have had to allocate). Counted too.
 *
 * -e: device memory under pressure. hmm_dummy's module parameter
 * devmem_mib (read from sysfs; the storm is meant for devmem_mib=32) is
 * each device's memory, and a migration to a full device evicts the least
 * recently used 2 MiB blocks of it, of any mm, back to system memory. The
 * storm adds a working set four times that size: 2 * devmem_mib pressure
 * blocks of 2 MiB (devmem_mib up to DEVMEM_MIB_MAX; BPAGES pages, no THP;
 * shared with fork children as all this mm), each under its own lock with its
 * own oracle (a generation per block, never reused; each word names its
 * block, generation, page and word, tagged apart from the regions'), and
 * NPRESS pressure threads that pick a block and an operation: migration of
 * the whole block to device 0 (three times in four) or device 1 through one
 * of its mirrors (after a CPU read-check brings back what may be on the
 * other device), its read-back checked and, without -i, a snapshot of the
 * block through that mirror; device reads and writes through any mirror;
 * CPU writes and read-checks; migration back to system memory. Migrations
 * outweigh what brings blocks back, so the devices stay full and every
 * migration (the regions' and the killer's children's too) evicts: pages
 * of blocks, regions and children go back to system memory at any moment,
 * and every check accepts either place, the bytes always exact. A
 * migration that leaves pages off the device (ENOENT; success with fewer
 * pages copied than asked; a snapshot after it that shows system pages) is
 * then also explained if HMM_DUMMY_DEVMEM's evicted, evict_skipped or
 * not_placed counters (of device 0 or 1) grew from before it to after the
 * check, or GRACE_MS later (hmm_rs counts an eviction's pages once it is
 * done); counted apart. What only adds device pages or EFAULTs (a device
 * page where none can be, efault_ok(), a SIGBUS fork child) needs no
 * change: eviction only takes pages off the device. A pressure thread's
 * CPU access that takes a SIGBUS is explained as a fork child's is (under
 * injection, pages maybe on a device), else reported. At the end the
 * counters' growth over the run is printed, and the run fails if device 0
 * evicted nothing (the mode did not oversubscribe: it proved nothing).
 * Thrash control stays off (no HMM_DUMMY_SET_THRASH). Without -e none of
 * this runs and nothing else changes.
 *
 * -u: dmirror uapi only: the device answers only lib/test_hmm_uapi.h (e.g.
 * rust_dmirror), none of hmm_dummy's own ioctls. Operations that need one
 * are never drawn: batches (HMM_DUMMY_BATCH), the workers' and the killed
 * children's; the first output lines say so. -e (HMM_DUMMY_DEVMEM and
 * hmm_dummy's devmem_mib) is refused with it. Every other operation, the
 * oracle and the errno rules are as without -u. Without -u the device must
 * answer HMM_DUMMY_BATCH: ENOTTY there is an unexpected errno.
 *
 * Output: TAP, one line per kind of failure (stale reads, lost device
 * writes, COW violations, unexpected errnos, hangs, partial migrations,
 * refused exclusive access, failed fork children, wrong snapshots), with
 * -e one more (device memory oversubscribed), the operation and
 * explanation counts and the seed. A watchdog reports an operation in
 * flight for longer than HANG_S seconds, with its name and region (or
 * block), and ends the run.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lib/test_hmm_uapi.h>
#include "../hmm_dummy_uapi.h"

#define PAGE		4096UL
#define NPAGES		16UL
#define RSIZE		(NPAGES * PAGE)
#define WORDS		(PAGE / 8)	/* 64-bit words per page */
#define REGIONS		12
#define MIRRORS		4
#define MAX_THREADS	8
#define HANG_S		60
/* The most entries of a batch; a batch may span this many regions. */
#define BATCH_MAX	64
#define BATCH_REGIONS	3
/* A worker's buffer: the data of any operation, then its commands. */
#define DATA_SIZE	(BATCH_MAX * PAGE)
#define BUF_SIZE	(DATA_SIZE + PAGE)
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
/* How long a page move the kernel started may take to show in /proc/vmstat. */
#define GRACE_MS	200
/* A fork child's exit codes: it never got the go; it saw page N wrong. */
#define CHILD_NO_GO	2
#define CHILD_SAW	16
/*
 * -e: a pressure block is 2 MiB, as device memory's blocks; BLOCKS_MAX is
 * what a block's word can name. A pressure thread's buffer: a block's
 * data, then its commands. HMM_DUMMY_DEVMEM's struct goes at DEVMEM_AT of a
 * command page (after the hmm_dmirror_cmd, before a batch's).
 */
#define BPAGES		512UL
#define BSIZE		(BPAGES * PAGE)
#define BLOCKS_MAX	1024
#define DEVMEM_MIB_MAX	128		/* -e's working set: 4 x this at most */
#define NPRESS		2
#define BBUF_SIZE	(BSIZE + PAGE)
#define DEVMEM_AT	128
#define DEVMEM_MIB	"/sys/module/hmm_dummy/parameters/devmem_mib"

enum state { RW, RO, NONE, UNMAPPED };
static const char *const state_name[] = { "rw", "ro", "none", "unmapped" };

/* A window of time: whether a fork or the kernel may have moved pages in it. */
struct quiet {
	unsigned long forks;		/* forks_begun at its start */
	unsigned long long moves;	/* vm_moves() at its start */
	int ok;				/* no fork's child alive at its start */
};

struct region {
	pthread_mutex_t lock;
	char *slot[2];		/* the two places in the arena it may be */
	int at;			/* which slot it is mapped at */
	unsigned int idx;	/* its index, in its bytes */
	enum state state;
	/* Each page's generation: 0 zeros; else pattern(idx, gen[i], i, ...). */
	unsigned int gen[NPAGES];
	unsigned int last;	/* the last generation handed out: never again */
	int unknown;		/* bytes unknown until the CPU writes again */
	int present;		/* the CPU maps every page (or ondev) */
	int ondev;		/* pages may be in device memory */
	int excl;		/* pages may be exclusive to a device */
	/*
	 * Pages GUP touched (exclusive access): a second touch activates a
	 * folio, which then waits in that CPU's LRU batch with a reference
	 * that a migration on another CPU cannot drain (7.3 drains all CPUs
	 * only for folios off the LRU): it stays behind.
	 */
	int gupped;
	int wrote;		/* the CPU wrote it last, in window @wq */
	struct quiet wq;
};

enum op {
	OP_CPU_WRITE, OP_DEV_READ, OP_DEV_WRITE, OP_MUNMAP, OP_MMAP, OP_DONTNEED,
	OP_PROT_RO, OP_PROT_NONE, OP_PROT_RW, OP_MREMAP, OP_FORK, OP_MIGRATE,
	OP_SNAPSHOT, OP_EXCLUSIVE, OP_BATCH, NOPS
};

/* The operations workers draw from: all, or (-u) those of the dmirror uapi. */
static enum op drawn[NOPS];
static unsigned int ndrawn;

/* Whether operation @op needs one of hmm_dummy's own ioctls (not drawn with -u). */
static int op_needs_dummy(enum op op)
{
	return op == OP_BATCH;
}

static const char *const op_name[NOPS] = {
	"cpu_write", "device_read", "device_write", "munmap", "mmap_fresh", "dontneed",
	"mprotect_ro", "mprotect_none", "mprotect_rw", "mremap", "fork_cow",
	"migrate_there_and_back", "snapshot", "exclusive", "batch",
};

enum failure {
	STALE_READ, LOST_WRITE, COW_VIOLATION, BAD_ERRNO, HANG, PARTIAL_MIGRATION,
	EXCL_BUSY, CHILD_FAILED, BAD_SNAPSHOT, NFAIL
};

static const char *const fail_name[NFAIL] = {
	"no stale device reads", "no lost device writes", "no COW violations",
	"no unexpected errnos", "no hangs", "idle regions migrate whole",
	"idle regions get exclusive access", "fork children see their copy and exit cleanly",
	"snapshots match the regions' states",
};

static struct region regions[REGIONS];
static int mirror_fd[MIRRORS];
static int inject;

/* -e: a pressure block (see the header), under its lock. */
struct block {
	pthread_mutex_t lock;
	char *p;
	unsigned int idx;
	unsigned int gen;	/* its generation (never 0: always written) */
	unsigned int last;	/* the last generation handed out: never again */
	int unknown;		/* bytes unknown until the CPU writes again */
	int devs;		/* bit d: pages may be in device d's memory */
};

/* What the pressure threads do to a block, and how often (of 16). */
enum pop {
	P_MIGRATE, P_DEV_READ, P_DEV_WRITE, P_CPU_WRITE, P_CPU_CHECK, P_TO_SYS, NPOPS
};

static const char *const pop_name[NPOPS] = {
	"block_migrate_to_device", "block_device_read", "block_device_write",
	"block_cpu_write", "block_cpu_check", "block_migrate_to_system",
};

static const unsigned int pop_weight[NPOPS] = { 6, 3, 2, 2, 1, 2 };

/* HMM_DUMMY_DEVMEM's counters of devices 0 and 1 at one time. */
enum { C_EVICTED, C_SKIPPED, C_NOT_PLACED, C_THRASH_HELD, C_MIGRATED, NCOUNTERS };

struct devmem_counts {
	unsigned long long c[2][NCOUNTERS];
	int valid;		/* both were read */
};

static int oversub;		/* -e */
static unsigned long devmem_mib;
static unsigned int nblocks;
static struct block *blocks;
/* Shared flags and the watchdog's view: read and written with __atomic_*. */
#define LOAD(x)		__atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define ADD(x, v)	__atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED)
static int stop;
static unsigned long ops_done[NOPS];
static unsigned long failures[NFAIL];
static unsigned long clean_errors;
static unsigned long kills;
/* Batches' entries (reads, writes, failed with an expected errno), refaults. */
static unsigned long batch_reads;
static unsigned long batch_writes;
static unsigned long batch_failed;
static unsigned long batch_refaults;
/* -u: the device speaks only the dmirror uapi (no batches are drawn). */
static int uapi_only;
/* Answers a competitor explained (see the header), and idle checks made. */
static unsigned long enoent_explained;
static unsigned long ebusy_explained;
static unsigned long efault_explained;
static unsigned long whole_checked;
static unsigned long fresh_checked;
/*
 * -e: pages left off the device explained by device memory pressure
 * ([0] regions, [1] blocks; [.][0] ENOENT or short, [.][1] the snapshot
 * after); block migrations left partial with another explanation (a fork,
 * the kernel, injection); block migrations seen whole; block operations.
 */
static unsigned long pressure_explained[2][2];
static unsigned long block_explained;
static unsigned long block_whole;
static unsigned long pops_done[NPOPS];
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Forks of this mm begun, and those whose child may still be alive (until
 * it is reaped: its exit drops its references to the pages it shared).
 * Sequentially consistent: see quiet_begin().
 */
static unsigned long forks_begun;
static int forks_live;
static unsigned long vmstat_unread;

/* What each worker is doing, for the watchdog. */
struct inflight {
	int op;			/* -1: none */
	int region;
	time_t since;
	pid_t tid;
	pid_t child;		/* the killer's child, being killed */
};

static int finished;		/* threads that returned */
/* The workers, the killer, then (-e) the pressure threads: op NOPS + 1 + pop. */
static struct inflight inflight[MAX_THREADS + 1 + NPRESS];

static void fail(enum failure f, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&count_lock);
	if (failures[f]++ < 10) {
		va_start(ap, fmt);
		printf("# FAIL %s: ", fail_name[f]);
		vprintf(fmt, ap);
		printf("\n");
		va_end(ap);
		fflush(stdout);
	}
	pthread_mutex_unlock(&count_lock);
}

static void fork_begin(void)
{
	__atomic_fetch_add(&forks_live, 1, __ATOMIC_SEQ_CST);
	__atomic_fetch_add(&forks_begun, 1, __ATOMIC_SEQ_CST);
}

/* After the child was reaped. */
static void fork_end(void)
{
	__atomic_fetch_sub(&forks_live, 1, __ATOMIC_SEQ_CST);
}

/*
 * The sum of the kernel's counters of pages it isolated, migrated, split,
 * collapsed or scanned for reclaim on its own (not numa_hit and the like,
 * which count every allocation): such a page can be busy or
 * unmapped for a moment. If /proc/vmstat cannot be read, a value never
 * seen before (so that nothing counts as quiet).
 */
static unsigned long long vm_moves(void)
{
	static const char *const counted[] = {
		"pgmigrate_", "compact_", "kcompactd_", "thp_split", "thp_collapse",
		"thp_migration", "numa_pte_updates",
		"numa_hint_faults", "numa_pages_migrated", "ksm_", "pgscan", "pgsteal",
		"pgrefill", "pgdemote", "pgpromote", "pswp",
	};
	unsigned long long sum = 0, v;
	char name[64];
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return 1ULL << 63 | ADD(vmstat_unread, 1);
	while (fscanf(f, "%63s %llu", name, &v) == 2)
		for (size_t i = 0; i < ARRAY_SIZE(counted); i++)
			if (!strncmp(name, counted[i], strlen(counted[i])))
				sum += v;
	fclose(f);
	return sum;
}

/*
 * A fork that begins after the first load changes forks_begun; one begun
 * before it is still counted live (fork_begin() raises that first) unless
 * its child was already reaped.
 */
static void quiet_begin(struct quiet *q)
{
	q->forks = __atomic_load_n(&forks_begun, __ATOMIC_SEQ_CST);
	q->ok = !__atomic_load_n(&forks_live, __ATOMIC_SEQ_CST);
	q->moves = vm_moves();
}

/* Whether no fork of this mm and no page move of the kernel's overlapped @q so far. */
static int quiet(const struct quiet *q)
{
	return q->ok && __atomic_load_n(&forks_begun, __ATOMIC_SEQ_CST) == q->forks &&
	       vm_moves() == q->moves;
}

/*
 * Whether a competitor explains an anomaly seen in window @q: a fork that
 * overlapped it (judged now: one begun after the anomaly was seen cannot
 * have caused it), or a page move of the kernel's, whose counters are
 * looked at again after GRACE_MS, since the kernel counts a page it
 * isolated or migrated only once it is done with it.
 */
static int disturbed(const struct quiet *q)
{
	if (!q->ok || __atomic_load_n(&forks_begun, __ATOMIC_SEQ_CST) != q->forks)
		return 1;
	if (vm_moves() != q->moves)
		return 1;
	usleep(GRACE_MS * 1000);
	return vm_moves() != q->moves;
}

/*
 * Word @k of page @page of generation @gen of region @ri: a tag, the
 * region, the page, the word and the generation, so that bytes of another
 * generation, region or place never pass. Generation 0 is zeros.
 */
static unsigned long long pattern(unsigned int ri, unsigned int gen, unsigned long page,
				  unsigned long k)
{
	if (!gen)
		return 0;
	return 0xa5ULL << 56 | (unsigned long long)ri << 48 |
	       (unsigned long long)page << 41 | (unsigned long long)k << 32 | gen;
}

/* @p (one page): page @page of generation @gen of @ri. */
static void fill_page(char *p, unsigned int ri, unsigned int gen, unsigned long page)
{
	unsigned long long *w = (unsigned long long *)p;

	for (unsigned long k = 0; k < WORDS; k++)
		w[k] = pattern(ri, gen, page, k);
}

static void fill(char *p, unsigned int ri, unsigned int gen)
{
	for (unsigned long i = 0; i < NPAGES; i++)
		fill_page(p + i * PAGE, ri, gen, i);
}

/* All pages of region @r: generation @gen. */
static void set_gen(struct region *r, unsigned int gen)
{
	for (unsigned long i = 0; i < NPAGES; i++)
		r->gen[i] = gen;
}

/* The first word of @p (one page) that is not page @page of @gen of @ri, or -1. */
static long page_mismatch(const char *p, unsigned int ri, unsigned int gen, unsigned long page)
{
	const unsigned long long *w = (const unsigned long long *)p;

	for (unsigned long k = 0; k < WORDS; k++)
		if (w[k] != pattern(ri, gen, page, k))
			return k;
	return -1;
}

/* The first word of @p (16 pages) not of @ri with page i of generation @gen[i], or -1. */
static long mismatch(const char *p, unsigned int ri, const unsigned int *gen)
{
	long bad;

	for (unsigned long i = 0; i < NPAGES; i++) {
		bad = page_mismatch(p + i * PAGE, ri, gen[i], i);
		if (bad >= 0)
			return i * WORDS + bad;
	}
	return -1;
}

/* What word @w is, for a report. */
static void describe(char *s, size_t n, unsigned long long w)
{
	if (!w)
		snprintf(s, n, "zeros");
	else if (w >> 56 == 0xa5)
		snprintf(s, n, "region %u gen %u (page %u word %u)", (unsigned int)(w >> 48) & 0xff,
			 (unsigned int)w, (unsigned int)(w >> 41) & 0xf,
			 (unsigned int)(w >> 32) & 0x1ff);
	else if (oversub && w >> 56 == 0x5a)
		snprintf(s, n, "block %u gen %u (page %u word %u)", (unsigned int)(w >> 46) & 0x3ff,
			 (unsigned int)w & 0xfffffff, (unsigned int)(w >> 37) & 0x1ff,
			 (unsigned int)(w >> 28) & 0x1ff);
	else
		snprintf(s, n, "0x%016llx", w);
}

/* Reports @w, read as word @k of page @page of region @r: not generation @gen. */
static void bad_word(enum failure f, const char *what, unsigned long long w, struct region *r,
		     unsigned int gen, unsigned long page, unsigned long k)
{
	char got[80], want[80];

	describe(got, sizeof(got), w);
	describe(want, sizeof(want), pattern(r->idx, gen, page, k));
	fail(f, "%s page %lu word %lu of region %u (%s): %s, expected %s", what, page, k, r->idx,
	     state_name[r->state], got, want);
}

/* Reports word @bad of @p, which is not region @r with page i of generation @gen[i]. */
static void bad_bytes(enum failure f, const char *what, const char *p, struct region *r,
		      const unsigned int *gen, long bad)
{
	bad_word(f, what, ((const unsigned long long *)p)[bad], r, gen[bad / WORDS], bad / WORDS,
		 bad % WORDS);
}

/*
 * A worker's command, in its buffer (see main()): the driver writes it back
 * where no fork write-protected it, since that copy-on-write fault would
 * allocate, and an allocation failure there is an EFAULT of its own.
 */
static __thread struct hmm_dmirror_cmd *cmd_area;
/* -e: where HMM_DUMMY_DEVMEM's answer goes, for the same reason. */
static __thread struct hmm_dummy_devmem *devmem_area;
/* The last command's cpages (0 if it failed: the driver then writes nothing back). */
static __thread unsigned long long last_cpages;

static int dmirror(int fd, unsigned long req, void *addr, void *ptr, unsigned long npages)
{
	struct hmm_dmirror_cmd local, *cmd = cmd_area ? cmd_area : &local;
	int err;

	*cmd = (struct hmm_dmirror_cmd) {
		.addr = (uintptr_t)addr,
		.ptr = (uintptr_t)ptr,
		.npages = npages,
	};
	err = ioctl(fd, req, cmd) ? errno : 0;
	last_cpages = cmd->cpages;
	return err;
}

/*
 * -e: HMM_DUMMY_DEVMEM (nothing evicted) of device @dev, 0 (through mirror
 * 0) or 1 (mirror 3), into @d; 0 or an errno. Retried while it fails
 * cleanly.
 */
static int devmem_ioctl(int dev, struct hmm_dummy_devmem *d)
{
	int err = 0;

	for (int tries = 0; tries < 1000; tries++) {
		*d = (struct hmm_dummy_devmem) { .evict = 0 };
		err = ioctl(mirror_fd[dev ? 3 : 0], HMM_DUMMY_DEVMEM, d) ? errno : 0;
		if (!err || (err != EINTR && (!inject || (err != ENOMEM && err != EAGAIN))))
			break;
	}
	return err;
}

/* -e: the counters of devices 0 and 1; 0 or an errno. */
static int devmem_get(struct devmem_counts *c)
{
	struct hmm_dummy_devmem local, *d = devmem_area ? devmem_area : &local;
	int err;

	c->valid = 0;
	for (int dev = 0; dev < 2; dev++) {
		err = devmem_ioctl(dev, d);
		if (err)
			return err;
		c->c[dev][C_EVICTED] = d->evicted;
		c->c[dev][C_SKIPPED] = d->evict_skipped;
		c->c[dev][C_NOT_PLACED] = d->not_placed;
		c->c[dev][C_THRASH_HELD] = d->thrash_held;
		c->c[dev][C_MIGRATED] = d->migrated;
	}
	c->valid = 1;
	return 0;
}

/* devmem_get(), a failure reported. */
static void devmem_read(struct devmem_counts *c)
{
	int err = devmem_get(c);

	if (err)
		fail(BAD_ERRNO, "HMM_DUMMY_DEVMEM: %s", strerror(err));
}

/*
 * Whether evicted, evict_skipped or not_placed grew from @before to @now on
 * either device; counters that could not be read count as grown (the
 * failure to read them is reported).
 */
static int pressure_grew(const struct devmem_counts *before, const struct devmem_counts *now)
{
	if (!before->valid || !now->valid)
		return 1;
	for (int dev = 0; dev < 2; dev++)
		for (int k = C_EVICTED; k <= C_NOT_PLACED; k++)
			if (now->c[dev][k] != before->c[dev][k])
				return 1;
	return 0;
}

/*
 * -e: whether device memory pressure explains pages that a migration left
 * off the device, in a window that began with @before (read before the
 * migration; now is after the check): evicted (its pages may have been
 * placed, then evicted), evict_skipped or not_placed (no room for them)
 * grew. Looked at again after GRACE_MS if not, since hmm_rs counts the
 * pages an eviction moved only once it is done (with all the blocks it
 * evicts), while its first pages are off the device already.
 */
static int pressure_explains(const struct devmem_counts *before)
{
	struct devmem_counts now;

	if (!oversub)
		return 0;
	devmem_read(&now);
	if (pressure_grew(before, &now))
		return 1;
	usleep(GRACE_MS * 1000);
	devmem_read(&now);
	return pressure_grew(before, &now);
}

/*
 * Whether @err is what @want allows: 1; under injection, clean allocation
 * failures too, and EFAULT if @efault_ok (see the header): 0, counted;
 * else -1.
 */
static int allowed(int err, int want, int efault_ok)
{
	if (err == want)
		return 1;
	if (inject && (err == ENOMEM || err == EAGAIN)) {
		ADD(clean_errors, 1);
		return 0;
	}
	if (inject && err == EFAULT && efault_ok) {
		ADD(efault_explained, 1);
		return 0;
	}
	return -1;
}

/* allowed() for a region; an errno it does not allow is a failure. */
static int expect(int err, int want, const char *what, struct region *r, int efault_ok)
{
	int a = allowed(err, want, efault_ok);

	if (a >= 0)
		return a;
	fail(BAD_ERRNO, "%s on region %u (%s): %s, expected %s", what, r->idx,
	     state_name[r->state], err ? strerror(err) : "success",
	     want ? strerror(want) : "success");
	return 0;
}

static int read_errno(enum state s)
{
	return s == RW || s == RO ? 0 : EFAULT;
}

static int write_errno(enum state s)
{
	return s == RW ? 0 : s == RO ? EPERM : EFAULT;
}

/*
 * Under injection, whether a device access's EFAULT is explained: a page
 * in device memory that a CPU fault failed to bring back (SIGBUS); for a
 * write refused on read-only memory, also the read fault hmm_rs then makes
 * to tell EPERM from EFAULT, if it had pages to fault in.
 */
static int efault_ok(struct region *r, int write)
{
	if (write && r->state == RO)
		return !r->present || r->ondev || r->excl;
	return r->ondev;
}

/* Per-thread random numbers (xorshift), seeded from the run's seed. */
static unsigned int rnd(unsigned long long *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return (unsigned int)(*s >> 11);
}

static int prot_of(enum state s)
{
	return s == RW ? PROT_READ | PROT_WRITE : s == RO ? PROT_READ : PROT_NONE;
}

/* Its pages are gone: zeros (if mapped) from now on. */
static void forget(struct region *r)
{
	set_gen(r, 0);
	r->unknown = 0;
	r->present = 0;
	r->ondev = 0;
	r->excl = 0;
	r->gupped = 0;
	r->wrote = 0;
}

/*
 * The region's bytes, read by the CPU, if it is read-write and known.
 * Reading every page brings them all back to it: returns whether it did.
 */
static int cpu_check(struct region *r, const char *after, enum failure f)
{
	char what[80];
	long bad;

	if (r->state != RW || r->unknown)
		return 0;
	bad = mismatch(r->slot[r->at], r->idx, r->gen);
	if (bad >= 0) {
		snprintf(what, sizeof(what), "after %s, the CPU reads", after);
		bad_bytes(f, what, r->slot[r->at], r, r->gen, bad);
		return 0;
	}
	r->present = 1;
	r->ondev = 0;
	r->excl = 0;
	return 1;
}

/*
 * A fork child: only async-signal-safe work here (the parent has threads).
 * With a pipe (@go >= 0) it waits for the parent to write its own copy
 * first. Its copy must be what the parent had at fork (@ri's page i of
 * generation @seen[i]); then it writes generation @mine, which must not
 * reach the parent.
 */
static void fork_child(char *p, unsigned int ri, const unsigned int *seen, unsigned int mine,
		       int go)
{
	char c;
	long bad;

	if (go >= 0 && read(go, &c, 1) != 1)
		_exit(CHILD_NO_GO);
	bad = mismatch(p, ri, seen);
	if (bad >= 0)
		_exit(CHILD_SAW + bad / WORDS);
	fill(p, ri, mine);
	_exit(0);
}

/* Whether the fork child's @status is a clean exit; reports it if not. */
static int child_ok(struct region *r, int status, int parent_first, const unsigned int *seen,
		    int ondev)
{
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;

	if (code == 0)
		return 1;
	if (code >= CHILD_SAW && code < CHILD_SAW + (int)NPAGES) {
		fail(COW_VIOLATION,
		     "fork child of region %u saw page %d of its copy not as gen %u%s", r->idx,
		     code - CHILD_SAW, seen[code - CHILD_SAW],
		     parent_first ? ", after the parent wrote its own" : ", before it wrote");
		return 0;
	}
	/* A CPU fault on a device page failing under injection: SIGBUS. */
	if (inject && ondev && WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) {
		ADD(clean_errors, 1);
		return 0;
	}
	if (WIFSIGNALED(status))
		fail(CHILD_FAILED, "fork child of region %u killed by signal %d (%s)", r->idx,
		     WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		fail(CHILD_FAILED, "fork child of region %u exited with %d%s", r->idx, code,
		     code == CHILD_NO_GO ? " (no go from the parent)" : "");
	return 0;
}

/*
 * Fork, in either COW order: the child writes its copy first, or the
 * parent writes its own (by CPU or through a device) while the child
 * waits, then the child checks and writes. Either way the parent must then
 * read its own bytes, through the device and the CPU.
 */
static void do_fork(struct region *r, unsigned long long *rs, int fd, char *buf)
{
	char *p = r->slot[r->at];
	unsigned int seen[NPAGES], mine = ++r->last;
	int parent_first = rnd(rs) & 1, by_device = rnd(rs) & 1, ondev = r->ondev;
	int go[2] = { -1, -1 }, status, err;
	pid_t pid;
	long bad;

	memcpy(seen, r->gen, sizeof(seen));
	if (parent_first && pipe(go)) {
		fail(BAD_ERRNO, "pipe: %s", strerror(errno));
		return;
	}
	fork_begin();
	pid = fork();
	if (pid == 0)
		fork_child(p, r->idx, seen, mine, go[0]);
	if (pid < 0) {
		fail(BAD_ERRNO, "fork: %s", strerror(errno));
	} else if (parent_first) {
		unsigned int g = ++r->last;

		if (by_device) {
			fill(buf, r->idx, g);
			err = dmirror(fd, HMM_DMIRROR_WRITE, p, buf, NPAGES);
			if (!err) {
				set_gen(r, g);
			} else {
				/* Some pages may have been written. */
				r->unknown = 1;
				expect(err, 0, "device write after fork", r, efault_ok(r, 1));
			}
		} else {
			fill(p, r->idx, g);
			set_gen(r, g);
			r->present = 1;
			r->ondev = 0;
			r->excl = 0;
		}
		if (write(go[1], "g", 1) != 1)
			fail(BAD_ERRNO, "pipe write: %s", strerror(errno));
	}
	if (go[0] >= 0) {
		close(go[0]);
		close(go[1]);
	}
	if (pid < 0) {
		fork_end();
		return;
	}
	if (waitpid(pid, &status, 0) != pid) {
		fail(CHILD_FAILED, "waitpid: %s", strerror(errno));
		fork_end();
		return;
	}
	fork_end();
	child_ok(r, status, parent_first, seen, ondev);
	if (r->unknown)
		return;
	err = dmirror(fd, HMM_DMIRROR_READ, p, buf, NPAGES);
	if (!expect(err, 0, "device read after fork", r, efault_ok(r, 0)))
		return;
	bad = mismatch(buf, r->idx, r->gen);
	if (bad >= 0)
		bad_bytes(COW_VIOLATION, parent_first ?
			  "after fork (the parent wrote first), the device reads" :
			  "after fork (the child wrote), the device reads", buf, r, r->gen, bad);
	cpu_check(r, "a fork", COW_VIOLATION);
}

/*
 * The snapshot @snap (through a mirror of device 0 if @dev0) against the
 * region's state. Only what a correct kernel guarantees: see the header.
 */
static void snapshot_check(struct region *r, const unsigned char *snap, int dev0)
{
	const char *why = NULL;
	unsigned long i;
	unsigned char v = 0;

	for (i = 0; i < NPAGES && !why; i++) {
		unsigned char kind;

		v = snap[i];
		kind = v & 0xf0;
		if (r->state == NONE || r->state == UNMAPPED) {
			/* No VMA, or one hmm_range_fault() may not read. */
			if (v != HMM_DMIRROR_PROT_ERROR)
				why = "not an error";
		} else if (v == HMM_DMIRROR_PROT_ERROR) {
			why = "an error in readable memory";
		} else if (r->state == RO && (v & HMM_DMIRROR_PROT_WRITE)) {
			why = "writable in read-only memory";
		} else if (kind == HMM_DMIRROR_PROT_ZERO && r->gen[i]) {
			why = "the zero page where the region was written";
		} else if (kind == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL && !(dev0 && r->ondev)) {
			why = "a device page where none can be";
		} else if (kind && kind != HMM_DMIRROR_PROT_ZERO &&
			   kind != HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL) {
			why = "a kind of page this mm cannot have";
		}
	}
	if (why) {
		fail(BAD_SNAPSHOT, "page %lu of region %u (%s, gen %u%s%s): 0x%02x, %s", i - 1,
		     r->idx, state_name[r->state], r->gen[i - 1],
		     r->ondev ? ", maybe on the device" : "",
		     dev0 ? "" : ", through device 1", v, why);
		return;
	}
	/*
	 * The CPU wrote every page last and nothing since could have shared,
	 * moved or write-protected one: all mapped writable.
	 */
	if (r->state != RW || !r->wrote)
		return;
	for (i = 0; i < NPAGES; i++)
		if ((snap[i] & ~(HMM_DMIRROR_PROT_PMD | HMM_DMIRROR_PROT_PUD)) !=
		    HMM_DMIRROR_PROT_WRITE)
			break;
	if (i == NPAGES) {
		if (quiet(&r->wq))
			ADD(fresh_checked, 1);
		return;
	}
	if (!disturbed(&r->wq))
		fail(BAD_SNAPSHOT,
		     "page %lu of region %u, written by the CPU and left alone: 0x%02x, not writable",
		     i, r->idx, snap[i]);
}

/*
 * Migration to the device and back. A region no competitor touched
 * moves whole: no ENOENT, and a snapshot after it shows device pages only.
 * With -e, eviction is such a competitor (pressure_explains()).
 */
static void do_migrate(struct region *r, int fd2, char *buf)
{
	char *p = r->slot[r->at];
	int readable = r->state == RW || r->state == RO;
	int away = r->ondev || r->excl || r->gupped, err;
	unsigned char *snap = (unsigned char *)buf;
	struct devmem_counts before = { .valid = 0 };
	struct quiet q;
	unsigned long i;
	long bad;

	quiet_begin(&q);
	if (oversub)
		devmem_read(&before);
	/* Like test_hmm, it reads the pages back into @buf. */
	err = dmirror(fd2, HMM_DMIRROR_MIGRATE_TO_DEV, p, buf, NPAGES);
	if (readable) {
		r->ondev = 1;
		/* -e: a success that copied fewer pages than asked is partial too. */
		if (err == ENOENT || (oversub && !err && last_cpages < NPAGES)) {
			/*
			 * A page neither moved nor mirrored (hmm_dummy then
			 * copies nothing back): it was busy (a fork shares
			 * it, the kernel was moving it), an allocation failed,
			 * or it was already away (device memory or exclusive
			 * entries of another mirror); with -e, it was placed
			 * and evicted again, or found no room.
			 */
			if (inject || away)
				ADD(enoent_explained, 1);
			else if (pressure_explains(&before))
				ADD(pressure_explained[0][0], 1);
			else if (disturbed(&q))
				ADD(enoent_explained, 1);
			else
				fail(PARTIAL_MIGRATION,
				     "region %u (%s): migration to the device answered %s, nothing else touching it%s",
				     r->idx, state_name[r->state],
				     err ? "ENOENT" : "success with fewer pages copied",
				     oversub ? ", no device memory pressure" : "");
		} else {
			if (!expect(err, 0, "migration to the device", r, 0))
				return;
			/* What the device read there is the data. */
			bad = r->unknown ? -1 : mismatch(buf, r->idx, r->gen);
			if (bad >= 0)
				bad_bytes(STALE_READ, "migrated, the device reads", buf, r, r->gen,
					  bad);
			/*
			 * Exclusive entries stay; pages already there show as
			 * device pages. The snapshot goes where the data was.
			 */
			if (!inject && !r->excl && !r->gupped &&
			    !dmirror(fd2, HMM_DMIRROR_SNAPSHOT, p, snap, NPAGES)) {
				for (i = 0; i < NPAGES; i++)
					if ((snap[i] & 0xf0) != HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL)
						break;
				if (i == NPAGES) {
					if (quiet(&q))
						ADD(whole_checked, 1);
				} else if (pressure_explains(&before)) {
					/* -e: evicted since, or never placed. */
					ADD(pressure_explained[0][1], 1);
				} else if (!disturbed(&q)) {
					fail(PARTIAL_MIGRATION,
					     "region %u (%s): page %lu is 0x%02x after a migration to the device, nothing else touching it",
					     r->idx, state_name[r->state], i, snap[i]);
				}
			}
		}
	} else if (err != EINVAL && err != EFAULT) {
		expect(err, EINVAL, "migration to the device", r, 0);
		return;
	}
	/*
	 * Back through another mirror of the same device (a CPU look now
	 * would fault the pages back itself).
	 */
	err = dmirror(mirror_fd[(fd2 == mirror_fd[0]) ? 1 : 0], HMM_DMIRROR_MIGRATE_TO_SYS, p,
		      NULL, NPAGES);
	if (readable) {
		if (!expect(err, 0, "migration back", r, 0))
			return;
	} else if (err != EINVAL && err != EFAULT) {
		expect(err, EINVAL, "migration back", r, 0);
		return;
	}
	cpu_check(r, "a migration back", LOST_WRITE);
}

/* Exclusive access for the device, then what it reads there: the data. */
static void do_exclusive(struct region *r, int fd2, char *buf)
{
	struct quiet q;
	int err;
	long bad;

	quiet_begin(&q);
	r->excl = 1;
	r->gupped = 1;
	err = dmirror(fd2, HMM_DMIRROR_EXCLUSIVE, r->slot[r->at], buf, NPAGES);
	if (err == EBUSY) {
		/* Pages a fork or the kernel holds, or an allocation failed. */
		if (inject || disturbed(&q))
			ADD(ebusy_explained, 1);
		else
			fail(EXCL_BUSY,
			     "region %u: exclusive access answered EBUSY, nothing else touching it",
			     r->idx);
		return;
	}
	if (!expect(err, 0, "exclusive access", r, efault_ok(r, 0)))
		return;
	bad = mismatch(buf, r->idx, r->gen);
	if (bad >= 0)
		bad_bytes(STALE_READ, "with exclusive access, the device reads", buf, r, r->gen,
			  bad);
	/* The CPU takes the access back, with the bytes unchanged. */
	cpu_check(r, "exclusive access", LOST_WRITE);
}

/* An entry of a batch, for the oracle. */
struct batch_entry {
	struct region *r;	/* the region whose page (or unmapped slot) it is */
	unsigned long page;	/* the page, in that slot */
	unsigned int gen;	/* what a write writes: @page of generation @gen */
	int hole;		/* in @r's unmapped slot: no VMA */
	int bad;		/* malformed (unaligned, or @write 2): EINVAL */
};

/*
 * A batch (HMM_DUMMY_BATCH) of 1 to BATCH_MAX entries over region @r and,
 * now and then, neighbours whose locks are free (tried only: the worker
 * holds @r's already, and waiting could deadlock with another batch). The
 * regions held are consecutive, so every slot between the first and the
 * last page requested is theirs, mapped or not: the core faults, in each
 * 2 MiB block, every page from the lowest to the highest requested there.
 * Random pages, unsorted, with repeats (a quarter of the entries repeat an
 * earlier one's page); a share of writes chosen per batch, each writing a
 * new generation of its page; 1 entry in 16 in a slot no region maps
 * (EFAULT), 1 in 64 malformed (EINVAL). The device accesses the entries in
 * their order (one refaulted alone comes later, but after the batch's
 * accesses of its page that went before it: the mapping they lost stays
 * lost until the refaults), so the results are checked in that order,
 * each against the oracle as the entries before it left it. Never drawn
 * with -u.
 */
static void do_batch(struct region *r, unsigned long long *rs, int fd, char *buf)
{
	/* In the buffer's last page, after the command: see main(). */
	struct hmm_dummy_batch *b = (void *)(buf + DATA_SIZE + 256);
	struct hmm_dummy_batch_entry *e = (void *)(buf + DATA_SIZE + 512);
	struct region *held[BATCH_REGIONS] = { r }, *t;
	int lo = r->idx, hi = r->idx, nheld = 1, want, err, st, w;
	unsigned int n, wshare, i;
	struct batch_entry be[BATCH_MAX];
	int wrote[REGIONS] = { 0 };
	char what[96];
	long bad;

	static_assert(512 + BATCH_MAX * sizeof(*e) <= PAGE, "a batch's entries fit");
	want = rnd(rs) % 4 ? 1 : 2 + rnd(rs) % (BATCH_REGIONS - 1);
	while (nheld < want) {
		int ni = rnd(rs) & 1 ? hi + 1 : lo - 1;

		if (ni < 0 || ni >= REGIONS || pthread_mutex_trylock(&regions[ni].lock))
			break;
		held[nheld++] = &regions[ni];
		lo = ni < lo ? ni : lo;
		hi = ni > hi ? ni : hi;
	}
	n = 1 + rnd(rs) % BATCH_MAX;
	wshare = rnd(rs) % 4;	/* writes: none, a quarter, half, three quarters */
	for (i = 0; i < n; i++) {
		struct batch_entry *x = &be[i];
		char *slot;

		if (i && !(rnd(rs) % 4)) {
			*x = be[rnd(rs) % i];
		} else {
			x->r = held[rnd(rs) % nheld];
			x->page = rnd(rs) % NPAGES;
			x->hole = !(rnd(rs) % 16);
		}
		x->bad = !(rnd(rs) % 64);
		t = x->r;
		slot = t->slot[x->hole ? !t->at : t->at];
		e[i] = (struct hmm_dummy_batch_entry) {
			.addr = (uintptr_t)(slot + x->page * PAGE),
			.write = rnd(rs) % 4 < wshare,
		};
		if (x->bad) {
			if (rnd(rs) & 1)
				e[i].addr += 8 << (rnd(rs) % 9);
			else
				e[i].write = 2;
		}
		x->gen = e[i].write ? ++t->last : 0;
		if (e[i].write)
			fill_page(buf + i * PAGE, t->idx, x->gen, x->page);
	}
	*b = (struct hmm_dummy_batch) {
		.entries = (uintptr_t)e,
		.data = (uintptr_t)buf,
		.count = n,
	};
	err = ioctl(fd, HMM_DUMMY_BATCH, b) ? errno : 0;
	if (err) {
		/* No status came back, but entries may have been done. */
		for (i = 0; i < n; i++)
			if (e[i].write && be[i].r->state == RW) {
				be[i].r->unknown = 1;
				be[i].r->wrote = 0;
			}
		expect(err, 0, "batch", r, 0);
		goto out;
	}
	ADD(batch_refaults, b->refaults);
	for (i = 0; i < n; i++) {
		struct batch_entry *x = &be[i];

		t = x->r;
		st = -e[i].status;
		w = e[i].write == 1;
		if (w)
			ADD(batch_writes, 1);
		else
			ADD(batch_reads, 1);
		if (st)
			ADD(batch_failed, 1);
		snprintf(what, sizeof(what), "batch entry %u of %u (%s page %lu%s)", i, n,
			 x->bad ? "a malformed entry for" : w ? "a write of" : "a read of",
			 x->page, x->hole ? " of the unmapped slot" : "");
		if (x->bad) {
			expect(st, EINVAL, what, t, 0);
			continue;
		}
		if (x->hole) {
			expect(st, EFAULT, what, t, 0);
			continue;
		}
		if (w) {
			t->wrote = 0;
			/* The device may have written it. */
			if (t->state == RW && st)
				t->unknown = 1;
			if (!expect(st, write_errno(t->state), what, t, efault_ok(t, 1)) || st)
				continue;
			t->gen[x->page] = x->gen;
			wrote[t->idx] = 1;
			continue;
		}
		if (!expect(st, read_errno(t->state), what, t, efault_ok(t, 0)) || st || t->unknown)
			continue;
		bad = page_mismatch(buf + i * PAGE, t->idx, t->gen[x->page], x->page);
		if (bad >= 0) {
			snprintf(what, sizeof(what), "batch entry %u of %u: the device reads", i,
				 n);
			bad_word(STALE_READ, what, ((unsigned long long *)(buf + i * PAGE))[bad], t,
				 t->gen[x->page], x->page, bad);
		}
	}
	/* What the device wrote is what the CPU reads. */
	for (int k = 0; k < nheld; k++)
		if (wrote[held[k]->idx])
			cpu_check(held[k], "a batch's device writes", LOST_WRITE);
out:
	for (int k = 1; k < nheld; k++)
		pthread_mutex_unlock(&held[k]->lock);
}

/*
 * -e: word @k of page @page of generation @gen of block @bi: a tag apart
 * from the regions', the block, the page, the word and the generation.
 */
static unsigned long long bpattern(unsigned int bi, unsigned int gen, unsigned long page,
				   unsigned long k)
{
	return 0x5aULL << 56 | (unsigned long long)bi << 46 | (unsigned long long)page << 37 |
	       (unsigned long long)k << 28 | (gen & 0xfffffff);
}

/* @p (BPAGES pages): generation @gen of block @bi. */
static void bfill(char *p, unsigned int bi, unsigned int gen)
{
	unsigned long long *w = (unsigned long long *)p;

	for (unsigned long i = 0; i < BPAGES; i++)
		for (unsigned long k = 0; k < WORDS; k++)
			*w++ = bpattern(bi, gen, i, k);
}

/* The first word of @p (BPAGES pages) that is not generation @gen of @bi, or -1. */
static long bmismatch(const char *p, unsigned int bi, unsigned int gen)
{
	const unsigned long long *w = (const unsigned long long *)p;

	for (unsigned long i = 0; i < BPAGES; i++)
		for (unsigned long k = 0; k < WORDS; k++, w++)
			if (*w != bpattern(bi, gen, i, k))
				return i * WORDS + k;
	return -1;
}

/* Reports word @bad of @p, which is not block @b's generation. */
static void bad_block(enum failure f, const char *what, const char *p, struct block *b, long bad)
{
	unsigned long page = bad / WORDS, k = bad % WORDS;
	char got[80], want[80];

	describe(got, sizeof(got), ((const unsigned long long *)p)[bad]);
	describe(want, sizeof(want), bpattern(b->idx, b->gen, page, k));
	fail(f, "%s page %lu word %lu of block %u: %s, expected %s", what, page, k, b->idx, got,
	     want);
}

/* expect() for a block: its pages are read-write, always. */
static int bexpect(int err, int want, const char *what, struct block *b, int efault_ok)
{
	int a = allowed(err, want, efault_ok);

	if (a >= 0)
		return a;
	fail(BAD_ERRNO, "%s on block %u: %s, expected %s", what, b->idx,
	     err ? strerror(err) : "success", want ? strerror(want) : "success");
	return 0;
}

/* A pressure thread's CPU access of a block in progress, for a SIGBUS. */
struct bus_trap {
	sigjmp_buf jb;
};

static __thread struct bus_trap *bus_trap;

/* -e: SIGBUS during a pressure thread's CPU access ends it; else as without a handler. */
static void on_sigbus(int sig)
{
	if (bus_trap)
		siglongjmp(bus_trap->jb, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * The CPU writes generation @gen over block @b; or (@gen 0) reads it, *@bad
 * the first word that is not its generation or -1, or only touches each
 * page if its bytes are unknown. Returns 1 if that took a SIGBUS: a CPU
 * fault on a device page failed (hmm_rs's migrate_to_ram answers SIGBUS
 * for any failure but ENOMEM), which the write may have left half done.
 */
static int bcpu(struct block *b, unsigned int gen, long *bad)
{
	struct bus_trap trap;

	if (sigsetjmp(trap.jb, 1)) {
		bus_trap = NULL;
		return 1;
	}
	bus_trap = &trap;
	if (gen)
		bfill(b->p, b->idx, gen);
	else if (b->unknown)
		for (unsigned long i = 0; i < BPAGES; i++)
			__atomic_load_n(b->p + i * PAGE, __ATOMIC_RELAXED);
	else
		*bad = bmismatch(b->p, b->idx, b->gen);
	bus_trap = NULL;
	return 0;
}

/* A SIGBUS of the CPU's @what of block @b: clean under injection if pages may be on a device. */
static void bsigbus(struct block *b, const char *what)
{
	if (inject && b->devs) {
		ADD(clean_errors, 1);
		return;
	}
	fail(BAD_ERRNO, "the CPU's %s of block %u took a SIGBUS%s", what, b->idx,
	     b->devs ? "" : ", no page of it on a device");
}

/*
 * The block's bytes, read by the CPU (if known; else only touched).
 * Reading every page brings them all back to system memory.
 */
static void bcpu_check(struct block *b, const char *after)
{
	char what[80];
	long bad = -1;

	if (bcpu(b, 0, &bad)) {
		bsigbus(b, "read");
		return;
	}
	if (bad >= 0) {
		snprintf(what, sizeof(what), "after %s, the CPU reads", after);
		bad_block(LOST_WRITE, what, b->p, b, bad);
		return;
	}
	b->devs = 0;
}

/* A mirror of device @dev, at random. */
static int mirror_of(int dev, unsigned long long *rs)
{
	return dev ? 3 : rnd(rs) % 3;
}

/*
 * The whole block to device @dev through mirror @fi. It must be placed
 * whole: every page read back (no ENOENT, cpages all of it) as the data,
 * and (without -i) a snapshot through the same mirror showing only device
 * pages; unless pressure_explains() it, or a competitor as for the
 * regions: injection, a fork, the kernel moving pages.
 */
static void block_migrate(struct block *b, int dev, int fi, char *buf)
{
	unsigned char *snap = (unsigned char *)buf;
	struct devmem_counts before;
	unsigned long i, left = 0, first = 0;
	struct quiet q;
	int err;
	long bad;

	/* What the other device has would not move (nor be read back). */
	if (b->devs & ~(1 << dev))
		bcpu_check(b, "a migration to the other device");
	quiet_begin(&q);
	devmem_read(&before);
	err = dmirror(mirror_fd[fi], HMM_DMIRROR_MIGRATE_TO_DEV, b->p, buf, BPAGES);
	b->devs |= 1 << dev;
	if (err == ENOENT || (!err && last_cpages < BPAGES)) {
		if (inject || (b->devs & ~(1 << dev))) {
			ADD(block_explained, 1);
		} else if (pressure_explains(&before)) {
			ADD(pressure_explained[1][0], 1);
		} else if (disturbed(&q)) {
			ADD(block_explained, 1);
		} else {
			fail(PARTIAL_MIGRATION,
			     "block %u: migration to device %d answered %s (%llu of %lu pages copied), no device memory pressure, nothing else touching it",
			     b->idx, dev, err ? "ENOENT" : "success", err ? 0ULL : last_cpages,
			     BPAGES);
		}
		return;
	}
	if (!bexpect(err, 0, "migration to the device", b, 0))
		return;
	/* What the device read there is the data. */
	bad = b->unknown ? -1 : bmismatch(buf, b->idx, b->gen);
	if (bad >= 0)
		bad_block(STALE_READ, "migrated, the device reads", buf, b, bad);
	if (inject)
		return;
	err = dmirror(mirror_fd[fi], HMM_DMIRROR_SNAPSHOT, b->p, snap, BPAGES);
	if (!bexpect(err, 0, "snapshot after a migration", b, 0))
		return;
	for (i = 0; i < BPAGES; i++)
		if ((snap[i] & 0xf0) != HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL && !left++)
			first = i;
	if (!left)
		ADD(block_whole, 1);
	else if (pressure_explains(&before))
		ADD(pressure_explained[1][1], 1);
	else if (disturbed(&q))
		ADD(block_explained, 1);
	else
		fail(PARTIAL_MIGRATION,
		     "block %u: %lu of its pages not on device %d after a migration there (page %lu is 0x%02x), no device memory pressure, nothing else touching it",
		     b->idx, left, dev, first, snap[first]);
}

/* One operation of a pressure thread on block @b (locked). */
static void do_pop(enum pop op, struct block *b, unsigned long long *rs, char *buf)
{
	int fi = rnd(rs) % MIRRORS, dev, err;
	unsigned int g;
	long bad;

	switch (op) {
	case P_MIGRATE:
		/* Device 0, where the regions go, three times in four. */
		dev = !(rnd(rs) % 4);
		block_migrate(b, dev, mirror_of(dev, rs), buf);
		break;
	case P_DEV_READ:
		err = dmirror(mirror_fd[fi], HMM_DMIRROR_READ, b->p, buf, BPAGES);
		if (!bexpect(err, 0, "device read", b, b->devs != 0) || err || b->unknown)
			break;
		bad = bmismatch(buf, b->idx, b->gen);
		if (bad >= 0)
			bad_block(STALE_READ, "the device reads", buf, b, bad);
		break;
	case P_DEV_WRITE:
		/* Into device memory if the block is there: eviction must keep it. */
		g = ++b->last;
		bfill(buf, b->idx, g);
		err = dmirror(mirror_fd[fi], HMM_DMIRROR_WRITE, b->p, buf, BPAGES);
		if (err) {
			/* Some pages may have been written. */
			b->unknown = 1;
			bexpect(err, 0, "device write", b, b->devs != 0);
			break;
		}
		b->gen = g;
		b->unknown = 0;
		break;
	case P_CPU_WRITE:
		g = ++b->last;
		if (bcpu(b, g, NULL)) {
			/* Some pages may have been written. */
			b->unknown = 1;
			bsigbus(b, "write");
			break;
		}
		b->gen = g;
		b->unknown = 0;
		b->devs = 0;
		break;
	case P_CPU_CHECK:
		bcpu_check(b, "device memory pressure");
		break;
	case P_TO_SYS:
		/* Through a mirror of a device that may have pages of it. */
		dev = b->devs == 3 ? (int)(rnd(rs) & 1) : b->devs == 2;
		err = dmirror(mirror_fd[b->devs ? mirror_of(dev, rs) : fi],
			      HMM_DMIRROR_MIGRATE_TO_SYS, b->p, NULL, BPAGES);
		bexpect(err, 0, "migration back", b, 0);
		/* Pages it could not copy stay: @devs keeps them. */
		break;
	case NPOPS:
		break;
	}
	__atomic_fetch_add(&pops_done[op], 1, __ATOMIC_RELAXED);
}

static void do_op(enum op op, struct region *r, unsigned long long *rs, char *buf)
{
	int fi = rnd(rs) % MIRRORS, fd = mirror_fd[fi], fd2 = mirror_fd[rnd(rs) % 3];
	char *p = r->slot[r->at];
	unsigned int g;
	int err;
	long bad;

	/* What leaves the CPU's last write alone: reads (a batch sees to its own). */
	if (op != OP_DEV_READ && op != OP_SNAPSHOT && op != OP_BATCH)
		r->wrote = 0;
	switch (op) {
	case OP_CPU_WRITE:
		if (r->state != RW)
			return;
		quiet_begin(&r->wq);
		g = ++r->last;
		set_gen(r, g);
		fill(p, r->idx, g);
		r->unknown = 0;
		r->present = 1;
		r->ondev = 0;
		r->excl = 0;
		r->wrote = 1;
		break;
	case OP_DEV_READ:
		err = dmirror(fd, HMM_DMIRROR_READ, p, buf, NPAGES);
		if (!expect(err, read_errno(r->state), "device read", r, efault_ok(r, 0)) || err)
			break;
		r->present = 1;
		if (r->unknown)
			break;
		bad = mismatch(buf, r->idx, r->gen);
		if (bad >= 0)
			bad_bytes(STALE_READ, "the device reads", buf, r, r->gen, bad);
		break;
	case OP_DEV_WRITE:
		g = ++r->last;
		fill(buf, r->idx, g);
		err = dmirror(fd, HMM_DMIRROR_WRITE, p, buf, NPAGES);
		if (r->state == RW && err) {
			/* Some pages may have been written. */
			r->unknown = 1;
		}
		if (!expect(err, write_errno(r->state), "device write", r, efault_ok(r, 1)) || err)
			break;
		set_gen(r, g);
		r->unknown = 0;
		r->present = 1;
		cpu_check(r, "a device write", LOST_WRITE);
		break;
	case OP_MUNMAP:
		if (r->state == UNMAPPED)
			return;
		if (munmap(p, RSIZE))
			fail(BAD_ERRNO, "munmap: %s", strerror(errno));
		r->state = UNMAPPED;
		forget(r);
		break;
	case OP_MMAP:
		if (mmap(p, RSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) == MAP_FAILED) {
			fail(BAD_ERRNO, "mmap: %s", strerror(errno));
			return;
		}
		r->state = RW;
		forget(r);
		break;
	case OP_DONTNEED:
		if (r->state == UNMAPPED)
			return;
		if (madvise(p, RSIZE, MADV_DONTNEED))
			fail(BAD_ERRNO, "madvise: %s", strerror(errno));
		forget(r);
		break;
	case OP_PROT_RO:
	case OP_PROT_NONE:
	case OP_PROT_RW: {
		enum state s = op == OP_PROT_RO ? RO : op == OP_PROT_NONE ? NONE : RW;

		if (r->state == UNMAPPED)
			return;
		if (mprotect(p, RSIZE, prot_of(s)))
			fail(BAD_ERRNO, "mprotect: %s", strerror(errno));
		r->state = s;
		break;
	}
	case OP_MREMAP: {
		char *to = r->slot[!r->at];

		if (r->state == UNMAPPED)
			return;
		if (mremap(p, RSIZE, RSIZE, MREMAP_MAYMOVE | MREMAP_FIXED, to) != to) {
			fail(BAD_ERRNO, "mremap: %s", strerror(errno));
			return;
		}
		r->at = !r->at;
		break;
	}
	case OP_FORK:
		if (r->state != RW || r->unknown)
			return;
		do_fork(r, rs, fd, buf);
		break;
	case OP_MIGRATE:
		do_migrate(r, fd2, buf);
		break;
	case OP_SNAPSHOT:
		err = dmirror(fd, HMM_DMIRROR_SNAPSHOT, p, buf, NPAGES);
		if (expect(err, 0, "snapshot", r, 0))
			snapshot_check(r, (unsigned char *)buf, fi < 3);
		break;
	case OP_EXCLUSIVE:
		if (r->state != RW || r->unknown)
			return;
		do_exclusive(r, fd2, buf);
		break;
	case OP_BATCH:
		do_batch(r, rs, fd, buf);
		break;
	case NOPS:
		break;
	}
	__atomic_fetch_add(&ops_done[op], 1, __ATOMIC_RELAXED);
}

static time_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

struct worker {
	int id;
	unsigned long long seed;
	char *buf;		/* DATA_SIZE of data, then its commands (BUF_SIZE) */
};

static void *worker(void *arg)
{
	struct worker *w = arg;
	unsigned long long rs = w->seed;
	struct inflight *me = &inflight[w->id];
	char *buf = w->buf;

	STORE(me->tid, gettid());
	cmd_area = (struct hmm_dmirror_cmd *)(buf + DATA_SIZE);
	devmem_area = (struct hmm_dummy_devmem *)(buf + DATA_SIZE + DEVMEM_AT);
	while (!LOAD(stop)) {
		int ri = rnd(&rs) % REGIONS;
		enum op op = drawn[rnd(&rs) % ndrawn];
		struct region *r = &regions[ri];

		pthread_mutex_lock(&r->lock);
		STORE(me->region, ri);
		STORE(me->since, now());
		STORE(me->op, op);
		do_op(op, r, &rs, buf);
		STORE(me->op, -1);
		pthread_mutex_unlock(&r->lock);
	}
	__atomic_fetch_add(&finished, 1, __ATOMIC_RELAXED);
	return NULL;
}

/* Children with mirrors of their own, killed mid-ioctl. */
static void *killer(void *arg)
{
	struct worker *w = arg;
	unsigned long long rs = w->seed;
	struct inflight *me = &inflight[w->id];

	STORE(me->tid, gettid());
	while (!LOAD(stop)) {
		pid_t pid;

		/* The child shares all of this mm's pages until it is reaped. */
		fork_begin();
		pid = fork();

		if (pid == 0) {
			int fd = open("/dev/hmm_dmirror0", O_RDWR);
			char *p = mmap(NULL, 512 * PAGE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			static char b[512 * PAGE];
			static struct hmm_dummy_batch_entry e[512];
			struct hmm_dummy_batch bt;

			/* No THP: its allocations would move the THP counters. */
			madvise(p, 512 * PAGE, MADV_NOHUGEPAGE);
			if (fd < 0 || p == MAP_FAILED)
				_exit(1);
			for (;;) {
				memset(p, 0x11, 512 * PAGE);
				dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, NULL, 512);
				/* Scattered, some back from the device: killed among them. */
				for (int i = 0; i < 512; i++)
					e[i] = (struct hmm_dummy_batch_entry) {
						.addr = (uintptr_t)(p + rnd(&rs) % 512 * PAGE),
						.write = rnd(&rs) & 1,
					};
				bt = (struct hmm_dummy_batch) {
					.entries = (uintptr_t)e,
					.data = (uintptr_t)b,
					.count = 512,
				};
				if (!uapi_only)
					ioctl(fd, HMM_DUMMY_BATCH, &bt);
				dmirror(fd, HMM_DMIRROR_READ, p, b, 512);
				dmirror(fd, HMM_DMIRROR_WRITE, p, b, 512);
			}
		}
		if (pid < 0) {
			fork_end();
			break;
		}
		usleep(1000 * (1 + rnd(&rs) % 50));
		STORE(me->since, now());
		STORE(me->child, pid);
		STORE(me->op, NOPS);	/* "killing a child" */
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		fork_end();
		STORE(me->op, -1);
		__atomic_fetch_add(&kills, 1, __ATOMIC_RELAXED);
		/*
		 * A pause without a child: the other threads' idle checks
		 * need one, now and then one long enough for a migration.
		 */
		usleep(1000 * (rnd(&rs) % 20) + (rnd(&rs) % 4 ? 0 : 100000));
	}
	__atomic_fetch_add(&finished, 1, __ATOMIC_RELAXED);
	return NULL;
}

/* -e: operations on random blocks, the device memory kept full. */
static void *pressure(void *arg)
{
	struct worker *w = arg;
	unsigned long long rs = w->seed;
	struct inflight *me = &inflight[w->id];
	char *buf = w->buf;
	unsigned int done = 0;

	STORE(me->tid, gettid());
	cmd_area = (struct hmm_dmirror_cmd *)(buf + BSIZE);
	devmem_area = (struct hmm_dummy_devmem *)(buf + BSIZE + DEVMEM_AT);
	while (!LOAD(stop)) {
		unsigned int bi = rnd(&rs) % nblocks, x = rnd(&rs) % 16;
		struct block *b = &blocks[bi];
		enum pop op = 0;

		/*
		 * Each kind once first, so that a short run under emulation
		 * (70 block operations in 20 s) still runs the rare ones.
		 */
		if (done < NPOPS)
			op = done++;
		else
			while (x >= pop_weight[op])
				x -= pop_weight[op++];
		pthread_mutex_lock(&b->lock);
		STORE(me->region, (int)bi);
		STORE(me->since, now());
		STORE(me->op, NOPS + 1 + (int)op);
		do_pop(op, b, &rs, buf);
		STORE(me->op, -1);
		pthread_mutex_unlock(&b->lock);
	}
	__atomic_fetch_add(&finished, 1, __ATOMIC_RELAXED);
	return NULL;
}

/* What in-flight operation @op on @idx is, for a report: "OP on region N" or "OP on block N". */
static void inflight_what(char *s, size_t n, int op, int idx)
{
	if (op > NOPS)
		snprintf(s, n, "%s on block %d", pop_name[op - NOPS - 1], idx);
	else
		snprintf(s, n, "%s on region %d", op == NOPS ? "killing a child" : op_name[op],
			 idx);
}

/* Prints /proc/PID/stack (the kernel stack of a task), for a hang. */
static void print_stack(const char *what, pid_t tid)
{
	char path[64], line[256];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stack", tid);
	f = fopen(path, "r");
	printf("# %s (task %d), kernel stack:\n", what, tid);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		printf("#   %s", line);
	fclose(f);
}

/* A hang: what each of the @nall threads is doing, with its kernel stack. */
static void report_hang(int nall)
{
	char what[128], on[96];
	int fd;

	for (int i = 0; i < nall; i++) {
		struct inflight *f = &inflight[i];
		int op = LOAD(f->op);

		if (op < 0)
			continue;
		inflight_what(on, sizeof(on), op, LOAD(f->region));
		snprintf(what, sizeof(what), "thread %d: %s for %ld s", i, on,
			 (long)(now() - LOAD(f->since)));
		print_stack(what, LOAD(f->tid));
		if (op == NOPS)
			print_stack("the child being killed", LOAD(f->child));
	}
	/* Blocked tasks and CPUs' stacks to the kernel log, if SysRq is there. */
	fd = open("/proc/sysrq-trigger", O_WRONLY);
	if (fd >= 0) {
		write(fd, "w", 1);
		write(fd, "l", 1);
		close(fd);
	}
}

/* A failure before the storm: TAP's one failed test. */
static int setup_failed(const char *fmt, ...)
{
	va_list ap;

	printf("1..1\nnot ok 1 ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n# Totals: pass:0 fail:1 xfail:0 xpass:0 skip:0 error:0\n");
	return 1;
}

/*
 * -e: the device memory's size, then the pressure blocks, four times it,
 * written (generation 1), and the pressure threads' buffers (NPRESS of
 * them, then a command page for main()), out of forks as the workers'.
 * 0, or setup_failed()'s.
 */
static int oversub_setup(char **pbufs)
{
	struct hmm_dummy_devmem d[2];
	size_t size = (size_t)NPRESS * BBUF_SIZE + PAGE;
	char *area;
	struct sigaction sa = { .sa_handler = on_sigbus };
	FILE *f;
	int err;

	static_assert(sizeof(struct hmm_dmirror_cmd) <= DEVMEM_AT &&
		      DEVMEM_AT + sizeof(struct hmm_dummy_devmem) <= 256,
		      "HMM_DUMMY_DEVMEM's struct between the command and a batch's");
	f = fopen(DEVMEM_MIB, "r");
	if (!f)
		return setup_failed("-e: %s: %s (hmm_dummy without devmem_mib?)", DEVMEM_MIB,
				    strerror(errno));
	if (fscanf(f, "%lu", &devmem_mib) != 1)
		devmem_mib = 0;
	fclose(f);
	static_assert(2 * DEVMEM_MIB_MAX <= BLOCKS_MAX, "a block's words name it");
	if (!devmem_mib || devmem_mib > DEVMEM_MIB_MAX)
		return setup_failed("-e: devmem_mib %lu: 1 to %d (devmem_mib=32 is meant)",
				    devmem_mib, DEVMEM_MIB_MAX);
	for (int dev = 0; dev < 2; dev++) {
		err = devmem_ioctl(dev, &d[dev]);
		if (err)
			return setup_failed("-e: HMM_DUMMY_DEVMEM of device %d: %s", dev,
					    strerror(err));
	}
	nblocks = 2 * devmem_mib;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL))
		return setup_failed("-e: sigaction: %s", strerror(errno));
	printf("# -e: devmem_mib %lu: pages of devices 0 + 1 %llu + %llu, in use %llu + %llu\n",
	       devmem_mib, d[0].size, d[1].size, d[0].in_use, d[1].in_use);
	printf("# -e: pressure blocks %u of 2 MiB (%lu MiB), %d pressure threads\n", nblocks,
	       4 * devmem_mib, NPRESS);
	*pbufs = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*pbufs == MAP_FAILED || madvise(*pbufs, size, MADV_DONTFORK))
		return setup_failed("-e: the pressure threads' buffers: %s", strerror(errno));
	/* No THP: khugepaged and splits would move the counters of quiet(). */
	madvise(*pbufs, size, MADV_NOHUGEPAGE);
	memset(*pbufs, 0, size);
	blocks = calloc(nblocks, sizeof(*blocks));
	/* 2 MiB aligned, as the device memory's blocks. */
	area = mmap(NULL, (nblocks + 1) * BSIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!blocks || area == MAP_FAILED)
		return setup_failed("-e: %lu MiB of pressure blocks: %s", 4 * devmem_mib,
				    strerror(errno));
	area += -(uintptr_t)area & (BSIZE - 1);
	madvise(area, nblocks * BSIZE, MADV_NOHUGEPAGE);
	for (unsigned int i = 0; i < nblocks; i++) {
		struct block *b = &blocks[i];

		pthread_mutex_init(&b->lock, NULL);
		b->p = area + i * BSIZE;
		b->idx = i;
		b->gen = 1;
		b->last = 1;
		bfill(b->p, i, 1);
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long long seed = (unsigned long long)time(NULL);
	int seconds = 10, nthreads = 4, opt, tests = 0, ran, nall, oversubscribed = 0;
	pthread_t th[MAX_THREADS + 1 + NPRESS];
	struct worker w[MAX_THREADS + 1 + NPRESS];
	struct devmem_counts run_start, run_end = { .valid = 0 };
	unsigned long long grew[2][NCOUNTERS] = { { 0 } };
	unsigned long total = 0;
	char *arena, *bufs, *pbufs = NULL;
	time_t end;

	while ((opt = getopt(argc, argv, "t:s:j:ieu")) != -1) {
		switch (opt) {
		case 't':
			seconds = atoi(optarg);
			break;
		case 's':
			seed = strtoull(optarg, NULL, 0);
			break;
		case 'j':
			nthreads = atoi(optarg);
			break;
		case 'i':
			inject = 1;
			break;
		case 'e':
			oversub = 1;
			break;
		case 'u':
			uapi_only = 1;
			break;
		default:
			goto usage;
		}
	}
	/* -e needs HMM_DUMMY_DEVMEM and hmm_dummy's devmem_mib. */
	if (oversub && uapi_only) {
		fprintf(stderr, "%s: -e needs hmm_dummy's own ioctls: not with -u\n", argv[0]);
		goto usage;
	}
	for (int i = 0; i < NOPS; i++)
		if (!uapi_only || !op_needs_dummy(i))
			drawn[ndrawn++] = i;
	if (nthreads < 1 || nthreads > MAX_THREADS)
		nthreads = 4;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n");
	printf("# hmm_storm -t %d -s %llu -j %d%s%s%s: %d regions, %d mirrors\n", seconds, seed,
	       nthreads, inject ? " -i" : "", oversub ? " -e" : "", uapi_only ? " -u" : "",
	       REGIONS, MIRRORS);
	if (uapi_only) {
		printf("# -u: dmirror uapi only (lib/test_hmm_uapi.h); left out, as they need %s",
		       "hmm_dummy's own ioctls:");
		for (int i = 0; i < NOPS; i++)
			if (op_needs_dummy(i))
				printf(" %s", op_name[i]);
		printf(" (HMM_DUMMY_BATCH), the killed children's batches; -e refused\n");
	}
	for (int i = 0; i < MIRRORS; i++) {
		const char *dev = i < 3 ? "/dev/hmm_dmirror0" : "/dev/hmm_dmirror1";

		/* Registering a mirror may fail cleanly under injection: again. */
		for (int tries = 0; tries < 1000; tries++) {
			mirror_fd[i] = open(dev, O_RDWR);
			if (mirror_fd[i] >= 0 || !inject || (errno != ENOMEM && errno != EAGAIN))
				break;
		}
		if (mirror_fd[i] < 0 && errno == ENOENT) {
			printf("1..0 # SKIP no %s\n", dev);
			printf("# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:1 error:0\n");
			return 0;
		}
		if (mirror_fd[i] < 0) {
			printf("1..1\nnot ok 1 opening %s: %s\n", dev, strerror(errno));
			printf("# Totals: pass:0 fail:1 xfail:0 xpass:0 skip:0 error:0\n");
			return 1;
		}
	}
	/*
	 * The workers' buffers, before the arena (so never in its holes):
	 * everything the driver writes back goes there, mapped (touched) and
	 * kept out of forks, so that no fork write-protects it and no
	 * copy-on-write fault (an allocation) can fail a driver's copy.
	 */
	bufs = mmap(NULL, MAX_THREADS * BUF_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bufs == MAP_FAILED || madvise(bufs, MAX_THREADS * BUF_SIZE, MADV_DONTFORK))
		return 1;
	memset(bufs, 0, MAX_THREADS * BUF_SIZE);
	/* All regions' slots in one arena: nothing else maps there. */
	arena = mmap(NULL, 2 * REGIONS * RSIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED)
		return 1;
	for (int i = 0; i < REGIONS; i++) {
		struct region *r = &regions[i];

		pthread_mutex_init(&r->lock, NULL);
		r->idx = i;
		r->slot[0] = arena + 2 * i * RSIZE;
		r->slot[1] = arena + (2 * i + 1) * RSIZE;
		munmap(r->slot[1], RSIZE);
		mmap(r->slot[0], RSIZE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		r->state = RW;
		set_gen(r, 1);
		r->last = 1;
		r->present = 1;
		fill(r->slot[0], i, 1);
	}
	/* The workers, the killer, then (-e) the pressure threads. */
	nall = nthreads + 1;
	if (oversub) {
		int err;

		if (oversub_setup(&pbufs))
			return 1;
		nall += NPRESS;
		/* main()'s HMM_DUMMY_DEVMEM: out of forks too. */
		devmem_area = (struct hmm_dummy_devmem *)(pbufs + NPRESS * BBUF_SIZE + DEVMEM_AT);
		err = devmem_get(&run_start);
		if (err)
			return setup_failed("-e: HMM_DUMMY_DEVMEM: %s", strerror(err));
	}
	for (int i = 0; i < nall; i++) {
		w[i].id = i;
		w[i].seed = seed * 0x9e3779b97f4a7c15ULL + i + 1;
		w[i].buf = i <= nthreads ? bufs + i * BUF_SIZE :
					   pbufs + (i - nthreads - 1) * BBUF_SIZE;
		STORE(inflight[i].op, -1);
		pthread_create(&th[i], NULL,
			       i < nthreads ? worker : i == nthreads ? killer : pressure, &w[i]);
	}
	end = now() + seconds;
	/* The watchdog, until every thread has returned. */
	while (__atomic_load_n(&finished, __ATOMIC_RELAXED) < nall && !failures[HANG]) {
		sleep(1);
		for (int i = 0; i < nall; i++) {
			struct inflight *f = &inflight[i];
			int op = LOAD(f->op);
			char on[96];

			if (op >= 0 && now() - LOAD(f->since) > HANG_S) {
				inflight_what(on, sizeof(on), op, LOAD(f->region));
				fail(HANG, "thread %d: %s for over %d s", i, on, HANG_S);
				STORE(stop, 1);
			}
		}
		if (now() >= end)
			STORE(stop, 1);
	}
	if (failures[HANG])
		report_hang(nall);
	else
		for (int i = 0; i < nall; i++)
			pthread_join(th[i], NULL);
	/* -e: what the device memory's counters grew by in the run. */
	if (oversub && !failures[HANG]) {
		devmem_read(&run_end);
		if (run_end.valid)
			for (int dev = 0; dev < 2; dev++)
				for (int k = 0; k < NCOUNTERS; k++)
					grew[dev][k] = run_end.c[dev][k] - run_start.c[dev][k];
		oversubscribed = run_end.valid && grew[0][C_EVICTED] > 0;
	}

	for (int i = 0; i < NOPS; i++) {
		if (uapi_only && op_needs_dummy(i)) {
			printf("# %-24s left out (-u)\n", op_name[i]);
			continue;
		}
		printf("# %-24s %lu\n", op_name[i], ops_done[i]);
		total += ops_done[i];
	}
	printf("# operations %lu, children killed mid-ioctl %lu, clean allocation errors %lu\n",
	       total, kills, clean_errors);
	printf("# migrations to the device answering ENOENT, explained %lu\n", enoent_explained);
	printf("# exclusive access answering EBUSY, explained %lu\n", ebusy_explained);
	printf("# EFAULT under injection, explained by device pages %lu\n", efault_explained);
	printf("# idle checks made: migrations seen whole %lu, fresh writes snapshotted %lu\n",
	       whole_checked, fresh_checked);
	if (!uapi_only)
		printf("# batch entries: reads %lu, writes %lu, errnos %lu, refaulted %lu\n",
		       batch_reads, batch_writes, batch_failed, batch_refaults);
	ran = total && ops_done[OP_MIGRATE] && ops_done[OP_DEV_READ] && ops_done[OP_FORK] &&
	      (ops_done[OP_BATCH] || uapi_only) && kills;
	if (oversub) {
		unsigned long ptotal = 0;

		for (int i = 0; i < NPOPS; i++) {
			printf("# %-24s %lu\n", pop_name[i], pops_done[i]);
			ptotal += pops_done[i];
			ran = ran && pops_done[i];
		}
		printf("# -e: block operations %lu on %u blocks of 2 MiB\n", ptotal, nblocks);
		printf("# -e: block migrations seen whole on the device %lu\n", block_whole);
		printf("# -e: block migrations left partial, explained by a competitor %lu\n",
		       block_explained);
		printf("# -e: explained by device memory pressure (its counters grew):\n");
		printf("#     region migrations partial %lu, not all on the device after %lu\n",
		       pressure_explained[0][0], pressure_explained[0][1]);
		printf("#     block migrations partial %lu, not all on the device after %lu\n",
		       pressure_explained[1][0], pressure_explained[1][1]);
		if (!failures[HANG] && run_end.valid) {
			static const char *const cname[NCOUNTERS] = {
				[C_MIGRATED] = "migrated pages", [C_EVICTED] = "evicted pages",
				[C_SKIPPED] = "evict_skipped", [C_NOT_PLACED] = "not_placed",
				[C_THRASH_HELD] = "thrash_held",
			};
			static const int corder[NCOUNTERS] = {
				C_MIGRATED, C_EVICTED, C_SKIPPED, C_NOT_PLACED, C_THRASH_HELD,
			};

			printf("# -e: device memory counters over the run (devices 0 + 1):\n");
			for (int i = 0; i < NCOUNTERS; i++) {
				int k = corder[i];

				printf("#     %-16s %llu (%llu + %llu)\n", cname[k],
				       grew[0][k] + grew[1][k], grew[0][k], grew[1][k]);
			}
		} else {
			printf("# -e: device memory counters over the run: not read\n");
		}
	}
	printf("1..%d\n", NFAIL + 1 + oversub);
	for (int f = 0; f < NFAIL; f++)
		printf("%sok %d %s%s\n", failures[f] ? "not " : "", ++tests, fail_name[f],
		       failures[f] ? " (see above)" : "");
	/* A storm that did nothing proves nothing. */
	printf("%sok %d every kind of operation ran\n", ran ? "" : "not ", ++tests);
	/* Nor does -e if nothing was evicted: the device memory was never full. */
	if (oversub)
		printf("%sok %d device memory oversubscribed: device 0 evicted %llu pages\n",
		       oversubscribed ? "" : "not ", ++tests, grew[0][C_EVICTED]);
	printf("# seed %llu (hmm_storm -s %llu -t %d%s reproduces the choices)\n", seed, seed,
	       seconds, oversub ? " -e" : uapi_only ? " -u" : "");
	{
		int failed = 0;

		for (int f = 0; f < NFAIL; f++)
			failed += !!failures[f];
		failed += !ran;
		failed += oversub && !oversubscribed;
		printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:0 error:0\n",
		       tests - failed, failed);
	}
	fflush(stdout);
	if (failures[HANG])
		_exit(1);
	return 0;
usage:
	fprintf(stderr, "usage: %s [-t SECONDS] [-s SEED] [-j THREADS] [-i] [-e | -u]\n", argv[0]);
	return 2;
}
