// SPDX-License-Identifier: GPL-2.0
/*
 * hmm_storm: the core under racing CPU page-table changes, with an oracle.
 *
 *   hmm_storm [-t SECONDS] [-s SEED] [-j THREADS] [-i]
 *
 * Several mirrors of this process's mm (three opens of /dev/hmm_dmirror0,
 * one of /dev/hmm_dmirror1) and REGIONS regions of 16 pages. Worker
 * threads pick a region and an operation at random (seeded: -s reproduces
 * a run's choices, not its timing): CPU writes, device reads and writes
 * through any mirror, munmap, mmap fresh, MADV_DONTNEED, mprotect
 * (read-only, none, read-write), mremap, fork with the child writing its
 * copy, migration to the device and back (through another mirror than the
 * one that migrated), snapshots, exclusive access; one more thread forks
 * children that work on their own mirrors and kills them mid-ioctl.
 *
 * The oracle cannot false-alarm: an operation on a region runs under that
 * region's lock, so when it completes the region's state (mapping,
 * protection, generation of its bytes) is known exactly. A device read
 * must then return exactly the current generation's bytes, or the errno
 * the state demands (EFAULT unmapped or PROT_NONE, EPERM for a write to
 * read-only memory); a device write must be what the CPU reads next; a
 * forked child's writes must not reach the parent. What the other regions'
 * operations do to the mm meanwhile is what races.
 *
 * -i: allocation failures are being injected (scripts/guest-init.sh sets
 * up failslab and fail_page_alloc for this task): an operation may then
 * also fail cleanly with ENOMEM, EAGAIN, EBUSY or EFAULT (hmm_range_fault()
 * reports a fault handler's VM_FAULT_OOM as EFAULT); data must still never
 * be wrong, and a failed device write leaves its region's bytes unknown
 * until the CPU writes it again.
 *
 * Output: TAP, one line per kind of failure (stale reads, lost device
 * writes, COW violations, unexpected errnos, hangs), the operation counts
 * and the seed. A watchdog reports an operation in flight for longer than
 * HANG_S seconds, with its name and region, and ends the run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

#define PAGE		4096UL
#define NPAGES		16UL
#define RSIZE		(NPAGES * PAGE)
#define REGIONS		12
#define MIRRORS		4
#define MAX_THREADS	8
#define HANG_S		60

enum state { RW, RO, NONE, UNMAPPED };
static const char *const state_name[] = { "rw", "ro", "none", "unmapped" };

struct region {
	pthread_mutex_t lock;
	char *slot[2];		/* the two places in the arena it may be */
	int at;			/* which slot it is mapped at */
	enum state state;
	unsigned int gen;	/* 0: zeros; else gen_byte(gen, page) */
	int unknown;		/* bytes unknown until the CPU writes again */
};

enum op {
	OP_CPU_WRITE, OP_DEV_READ, OP_DEV_WRITE, OP_MUNMAP, OP_MMAP, OP_DONTNEED,
	OP_PROT_RO, OP_PROT_NONE, OP_PROT_RW, OP_MREMAP, OP_FORK, OP_MIGRATE,
	OP_SNAPSHOT, OP_EXCLUSIVE, NOPS
};

static const char *const op_name[NOPS] = {
	"cpu_write", "device_read", "device_write", "munmap", "mmap_fresh", "dontneed",
	"mprotect_ro", "mprotect_none", "mprotect_rw", "mremap", "fork_child_writes",
	"migrate_there_and_back", "snapshot", "exclusive",
};

enum failure { STALE_READ, LOST_WRITE, COW_VIOLATION, BAD_ERRNO, HANG, NFAIL };
static const char *const fail_name[NFAIL] = {
	"no stale device reads", "no lost device writes", "no COW violations",
	"no unexpected errnos", "no hangs",
};

static struct region regions[REGIONS];
static int mirror_fd[MIRRORS];
static int inject;
/* Shared flags and the watchdog's view: read and written with __atomic_*. */
#define LOAD(x)		__atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
static int stop;
static unsigned long ops_done[NOPS];
static unsigned long failures[NFAIL];
static unsigned long clean_errors;
static unsigned long kills;
static unsigned long stayed;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;

/* What each worker is doing, for the watchdog. */
struct inflight {
	int op;			/* -1: none */
	int region;
	time_t since;
	pid_t tid;
	pid_t child;		/* the killer's child, being killed */
};

static int finished;		/* threads that returned */
static struct inflight inflight[MAX_THREADS + 1];

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

static unsigned char gen_byte(unsigned int gen, unsigned long page)
{
	return gen ? (unsigned char)(gen * 31 + page * 7) | 1 : 0;
}

static void fill(char *p, unsigned int gen)
{
	for (unsigned long i = 0; i < NPAGES; i++)
		memset(p + i * PAGE, gen_byte(gen, i), PAGE);
}

/* The first page of @p (16 pages) that is not generation @gen, or -1. */
static long mismatch(const char *p, unsigned int gen)
{
	for (unsigned long i = 0; i < NPAGES; i++) {
		unsigned char want = gen_byte(gen, i);

		for (unsigned long k = 0; k < PAGE; k++)
			if ((unsigned char)p[i * PAGE + k] != want)
				return i;
	}
	return -1;
}

static int dmirror(int fd, unsigned long req, void *addr, void *ptr, unsigned long npages)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)addr,
		.ptr = (uintptr_t)ptr,
		.npages = npages,
	};

	return ioctl(fd, req, &cmd) ? errno : 0;
}

/*
 * Whether @err is what @want allows; under injection, clean allocation
 * failures too (counted).
 */
static int expect(int err, int want, const char *what, struct region *r)
{
	if (err == want)
		return 1;
	if (inject && (err == ENOMEM || err == EAGAIN || err == EBUSY || err == EFAULT)) {
		__atomic_fetch_add(&clean_errors, 1, __ATOMIC_RELAXED);
		return 0;
	}
	fail(BAD_ERRNO, "%s on a %s region: %s, expected %s", what, state_name[r->state],
	     err ? strerror(err) : "success", want ? strerror(want) : "success");
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

/* The region's bytes, read by the CPU (it must be readable: made so). */
static void cpu_check(struct region *r, const char *after)
{
	char *p = r->slot[r->at];
	long bad;

	if (r->state != RW && r->state != RO)
		return;
	if (r->state == RO || r->unknown)
		return;
	bad = mismatch(p, r->gen);
	if (bad >= 0)
		fail(LOST_WRITE, "after %s, CPU sees page %ld as 0x%02x, expected 0x%02x", after,
		     bad, (unsigned char)p[bad * PAGE], gen_byte(r->gen, bad));
}

static void do_op(enum op op, struct region *r, unsigned long long *rs, char *buf)
{
	int fd = mirror_fd[rnd(rs) % MIRRORS], fd2 = mirror_fd[rnd(rs) % 3];
	char *p = r->slot[r->at];
	int err;
	long bad;

	switch (op) {
	case OP_CPU_WRITE:
		if (r->state != RW)
			return;
		r->gen++;
		fill(p, r->gen);
		r->unknown = 0;
		break;
	case OP_DEV_READ:
		err = dmirror(fd, HMM_DMIRROR_READ, p, buf, NPAGES);
		if (!expect(err, read_errno(r->state), "device read", r) || err || r->unknown)
			break;
		bad = mismatch(buf, r->gen);
		if (bad >= 0)
			fail(STALE_READ, "device read page %ld as 0x%02x, expected 0x%02x (gen %u)",
			     bad, (unsigned char)buf[bad * PAGE], gen_byte(r->gen, bad), r->gen);
		break;
	case OP_DEV_WRITE:
		fill(buf, r->gen + 1);
		err = dmirror(fd, HMM_DMIRROR_WRITE, p, buf, NPAGES);
		if (r->state == RW && err) {
			/* Some pages may have been written. */
			r->unknown = 1;
		}
		if (!expect(err, write_errno(r->state), "device write", r) || err)
			break;
		r->gen++;
		r->unknown = 0;
		cpu_check(r, "a device write");
		break;
	case OP_MUNMAP:
		if (r->state == UNMAPPED)
			return;
		if (munmap(p, RSIZE))
			fail(BAD_ERRNO, "munmap: %s", strerror(errno));
		r->state = UNMAPPED;
		break;
	case OP_MMAP:
		if (mmap(p, RSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) == MAP_FAILED) {
			fail(BAD_ERRNO, "mmap: %s", strerror(errno));
			return;
		}
		r->state = RW;
		r->gen = 0;
		r->unknown = 0;
		break;
	case OP_DONTNEED:
		if (r->state == UNMAPPED)
			return;
		if (madvise(p, RSIZE, MADV_DONTNEED))
			fail(BAD_ERRNO, "madvise: %s", strerror(errno));
		r->gen = 0;
		r->unknown = 0;
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
	case OP_FORK: {
		pid_t pid;
		int status;

		if (r->state != RW || r->unknown)
			return;
		pid = fork();
		if (pid == 0) {
			/* Only async-signal-safe work here: a threaded parent. */
			for (unsigned long i = 0; i < NPAGES; i++)
				p[i * PAGE] = (char)0xee;
			_exit(0);
		}
		if (pid < 0) {
			fail(BAD_ERRNO, "fork: %s", strerror(errno));
			return;
		}
		waitpid(pid, &status, 0);
		err = dmirror(fd, HMM_DMIRROR_READ, p, buf, NPAGES);
		if (!expect(err, 0, "device read after fork", r) || err)
			break;
		bad = mismatch(buf, r->gen);
		if (bad >= 0)
			fail(COW_VIOLATION,
			     "the child wrote, the device reads page %ld: 0x%02x, not 0x%02x", bad,
			     (unsigned char)buf[bad * PAGE], gen_byte(r->gen, bad));
		break;
	}
	case OP_MIGRATE:
		/* Like test_hmm, it reads the pages back into @buf. */
		err = dmirror(fd2, HMM_DMIRROR_MIGRATE_TO_DEV, p, buf, NPAGES);
		if (r->state == RW || r->state == RO) {
			/*
			 * ENOENT, as test_hmm: a page could neither move nor
			 * is it mirrored (busy: another thread's fork holds
			 * it a moment). Counted, not an error; the rest moved.
			 */
			if (err == ENOENT) {
				__atomic_fetch_add(&stayed, 1, __ATOMIC_RELAXED);
			} else {
				if (!expect(err, 0, "migration to the device", r))
					break;
				/* What the device read there is the data. */
				bad = r->unknown ? -1 : mismatch(buf, r->gen);
				if (bad >= 0)
					fail(STALE_READ,
					     "migrated, device reads page %ld: 0x%02x not 0x%02x",
					     bad, (unsigned char)buf[bad * PAGE],
					     gen_byte(r->gen, bad));
			}
		} else if (err != EINVAL && err != EFAULT) {
			expect(err, EINVAL, "migration to the device", r);
			break;
		}
		/*
		 * Back through another mirror of the same device (a CPU look
		 * now would fault the pages back itself).
		 */
		err = dmirror(mirror_fd[(fd2 == mirror_fd[0]) ? 1 : 0],
			      HMM_DMIRROR_MIGRATE_TO_SYS, p, NULL, NPAGES);
		if (r->state == RW || r->state == RO) {
			if (!expect(err, 0, "migration back", r))
				break;
		} else if (err != EINVAL && err != EFAULT) {
			expect(err, EINVAL, "migration back", r);
			break;
		}
		cpu_check(r, "a migration back");
		break;
	case OP_SNAPSHOT:
		err = dmirror(fd, HMM_DMIRROR_SNAPSHOT, p, buf, NPAGES);
		expect(err, 0, "snapshot", r);
		break;
	case OP_EXCLUSIVE:
		if (r->state != RW || r->unknown)
			return;
		err = dmirror(fd2, HMM_DMIRROR_EXCLUSIVE, p, buf, NPAGES);
		if (err == EBUSY)
			break;	/* pages that cannot be made exclusive now */
		if (!expect(err, 0, "exclusive access", r))
			break;
		/* The CPU takes the access back, with the bytes unchanged. */
		cpu_check(r, "exclusive access");
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
};

static void *worker(void *arg)
{
	struct worker *w = arg;
	unsigned long long rs = w->seed;
	struct inflight *me = &inflight[w->id];
	char *buf = aligned_alloc(PAGE, RSIZE);

	STORE(me->tid, gettid());
	if (!buf)
		return NULL;
	while (!LOAD(stop)) {
		int ri = rnd(&rs) % REGIONS;
		enum op op = rnd(&rs) % NOPS;
		struct region *r = &regions[ri];

		pthread_mutex_lock(&r->lock);
		STORE(me->region, ri);
		STORE(me->since, now());
		STORE(me->op, op);
		do_op(op, r, &rs, buf);
		STORE(me->op, -1);
		pthread_mutex_unlock(&r->lock);
	}
	free(buf);
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
		pid_t pid = fork();

		if (pid == 0) {
			int fd = open("/dev/hmm_dmirror0", O_RDWR);
			char *p = mmap(NULL, 512 * PAGE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			static char b[512 * PAGE];

			if (fd < 0 || p == MAP_FAILED)
				_exit(1);
			for (;;) {
				memset(p, 0x11, 512 * PAGE);
				dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, NULL, 512);
				dmirror(fd, HMM_DMIRROR_READ, p, b, 512);
				dmirror(fd, HMM_DMIRROR_WRITE, p, b, 512);
			}
		}
		if (pid < 0)
			break;
		usleep(1000 * (1 + rnd(&rs) % 50));
		STORE(me->since, now());
		STORE(me->child, pid);
		STORE(me->op, NOPS);	/* "killing a child" */
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		STORE(me->op, -1);
		__atomic_fetch_add(&kills, 1, __ATOMIC_RELAXED);
	}
	__atomic_fetch_add(&finished, 1, __ATOMIC_RELAXED);
	return NULL;
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

/* A hang: what each thread is doing, with its kernel stack. */
static void report_hang(int nthreads)
{
	char what[96];
	int fd;

	for (int i = 0; i <= nthreads; i++) {
		struct inflight *f = &inflight[i];
		int op = LOAD(f->op);

		if (op < 0)
			continue;
		snprintf(what, sizeof(what), "thread %d: %s on region %d for %ld s", i,
			 op == NOPS ? "killing a child" : op_name[op], LOAD(f->region),
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

int main(int argc, char **argv)
{
	unsigned long long seed = (unsigned long long)time(NULL);
	int seconds = 10, nthreads = 4, opt, tests = 0;
	pthread_t th[MAX_THREADS + 1];
	struct worker w[MAX_THREADS + 1];
	unsigned long total = 0;
	char *arena;
	time_t end;

	while ((opt = getopt(argc, argv, "t:s:j:i")) != -1) {
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
		default:
			fprintf(stderr, "usage: %s [-t SECONDS] [-s SEED] [-j THREADS] [-i]\n",
				argv[0]);
			return 2;
		}
	}
	if (nthreads < 1 || nthreads > MAX_THREADS)
		nthreads = 4;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n");
	printf("# hmm_storm -t %d -s %llu -j %d%s: %d regions, %d mirrors\n", seconds, seed,
	       nthreads, inject ? " -i" : "", REGIONS, MIRRORS);
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
	/* All regions' slots in one arena: nothing else maps there. */
	arena = mmap(NULL, 2 * REGIONS * RSIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED)
		return 1;
	for (int i = 0; i < REGIONS; i++) {
		struct region *r = &regions[i];

		pthread_mutex_init(&r->lock, NULL);
		r->slot[0] = arena + 2 * i * RSIZE;
		r->slot[1] = arena + (2 * i + 1) * RSIZE;
		munmap(r->slot[1], RSIZE);
		mmap(r->slot[0], RSIZE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		r->state = RW;
		r->gen = 1;
		fill(r->slot[0], 1);
	}
	for (int i = 0; i <= nthreads; i++) {
		w[i].id = i;
		w[i].seed = seed * 0x9e3779b97f4a7c15ULL + i + 1;
		STORE(inflight[i].op, -1);
		pthread_create(&th[i], NULL, i < nthreads ? worker : killer, &w[i]);
	}
	end = now() + seconds;
	/* The watchdog, until every thread has returned. */
	while (__atomic_load_n(&finished, __ATOMIC_RELAXED) <= nthreads && !failures[HANG]) {
		sleep(1);
		for (int i = 0; i <= nthreads; i++) {
			struct inflight *f = &inflight[i];
			int op = LOAD(f->op);

			if (op >= 0 && now() - LOAD(f->since) > HANG_S) {
				fail(HANG, "thread %d: %s on region %d for over %d s", i,
				     op == NOPS ? "killing a child" : op_name[op],
				     LOAD(f->region), HANG_S);
				STORE(stop, 1);
			}
		}
		if (now() >= end)
			STORE(stop, 1);
	}
	if (failures[HANG])
		report_hang(nthreads);
	else
		for (int i = 0; i <= nthreads; i++)
			pthread_join(th[i], NULL);

	for (int i = 0; i < NOPS; i++) {
		printf("# %-24s %lu\n", op_name[i], ops_done[i]);
		total += ops_done[i];
	}
	printf("# operations %lu, children killed mid-ioctl %lu, clean allocation errors %lu\n",
	       total, kills, clean_errors);
	printf("# migrations with pages that stayed (ENOENT) %lu\n", stayed);
	printf("1..%d\n", NFAIL + 1);
	for (int f = 0; f < NFAIL; f++)
		printf("%sok %d %s%s\n", failures[f] ? "not " : "", ++tests, fail_name[f],
		       failures[f] ? " (see above)" : "");
	/* A storm that did nothing proves nothing. */
	printf("%sok %d every kind of operation ran\n",
	       total && ops_done[OP_MIGRATE] && ops_done[OP_DEV_READ] && ops_done[OP_FORK] &&
	       kills ? "" : "not ", ++tests);
	printf("# seed %llu (hmm_storm -s %llu -t %d reproduces the choices)\n", seed, seed,
	       seconds);
	{
		int failed = 0;

		for (int f = 0; f < NFAIL; f++)
			failed += !!failures[f];
		failed += !(total && ops_done[OP_MIGRATE] && ops_done[OP_DEV_READ] &&
			    ops_done[OP_FORK] && kills);
		printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:0 error:0\n",
		       tests - failed, failed);
	}
	fflush(stdout);
	if (failures[HANG])
		_exit(1);
	return 0;
}
