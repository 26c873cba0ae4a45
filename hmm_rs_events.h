/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hmm-rs tracepoints (the hmm_rs: system). Defined in hmm_rs_events.c and
 * emitted from Rust (trace.rs), which tests each one's static key itself.
 * Ids: "mm" numbers an mm's HMM state, "mirror" a mirror, "devmem" a
 * device's memory; the same numbers as in /sys/kernel/debug/hmm_rs/stats.
 */
#undef TRACE_SYSTEM
#undef TRACE_INCLUDE_FILE
#undef TRACE_INCLUDE_PATH
#define TRACE_SYSTEM hmm_rs
#define TRACE_INCLUDE_FILE hmm_rs_events
#define TRACE_INCLUDE_PATH .

#if !defined(_HMM_RS_EVENTS_H) || defined(TRACE_HEADER_MULTI_READ)
#define _HMM_RS_EVENTS_H

#include <linux/mmu_notifier.h>
#include <linux/tracepoint.h>

/* enum hmm_rs_event_type of hmm_rs.h, as HmmEventType::name() spells it. */
#define hmm_rs_show_type(type)					\
	__print_symbolic(type,					\
			 { 1, "fork" },				\
			 { 2, "migrate" },			\
			 { 3, "munmap" },			\
			 { 4, "device_read_fault" },		\
			 { 5, "device_write_fault" },		\
			 { 6, "write_protect" })

/* The HMM_RS_PT_* flags an event keeps (not the driver's); none: entries go. */
#define hmm_rs_show_keep(keep)					\
	__print_flags(keep, "|",				\
		      { 1, "valid" },				\
		      { 2, "write" },				\
		      { 4, "dirty" },				\
		      { 8, "device" },				\
		      { 16, "exclusive" })

/* So that user-space tools can decode the notifier codes too. */
TRACE_DEFINE_ENUM(MMU_NOTIFY_UNMAP);
TRACE_DEFINE_ENUM(MMU_NOTIFY_CLEAR);
TRACE_DEFINE_ENUM(MMU_NOTIFY_PROTECTION_VMA);
TRACE_DEFINE_ENUM(MMU_NOTIFY_PROTECTION_PAGE);
TRACE_DEFINE_ENUM(MMU_NOTIFY_SOFT_DIRTY);
TRACE_DEFINE_ENUM(MMU_NOTIFY_RELEASE);
TRACE_DEFINE_ENUM(MMU_NOTIFY_MIGRATE);
TRACE_DEFINE_ENUM(MMU_NOTIFY_EXCLUSIVE);

#define hmm_rs_show_code(code)					\
	__print_symbolic(code,					\
			 { MMU_NOTIFY_UNMAP, "unmap" },		\
			 { MMU_NOTIFY_CLEAR, "clear" },		\
			 { MMU_NOTIFY_PROTECTION_VMA, "protection_vma" }, \
			 { MMU_NOTIFY_PROTECTION_PAGE, "protection_page" }, \
			 { MMU_NOTIFY_SOFT_DIRTY, "soft_dirty" }, \
			 { MMU_NOTIFY_RELEASE, "release" },	\
			 { MMU_NOTIFY_MIGRATE, "migrate" },	\
			 { MMU_NOTIFY_EXCLUSIVE, "exclusive" })

/* The core's notifier saw a CPU page-table change, as the event @type. */
TRACE_EVENT(hmm_rs_invalidate,
	TP_PROTO(u64 mm, unsigned int code, unsigned int type,
		 unsigned long start, unsigned long end, u64 keep,
		 bool blockable, unsigned int mirrors),
	TP_ARGS(mm, code, type, start, end, keep, blockable, mirrors),
	TP_STRUCT__entry(
		__field(u64, mm)
		__field(unsigned int, code)
		__field(unsigned int, type)
		__field(unsigned long, start)
		__field(unsigned long, end)
		__field(u64, keep)
		__field(bool, blockable)
		__field(unsigned int, mirrors)
	),
	TP_fast_assign(
		__entry->mm = mm;
		__entry->code = code;
		__entry->type = type;
		__entry->start = start;
		__entry->end = end;
		__entry->keep = keep;
		__entry->blockable = blockable;
		__entry->mirrors = mirrors;
	),
	TP_printk("mm=%llu code=%s type=%s start=0x%lx end=0x%lx keep=%s blockable=%d mirrors=%u",
		  __entry->mm, hmm_rs_show_code(__entry->code),
		  hmm_rs_show_type(__entry->type), __entry->start,
		  __entry->end, hmm_rs_show_keep(__entry->keep & 0x1f),
		  __entry->blockable, __entry->mirrors)
);

/*
 * One mirror has applied an invalidation: @entries changed (removed if the
 * event keeps no "valid"), @dirtied pages marked dirty; @two_pass: its
 * device was waited for in a second pass; !@applied: the device could not
 * finish (non-blockable), the table is unchanged and mm retries.
 */
TRACE_EVENT(hmm_rs_mirror_update,
	TP_PROTO(u64 mirror, unsigned int type, unsigned long start,
		 unsigned long end, unsigned long entries,
		 unsigned long dirtied, bool two_pass, bool applied),
	TP_ARGS(mirror, type, start, end, entries, dirtied, two_pass, applied),
	TP_STRUCT__entry(
		__field(u64, mirror)
		__field(unsigned int, type)
		__field(unsigned long, start)
		__field(unsigned long, end)
		__field(unsigned long, entries)
		__field(unsigned long, dirtied)
		__field(bool, two_pass)
		__field(bool, applied)
	),
	TP_fast_assign(
		__entry->mirror = mirror;
		__entry->type = type;
		__entry->start = start;
		__entry->end = end;
		__entry->entries = entries;
		__entry->dirtied = dirtied;
		__entry->two_pass = two_pass;
		__entry->applied = applied;
	),
	TP_printk("mirror=%llu type=%s start=0x%lx end=0x%lx entries=%lu dirtied=%lu two_pass=%d applied=%d",
		  __entry->mirror, hmm_rs_show_type(__entry->type),
		  __entry->start, __entry->end, __entry->entries,
		  __entry->dirtied, __entry->two_pass, __entry->applied)
);

DECLARE_EVENT_CLASS(hmm_rs_mirror_mm,
	TP_PROTO(u64 mirror, u64 mm),
	TP_ARGS(mirror, mm),
	TP_STRUCT__entry(
		__field(u64, mirror)
		__field(u64, mm)
	),
	TP_fast_assign(
		__entry->mirror = mirror;
		__entry->mm = mm;
	),
	TP_printk("mirror=%llu mm=%llu", __entry->mirror, __entry->mm)
);

/* A mirror was registered for the mm, or unregistered (@mm = 0). */
DEFINE_EVENT(hmm_rs_mirror_mm, hmm_rs_mirror_register,
	TP_PROTO(u64 mirror, u64 mm),
	TP_ARGS(mirror, mm));

/* The mm of a mirror went away (its last user exited). */
DEFINE_EVENT(hmm_rs_mirror_mm, hmm_rs_release,
	TP_PROTO(u64 mirror, u64 mm),
	TP_ARGS(mirror, mm));

/* A device fault of [@start, @end) begins. */
TRACE_EVENT(hmm_rs_fault_begin,
	TP_PROTO(u64 mirror, unsigned int type, unsigned long start,
		 unsigned long end),
	TP_ARGS(mirror, type, start, end),
	TP_STRUCT__entry(
		__field(u64, mirror)
		__field(unsigned int, type)
		__field(unsigned long, start)
		__field(unsigned long, end)
	),
	TP_fast_assign(
		__entry->mirror = mirror;
		__entry->type = type;
		__entry->start = start;
		__entry->end = end;
	),
	TP_printk("mirror=%llu type=%s start=0x%lx end=0x%lx",
		  __entry->mirror, hmm_rs_show_type(__entry->type),
		  __entry->start, __entry->end)
);

/*
 * A device fault ends: @result 0 or a negative errno, @retries chunks
 * faulted in again because an invalidation raced, @huge 2 MiB entries made.
 */
TRACE_EVENT(hmm_rs_fault_end,
	TP_PROTO(u64 mirror, unsigned int type, unsigned long start,
		 unsigned long end, int result, unsigned int retries,
		 unsigned int huge),
	TP_ARGS(mirror, type, start, end, result, retries, huge),
	TP_STRUCT__entry(
		__field(u64, mirror)
		__field(unsigned int, type)
		__field(unsigned long, start)
		__field(unsigned long, end)
		__field(int, result)
		__field(unsigned int, retries)
		__field(unsigned int, huge)
	),
	TP_fast_assign(
		__entry->mirror = mirror;
		__entry->type = type;
		__entry->start = start;
		__entry->end = end;
		__entry->result = result;
		__entry->retries = retries;
		__entry->huge = huge;
	),
	TP_printk("mirror=%llu type=%s start=0x%lx end=0x%lx result=%d retries=%u huge=%u",
		  __entry->mirror, hmm_rs_show_type(__entry->type),
		  __entry->start, __entry->end, __entry->result,
		  __entry->retries, __entry->huge)
);

DECLARE_EVENT_CLASS(hmm_rs_range_result,
	TP_PROTO(u64 mirror, unsigned long start, unsigned long end,
		 int result),
	TP_ARGS(mirror, start, end, result),
	TP_STRUCT__entry(
		__field(u64, mirror)
		__field(unsigned long, start)
		__field(unsigned long, end)
		__field(int, result)
	),
	TP_fast_assign(
		__entry->mirror = mirror;
		__entry->start = start;
		__entry->end = end;
		__entry->result = result;
	),
	TP_printk("mirror=%llu start=0x%lx end=0x%lx result=%d",
		  __entry->mirror, __entry->start, __entry->end,
		  __entry->result)
);

/* A snapshot of [@start, @end) was taken (the mirror is unchanged). */
DEFINE_EVENT(hmm_rs_range_result, hmm_rs_snapshot,
	TP_PROTO(u64 mirror, unsigned long start, unsigned long end,
		 int result),
	TP_ARGS(mirror, start, end, result));

/* The device was given exclusive access to [@start, @end). */
DEFINE_EVENT(hmm_rs_range_result, hmm_rs_exclusive,
	TP_PROTO(u64 mirror, unsigned long start, unsigned long end,
		 int result),
	TP_ARGS(mirror, start, end, result));

/*
 * A migration of [@start, @end) to the device or back: @moved pages moved
 * in @steps steps (of at most 2 MiB each, retried steps counted); @stayed
 * pages were still busy after the retries and @not_placed found no free
 * device page; @result is @moved or a negative errno.
 */
TRACE_EVENT(hmm_rs_migrate,
	TP_PROTO(u64 mirror, bool to_device, unsigned long start,
		 unsigned long end, long result, unsigned long moved,
		 unsigned int steps, unsigned long stayed,
		 unsigned long not_placed),
	TP_ARGS(mirror, to_device, start, end, result, moved, steps, stayed,
		not_placed),
	TP_STRUCT__entry(
		__field(u64, mirror)
		__field(bool, to_device)
		__field(unsigned long, start)
		__field(unsigned long, end)
		__field(long, result)
		__field(unsigned long, moved)
		__field(unsigned int, steps)
		__field(unsigned long, stayed)
		__field(unsigned long, not_placed)
	),
	TP_fast_assign(
		__entry->mirror = mirror;
		__entry->to_device = to_device;
		__entry->start = start;
		__entry->end = end;
		__entry->result = result;
		__entry->moved = moved;
		__entry->steps = steps;
		__entry->stayed = stayed;
		__entry->not_placed = not_placed;
	),
	TP_printk("mirror=%llu to=%s start=0x%lx end=0x%lx result=%ld moved=%lu steps=%u stayed=%lu not_placed=%lu",
		  __entry->mirror, __entry->to_device ? "device" : "system",
		  __entry->start, __entry->end, __entry->result,
		  __entry->moved, __entry->steps, __entry->stayed,
		  __entry->not_placed)
);

/*
 * Device memory was emptied: of its @npages, @in_use were in use and @moved
 * came back to system memory (or a negative errno).
 */
TRACE_EVENT(hmm_rs_devmem_evict,
	TP_PROTO(u64 devmem, unsigned long npages, unsigned long in_use,
		 long moved),
	TP_ARGS(devmem, npages, in_use, moved),
	TP_STRUCT__entry(
		__field(u64, devmem)
		__field(unsigned long, npages)
		__field(unsigned long, in_use)
		__field(long, moved)
	),
	TP_fast_assign(
		__entry->devmem = devmem;
		__entry->npages = npages;
		__entry->in_use = in_use;
		__entry->moved = moved;
	),
	TP_printk("devmem=%llu npages=%lu in_use=%lu moved=%ld",
		  __entry->devmem, __entry->npages, __entry->in_use,
		  __entry->moved)
);

/*
 * Thrash control: a migration to the device skipped the 2 MiB block at
 * @addr because it is held (@held), or the block moved again too soon and
 * is now held for @hold_ns.
 */
TRACE_EVENT(hmm_rs_thrash,
	TP_PROTO(u64 mirror, unsigned long addr, u64 hold_ns, bool held),
	TP_ARGS(mirror, addr, hold_ns, held),
	TP_STRUCT__entry(
		__field(u64, mirror)
		__field(unsigned long, addr)
		__field(u64, hold_ns)
		__field(bool, held)
	),
	TP_fast_assign(
		__entry->mirror = mirror;
		__entry->addr = addr;
		__entry->hold_ns = hold_ns;
		__entry->held = held;
	),
	TP_printk("mirror=%llu addr=0x%lx action=%s hold_ns=%llu",
		  __entry->mirror, __entry->addr,
		  __entry->held ? "held" : "repeat", __entry->hold_ns)
);

#endif /* _HMM_RS_EVENTS_H */

/* This part must be outside protection */
#include <trace/define_trace.h>
