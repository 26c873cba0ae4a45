// SPDX-License-Identifier: GPL-2.0
/*
 * Batched device faults (hmm_rs_mirror_fault_batch()) through hmm_dummy's
 * HMM_DUMMY_BATCH: scattered page accesses, as a device copies them from
 * its fault buffer, faulted as one batch and then accessed one by one.
 *
 * Each test checks what every entry got: its status, and for a read the
 * page's bytes. The core merges a batch into one fault per 2 MiB window;
 * the tests that say so count those faults in the core's statistics
 * (/sys/kernel/debug/hmm_rs/stats), so a batch that was not merged fails
 * them, and one whose results differ from each entry's alone fails the
 * others.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include <lib/test_hmm_uapi.h>
#include "hmm_dummy_uapi.h"

#define PAGE		4096UL
#define HUGE		(2UL << 20)
#define BLOCKS		2
#define SIZE		(BLOCKS * HUGE)
#define NPAGES		(SIZE / PAGE)
#define STATS		"/sys/kernel/debug/hmm_rs/stats"

/* Each 8-byte word of page @k of a buffer filled with @seed. */
static unsigned long long word(unsigned int seed, unsigned long k)
{
	return (unsigned long long)seed << 32 | k;
}

static void fill_page(char *page, unsigned int seed, unsigned long k)
{
	unsigned long long *w = (void *)page;
	unsigned long i;

	for (i = 0; i < PAGE / sizeof(*w); i++)
		w[i] = word(seed, k);
}

/* Whether @page holds page @k of @seed; -1 if it does, else a bad word's index. */
static long page_differs(const char *page, unsigned int seed, unsigned long k)
{
	const unsigned long long *w = (const void *)page;
	unsigned long i;

	for (i = 0; i < PAGE / sizeof(*w); i++)
		if (w[i] != word(seed, k))
			return i;
	return -1;
}

/* Anonymous memory, 2 MiB aligned, of 4 KiB pages. */
static char *map_aligned(unsigned long bytes)
{
	char *p = mmap(NULL, bytes + HUGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (char *)(((uintptr_t)p + HUGE - 1) & ~(HUGE - 1));
	if (a > p)
		munmap(p, a - p);
	munmap(a + bytes, p + HUGE - a);
	madvise(a, bytes, MADV_NOHUGEPAGE);
	return a;
}

/*
 * A value of the core's statistics: the number after @key on the line
 * that starts with the word @line (e.g. "faults", "fault races "), or -1.
 */
static long stat_value(const char *line, const char *key)
{
	FILE *f = fopen(STATS, "r");
	char buf[1024], *p;
	long v = -1;

	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f)) {
		if (strncmp(buf, line, strlen(line)) || buf[strlen(line)] != ' ')
			continue;
		p = strstr(buf, key);
		if (p)
			v = strtol(p + strlen(key), NULL, 10);
		break;
	}
	fclose(f);
	return v;
}

static long faults(void)
{
	return stat_value("faults", "faults ");
}

static long events(const char *type)
{
	char key[64];

	snprintf(key, sizeof(key), " %s ", type);
	return stat_value("events", key);
}

/* What every mirror maps now: the sum of the "mirror N:" lines' pages. */
static long mirrored_pages(void)
{
	FILE *f = fopen(STATS, "r");
	char buf[1024], *p;
	long v = 0;

	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f)) {
		p = strstr(buf, " pages ");
		if (!strncmp(buf, "mirror ", 7) && p)
			v += strtol(p + 7, NULL, 10);
	}
	fclose(f);
	return v;
}

/* HMM_DUMMY_BATCH: 0 or the errno. */
static int batch(int fd, struct hmm_dummy_batch_entry *e, unsigned int n, void *data,
		 unsigned int *refaults)
{
	struct hmm_dummy_batch b = {
		.entries = (uintptr_t)e, .data = (uintptr_t)data, .count = n,
	};
	int ret = ioctl(fd, HMM_DUMMY_BATCH, &b) ? errno : 0;

	if (refaults)
		*refaults = b.refaults;
	return ret;
}

FIXTURE(batch)
{
	int fd;
	char *buf;
	char *data;
};

FIXTURE_SETUP(batch)
{
	unsigned long k;

	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->buf = map_aligned(SIZE);
	ASSERT_NE(self->buf, NULL);
	for (k = 0; k < NPAGES; k++)
		fill_page(self->buf + k * PAGE, 1, k);
	self->data = malloc(HMM_DUMMY_BATCH_MAX * PAGE);
	ASSERT_NE(self->data, NULL);
	/* The core's statistics: the tests count faults there. */
	ASSERT_GE(faults(), 0);
}

FIXTURE_TEARDOWN(batch)
{
	free(self->data);
	munmap(self->buf, SIZE);
	close(self->fd);
}

/*
 * 600 reads over both 2 MiB blocks, in random order, a quarter of them
 * repeats: each reads its page, and the batch is two faults, one per block.
 */
TEST_F(batch, unsorted_duplicates_one_fault_per_block)
{
	struct hmm_dummy_batch_entry e[600];
	unsigned int seed = 7, i, refaults;
	long before = faults();

	for (i = 0; i < 600; i++) {
		unsigned long k = i % 4 == 3 ? e[rand_r(&seed) % i].addr :
			(uintptr_t)self->buf + (rand_r(&seed) % NPAGES) * PAGE;

		e[i] = (struct hmm_dummy_batch_entry) { .addr = k };
	}
	/* The lowest and highest page of each block, so each window is known. */
	e[0].addr = (uintptr_t)self->buf + 3 * PAGE;
	e[1].addr = (uintptr_t)self->buf + SIZE - PAGE;
	ASSERT_EQ(batch(self->fd, e, 600, self->data, &refaults), 0);
	for (i = 0; i < 600; i++) {
		unsigned long k = (e[i].addr - (uintptr_t)self->buf) / PAGE;

		ASSERT_EQ(e[i].status, 0) TH_LOG("entry %u (page %lu)", i, k);
		ASSERT_EQ(page_differs(self->data + i * PAGE, 1, k), -1)
			TH_LOG("entry %u: not page %lu's bytes", i, k);
	}
	/* One window per block; a refault (an invalidation in between) is one more. */
	EXPECT_EQ(faults() - before, BLOCKS + refaults);
}

/*
 * No @data: the entries are only faulted, as a GPU's fault handler does.
 * Their statuses as with data, one fault per block; the mirror maps each
 * window (block 0's from page 3 to page 40, block 1's one page), and
 * nothing is read or written.
 */
TEST_F(batch, fault_only_maps_without_access)
{
	char *b0 = self->buf, *b1 = self->buf + HUGE;
	struct hmm_dummy_batch_entry e[4] = {
		{ .addr = (uintptr_t)(b0 + 40 * PAGE), .write = 1 },
		{ .addr = (uintptr_t)(b0 + 3 * PAGE) },
		{ .addr = (uintptr_t)(b1 + 7 * PAGE) },
		{ .addr = (uintptr_t)(b0 + 3 * PAGE), .write = 1 },
	};
	long before = faults(), pages = mirrored_pages();
	unsigned int i, refaults = 1;

	ASSERT_GE(pages, 0);
	ASSERT_EQ(batch(self->fd, e, 4, NULL, &refaults), 0);
	for (i = 0; i < 4; i++)
		ASSERT_EQ(e[i].status, 0) TH_LOG("entry %u", i);
	EXPECT_EQ(refaults, 0);
	EXPECT_EQ(faults() - before, BLOCKS);
	EXPECT_GE(mirrored_pages() - pages, 38 + 1);
	EXPECT_EQ(page_differs(b0 + 40 * PAGE, 1, 40), -1);
	EXPECT_EQ(page_differs(b0 + 3 * PAGE, 1, 3), -1);
}

/*
 * A batch the mirror maps already, as a fault buffer repeats faults:
 * no fault, each window counted as mirrored; a write where only reads
 * were mirrored faults again.
 */
TEST_F(batch, repeat_is_not_faulted_again)
{
	struct hmm_dummy_batch_entry e[3] = {
		{ .addr = (uintptr_t)(self->buf + 5 * PAGE) },
		{ .addr = (uintptr_t)(self->buf + 9 * PAGE) },
		{ .addr = (uintptr_t)(self->buf + HUGE + 2 * PAGE) },
	};
	long before = faults(), mirrored = stat_value("faults", "batch windows mirrored ");
	unsigned int i;

	ASSERT_GE(mirrored, 0);
	ASSERT_EQ(batch(self->fd, e, 3, NULL, NULL), 0);
	EXPECT_EQ(faults() - before, BLOCKS);
	ASSERT_EQ(batch(self->fd, e, 3, NULL, NULL), 0);
	for (i = 0; i < 3; i++)
		ASSERT_EQ(e[i].status, 0) TH_LOG("entry %u", i);
	EXPECT_EQ(faults() - before, BLOCKS);
	EXPECT_EQ(stat_value("faults", "batch windows mirrored ") - mirrored, BLOCKS);
	e[1].write = 1;
	ASSERT_EQ(batch(self->fd, e, 3, NULL, NULL), 0);
	EXPECT_EQ(e[1].status, 0);
	EXPECT_EQ(faults() - before, BLOCKS + 1);
	EXPECT_EQ(stat_value("faults", "batch windows mirrored ") - mirrored, BLOCKS + 1);
}

/*
 * A read and a write of one page in one batch: one window, faulted for
 * writing (write wins); the read before the write gets the old bytes, the
 * one after the new, and the CPU sees what the device wrote.
 */
TEST_F(batch, mixed_read_write_write_wins)
{
	char *p = self->buf + 10 * PAGE, *q = self->buf + 20 * PAGE;
	struct hmm_dummy_batch_entry e[5] = {
		{ .addr = (uintptr_t)p },
		{ .addr = (uintptr_t)p, .write = 1 },
		{ .addr = (uintptr_t)q },
		{ .addr = (uintptr_t)q, .write = 1 },
		{ .addr = (uintptr_t)p },
	};
	long reads = events("device_read_fault"), writes = events("device_write_fault");
	unsigned int i, refaults;

	ASSERT_GE(reads, 0);
	ASSERT_GE(writes, 0);
	fill_page(self->data + 1 * PAGE, 2, 10);
	fill_page(self->data + 3 * PAGE, 2, 20);
	ASSERT_EQ(batch(self->fd, e, 5, self->data, &refaults), 0);
	for (i = 0; i < 5; i++)
		ASSERT_EQ(e[i].status, 0) TH_LOG("entry %u", i);
	EXPECT_EQ(page_differs(self->data, 1, 10), -1);
	EXPECT_EQ(page_differs(self->data + 2 * PAGE, 1, 20), -1);
	EXPECT_EQ(page_differs(self->data + 4 * PAGE, 2, 10), -1);
	EXPECT_EQ(page_differs(p, 2, 10), -1);
	EXPECT_EQ(page_differs(q, 2, 20), -1);
	/* One write fault for the window, no read fault. */
	if (!refaults) {
		EXPECT_EQ(events("device_write_fault") - writes, 1);
		EXPECT_EQ(events("device_read_fault") - reads, 0);
	}
}

/*
 * Bad entries among good ones in the same 2 MiB: each bad one fails with
 * its own errno, the good ones read or write as if it were not there.
 */
TEST_F(batch, bad_entries_fail_alone)
{
	char *hole = self->buf + 8 * PAGE, *ro = self->buf + 9 * PAGE;
	struct hmm_dummy_batch_entry e[24];
	static const int want[8] = { -EFAULT, -EFAULT, -EINVAL, -EINVAL, -EINVAL, -EPERM, 0, 0 };
	unsigned int i, j, seed, refaults;

	ASSERT_EQ(munmap(hole, PAGE), 0);
	ASSERT_EQ(mprotect(ro, PAGE, PROT_READ), 0);
	for (i = 0; i < 16; i++)
		e[i] = (struct hmm_dummy_batch_entry) {
			.addr = (uintptr_t)self->buf + (i < 8 ? i : i + 2) * PAGE,
			.write = i % 3 == 0,
		};
	e[16] = (struct hmm_dummy_batch_entry) { .addr = (uintptr_t)hole };
	/* Above user space (no VMA), beyond what a mirror maps, unaligned. */
	e[17] = (struct hmm_dummy_batch_entry) { .addr = 1ULL << 47 };
	e[18] = (struct hmm_dummy_batch_entry) { .addr = 1ULL << 60 };
	e[19] = (struct hmm_dummy_batch_entry) { .addr = (uintptr_t)self->buf + 1 };
	e[20] = (struct hmm_dummy_batch_entry) { .addr = (uintptr_t)self->buf, .write = 2 };
	e[21] = (struct hmm_dummy_batch_entry) { .addr = (uintptr_t)ro, .write = 1 };
	e[22] = (struct hmm_dummy_batch_entry) { .addr = (uintptr_t)ro };
	e[23] = (struct hmm_dummy_batch_entry) { .addr = (uintptr_t)self->buf + 11 * PAGE };
	for (i = 0; i < 24; i++) {
		unsigned long k = (e[i].addr - (uintptr_t)self->buf) / PAGE;

		if (e[i].write)
			fill_page(self->data + i * PAGE, 3, k);
	}
	ASSERT_EQ(batch(self->fd, e, 24, self->data, &refaults), 0);
	for (i = 0; i < 24; i++) {
		unsigned long k = (e[i].addr - (uintptr_t)self->buf) / PAGE;
		int good = i < 16 || i >= 22;

		EXPECT_EQ(e[i].status, good ? 0 : want[i - 16]) TH_LOG("entry %u", i);
		if (!good || e[i].status)
			continue;
		if (e[i].write) {
			EXPECT_EQ(page_differs(self->buf + k * PAGE, 3, k), -1);
			continue;
		}
		/*
		 * Entries are done in order: a read after a write sees it
		 * (unless the write's mapping went away first: refaulted
		 * entries are done last).
		 */
		for (j = 0, seed = 1; j < i; j++)
			if (e[j].write && e[j].addr == e[i].addr && !e[j].status)
				seed = 3;
		if (refaults && seed == 3 && page_differs(self->data + i * PAGE, 1, k) == -1)
			continue;
		EXPECT_EQ(page_differs(self->data + i * PAGE, seed, k), -1)
			TH_LOG("entry %u: not page %lu's bytes of seed %u", i, k, seed);
	}
}

/* READ or WRITE of one page alone: 0 or the errno. */
static int alone(int fd, const struct hmm_dummy_batch_entry *e, void *page)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = e->addr, .ptr = (uintptr_t)page, .npages = 1,
	};

	return ioctl(fd, e->write ? HMM_DMIRROR_WRITE : HMM_DMIRROR_READ, &cmd) ? errno : 0;
}

/*
 * A random batch over memory with holes, read-only and inaccessible pages
 * (writes write back what the page holds, so order does not matter): each
 * entry's status and bytes are those of a READ or WRITE of it alone, and
 * of a batch of it alone.
 */
TEST_F_TIMEOUT(batch, results_as_each_alone, 600)
{
	struct hmm_dummy_batch_entry e[200], one;
	char *page = malloc(PAGE);
	unsigned int seed = 11, i, bad = 0;
	unsigned long k;

	ASSERT_NE(page, NULL);
	for (k = 5; k < NPAGES; k += 37) {
		int err = k % 3 == 0 ? munmap(self->buf + k * PAGE, PAGE) :
			  mprotect(self->buf + k * PAGE, PAGE, k % 3 == 1 ? PROT_READ : PROT_NONE);

		ASSERT_EQ(err, 0);
	}
	for (i = 0; i < 200; i++) {
		k = rand_r(&seed) % NPAGES;
		e[i] = (struct hmm_dummy_batch_entry) {
			.addr = (uintptr_t)self->buf + k * PAGE, .write = rand_r(&seed) % 4 == 0,
		};
		fill_page(self->data + i * PAGE, 1, k);
	}
	ASSERT_EQ(batch(self->fd, e, 200, self->data, NULL), 0);
	for (i = 0; i < 200; i++) {
		int ret;

		k = (e[i].addr - (uintptr_t)self->buf) / PAGE;
		fill_page(page, 1, k);
		ret = alone(self->fd, &e[i], page);
		EXPECT_EQ(e[i].status, -ret) TH_LOG("entry %u (page %lu, %s)", i, k,
						    e[i].write ? "write" : "read");
		one = (struct hmm_dummy_batch_entry) { .addr = e[i].addr, .write = e[i].write };
		fill_page(page, 1, k);
		ASSERT_EQ(batch(self->fd, &one, 1, page, NULL), 0);
		EXPECT_EQ(one.status, e[i].status) TH_LOG("entry %u alone", i);
		bad += e[i].status != 0;
		if (e[i].status || e[i].write)
			continue;
		EXPECT_EQ(page_differs(self->data + i * PAGE, 1, k), -1)
			TH_LOG("entry %u: not page %lu's bytes", i, k);
	}
	/* The memory had bad pages: some entries must have failed. */
	EXPECT_GT(bad, 0);
	free(page);
}

TEST_F(batch, sizes)
{
	struct hmm_dummy_batch_entry *e = calloc(HMM_DUMMY_BATCH_MAX + 1, sizeof(*e));
	unsigned int i;

	ASSERT_NE(e, NULL);
	for (i = 0; i <= HMM_DUMMY_BATCH_MAX; i++)
		e[i].addr = (uintptr_t)self->buf + (i % NPAGES) * PAGE;
	EXPECT_EQ(batch(self->fd, e, HMM_DUMMY_BATCH_MAX + 1, self->data, NULL), EINVAL);
	EXPECT_EQ(batch(self->fd, e, 0, self->data, NULL), 0);
	ASSERT_EQ(batch(self->fd, e, HMM_DUMMY_BATCH_MAX, self->data, NULL), 0);
	for (i = 0; i < HMM_DUMMY_BATCH_MAX; i++) {
		ASSERT_EQ(e[i].status, 0) TH_LOG("entry %u", i);
		ASSERT_EQ(page_differs(self->data + i * PAGE, 1, i % NPAGES), -1);
	}
	free(e);
}

/* The munmap race: 64 pages, one of which a thread keeps replacing. */
#define RACE_PAGES	64
#define RACE_LIMIT_S	20.0
#define RACE_MIN	5

struct racer {
	char *buf;
	atomic_uint gen[RACE_PAGES];	/* odd: going away; even: mapped, filled */
	atomic_int stop;
	atomic_ulong rounds;
};

static void race_fill(char *page, unsigned long k, unsigned int gen)
{
	fill_page(page, gen, k);
}

/*
 * Unmaps one random page, maps a fresh one there and fills it with its
 * new generation, until told to stop.
 */
static void *racer(void *arg)
{
	struct racer *r = arg;
	unsigned int seed = 3;

	while (!atomic_load(&r->stop)) {
		unsigned long k = rand_r(&seed) % RACE_PAGES;
		char *p = r->buf + k * PAGE;

		atomic_fetch_add(&r->gen[k], 1);
		munmap(p, PAGE);
		if (mmap(p, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) == MAP_FAILED)
			break;
		madvise(p, PAGE, MADV_NOHUGEPAGE);
		race_fill(p, k, atomic_fetch_add(&r->gen[k], 1) + 1);
		atomic_fetch_add(&r->rounds, 1);
	}
	return NULL;
}

static double seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Batches of reads of the 64 pages while the racer replaces them: each
 * entry either read its page's bytes of a generation that was mapped while
 * the batch ran (or zeros: a fresh page not filled yet), or failed with
 * -EFAULT while its page was going away; never older bytes (a page freed
 * after its munmap) nor another page's.
 */
TEST_F_TIMEOUT(batch, racing_munmap, 120)
{
	struct racer *r = calloc(1, sizeof(*r));
	struct hmm_dummy_batch_entry e[128];
	unsigned int gb[RACE_PAGES], ga[RACE_PAGES];
	unsigned long k, n = 0, efaults = 0, refaulted = 0;
	long races = stat_value("faults", "fault races ");
	double end = seconds() + RACE_LIMIT_S;
	unsigned int seed = 5, i, refaults;
	pthread_t thread;

	ASSERT_NE(r, NULL);
	ASSERT_GE(races, 0);
	r->buf = self->buf;
	for (k = 0; k < RACE_PAGES; k++)
		race_fill(self->buf + k * PAGE, k, 0);
	ASSERT_EQ(pthread_create(&thread, NULL, racer, r), 0);
	while (seconds() < end) {
		long raced = stat_value("faults", "fault races ") - races;

		if (n >= 100 && efaults + refaulted + raced >= RACE_MIN)
			break;
		for (i = 0; i < 128; i++)
			e[i] = (struct hmm_dummy_batch_entry) {
				.addr = (uintptr_t)self->buf + (rand_r(&seed) % RACE_PAGES) * PAGE,
			};
		for (k = 0; k < RACE_PAGES; k++)
			gb[k] = atomic_load(&r->gen[k]);
		ASSERT_EQ(batch(self->fd, e, 128, self->data, &refaults), 0);
		for (k = 0; k < RACE_PAGES; k++)
			ga[k] = atomic_load(&r->gen[k]);
		refaulted += refaults;
		for (i = 0; i < 128; i++) {
			const unsigned long long *w = (void *)(self->data + i * PAGE);
			unsigned long j;

			k = (e[i].addr - (uintptr_t)self->buf) / PAGE;
			if (e[i].status == -EFAULT) {
				/* Only while its page was going away. */
				EXPECT_TRUE(gb[k] % 2 || ga[k] != gb[k])
					TH_LOG("batch %lu, entry %u: -EFAULT, page %lu stayed",
					       n, i, k);
				efaults++;
				continue;
			}
			ASSERT_EQ(e[i].status, 0) TH_LOG("batch %lu, entry %u (page %lu)", n, i, k);
			for (j = 0; j < PAGE / sizeof(*w); j++) {
				unsigned int g = w[j] >> 32;

				if (!w[j])
					continue;
				if ((w[j] & 0xffffffffUL) != k || g % 2 || g < (gb[k] & ~1U) ||
				    g > ga[k])
					break;
			}
			ASSERT_EQ(j, PAGE / sizeof(*w))
				TH_LOG("batch %lu, entry %u, page %lu: word %lu: %#llx; gen %u..%u",
				       n, i, k, j, w[j], gb[k], ga[k]);
		}
		n++;
	}
	atomic_store(&r->stop, 1);
	pthread_join(thread, NULL);
	races = stat_value("faults", "fault races ") - races;
	TH_LOG("%lu batches of 128 reads; %lu entries -EFAULT, %lu refaulted; %ld races",
	       n, efaults, refaulted, races);
	TH_LOG("%lu pages replaced meanwhile", atomic_load(&r->rounds));
	/* A race test that did not race proves nothing. */
	ASSERT_GE(efaults + refaulted + races, RACE_MIN);
	free(r);
}

TEST_HARNESS_MAIN
