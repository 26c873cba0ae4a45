// SPDX-License-Identifier: GPL-2.0

//! Tracepoints: the `hmm_rs:` events of `hmm_rs_events.h`, behind safe
//! wrappers.
//!
//! Out-of-tree code cannot add the events to `bindings`, so their symbols
//! are declared here by hand, as [`kernel::tracepoint::declare_trace`]
//! would find them in `bindings`. A disabled event costs a static branch
//! (patched code with `CONFIG_JUMP_LABEL`, a load without).

use crate::hmm_event::{HmmEvent, HmmEventType};
use kernel::prelude::*;

/// Declares tracepoints of `hmm_rs_events.c` and an `unsafe fn` for each
/// that emits the event if it is enabled.
macro_rules! hmm_rs_tracepoints {
    ($($name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        #[cfg(CONFIG_TRACEPOINTS)]
        kernel::macros::paste! {
            // `struct tracepoint` holds a `lock_class_key`, empty (not
            // FFI-safe) without lockdep and not with it: `allow`, not
            // `expect`. Only its address crosses.
            #[allow(improper_ctypes)]
            extern "C" {
                $(
                    static [<__tracepoint_ $name>]: kernel::bindings::tracepoint;
                    fn [<rust_do_trace_ $name>]($($arg: $ty),*);
                )*
            }
            $(
                /// # Safety
                ///
                /// The arguments must be what the event's `TP_PROTO` says.
                // An event has the fields it has; `allow`, as only some
                // of the generated functions have more than seven.
                #[allow(clippy::too_many_arguments)]
                #[inline(always)]
                unsafe fn $name($($arg: $ty),*) {
                    // SAFETY: The static key of a tracepoint that
                    // hmm_rs_events.c defines.
                    let on = unsafe {
                        kernel::jump_label::static_branch_unlikely!(
                            [<__tracepoint_ $name>],
                            kernel::bindings::tracepoint,
                            key
                        )
                    };
                    if on {
                        // SAFETY: The event's function, called as its
                        // prototype says (the caller's guarantee).
                        unsafe { [<rust_do_trace_ $name>]($($arg),*) };
                    }
                }
            )*
        }
        $(
            #[cfg(not(CONFIG_TRACEPOINTS))]
            #[allow(clippy::too_many_arguments)]
            #[inline(always)]
            unsafe fn $name($($arg: $ty),*) {
                $(let _ = $arg;)*
            }
        )*
    };
}

hmm_rs_tracepoints! {
    hmm_rs_invalidate(mm: u64, code: u32, ty: u32, start: usize, end: usize, keep: u64,
                      blockable: bool, mirrors: u32);
    hmm_rs_mirror_update(mirror: u64, ty: u32, start: usize, end: usize, entries: usize,
                         dirtied: usize, two_pass: bool, applied: bool);
    hmm_rs_mirror_register(mirror: u64, mm: u64);
    hmm_rs_release(mirror: u64, mm: u64);
    hmm_rs_fault_begin(mirror: u64, ty: u32, start: usize, end: usize);
    hmm_rs_fault_end(mirror: u64, ty: u32, start: usize, end: usize, result: i32, retries: u32,
                     huge: u32);
    hmm_rs_snapshot(mirror: u64, start: usize, end: usize, result: i32);
    hmm_rs_exclusive(mirror: u64, start: usize, end: usize, result: i32);
    hmm_rs_migrate(mirror: u64, to_device: bool, start: usize, end: usize, result: isize,
                   moved: usize, steps: u32, stayed: usize, not_placed: usize);
    hmm_rs_devmem_evict(devmem: u64, npages: usize, in_use: usize, moved: isize);
    hmm_rs_thrash(mirror: u64, addr: usize, hold_ns: u64, held: bool);
}

/// A result as the events record it: 0 or -errno (the C API's form).
fn errno(r: &Result) -> i32 {
    crate::error::errno(*r)
}

/// A count or -errno.
fn count_or_errno(r: &Result<usize>) -> isize {
    crate::error::count_or_errno(*r) as isize
}

/// The core's notifier turned a CPU page-table change (notifier `code`)
/// into `event`, for the `mirrors` of mm `mm`.
pub(crate) fn invalidate(mm: u64, code: u32, event: &HmmEvent, blockable: bool, mirrors: usize) {
    // SAFETY: Plain values, as the prototype says.
    unsafe {
        hmm_rs_invalidate(
            mm,
            code,
            event.ty as u32,
            event.start as usize,
            event.end as usize,
            event.keep.bits(),
            blockable,
            mirrors as u32,
        )
    }
}

/// Mirror `mirror` applied `event` (or, `!applied`, could not).
pub(crate) fn mirror_update(
    mirror: u64,
    event: &HmmEvent,
    entries: usize,
    dirtied: usize,
    two_pass: bool,
    applied: bool,
) {
    // SAFETY: Plain values, as the prototype says.
    unsafe {
        hmm_rs_mirror_update(
            mirror,
            event.ty as u32,
            event.start as usize,
            event.end as usize,
            entries,
            dirtied,
            two_pass,
            applied,
        )
    }
}

/// Mirror `mirror` of mm `mm` was registered (`mm` 0: unregistered).
pub(crate) fn mirror_register(mirror: u64, mm: u64) {
    // SAFETY: Plain values, as the prototype says.
    unsafe { hmm_rs_mirror_register(mirror, mm) }
}

/// The mm of `mirror` went away.
pub(crate) fn release(mirror: u64, mm: u64) {
    // SAFETY: Plain values, as the prototype says.
    unsafe { hmm_rs_release(mirror, mm) }
}

/// A device fault of type `ty` over `[start, end)` begins.
pub(crate) fn fault_begin(mirror: u64, ty: HmmEventType, start: u64, end: u64) {
    // SAFETY: Plain values, as the prototype says.
    unsafe { hmm_rs_fault_begin(mirror, ty as u32, start as usize, end as usize) }
}

/// A device fault ended with `result` after `retries` retried chunks,
/// making `huge` 2 MiB entries.
pub(crate) fn fault_end(
    mirror: u64,
    ty: HmmEventType,
    start: u64,
    end: u64,
    result: &Result,
    retries: u32,
    huge: u32,
) {
    // SAFETY: Plain values, as the prototype says.
    unsafe {
        hmm_rs_fault_end(
            mirror,
            ty as u32,
            start as usize,
            end as usize,
            errno(result),
            retries,
            huge,
        )
    }
}

/// A snapshot of `[start, end)` ended with `result`.
pub(crate) fn snapshot(mirror: u64, start: u64, end: u64, result: &Result) {
    // SAFETY: Plain values, as the prototype says.
    unsafe { hmm_rs_snapshot(mirror, start as usize, end as usize, errno(result)) }
}

/// Exclusive access to `[start, end)` ended with `result`.
pub(crate) fn exclusive(mirror: u64, start: u64, end: u64, result: &Result) {
    // SAFETY: Plain values, as the prototype says.
    unsafe { hmm_rs_exclusive(mirror, start as usize, end as usize, errno(result)) }
}

/// What one migration did, for [`migrate`].
#[derive(Default)]
pub(crate) struct MigrateCounts {
    /// Pages moved.
    pub(crate) moved: usize,
    /// Steps taken, retried ones included.
    pub(crate) steps: u32,
    /// Pages that stayed busy.
    pub(crate) stayed: usize,
    /// Pages that found no free device page.
    pub(crate) not_placed: usize,
    /// Pages not moved because thrash control held their block.
    pub(crate) held: usize,
}

/// A migration of `[start, end)` ended with `result`.
pub(crate) fn migrate(
    mirror: u64,
    to_device: bool,
    start: u64,
    end: u64,
    result: &Result<usize>,
    counts: &MigrateCounts,
) {
    // SAFETY: Plain values, as the prototype says.
    unsafe {
        hmm_rs_migrate(
            mirror,
            to_device,
            start as usize,
            end as usize,
            count_or_errno(result),
            counts.moved,
            counts.steps,
            counts.stayed,
            counts.not_placed,
        )
    }
}

/// Device memory `devmem` of `npages` pages, `in_use` of them in use, was
/// emptied with `result` (pages moved back).
pub(crate) fn devmem_evict(devmem: u64, npages: usize, in_use: usize, result: &Result<usize>) {
    // SAFETY: Plain values, as the prototype says.
    unsafe { hmm_rs_devmem_evict(devmem, npages, in_use, count_or_errno(result)) }
}

/// A migration of mirror `mirror` to the device skipped the block at `addr`
/// (`held`), or the block moved again too soon and is held for `hold_ns`.
pub(crate) fn thrash(mirror: u64, addr: u64, hold_ns: u64, held: bool) {
    // SAFETY: Plain values, as the prototype says.
    unsafe { hmm_rs_thrash(mirror, addr as usize, hold_ns, held) }
}
