// SPDX-License-Identifier: GPL-2.0
/*
 * hmm_fuzz: a bounded, seeded ioctl fuzzer for hmm_dummy.
 *
 *   hmm_fuzz [-n CALLS] [-s SEED] [-p PROCESSES] [-u]
 *
 * Each of PROCESSES processes (one seed each, derived from SEED) makes
 * CALLS calls on /dev/hmm_dmirror0..1: random commands (test_hmm's, ours,
 * unknown ones; batches of hostile entries) with random and hostile
 * arguments (kernel addresses,
 * wrapping ranges, huge and zero page counts, unaligned addresses, bad user
 * pointers, 5-level addresses, huge ranges from mapped addresses), while
 * it also changes its own memory. Every call must return within BOUND_S
 * seconds, whatever range it names; the kernel's side (no oops, warning
 * or leak) is judged from the VM's log. First, the hostile RELEASE of issue 11
 * (a kernel address, 16 pages) is timed on its own.
 *
 * -u: dmirror uapi only: the device answers only lib/test_hmm_uapi.h (e.g.
 * rust_dmirror). hmm_dummy's own commands (HMM_DUMMY_EVENTS, _BATCH) are
 * never drawn (the first lines say so); unknown commands still are. Such a
 * device claims every command of the uapi: a third test fails if one of
 * them was answered ENOTTY.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
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
#define BUF_PAGES	64UL
#define BOUND_S		10.0
#define KERNEL_ADDR	0xffff888000000000UL
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

static double seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long long rs;

static unsigned long long rnd(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return rs;
}

/* The commands drawn from: cmds[], or (-u) all but hmm_dummy's own. */
static unsigned long drawn[32];
static unsigned int ndrawn;
static int uapi_only;		/* -u */

static const unsigned long cmds[] = {
	HMM_DMIRROR_READ, HMM_DMIRROR_WRITE, HMM_DMIRROR_MIGRATE_TO_DEV,
	HMM_DMIRROR_MIGRATE_TO_SYS, HMM_DMIRROR_SNAPSHOT, HMM_DMIRROR_EXCLUSIVE,
	HMM_DMIRROR_CHECK_EXCLUSIVE, HMM_DMIRROR_RELEASE, HMM_DMIRROR_FLAGS,
#ifdef HMM_DMIRROR_READ_UNLOCKED
	HMM_DMIRROR_READ_UNLOCKED,
#endif
	HMM_DUMMY_EVENTS, HMM_DUMMY_BATCH,
	_IOWR('H', 0x3f, struct hmm_dmirror_cmd), 0xdeadbeef,
};

/* hmm_dummy's own commands: not drawn with -u. */
static int is_dummy_cmd(unsigned long req)
{
	return req == HMM_DUMMY_EVENTS || req == HMM_DUMMY_BATCH;
}

/* A command of the dmirror uapi: known to any device that speaks it. */
static int is_uapi_cmd(unsigned long req)
{
	return !is_dummy_cmd(req) && req != _IOWR('H', 0x3f, struct hmm_dmirror_cmd) &&
	       req != 0xdeadbeef;
}

/*
 * An HMM_DUMMY_BATCH of hostile entries (the addresses pick_addr() gives,
 * read, write or a bad flag), a count from none to one too many, and a
 * data pointer as pick_ptr() gives it.
 */
static struct hmm_dummy_batch_entry batch_entries[HMM_DUMMY_BATCH_MAX + 1];

static unsigned long pick_addr(char *buf);
static unsigned long pick_ptr(char *out);

static void *pick_batch(struct hmm_dummy_batch *b, char *buf, char *out)
{
	unsigned int i, n;

	if (rnd() % 4 == 0)
		n = rnd() % 2 ? 0 : HMM_DUMMY_BATCH_MAX + 1;
	else if (rnd() % 3 == 0)
		n = rnd() % (HMM_DUMMY_BATCH_MAX + 1);
	else
		n = 1 + rnd() % 256;
	for (i = 0; i < n && i <= HMM_DUMMY_BATCH_MAX; i++)
		batch_entries[i] = (struct hmm_dummy_batch_entry) {
			.addr = pick_addr(buf), .write = rnd() % 8 ? rnd() % 2 : rnd(),
		};
	*b = (struct hmm_dummy_batch) {
		.entries = rnd() % 16 ? (uintptr_t)batch_entries : pick_ptr(out),
		.data = pick_ptr(out), .count = n,
	};
	return b;
}

/*
 * Mapped addresses most often (with the huge page counts of pick_npages(),
 * ranges that start in memory and run far past it); the top pages of
 * 4-level and 5-level user space (the guest's CPU has LA57: both are
 * valid there) and the first addresses beyond them.
 */
static char *high;	/* BUF_PAGES mapped above 4-level space, if 5-level */

static unsigned long pick_addr(char *buf)
{
	if (high && rnd() % 8 == 0)
		buf = high;
	switch (rnd() % 12) {
	case 0: return 0;
	case 1: return KERNEL_ADDR;
	case 2: return -PAGE;
	case 3: return (uintptr_t)buf + 1;
	case 4: return 0x7ffffffff000UL;
	case 5: return rnd() & ~(PAGE - 1);
	case 6: return 0x00fffffffffff000UL - (rnd() % 16) * PAGE;
	case 7: return 0x0100000000000000UL;
	case 8: return 0x0000800000000000UL;
	default: return (uintptr_t)buf + (rnd() % BUF_PAGES) * PAGE;
	}
}

static unsigned long pick_npages(void)
{
	switch (rnd() % 8) {
	case 0: return 0;
	case 1: return 1UL << 40;
	case 2: return -1UL >> 12;
	case 3: return -1UL;
	case 4: return rnd() % 4096;
	default: return 1 + rnd() % BUF_PAGES;
	}
}

static unsigned long pick_ptr(char *out)
{
	switch (rnd() % 6) {
	case 0: return 0;
	case 1: return KERNEL_ADDR;
	case 2: return rnd();
	default: return (uintptr_t)out;
	}
}

/*
 * One process's calls; returns how many exceeded the bound, and (-u) in
 * *@enotty how many commands of the uapi were answered ENOTTY.
 */
static int fuzz(int calls, int id, int *enotty)
{
	int fd[2] = { open("/dev/hmm_dmirror0", O_RDWR), open("/dev/hmm_dmirror1", O_RDWR) };
	char *buf = mmap(NULL, BUF_PAGES * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* Room for the largest transfer a valid range can ask for. */
	char *out = mmap(NULL, 4096 * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	unsigned long by_errno[256] = { 0 };
	double worst = 0;
	int slow = 0, writable = 1;

	*enotty = 0;
	if (fd[0] < 0 || fd[1] < 0 || buf == MAP_FAILED || out == MAP_FAILED)
		return -1;
	/* A hint above 47 bits is honoured only with 5-level paging. */
	high = mmap((void *)0x00f0000000000000UL, BUF_PAGES * PAGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (high == MAP_FAILED)
		high = NULL;
	else
		memset(high, 1, BUF_PAGES * PAGE);
	if (id == 0)
		printf("# 5-level user space: %s\n", high ? "yes, a buffer mapped above 2^47" : "no");
	for (int i = 0; i < calls; i++) {
		struct hmm_dmirror_cmd cmd = {
			.addr = pick_addr(buf),
			.ptr = pick_ptr(out),
			.npages = pick_npages(),
		};
		unsigned long req = drawn[rnd() % ndrawn];

		/*
		 * A snapshot of 2^40 pages into the 16 MiB buffer must cost
		 * what the buffer holds (16 Mi pages, nearly all of them
		 * holes between VMAs), within the bound.
		 */
		void *arg = rnd() % 16 ? (void *)&cmd : (void *)KERNEL_ADDR;
		struct hmm_dummy_batch b;
		double t;
		int err;

		/* The process's own memory changes under the device too. */
		switch (rnd() % 8) {
		case 0:
			if (writable)
				memset(buf, (int)rnd(), BUF_PAGES * PAGE);
			break;
		case 1:
			mprotect(buf, BUF_PAGES * PAGE, rnd() % 2 ? PROT_READ : PROT_NONE);
			writable = 0;
			break;
		case 2:
			mprotect(buf, BUF_PAGES * PAGE, PROT_READ | PROT_WRITE);
			madvise(buf, BUF_PAGES * PAGE, MADV_DONTNEED);
			writable = 1;
			break;
		}
		if (req == HMM_DUMMY_BATCH && arg != (void *)KERNEL_ADDR)
			arg = pick_batch(&b, buf, out);
		t = seconds();
		err = ioctl(fd[rnd() % 2], req, arg) ? errno : 0;
		t = seconds() - t;
		by_errno[err & 255]++;
		if (uapi_only && err == ENOTTY && is_uapi_cmd(req)) {
			if (!(*enotty)++)
				printf("# process %d call %d: cmd 0x%lx %s\n", id, i, req,
				       "of the dmirror uapi answered ENOTTY");
		}
		if (t > worst)
			worst = t;
		if (t > BOUND_S) {
			printf("# process %d call %d: cmd 0x%lx addr 0x%llx npages 0x%llx %.1f s\n",
			       id, i, req, (unsigned long long)cmd.addr,
			       (unsigned long long)cmd.npages, t);
			slow++;
		}
	}
	printf("# process %d: %d calls, slowest %.3f s; results:", id, calls, worst);
	for (int e = 0; e < 256; e++)
		if (by_errno[e])
			printf(" %s %lu", e ? strerrorname_np(e) ? strerrorname_np(e) : "?" : "ok",
			       by_errno[e]);
	printf("\n");
	fflush(stdout);
	return slow;
}

int main(int argc, char **argv)
{
	unsigned long long seed = (unsigned long long)time(NULL);
	int calls = 2000, procs = 3, opt, bad = 0, enotty = 0, fd, ntests;
	struct hmm_dmirror_cmd cmd = { .addr = KERNEL_ADDR, .npages = 16 };
	double t;

	while ((opt = getopt(argc, argv, "n:s:p:u")) != -1) {
		switch (opt) {
		case 'n':
			calls = atoi(optarg);
			break;
		case 's':
			seed = strtoull(optarg, NULL, 0);
			break;
		case 'p':
			procs = atoi(optarg);
			break;
		case 'u':
			uapi_only = 1;
			break;
		default:
			fprintf(stderr, "usage: %s [-n CALLS] [-s SEED] [-p PROCESSES] [-u]\n",
				argv[0]);
			return 2;
		}
	}
	static_assert(ARRAY_SIZE(cmds) <= ARRAY_SIZE(drawn), "drawn[] holds every command");
	for (unsigned int i = 0; i < ARRAY_SIZE(cmds); i++)
		if (!uapi_only || !is_dummy_cmd(cmds[i]))
			drawn[ndrawn++] = cmds[i];
	ntests = uapi_only ? 3 : 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n1..%d\n", ntests);
	printf("# hmm_fuzz -n %d -s %llu -p %d%s\n", calls, seed, procs, uapi_only ? " -u" : "");
	if (uapi_only)
		printf("# -u: dmirror uapi only; left out, as hmm_dummy's own: %s\n",
		       "HMM_DUMMY_EVENTS, HMM_DUMMY_BATCH");
	fd = open("/dev/hmm_dmirror0", O_RDWR);
	if (fd < 0) {
		printf("ok 1 # SKIP no /dev/hmm_dmirror0\nok 2 # SKIP\n%s",
		       uapi_only ? "ok 3 # SKIP\n" : "");
		printf("# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:%d error:0\n", ntests);
		return 4;
	}
	t = seconds();
	ioctl(fd, HMM_DMIRROR_RELEASE, &cmd);
	t = seconds() - t;
	printf("# the hostile RELEASE (addr 0x%lx, 16 pages) took %.3f s\n", KERNEL_ADDR, t);
	printf("%sok 1 a RELEASE with a kernel address returns within a second\n",
	       t > 1.0 ? "not " : "");
	close(fd);

	for (int p = 0; p < procs; p++) {
		if (fork() == 0) {
			int slow, n;

			rs = seed * 0x9e3779b97f4a7c15ULL + p + 1;
			slow = fuzz(calls, p, &n);
			/* Exit status: bit 0 a call over the bound, bit 1 (-u) an ENOTTY. */
			_exit((slow ? 1 : 0) | (n ? 2 : 0));
		}
	}
	for (int p = 0; p < procs; p++) {
		int status;

		if (wait(&status) < 0 || !WIFEXITED(status)) {
			bad++;
			continue;
		}
		bad += !!(WEXITSTATUS(status) & ~2);
		enotty += !!(WEXITSTATUS(status) & 2);
	}
	printf("%sok 2 %d processes x %d calls, each within %.0f s (seed %llu)\n",
	       bad ? "not " : "", procs, calls, BOUND_S, seed);
	if (uapi_only)
		printf("%sok 3 every command of the dmirror uapi known (no ENOTTY)%s\n",
		       enotty ? "not " : "", enotty ? " (see above)" : "");
	printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:0 error:0\n",
	       (t <= 1.0) + !bad + (uapi_only && !enotty), (t > 1.0) + !!bad + !!enotty);
	return bad || enotty ? 1 : 0;
}
