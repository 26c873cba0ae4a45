// SPDX-License-Identifier: GPL-2.0

//! hmm-rs for Rust drivers: a safe API over the symbols `hmm_rs.ko` exports.
//!
//! Out of tree, a Rust module cannot use another Rust module's items, only
//! its exported C symbols; this file is the Rust side of `hmm_rs.h` for a
//! driver crate, included as source:
//!
//! ```ignore
//! #[path = "../../rust/hmm_rs_driver.rs"]
//! pub mod hmm_rs_driver;
//! ```
//!
//! with `rust/hmm_rs_driver_helpers.c` linked into the same module (its
//! page copies, and the build-time check of this file's `#[repr(C)]` copies
//! against `hmm_rs.h`). Every `unsafe` of a driver on hmm-rs is here.
//!
//! What owns what:
//!
//! - [`Device`] is a registered device, in an [`Arc`]; it unregisters when
//!   the last reference goes. [`Mirror`] and [`DevMem`] each hold one, so a
//!   device outlives its mirrors and its memory by construction.
//! - [`Mirror<T>`] mirrors an mm for a device and owns `T`, the mirror's
//!   [`MirrorOps`] (the driver's per-mirror state and callbacks, what C
//!   passes as `mirror_priv`). Dropping it unregisters the mirror, then
//!   drops `T`: no callback can see `T` freed.
//! - [`DevMem<T, D>`] is device memory of a `Device<T>` whose contents
//!   [`DevMemOps`] `D` moves; dropping it evicts every page and destroys it.
//!
//! The callbacks read as the core's own `MirrorOps` and `DevMemOps`
//! (`hmm_mirror.rs`, `hmm_mirror/devmem.rs`): the same names, contract and
//! results ([`Update`], `EAGAIN`), with `&self` the per-mirror state. What
//! this API adds is the device's side of that contract, which the C API
//! leaves to each driver: [`Mirror::access`] runs the device's use of the
//! mirrored pages under an access lock that every invalidation takes in its
//! `update` (and waits for the invalidation's `update_end`), so the pages it
//! reads ([`PageRef`]) cannot be freed under it; [`Mirror::fault_walk`] gives
//! the pages of what a fault committed under the mirror's table lock.
//!
//! Not covered: DMA-mapped mirrors (`hmm_rs_mirror_register_dma`) and
//! `PREFER_DEVICE` advice naming device memory (the mirror would have to
//! keep that memory's callbacks alive past [`DevMem`]'s drop).

use core::{ffi::c_void, marker::PhantomData, mem::MaybeUninit, ops::Range, ptr::NonNull};
use kernel::{
    bindings,
    error::{from_err_ptr, to_result},
    ffi::{c_int, c_long, c_uint, c_ulong},
    mm::{Mm, MmWithUser},
    new_condvar, new_mutex, new_spinlock,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Acquire, Atomic, Full, Relaxed},
        Arc, CondVar, Mutex, SpinLock,
    },
    uaccess::{UserSliceReader, UserSliceWriter},
};

/// The C declarations of `hmm_rs.h` this API wraps, spelled as in C.
#[expect(non_camel_case_types)]
mod ffi {
    use kernel::bindings;
    use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};

    /// `struct hmm_rs_event`.
    #[repr(C)]
    pub(super) struct hmm_rs_event {
        pub(super) type_: u32,
        pub(super) start: c_ulong,
        pub(super) end: c_ulong,
        pub(super) keep: u64,
    }

    /// `struct hmm_rs_device_ops`.
    #[repr(C)]
    pub(super) struct hmm_rs_device_ops {
        pub(super) update: Option<
            unsafe extern "C" fn(
                *mut hmm_rs_mirror,
                *const hmm_rs_event,
                bool,
                *mut c_void,
            ) -> c_int,
        >,
        pub(super) release: Option<unsafe extern "C" fn(*mut hmm_rs_mirror, *mut c_void)>,
        pub(super) update_end:
            Option<unsafe extern "C" fn(*mut hmm_rs_mirror, *const hmm_rs_event, *mut c_void)>,
        pub(super) update_finish: Option<
            unsafe extern "C" fn(
                *mut hmm_rs_mirror,
                *const hmm_rs_event,
                bool,
                *mut c_void,
            ) -> c_int,
        >,
    }

    /// `struct hmm_rs_devmem_ops`.
    #[repr(C)]
    pub(super) struct hmm_rs_devmem_ops {
        pub(super) copy_to_device:
            Option<unsafe extern "C" fn(*mut c_void, c_ulong, *mut bindings::page) -> c_int>,
        pub(super) copy_from_device:
            Option<unsafe extern "C" fn(*mut c_void, c_ulong, *mut bindings::page) -> c_int>,
        pub(super) free: Option<unsafe extern "C" fn(*mut c_void, c_ulong)>,
        pub(super) copy_folio_to_device: Option<
            unsafe extern "C" fn(*mut c_void, c_ulong, *mut bindings::page, c_uint) -> c_int,
        >,
        pub(super) copy_folio_from_device: Option<
            unsafe extern "C" fn(*mut c_void, c_ulong, *mut bindings::page, c_uint) -> c_int,
        >,
    }

    /// `struct hmm_rs_fault_req`.
    #[repr(C)]
    pub(super) struct hmm_rs_fault_req {
        pub(super) addr: u64,
        pub(super) npages: u32,
        pub(super) flags: u32,
        pub(super) result: i32,
        pub(super) pad: u32,
    }

    /// `struct hmm_rs_device`, opaque.
    #[repr(C)]
    pub(super) struct hmm_rs_device {
        _opaque: [u8; 0],
    }

    /// `struct hmm_rs_mirror`, opaque.
    #[repr(C)]
    pub(super) struct hmm_rs_mirror {
        _opaque: [u8; 0],
    }

    /// `struct hmm_rs_devmem`, opaque.
    #[repr(C)]
    pub(super) struct hmm_rs_devmem {
        _opaque: [u8; 0],
    }

    /// `hmm_rs_walk_fn`.
    pub(super) type hmm_rs_walk_fn =
        unsafe extern "C" fn(*mut c_void, c_ulong, u64, c_uint, u64) -> c_int;

    pub(super) const HMM_RS_FORK: u32 = 1;
    pub(super) const HMM_RS_MIGRATE: u32 = 2;
    pub(super) const HMM_RS_MUNMAP: u32 = 3;
    pub(super) const HMM_RS_DEVICE_READ_FAULT: u32 = 4;
    pub(super) const HMM_RS_DEVICE_WRITE_FAULT: u32 = 5;
    pub(super) const HMM_RS_WRITE_PROTECT: u32 = 6;
    pub(super) const HMM_RS_PT_VALID: u64 = 1;
    pub(super) const HMM_RS_PT_WRITE: u64 = 2;
    pub(super) const HMM_RS_PT_DIRTY: u64 = 4;
    pub(super) const HMM_RS_PT_DEVICE: u64 = 8;
    pub(super) const HMM_RS_PT_EXCLUSIVE: u64 = 16;
    pub(super) const HMM_RS_UPDATE_PENDING: c_int = 1;
    pub(super) const HMM_RS_FAULT_REQ_WRITE: u32 = 1;
    pub(super) const HMM_RS_FAULT_BATCH_MAX: usize = 4096;
    pub(super) const HMM_RS_SNAP_VALID: u32 = 1;
    pub(super) const HMM_RS_SNAP_WRITE: u32 = 2;
    pub(super) const HMM_RS_SNAP_ERROR: u32 = 4;
    pub(super) const HMM_RS_SNAP_ZERO: u32 = 8;
    pub(super) const HMM_RS_SNAP_DEVICE: u32 = 16;
    pub(super) const HMM_RS_SNAP_COHERENT: u32 = 32;
    pub(super) const HMM_RS_SNAP_REMOTE: u32 = 64;
    pub(super) const HMM_RS_SNAP_ORDER_SHIFT: u32 = 8;
    pub(super) const HMM_RS_DEVMEM_EVICT: c_uint = 1;
    pub(super) const HMM_RS_ADVICE_PREFER_DEVICE: c_uint = 1;
    pub(super) const HMM_RS_ADVICE_PREFER_SYSTEM: c_uint = 2;
    pub(super) const HMM_RS_ADVICE_READ_ONLY: c_uint = 4;
    pub(super) const HMM_RS_DEVMEM_SIZE: c_uint = 0;
    pub(super) const HMM_RS_DEVMEM_IN_USE: c_uint = 1;
    pub(super) const HMM_RS_DEVMEM_MIGRATED: c_uint = 2;
    pub(super) const HMM_RS_DEVMEM_EVICTED: c_uint = 3;
    pub(super) const HMM_RS_DEVMEM_EVICT_SKIPPED: c_uint = 4;
    pub(super) const HMM_RS_DEVMEM_NOT_PLACED: c_uint = 5;
    pub(super) const HMM_RS_DEVMEM_THRASH_HELD: c_uint = 6;
    pub(super) const HMM_RS_DEVMEM_THRASH_DETECTED: c_uint = 7;

    // `struct page` ends in a zero-sized array member, which rustc cannot
    // prove FFI-safe; only pointers to it cross this boundary.
    #[expect(improper_ctypes)]
    extern "C" {
        pub(super) fn hmm_rs_device_register(ops: *const hmm_rs_device_ops) -> *mut hmm_rs_device;
        pub(super) fn hmm_rs_device_unregister(device: *mut hmm_rs_device);
        pub(super) fn hmm_rs_mirror_register(
            device: *mut hmm_rs_device,
            mm: *mut bindings::mm_struct,
            mirror_priv: *mut c_void,
        ) -> *mut hmm_rs_mirror;
        pub(super) fn hmm_rs_mirror_unregister(mirror: *mut hmm_rs_mirror);
        pub(super) fn hmm_rs_mirror_fault(
            mirror: *mut hmm_rs_mirror,
            type_: u32,
            start: c_ulong,
            end: c_ulong,
        ) -> c_int;
        pub(super) fn hmm_rs_mirror_walk(
            mirror: *mut hmm_rs_mirror,
            start: c_ulong,
            end: c_ulong,
            f: Option<hmm_rs_walk_fn>,
            arg: *mut c_void,
        ) -> c_int;
        pub(super) fn hmm_rs_mirror_fault_walk(
            mirror: *mut hmm_rs_mirror,
            type_: u32,
            start: c_ulong,
            end: c_ulong,
            f: Option<hmm_rs_walk_fn>,
            arg: *mut c_void,
        ) -> c_int;
        pub(super) fn hmm_rs_mirror_fault_batch(
            mirror: *mut hmm_rs_mirror,
            reqs: *mut hmm_rs_fault_req,
            n: c_uint,
        ) -> c_int;
        pub(super) fn hmm_rs_mirror_snapshot(
            mirror: *mut hmm_rs_mirror,
            start: c_ulong,
            end: c_ulong,
            out: *mut u32,
        ) -> c_int;
        pub(super) fn hmm_rs_mirror_make_exclusive(
            mirror: *mut hmm_rs_mirror,
            start: c_ulong,
            end: c_ulong,
        ) -> c_int;
        pub(super) fn hmm_rs_mirror_set_dirty(
            mirror: *mut hmm_rs_mirror,
            start: c_ulong,
            end: c_ulong,
        ) -> c_int;
        pub(super) fn hmm_rs_devmem_create(
            device: *mut hmm_rs_device,
            npages: c_ulong,
            ops: *const hmm_rs_devmem_ops,
            devmem_priv: *mut c_void,
            flags: c_uint,
        ) -> *mut hmm_rs_devmem;
        pub(super) fn hmm_rs_devmem_create_coherent(
            device: *mut hmm_rs_device,
            start: bindings::phys_addr_t,
            npages: c_ulong,
            ops: *const hmm_rs_devmem_ops,
            devmem_priv: *mut c_void,
            flags: c_uint,
        ) -> *mut hmm_rs_devmem;
        pub(super) fn hmm_rs_devmem_pfn(mem: *mut hmm_rs_devmem, index: c_ulong) -> u64;
        pub(super) fn hmm_rs_devmem_destroy(mem: *mut hmm_rs_devmem);
        pub(super) fn hmm_rs_devmem_evict(mem: *mut hmm_rs_devmem) -> c_long;
        pub(super) fn hmm_rs_devmem_evict_lru(mem: *mut hmm_rs_devmem, npages: c_ulong) -> c_long;
        pub(super) fn hmm_rs_devmem_evict_range(
            mem: *mut hmm_rs_devmem,
            index: c_ulong,
            npages: c_ulong,
        ) -> c_long;
        pub(super) fn hmm_rs_devmem_set_thrash(
            mem: *mut hmm_rs_devmem,
            window_us: c_uint,
            backoff_us: c_uint,
        ) -> c_int;
        pub(super) fn hmm_rs_devmem_stat(mem: *mut hmm_rs_devmem, which: c_uint) -> u64;
        pub(super) fn hmm_rs_devmem_index(mem: *mut hmm_rs_devmem, pfn: u64) -> c_long;
        pub(super) fn hmm_rs_mirror_advise(
            mirror: *mut hmm_rs_mirror,
            start: c_ulong,
            end: c_ulong,
            advice: c_uint,
            mem: *mut hmm_rs_devmem,
        ) -> c_int;
        pub(super) fn hmm_rs_mirror_advice(
            mirror: *mut hmm_rs_mirror,
            addr: c_ulong,
            start: *mut c_ulong,
            end: *mut c_ulong,
        ) -> c_int;
        pub(super) fn hmm_rs_mirror_prefetch(
            mirror: *mut hmm_rs_mirror,
            start: c_ulong,
            end: c_ulong,
        ) -> c_long;
        pub(super) fn hmm_rs_mirror_migrate_to_device(
            mirror: *mut hmm_rs_mirror,
            mem: *mut hmm_rs_devmem,
            start: c_ulong,
            end: c_ulong,
        ) -> c_long;
        pub(super) fn hmm_rs_mirror_migrate_to_system(
            mirror: *mut hmm_rs_mirror,
            start: c_ulong,
            end: c_ulong,
        ) -> c_long;

        // rust/hmm_rs_driver_helpers.c
        pub(super) fn hmm_rs_drv_page_read(pfn: u64, offset: usize, dst: *mut c_void, len: usize);
        pub(super) fn hmm_rs_drv_page_write(
            pfn: u64,
            offset: usize,
            src: *const c_void,
            len: usize,
        );
        pub(super) fn hmm_rs_drv_pages_zero(pfn: u64, n: c_ulong);
        pub(super) fn hmm_rs_drv_pages_copy(dst: u64, src: u64, n: c_ulong);
        pub(super) fn hmm_rs_drv_page_alloc(pfn: *mut u64) -> bool;
        pub(super) fn hmm_rs_drv_page_free(pfn: u64);
        pub(super) fn hmm_rs_drv_folio_alloc(order: c_uint, pfn: *mut u64) -> bool;
        pub(super) fn hmm_rs_drv_folio_put(pfn: u64);
        pub(super) fn hmm_rs_drv_page_pfn(page: *mut bindings::page) -> u64;
        pub(super) fn hmm_rs_drv_fatal_signal_pending() -> bool;
        pub(super) fn hmm_rs_drv_cond_resched();
        pub(super) fn hmm_rs_drv_user_end() -> c_ulong;
        pub(super) fn hmm_rs_drv_next_vma(
            mm: *mut bindings::mm_struct,
            addr: c_ulong,
            end: c_ulong,
        ) -> c_long;
    }
}

/// The layout check: the same numbers `rust/hmm_rs_driver_helpers.c`
/// asserts on `hmm_rs.h` (scripts/check-c-api.py --driver compares the two
/// lists), asserted here on the copies above.
macro_rules! check_size {
    ($s:ident, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<ffi::$s>() == $n);
    };
}
macro_rules! check_offset {
    ($s:ident, $m:ident, $n:expr) => {
        const _: () = assert!(core::mem::offset_of!(ffi::$s, $m) == $n);
    };
}
macro_rules! check_value {
    ($c:ident, $n:expr) => {
        const _: () = assert!(ffi::$c as u64 == $n);
    };
}

check_size!(hmm_rs_event, 32);
check_offset!(hmm_rs_event, type_, 0);
check_offset!(hmm_rs_event, start, 8);
check_offset!(hmm_rs_event, end, 16);
check_offset!(hmm_rs_event, keep, 24);
check_size!(hmm_rs_device_ops, 32);
check_offset!(hmm_rs_device_ops, update, 0);
check_offset!(hmm_rs_device_ops, release, 8);
check_offset!(hmm_rs_device_ops, update_end, 16);
check_offset!(hmm_rs_device_ops, update_finish, 24);
check_size!(hmm_rs_devmem_ops, 40);
check_offset!(hmm_rs_devmem_ops, copy_to_device, 0);
check_offset!(hmm_rs_devmem_ops, copy_from_device, 8);
check_offset!(hmm_rs_devmem_ops, free, 16);
check_offset!(hmm_rs_devmem_ops, copy_folio_to_device, 24);
check_offset!(hmm_rs_devmem_ops, copy_folio_from_device, 32);
check_size!(hmm_rs_fault_req, 24);
check_offset!(hmm_rs_fault_req, addr, 0);
check_offset!(hmm_rs_fault_req, npages, 8);
check_offset!(hmm_rs_fault_req, flags, 12);
check_offset!(hmm_rs_fault_req, result, 16);
check_offset!(hmm_rs_fault_req, pad, 20);

check_value!(HMM_RS_FORK, 1);
check_value!(HMM_RS_MIGRATE, 2);
check_value!(HMM_RS_MUNMAP, 3);
check_value!(HMM_RS_DEVICE_READ_FAULT, 4);
check_value!(HMM_RS_DEVICE_WRITE_FAULT, 5);
check_value!(HMM_RS_WRITE_PROTECT, 6);
check_value!(HMM_RS_PT_VALID, 1);
check_value!(HMM_RS_PT_WRITE, 2);
check_value!(HMM_RS_PT_DIRTY, 4);
check_value!(HMM_RS_PT_DEVICE, 8);
check_value!(HMM_RS_PT_EXCLUSIVE, 16);
check_value!(HMM_RS_UPDATE_PENDING, 1);
check_value!(HMM_RS_FAULT_REQ_WRITE, 1);
check_value!(HMM_RS_FAULT_BATCH_MAX, 4096);
check_value!(HMM_RS_SNAP_VALID, 1);
check_value!(HMM_RS_SNAP_WRITE, 2);
check_value!(HMM_RS_SNAP_ERROR, 4);
check_value!(HMM_RS_SNAP_ZERO, 8);
check_value!(HMM_RS_SNAP_DEVICE, 16);
check_value!(HMM_RS_SNAP_COHERENT, 32);
check_value!(HMM_RS_SNAP_REMOTE, 64);
check_value!(HMM_RS_SNAP_ORDER_SHIFT, 8);
check_value!(HMM_RS_DEVMEM_EVICT, 1);
check_value!(HMM_RS_ADVICE_PREFER_DEVICE, 1);
check_value!(HMM_RS_ADVICE_PREFER_SYSTEM, 2);
check_value!(HMM_RS_ADVICE_READ_ONLY, 4);
check_value!(HMM_RS_DEVMEM_SIZE, 0);
check_value!(HMM_RS_DEVMEM_IN_USE, 1);
check_value!(HMM_RS_DEVMEM_MIGRATED, 2);
check_value!(HMM_RS_DEVMEM_EVICTED, 3);
check_value!(HMM_RS_DEVMEM_EVICT_SKIPPED, 4);
check_value!(HMM_RS_DEVMEM_NOT_PLACED, 5);
check_value!(HMM_RS_DEVMEM_THRASH_HELD, 6);
check_value!(HMM_RS_DEVMEM_THRASH_DETECTED, 7);

/// Whether the current task is being killed: a long operation stops.
pub fn fatal_signal_pending() -> bool {
    // SAFETY: Reads the current task's signals.
    unsafe { ffi::hmm_rs_drv_fatal_signal_pending() }
}

/// Lets other tasks run, in a long loop. May sleep.
pub fn cond_resched() {
    // SAFETY: No precondition; it may sleep, as any sleeping call (not in
    // a walk's closure, which must not sleep).
    unsafe { ffi::hmm_rs_drv_cond_resched() }
}

/// The end of user space (`TASK_SIZE_MAX`): ranges beyond it are refused.
pub fn user_space_end() -> usize {
    // SAFETY: Reads a constant of the paging mode.
    unsafe { ffi::hmm_rs_drv_user_end() as usize }
}

/// What happened to a range of a mirrored address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Fork: private pages became copy-on-write.
    Fork,
    /// Pages move (reclaim, migration, COW break).
    Migrate,
    /// The range was unmapped.
    Munmap,
    /// A device fault for reading.
    DeviceReadFault,
    /// A device fault for writing.
    DeviceWriteFault,
    /// The range lost write access.
    WriteProtect,
}

/// What a device fault wants of the pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The device reads.
    Read,
    /// The device writes.
    Write,
}

impl Access {
    fn raw(self) -> u32 {
        match self {
            Access::Read => ffi::HMM_RS_DEVICE_READ_FAULT,
            Access::Write => ffi::HMM_RS_DEVICE_WRITE_FAULT,
        }
    }
}

/// The flags of a mirror entry (`HMM_RS_PT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtFlags(u64);

impl PtFlags {
    /// Maps memory.
    pub const VALID: PtFlags = PtFlags(ffi::HMM_RS_PT_VALID);
    /// The device may write.
    pub const WRITE: PtFlags = PtFlags(ffi::HMM_RS_PT_WRITE);
    /// The device (may have) written.
    pub const DIRTY: PtFlags = PtFlags(ffi::HMM_RS_PT_DIRTY);
    /// The page is in device-private memory.
    pub const DEVICE: PtFlags = PtFlags(ffi::HMM_RS_PT_DEVICE);
    /// The device has exclusive access.
    pub const EXCLUSIVE: PtFlags = PtFlags(ffi::HMM_RS_PT_EXCLUSIVE);

    /// Whether all of `other` is set.
    pub fn contains(self, other: PtFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub fn bits(self) -> u64 {
        self.0
    }
}

/// A change to a range of a mirror, as the device's callbacks see it.
///
/// # Invariants
///
/// `type_` is one of the `HMM_RS_*` event types (the core sends no other).
#[repr(transparent)]
pub struct Event(ffi::hmm_rs_event);

impl Event {
    /// What happened.
    pub fn kind(&self) -> EventType {
        match self.0.type_ {
            ffi::HMM_RS_FORK => EventType::Fork,
            ffi::HMM_RS_MIGRATE => EventType::Migrate,
            ffi::HMM_RS_MUNMAP => EventType::Munmap,
            ffi::HMM_RS_DEVICE_READ_FAULT => EventType::DeviceReadFault,
            ffi::HMM_RS_DEVICE_WRITE_FAULT => EventType::DeviceWriteFault,
            ffi::HMM_RS_WRITE_PROTECT => EventType::WriteProtect,
            // The core sends no other type (type invariant); were it to, the
            // most cautious reading: the range is gone.
            _ => EventType::Munmap,
        }
    }

    /// The `HMM_RS_*` value of [`Event::kind`], as the C API numbers it.
    pub fn raw_kind(&self) -> u32 {
        self.0.type_
    }

    /// The range: `[start, end)`.
    pub fn range(&self) -> Range<usize> {
        self.0.start..self.0.end
    }

    /// The flags the range's entries keep; an entry without
    /// [`PtFlags::VALID`] here is removed.
    pub fn keep(&self) -> PtFlags {
        PtFlags(self.0.keep)
    }
}

/// What [`MirrorOps::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// The device no longer uses what the event removes.
    Done,
    /// The device started to stop; [`MirrorOps::update_finish`] waits.
    Pending,
}

/// A device's callbacks for one mirror, implemented by the driver's
/// per-mirror state (C's `mirror_priv`): the Rust side of the invalidation
/// contract, as the core's own `MirrorOps`.
pub trait MirrorOps: Send + Sync + Sized + 'static {
    /// An event is about to change `event.range()`: the device must stop
    /// using what it removes (see [`Event::keep`]), or start doing so and
    /// answer [`Update::Pending`]. Must not sleep unless `blockable`; if it
    /// cannot stop the device without sleeping it returns `EAGAIN` (only
    /// then) and mm retries the invalidation. Other errors are logged and
    /// the event stands. [`Mirror::access`] is locked out from before this
    /// call until [`MirrorOps::update_end`].
    fn update(&self, event: &Event, blockable: bool) -> Result<Update>;

    /// Waits for the invalidation [`MirrorOps::update`] started (after it
    /// answered [`Update::Pending`]). Must not sleep unless `blockable`;
    /// `EAGAIN` leaves the mirror alone and mm retries.
    fn update_finish(&self, _event: &Event, _blockable: bool) -> Result {
        Ok(())
    }

    /// The mirror reflects `event` now: after every `update` but one that
    /// answered `EAGAIN` when not `blockable` (another error is logged and
    /// the event applied all the same).
    fn update_end(&self, _event: &Event) {}

    /// The mm is exiting; the mirror is emptied after this. May sleep.
    fn release(&self) {}
}

/// What [`Mirror::access`] waits on: invalidations between their `update`
/// and their `update_end`, and whether the mm released the mirror.
struct Stopped {
    invalidations: u32,
    released: bool,
}

/// A mirror's state that C's callbacks reach (as `mirror_priv`).
///
/// # Invariants
///
/// `stopped.invalidations` counts the invalidations between an `update`
/// that did not leave the mirror alone and their `update_end`, and the
/// mirror's own migrations under way ([`MirrorInner::fence`]): while it is
/// not 0, pages of the mirror may be on their way to be freed, and no
/// [`Mirror::access`] starts; each of those took `access` to count itself,
/// so none starts while an access holds it.
#[pin_data]
struct MirrorInner<T> {
    /// Held by [`Mirror::access`] while the device uses pages, and by each
    /// invalidation's `update` to count itself in `stopped`.
    #[pin]
    access: Mutex<()>,
    #[pin]
    stopped: SpinLock<Stopped>,
    /// `stopped.invalidations` went to 0.
    #[pin]
    resume: CondVar,
    #[pin]
    ops: T,
}

impl<T: MirrorOps> MirrorInner<T> {
    fn update(&self, event: &Event, blockable: bool) -> c_int {
        {
            let _access = if blockable {
                self.access.lock()
            } else {
                match self.access.try_lock() {
                    Some(guard) => guard,
                    None => return EAGAIN.to_errno(),
                }
            };
            self.stopped.lock().invalidations += 1;
        }
        match self.ops.update(event, blockable) {
            Ok(Update::Done) => 0,
            Ok(Update::Pending) => ffi::HMM_RS_UPDATE_PENDING,
            // Only this leaves the mirror alone (no update_end follows);
            // the core logs any other error, applies the event and calls
            // update_end, which resumes.
            Err(e) if e == EAGAIN && !blockable => {
                self.resume();
                e.to_errno()
            }
            Err(e) => e.to_errno(),
        }
    }

    /// Holds [`Mirror::access`] off, as an invalidation between its
    /// `update` and `update_end` does, until the fence is dropped: the core
    /// sends a mirror no event for its own migrations (it maps what moved
    /// itself, then frees the source pages).
    fn fence(&self) -> AccessFence<'_, T> {
        let _access = self.access.lock();
        self.stopped.lock().invalidations += 1;
        // INVARIANT: The count just raised, taken with `access`.
        AccessFence(self)
    }

    fn resume(&self) {
        let mut stopped = self.stopped.lock();
        stopped.invalidations -= 1;
        if stopped.invalidations == 0 {
            self.resume.notify_all();
        }
    }

    fn release(&self) {
        self.ops.release();
        // Waits for an access under way; later ones find the mirror released.
        let _access = self.access.lock();
        self.stopped.lock().released = true;
    }
}

/// [`MirrorInner::fence`]: access resumes when it goes.
///
/// # Invariants
///
/// It stands for one count in `stopped.invalidations`, which its drop takes
/// back.
struct AccessFence<'a, T: MirrorOps>(&'a MirrorInner<T>);

impl<T: MirrorOps> Drop for AccessFence<'_, T> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// `hmm_rs_device_ops` callbacks for `MirrorInner<T>`.
struct DeviceVTable<T>(PhantomData<T>);

impl<T: MirrorOps> DeviceVTable<T> {
    const OPS: ffi::hmm_rs_device_ops = ffi::hmm_rs_device_ops {
        update: Some(Self::update),
        release: Some(Self::release),
        update_end: Some(Self::update_end),
        update_finish: Some(Self::update_finish),
    };

    /// # Safety
    ///
    /// `mirror_priv` is the `MirrorInner<T>` of a live mirror ([`Mirror`]
    /// frees it only after unregistering), `event` a valid event.
    unsafe fn args<'a>(
        event: *const ffi::hmm_rs_event,
        mirror_priv: *mut c_void,
    ) -> (&'a MirrorInner<T>, &'a Event) {
        // SAFETY: By the caller's guarantee; `Event` is `repr(transparent)`
        // over `hmm_rs_event`, and the core sends only the six types.
        unsafe {
            (
                &*mirror_priv.cast::<MirrorInner<T>>(),
                &*event.cast::<Event>(),
            )
        }
    }

    /// # Safety
    ///
    /// Called by hmm_rs as `update` of a mirror [`Mirror::new`] registered.
    unsafe extern "C" fn update(
        _mirror: *mut ffi::hmm_rs_mirror,
        event: *const ffi::hmm_rs_event,
        blockable: bool,
        mirror_priv: *mut c_void,
    ) -> c_int {
        // SAFETY: hmm_rs passes the registered `mirror_priv` and a valid event.
        let (inner, event) = unsafe { Self::args(event, mirror_priv) };
        inner.update(event, blockable)
    }

    /// # Safety
    ///
    /// As for [`Self::update`].
    unsafe extern "C" fn update_finish(
        _mirror: *mut ffi::hmm_rs_mirror,
        event: *const ffi::hmm_rs_event,
        blockable: bool,
        mirror_priv: *mut c_void,
    ) -> c_int {
        // SAFETY: hmm_rs passes the registered `mirror_priv` and a valid event.
        let (inner, event) = unsafe { Self::args(event, mirror_priv) };
        match inner.ops.update_finish(event, blockable) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for [`Self::update`].
    unsafe extern "C" fn update_end(
        _mirror: *mut ffi::hmm_rs_mirror,
        event: *const ffi::hmm_rs_event,
        mirror_priv: *mut c_void,
    ) {
        // SAFETY: hmm_rs passes the registered `mirror_priv` and a valid event.
        let (inner, event) = unsafe { Self::args(event, mirror_priv) };
        inner.ops.update_end(event);
        inner.resume();
    }

    /// # Safety
    ///
    /// As for [`Self::update`].
    unsafe extern "C" fn release(_mirror: *mut ffi::hmm_rs_mirror, mirror_priv: *mut c_void) {
        // SAFETY: hmm_rs passes the registered `mirror_priv`, live until the
        // mirror is unregistered.
        let inner = unsafe { &*mirror_priv.cast::<MirrorInner<T>>() };
        inner.release();
    }
}

/// A device registered with hmm-rs, whose mirrors call `T`'s callbacks.
///
/// # Invariants
///
/// `raw` is a device `hmm_rs_device_register` returned, unregistered only
/// in `drop`, when no [`Mirror`] or [`DevMem`] holds it any more.
pub struct Device<T: MirrorOps> {
    raw: NonNull<ffi::hmm_rs_device>,
    _ops: PhantomData<T>,
}

// SAFETY: The C API takes a device from any thread.
unsafe impl<T: MirrorOps> Send for Device<T> {}
// SAFETY: The C API's device functions may run concurrently.
unsafe impl<T: MirrorOps> Sync for Device<T> {}

impl<T: MirrorOps> Device<T> {
    /// Registers a device.
    pub fn new() -> Result<Arc<Self>> {
        // SAFETY: The ops are a `'static` constant.
        let raw = from_err_ptr(unsafe { ffi::hmm_rs_device_register(&DeviceVTable::<T>::OPS) })?;
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        // INVARIANT: Registered just now.
        let device = Device {
            raw,
            _ops: PhantomData,
        };
        Ok(Arc::new(device, GFP_KERNEL)?)
    }
}

impl<T: MirrorOps> Drop for Device<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant; no mirror or memory is left, since
        // each holds an `Arc` of this device.
        unsafe { ffi::hmm_rs_device_unregister(self.raw.as_ptr()) };
    }
}

/// A page the holder may read, and write if it is writable, by pfn, for as
/// long as `'a`.
///
/// # Invariants
///
/// `pfn` is a page the CPU addresses (not device-private), which is not
/// freed during `'a`; if `writable`, the holder may change its contents: the
/// driver owns it, the core hands it to be filled, the mirror maps it
/// writable (never the zero page, a read-only file's or a copy-on-write
/// page), or it holds the contents of the holder's device memory
/// ([`DevMem::with_stored`]).
#[derive(Clone, Copy)]
pub struct PageRef<'a> {
    pfn: u64,
    writable: bool,
    _life: PhantomData<&'a ()>,
}

impl PageRef<'_> {
    /// The page's pfn.
    pub fn pfn(&self) -> u64 {
        self.pfn
    }

    fn check(offset: usize, len: usize) -> Result {
        match offset.checked_add(len) {
            Some(end) if end <= PAGE_SIZE => Ok(()),
            _ => Err(EINVAL),
        }
    }

    /// Copies `dst.len()` bytes from `offset` of the page into `dst`.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result {
        Self::check(offset, dst.len())?;
        // SAFETY: By the type invariant the page is addressable and live;
        // `dst` is valid for `dst.len()` bytes, within the page from `offset`.
        unsafe { ffi::hmm_rs_drv_page_read(self.pfn, offset, dst.as_mut_ptr().cast(), dst.len()) };
        Ok(())
    }

    /// Whether the holder may change the page.
    pub fn writable(&self) -> bool {
        self.writable
    }

    fn check_writable(&self) -> Result {
        if self.writable {
            Ok(())
        } else {
            Err(EPERM)
        }
    }

    /// Copies `src` into the page from `offset`; `EPERM` if not writable.
    pub fn write(&self, offset: usize, src: &[u8]) -> Result {
        self.check_writable()?;
        Self::check(offset, src.len())?;
        // SAFETY: As for `read`.
        unsafe { ffi::hmm_rs_drv_page_write(self.pfn, offset, src.as_ptr().cast(), src.len()) };
        Ok(())
    }

    /// Fills the page with zeros; `EPERM` if not writable.
    pub fn zero(&self) -> Result {
        self.check_writable()?;
        // SAFETY: By the type invariant, and writable.
        unsafe { ffi::hmm_rs_drv_pages_zero(self.pfn, 1) };
        Ok(())
    }

    /// Copies all of `src` into this page (`copy_highpage()`); `EPERM` if
    /// not writable.
    pub fn copy_from(&self, src: &PageRef<'_>) -> Result {
        self.check_writable()?;
        // SAFETY: By both type invariants, and writable.
        unsafe { ffi::hmm_rs_drv_pages_copy(self.pfn, src.pfn, 1) };
        Ok(())
    }
}

/// `1 << order` consecutive pages (a folio's), each as a [`PageRef`]: what
/// the folio callbacks of [`DevMemOps`] get, and what [`OwnedFolio`] holds.
///
/// # Invariants
///
/// Each page of `pfn..pfn + (1 << order)` is as [`PageRef`]'s invariant
/// says, with this `writable`.
#[derive(Clone, Copy)]
pub struct Pages<'a> {
    pfn: u64,
    order: u32,
    writable: bool,
    _life: PhantomData<&'a ()>,
}

impl<'a> Pages<'a> {
    /// The pfn of the first page.
    pub fn pfn(&self) -> u64 {
        self.pfn
    }

    /// 0 for 4 KiB, 9 for 2 MiB.
    pub fn order(&self) -> u32 {
        self.order
    }

    /// How many 4 KiB pages.
    pub fn npages(&self) -> usize {
        1 << self.order
    }

    /// Whether the holder may change the pages.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Page `k`.
    pub fn page(&self, k: usize) -> Option<PageRef<'a>> {
        // INVARIANT: One of the pages, as the type invariant says.
        (k < self.npages()).then(|| PageRef {
            pfn: self.pfn + k as u64,
            writable: self.writable,
            _life: PhantomData,
        })
    }

    /// Fills every page with zeros; `EPERM` if not writable.
    pub fn zero(&self) -> Result {
        if !self.writable {
            return Err(EPERM);
        }
        // SAFETY: By the type invariant, and writable.
        unsafe { ffi::hmm_rs_drv_pages_zero(self.pfn, self.npages() as c_ulong) };
        Ok(())
    }

    /// Copies every page of `src` into these (`copy_highpage()` each):
    /// `EPERM` if not writable, `EINVAL` unless as many.
    pub fn copy_from(&self, src: &Pages<'_>) -> Result {
        if !self.writable {
            return Err(EPERM);
        }
        if src.order != self.order {
            return Err(EINVAL);
        }
        // SAFETY: By both type invariants, as many pages, and writable.
        unsafe { ffi::hmm_rs_drv_pages_copy(self.pfn, src.pfn, self.npages() as c_ulong) };
        Ok(())
    }
}

/// A page of system memory the driver owns, e.g. to hold what a
/// device-private page holds: a [`Page`] and its pfn, found once.
pub struct OwnedPage {
    page: Page,
    pfn: u64,
}

impl OwnedPage {
    /// Allocates a page (not zeroed unless `flags` say so).
    pub fn alloc(flags: kernel::alloc::Flags) -> Result<Self> {
        let page = Page::alloc_page(flags)?;
        // SAFETY: `page` is a valid page.
        let pfn = unsafe { ffi::hmm_rs_drv_page_pfn(page.as_ptr()) };
        Ok(OwnedPage { page, pfn })
    }

    /// The page, to copy to or from, while borrowed.
    pub fn page_ref(&self) -> PageRef<'_> {
        // INVARIANT: An owned page is addressable, the owner's to change,
        // and lives while borrowed.
        PageRef {
            pfn: self.pfn,
            writable: true,
            _life: PhantomData,
        }
    }

    /// The page itself.
    pub fn page(&self) -> &Page {
        &self.page
    }
}

/// A folio of system memory the driver owns: `1 << order` pages allocated
/// and freed at once. For a huge device folio, one allocation instead of
/// 512, and freed whole it leaves system memory unfragmented for the huge
/// pages that come back. ([`Stored`] memory shares one among the slots of
/// a huge device folio's pages, and puts it with the last of them.)
///
/// # Invariants
///
/// `pfn` is the first page of a folio of `1 << order` pages on which this
/// object holds a reference.
pub struct OwnedFolio {
    pfn: u64,
    order: u32,
}

impl OwnedFolio {
    /// Allocates a folio of `1 << order` pages (not zeroed) if one comes
    /// without retrying or compacting hard: `ENOMEM`, quietly, if not (fall
    /// back to [`OwnedPage`]s).
    pub fn alloc(order: u32) -> Result<Self> {
        let mut pfn = 0;
        // SAFETY: `pfn` is valid for a write.
        if !unsafe { ffi::hmm_rs_drv_folio_alloc(order, &mut pfn) } {
            return Err(ENOMEM);
        }
        // INVARIANT: Its reference, from the allocation.
        Ok(OwnedFolio { pfn, order })
    }

    /// Gives up the folio's reference to the caller: its first pfn.
    fn into_pfn(self) -> u64 {
        core::mem::ManuallyDrop::new(self).pfn
    }

    /// Its pages, to copy to or from, while borrowed.
    pub fn pages(&self) -> Pages<'_> {
        // INVARIANT: Owned pages are addressable, the owner's to change,
        // and live while borrowed.
        Pages {
            pfn: self.pfn,
            order: self.order,
            writable: true,
            _life: PhantomData,
        }
    }
}

impl Drop for OwnedFolio {
    fn drop(&mut self) {
        // SAFETY: By the type invariant: the reference this object holds.
        unsafe { ffi::hmm_rs_drv_folio_put(self.pfn) };
    }
}

/// The buffer of a device access that moves whole pages between user
/// space and mirrored pages: `npages` pages of vmalloc() memory (4 KiB
/// pages: a kvmalloc()ed one may take a huge page, whose allocation
/// compacts memory), not zeroed; each page is written whole before it can
/// be read.
///
/// # Invariants
///
/// `buf` has room for `npages` pages; the bytes of page `k` are
/// initialised if bit `k` of `filled` is set.
pub struct PageBuffer {
    buf: VVec<u8>,
    filled: KVVec<u64>,
    npages: usize,
}

impl PageBuffer {
    /// A buffer of `npages` pages; `ENOMEM` (quietly) if there is no room.
    pub fn new(npages: usize) -> Result<Self> {
        let size = npages.checked_mul(PAGE_SIZE).ok_or(ENOMEM)?;
        let buf = VVec::with_capacity(size, GFP_KERNEL | __GFP_NOWARN)?;
        let words = npages.div_ceil(64);
        let mut filled = KVVec::with_capacity(words, GFP_KERNEL | __GFP_NOWARN)?;
        filled.resize(words, 0, GFP_KERNEL)?;
        // INVARIANT: Room for `npages` pages, none filled.
        Ok(PageBuffer {
            buf,
            filled,
            npages,
        })
    }

    /// How many pages.
    pub fn npages(&self) -> usize {
        self.npages
    }

    /// Whether page `k` is filled.
    pub fn is_filled(&self, k: usize) -> bool {
        k < self.npages && self.filled[k / 64] & (1u64 << (k % 64)) != 0
    }

    fn slot(&mut self, k: usize) -> Result<&mut [MaybeUninit<u8>]> {
        if k >= self.npages {
            return Err(EINVAL);
        }
        Ok(&mut self.buf.spare_capacity_mut()[k * PAGE_SIZE..(k + 1) * PAGE_SIZE])
    }

    /// Fills page `k` with a copy of `page`.
    pub fn fill_from_page(&mut self, k: usize, page: &PageRef<'_>) -> Result {
        let slot = self.slot(k)?;
        // SAFETY: `page` is addressable and live (its invariant); `slot` is
        // valid for `PAGE_SIZE` bytes of writes.
        unsafe { ffi::hmm_rs_drv_page_read(page.pfn, 0, slot.as_mut_ptr().cast(), PAGE_SIZE) };
        // INVARIANT: Page `k` was written whole.
        self.filled[k / 64] |= 1u64 << (k % 64);
        Ok(())
    }

    /// Fills every page from user space (`EFAULT` if it cannot).
    pub fn fill_from_user(&mut self, reader: &mut UserSliceReader) -> Result {
        let size = self.npages * PAGE_SIZE;
        reader.read_raw(&mut self.buf.spare_capacity_mut()[..size])?;
        // INVARIANT: `read_raw` initialised every byte.
        self.filled.iter_mut().for_each(|w| *w = u64::MAX);
        Ok(())
    }

    /// Page `k`, if filled.
    pub fn page(&self, k: usize) -> Option<&[u8]> {
        if !self.is_filled(k) {
            return None;
        }
        // SAFETY: Within the buffer; initialised, since filled (type invariant).
        Some(unsafe {
            core::slice::from_raw_parts(self.buf.as_ptr().add(k * PAGE_SIZE), PAGE_SIZE)
        })
    }

    /// Copies the whole buffer to user space: `ENOENT` if a page is not
    /// filled, `EFAULT` if user space cannot take it.
    pub fn write_to_user(&self, writer: &mut UserSliceWriter) -> Result {
        if !(0..self.npages).all(|k| self.is_filled(k)) {
            return Err(ENOENT);
        }
        // SAFETY: Every page of the buffer is filled, so initialised.
        let all =
            unsafe { core::slice::from_raw_parts(self.buf.as_ptr(), self.npages * PAGE_SIZE) };
        writer.write_slice(all)
    }
}

/// One mapping of a mirror, as a walk finds it.
pub struct Mapping<'a> {
    addr: usize,
    pfn: u64,
    order: u32,
    flags: PtFlags,
    /// The walk keeps the pages alive for `'a`: [`Mapping::page`] works.
    live: bool,
    _life: PhantomData<&'a ()>,
}

impl<'a> Mapping<'a> {
    /// Its first address.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// The pfn of its first page.
    pub fn pfn(&self) -> u64 {
        self.pfn
    }

    /// 0 for 4 KiB, 9 for 2 MiB.
    pub fn order(&self) -> u32 {
        self.order
    }

    /// How many 4 KiB pages.
    pub fn pages(&self) -> usize {
        1 << self.order
    }

    /// Its flags.
    pub fn flags(&self) -> PtFlags {
        self.flags
    }

    /// The address range it maps.
    pub fn range(&self) -> Range<usize> {
        self.addr..self.addr + (PAGE_SIZE << self.order)
    }

    /// Page `k` of the mapping, to read or write: only in a walk that keeps
    /// the pages alive ([`Mirror::access`], [`Mirror::fault_walk`]), and
    /// not for device-private pages (the CPU cannot address them: find
    /// their contents with [`DevMem::index`]).
    pub fn page(&self, k: usize) -> Option<PageRef<'a>> {
        if !self.live || self.flags.contains(PtFlags::DEVICE) || k >= self.pages() {
            return None;
        }
        // INVARIANT: The walk keeps the pages alive for `'a`; not
        // device-private; writable only where the mirror maps it so.
        Some(PageRef {
            pfn: self.pfn + k as u64,
            writable: self.flags.contains(PtFlags::WRITE),
            _life: PhantomData,
        })
    }
}

/// The walk callback for a closure `F` (`arg`).
///
/// # Safety
///
/// `arg` is a `(F, bool)` the caller lends for the call; the pages the
/// mapping names stay alive for the call if the `bool` says so.
unsafe extern "C" fn walk_callback<F: FnMut(&Mapping<'_>) -> Result>(
    arg: *mut c_void,
    addr: c_ulong,
    pfn: u64,
    order: c_uint,
    flags: u64,
) -> c_int {
    // SAFETY: By the caller's guarantee.
    let (f, live) = unsafe { &mut *arg.cast::<(F, bool)>() };
    let mapping = Mapping {
        addr,
        pfn,
        order,
        flags: PtFlags(flags),
        live: *live,
        _life: PhantomData,
    };
    match f(&mapping) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// The result of a C function that answers a count or a negative errno.
fn count(ret: c_long) -> Result<usize> {
    if ret < 0 {
        Err(Error::from_errno(ret as c_int))
    } else {
        Ok(ret as usize)
    }
}

/// `[start, end)` as C takes it: page aligned, not empty, in order.
fn range(r: &Range<usize>) -> Result<(c_ulong, c_ulong)> {
    if r.start >= r.end || r.start % PAGE_SIZE != 0 || r.end % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    Ok((r.start as c_ulong, r.end as c_ulong))
}

/// One request of [`Mirror::fault_batch`] (`struct hmm_rs_fault_req`).
#[repr(transparent)]
pub struct FaultReq(ffi::hmm_rs_fault_req);

impl FaultReq {
    /// The most requests one batch takes.
    pub const BATCH_MAX: usize = ffi::HMM_RS_FAULT_BATCH_MAX;

    /// `npages` pages from `addr` (page aligned), for `access`.
    pub fn new(addr: u64, npages: u32, access: Access) -> Self {
        FaultReq(ffi::hmm_rs_fault_req {
            addr,
            npages,
            flags: match access {
                Access::Read => 0,
                Access::Write => ffi::HMM_RS_FAULT_REQ_WRITE,
            },
            result: 0,
            pad: 0,
        })
    }

    /// What faulting this request alone would have returned.
    pub fn result(&self) -> Result {
        to_result(self.0.result)
    }
}

/// `HMM_RS_SNAP_*`: what the CPU maps at a page ([`Mirror::snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snap(pub u32);

impl Snap {
    /// The CPU maps the page.
    pub const VALID: u32 = ffi::HMM_RS_SNAP_VALID;
    /// ... writable.
    pub const WRITE: u32 = ffi::HMM_RS_SNAP_WRITE;
    /// No VMA, or one the CPU may not read.
    pub const ERROR: u32 = ffi::HMM_RS_SNAP_ERROR;
    /// The shared zero page.
    pub const ZERO: u32 = ffi::HMM_RS_SNAP_ZERO;
    /// A device page: device-private, or
    pub const DEVICE: u32 = ffi::HMM_RS_SNAP_DEVICE;
    /// ... device-coherent.
    pub const COHERENT: u32 = ffi::HMM_RS_SNAP_COHERENT;
    /// Of another device than the mirror's.
    pub const REMOTE: u32 = ffi::HMM_RS_SNAP_REMOTE;

    /// Whether all of `bits` is set.
    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// The order of the page the CPU maps it with.
    pub fn order(self) -> u32 {
        self.0 >> ffi::HMM_RS_SNAP_ORDER_SHIFT
    }
}

/// Advice of a range ([`Mirror::advise`]).
pub mod advice {
    /// Device faults there migrate to the preferred device memory (not
    /// settable through this API, see the module documentation).
    pub const PREFER_DEVICE: u32 = super::ffi::HMM_RS_ADVICE_PREFER_DEVICE;
    /// Prefetch moves the device's pages back.
    pub const PREFER_SYSTEM: u32 = super::ffi::HMM_RS_ADVICE_PREFER_SYSTEM;
    /// Device writes fail with `EPERM`; reads never break copy-on-write.
    pub const READ_ONLY: u32 = super::ffi::HMM_RS_ADVICE_READ_ONLY;
}

/// One device's mirror of one mm, with `T` its callbacks and state.
///
/// # Invariants
///
/// `raw` is a mirror `hmm_rs_mirror_register` returned for `inner` (its
/// `mirror_priv`), unregistered only in `drop`, before `inner` is freed.
pub struct Mirror<T: MirrorOps> {
    raw: NonNull<ffi::hmm_rs_mirror>,
    inner: Pin<KBox<MirrorInner<T>>>,
    /// The mirrored mm (its `mm_count`, not its users: the mirror does not
    /// keep the address space alive).
    mm: ARef<Mm>,
    _device: Arc<Device<T>>,
}

// SAFETY: The C API takes a mirror from any thread; `T` is `Send`.
unsafe impl<T: MirrorOps> Send for Mirror<T> {}
// SAFETY: The C API's mirror functions may run concurrently; `T` is `Sync`.
unsafe impl<T: MirrorOps> Sync for Mirror<T> {}

impl<T: MirrorOps> Mirror<T> {
    /// Mirrors `mm` (which has users, e.g. the current task's) for `device`,
    /// with `ops` as the mirror's callbacks and state. May sleep.
    pub fn new<E>(device: &Arc<Device<T>>, mm: &MmWithUser, ops: impl PinInit<T, E>) -> Result<Self>
    where
        Error: From<E>,
    {
        let inner = KBox::try_pin_init(
            try_pin_init!(MirrorInner {
                access <- new_mutex!(()),
                stopped <- new_spinlock!(Stopped {
                    invalidations: 0,
                    released: false,
                }),
                resume <- new_condvar!(),
                ops <- ops,
            }),
            GFP_KERNEL,
        )?;
        let priv_: *const MirrorInner<T> = &*inner;
        // SAFETY: `device` is registered; `mm` has users; `inner` is pinned
        // and outlives the registration (type invariant of `Mirror`).
        let raw = from_err_ptr(unsafe {
            ffi::hmm_rs_mirror_register(device.raw.as_ptr(), mm.as_raw(), priv_ as *mut c_void)
        })?;
        // INVARIANT: Registered just now for `inner`.
        Ok(Mirror {
            raw: NonNull::new(raw).ok_or(ENOMEM)?,
            inner,
            mm: ARef::from(&**mm),
            _device: device.clone(),
        })
    }

    /// `addr` if a VMA of the mirrored mm holds it, else where the first VMA
    /// above it starts, or `end` if none starts below `end`: how a range
    /// operation skips a hole without walking it. `ESRCH` once the mm has
    /// no users, `EINTR` for a fatal signal. May sleep.
    pub fn next_vma(&self, addr: usize, end: usize) -> Result<usize> {
        // SAFETY: `mm` is held (`mm_count`); the helper takes its users and
        // its lock, and lets both go.
        count(unsafe { ffi::hmm_rs_drv_next_vma(self.mm.as_raw(), addr, end) })
    }

    /// The mirror's callbacks and state.
    pub fn ops(&self) -> &T {
        &self.inner.ops
    }

    /// Faults `[start, end)` into the mirror. May sleep.
    pub fn fault(&self, access: Access, r: Range<usize>) -> Result {
        let (start, end) = range(&r)?;
        // SAFETY: `raw` is registered (type invariant).
        to_result(unsafe { ffi::hmm_rs_mirror_fault(self.raw.as_ptr(), access.raw(), start, end) })
    }

    fn walk_with<F: FnMut(&Mapping<'_>) -> Result>(
        &self,
        fault: Option<Access>,
        r: Range<usize>,
        f: F,
        live: bool,
    ) -> Result {
        let (start, end) = range(&r)?;
        let mut arg = (f, live);
        let arg_ptr: *mut (F, bool) = &mut arg;
        let cb: ffi::hmm_rs_walk_fn = walk_callback::<F>;
        // SAFETY: `raw` is registered; `arg` lives across the call and is
        // what `walk_callback::<F>` expects; `live` is true only where the
        // caller keeps the pages alive during the callbacks.
        let ret = unsafe {
            match fault {
                None => {
                    ffi::hmm_rs_mirror_walk(self.raw.as_ptr(), start, end, Some(cb), arg_ptr.cast())
                }
                Some(a) => ffi::hmm_rs_mirror_fault_walk(
                    self.raw.as_ptr(),
                    a.raw(),
                    start,
                    end,
                    Some(cb),
                    arg_ptr.cast(),
                ),
            }
        };
        to_result(ret)
    }

    /// Calls `f` for each mapping overlapping `[start, end)`, in address
    /// order, under RCU (`f` must not sleep); an error from `f` ends the
    /// walk and is returned. The mappings' pages are not to be touched
    /// here ([`Mapping::page`] gives none): use [`Mirror::access`].
    pub fn walk(&self, r: Range<usize>, f: impl FnMut(&Mapping<'_>) -> Result) -> Result {
        self.walk_with(None, r, f, false)
    }

    /// [`Mirror::fault`], then `f` for each mapping of each chunk (at most
    /// 2 MiB) the fault committed, under the mirror's table lock: until `f`
    /// returns, no invalidation can remove them or free their pages, so `f`
    /// may use [`Mapping::page`]. `f` must not sleep; its error ends the
    /// fault. A chunk done before a later one failed stays done.
    pub fn fault_walk(
        &self,
        access: Access,
        r: Range<usize>,
        f: impl FnMut(&Mapping<'_>) -> Result,
    ) -> Result {
        self.walk_with(Some(access), r, f, true)
    }

    /// The device uses what is mirrored of `[start, end)`: `f` for each
    /// mapping, as [`Mirror::walk`], with the access lock held and no
    /// invalidation between its `update` and `update_end` (it waits for
    /// those under way), so [`Mapping::page`] works: an invalidation that
    /// would free the pages waits in `update` until `f` is done. It also
    /// waits for the mirror's own migrations to the device under way
    /// ([`Mirror::migrate_to_device`]), for as long as each call lasts
    /// (evictions and retries included). `f` must not sleep or allocate
    /// (nor migrate: that would wait for itself). `ESRCH` once the mm
    /// released the mirror.
    pub fn access(&self, r: Range<usize>, f: impl FnMut(&Mapping<'_>) -> Result) -> Result {
        let inner = &self.inner;
        loop {
            let access = inner.access.lock();
            let mut stopped = inner.stopped.lock();
            if stopped.released {
                return Err(ESRCH);
            }
            if stopped.invalidations == 0 {
                drop(stopped);
                let ret = self.walk_with(None, r, f, true);
                drop(access);
                return ret;
            }
            drop(access);
            while stopped.invalidations != 0 {
                inner.resume.wait(&mut stopped);
            }
        }
    }

    /// What the CPU maps in `[start, end)`, one [`Snap`] value per page into
    /// `out`, without faulting anything in. May sleep.
    pub fn snapshot(&self, r: Range<usize>, out: &mut [u32]) -> Result {
        let (start, end) = range(&r)?;
        if out.len() < (r.end - r.start) / PAGE_SIZE {
            return Err(EINVAL);
        }
        // SAFETY: `raw` is registered; `out` has room for every page.
        to_result(unsafe {
            ffi::hmm_rs_mirror_snapshot(self.raw.as_ptr(), start, end, out.as_mut_ptr())
        })
    }

    /// Gives the device exclusive access to `[start, end)`. May sleep.
    pub fn make_exclusive(&self, r: Range<usize>) -> Result {
        let (start, end) = range(&r)?;
        // SAFETY: `raw` is registered.
        to_result(unsafe { ffi::hmm_rs_mirror_make_exclusive(self.raw.as_ptr(), start, end) })
    }

    /// The device wrote `[start, end)`: marks its writable entries dirty.
    pub fn set_dirty(&self, r: Range<usize>) -> Result<usize> {
        let (start, end) = range(&r)?;
        // SAFETY: `raw` is registered.
        count(unsafe { ffi::hmm_rs_mirror_set_dirty(self.raw.as_ptr(), start, end) } as c_long)
    }

    /// Faults a batch of requests; each gets its result. May sleep.
    pub fn fault_batch(&self, reqs: &mut [FaultReq]) -> Result {
        if reqs.len() > FaultReq::BATCH_MAX {
            return Err(EINVAL);
        }
        // SAFETY: `raw` is registered; `FaultReq` is `repr(transparent)`
        // over `hmm_rs_fault_req`, and `reqs` holds `reqs.len()` of them.
        to_result(unsafe {
            ffi::hmm_rs_mirror_fault_batch(
                self.raw.as_ptr(),
                reqs.as_mut_ptr().cast(),
                reqs.len() as c_uint,
            )
        })
    }

    /// Moves what can move of `[start, end)` to `mem`, which must be this
    /// mirror's device's; the number of pages moved. May sleep.
    /// [`Mirror::access`] waits meanwhile, as for an invalidation.
    pub fn migrate_to_device<D: DevMemOps>(
        &self,
        mem: &DevMem<T, D>,
        r: Range<usize>,
    ) -> Result<usize> {
        let (start, end) = range(&r)?;
        let _fence = self.inner.fence();
        // SAFETY: `raw` and `mem.raw` are live.
        count(unsafe {
            ffi::hmm_rs_mirror_migrate_to_device(self.raw.as_ptr(), mem.raw.as_ptr(), start, end)
        })
    }

    /// Moves the device's pages of `[start, end)` back to system memory;
    /// the number of pages moved. May sleep. (No fence: a migration back
    /// to system memory sends the mirror a `Migrate` event, whose `update`
    /// holds [`Mirror::access`] off, as any invalidation does.)
    pub fn migrate_to_system(&self, r: Range<usize>) -> Result<usize> {
        let (start, end) = range(&r)?;
        // SAFETY: `raw` is live.
        count(unsafe { ffi::hmm_rs_mirror_migrate_to_system(self.raw.as_ptr(), start, end) })
    }

    /// Sets the [`advice`] of `[start, end)` (0 drops it). May sleep.
    pub fn advise(&self, r: Range<usize>, advice: u32) -> Result {
        let (start, end) = range(&r)?;
        // SAFETY: `raw` is live; no device memory is named, so the mirror
        // keeps none alive.
        to_result(unsafe {
            ffi::hmm_rs_mirror_advise(self.raw.as_ptr(), start, end, advice, core::ptr::null_mut())
        })
    }

    /// The advice at `addr`, and the range that has the same.
    pub fn advice(&self, addr: usize) -> (u32, Range<usize>) {
        let (mut start, mut end): (c_ulong, c_ulong) = (0, 0);
        // SAFETY: `raw` is live; `start` and `end` are valid for writes.
        let advice = unsafe {
            ffi::hmm_rs_mirror_advice(self.raw.as_ptr(), addr as c_ulong, &mut start, &mut end)
        };
        (advice as u32, start..end)
    }

    /// Moves `[start, end)` where its advice prefers; pages moved. (No
    /// fence: [`Mirror::advise`] names no device memory, so this moves
    /// pages only back to system memory, as [`Mirror::migrate_to_system`].)
    pub fn prefetch(&self, r: Range<usize>) -> Result<usize> {
        let (start, end) = range(&r)?;
        // SAFETY: `raw` is live.
        count(unsafe { ffi::hmm_rs_mirror_prefetch(self.raw.as_ptr(), start, end) })
    }
}

impl<T: MirrorOps> Drop for Mirror<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant; `inner` is freed after this returns,
        // and no callback comes after it.
        unsafe { ffi::hmm_rs_mirror_unregister(self.raw.as_ptr()) };
    }
}

/// A page of device memory, as its copy callbacks get it.
pub struct DevPage<'a> {
    index: usize,
    page: Option<PageRef<'a>>,
}

impl<'a> DevPage<'a> {
    /// Its index in the device memory.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The page itself, for device-coherent memory (which the CPU
    /// addresses); `None` for device-private memory, whose contents the
    /// driver keeps.
    pub fn page(&self) -> Option<PageRef<'a>> {
        self.page
    }
}

/// `1 << order` consecutive pages of device memory (a huge folio's), as
/// the folio callbacks get them.
pub struct DevPages<'a> {
    index: usize,
    order: u32,
    pages: Option<Pages<'a>>,
}

impl<'a> DevPages<'a> {
    /// The index of the first page in the device memory.
    pub fn index(&self) -> usize {
        self.index
    }

    /// 9 for a 2 MiB folio.
    pub fn order(&self) -> u32 {
        self.order
    }

    /// How many 4 KiB pages.
    pub fn npages(&self) -> usize {
        1 << self.order
    }

    /// Page `k`.
    pub fn page(&self, k: usize) -> Option<DevPage<'a>> {
        (k < self.npages()).then(|| DevPage {
            index: self.index + k,
            page: self.pages.and_then(|p| p.page(k)),
        })
    }

    /// The pages themselves, for device-coherent memory; `None` for
    /// device-private memory.
    pub fn pages(&self) -> Option<Pages<'a>> {
        self.pages
    }
}

/// How the core moves data to and from device memory, as the core's own
/// `DevMemOps`: page indexes are `0..npages`.
pub trait DevMemOps: Send + Sync + Sized + 'static {
    /// Whether the API keeps the memory's contents itself, in system pages
    /// ([`Stored`]): the copy callbacks below are then never called. Set
    /// by [`Stored`] only.
    #[doc(hidden)]
    const STORED: bool = false;

    /// Fills device page `dst` from `src`, or with zeros if `None`.
    fn copy_to_device(&self, dst: DevPage<'_>, src: Option<PageRef<'_>>) -> Result;
    /// Copies device page `src` into `dst`.
    fn copy_from_device(&self, src: DevPage<'_>, dst: PageRef<'_>) -> Result;
    /// Device page `index` holds nothing any more. Must not sleep. The core
    /// frees a huge folio's pages one by one too (the kernel may split it).
    fn free(&self, _index: usize) {}

    /// Fills the device pages of a huge folio, `dst`, from the system
    /// pages `src` (as many), or with zeros: one transfer for a DMA engine.
    /// By default, page by page ([`copy_pages_to_device`]).
    fn copy_folio_to_device(&self, dst: DevPages<'_>, src: Option<Pages<'_>>) -> Result {
        copy_pages_to_device(self, dst, src)
    }

    /// Copies the device pages of a huge folio, `src`, into the system
    /// pages `dst` (as many). By default, page by page
    /// ([`copy_pages_from_device`]).
    fn copy_folio_from_device(&self, src: DevPages<'_>, dst: Pages<'_>) -> Result {
        copy_pages_from_device(self, src, dst)
    }
}

/// [`DevMemOps::copy_folio_to_device`] page by page.
pub fn copy_pages_to_device<D: DevMemOps>(
    ops: &D,
    dst: DevPages<'_>,
    src: Option<Pages<'_>>,
) -> Result {
    (0..dst.npages()).try_for_each(|k| {
        let page = dst.page(k).ok_or(EINVAL)?;
        match src {
            Some(src) => ops.copy_to_device(page, Some(src.page(k).ok_or(EINVAL)?)),
            None => ops.copy_to_device(page, None),
        }
    })
}

/// [`DevMemOps::copy_folio_from_device`] page by page.
pub fn copy_pages_from_device<D: DevMemOps>(ops: &D, src: DevPages<'_>, dst: Pages<'_>) -> Result {
    (0..src.npages()).try_for_each(|k| {
        ops.copy_from_device(src.page(k).ok_or(EINVAL)?, dst.page(k).ok_or(EINVAL)?)
    })
}

/// The [`DevMemOps`] of device memory whose contents the API keeps itself,
/// in system pages, as test_hmm keeps one in each device page: for a device
/// with no memory of its own to copy to (test_hmm's dmirror, hmm_dummy,
/// rust_dmirror), or to bring a driver up before its copy engine works.
/// [`DevMem::with_stored`] reads them. Its copy callbacks are never called
/// (`free` is, after the API's own, and does nothing).
pub struct Stored;

impl DevMemOps for Stored {
    const STORED: bool = true;

    fn copy_to_device(&self, _dst: DevPage<'_>, _src: Option<PageRef<'_>>) -> Result {
        Err(EINVAL)
    }

    fn copy_from_device(&self, _src: DevPage<'_>, _dst: PageRef<'_>) -> Result {
        Err(EINVAL)
    }
}

/// The order of a 2 MiB folio.
const HUGE_ORDER: u32 = 9;

/// What a [`PageStore`] slot holds: nothing, or a page and whether it is
/// one of a huge folio's.
#[derive(Clone, Copy)]
struct Slot(u64);

impl Slot {
    const EMPTY: Slot = Slot(0);

    fn new(pfn: u64, huge: bool) -> Slot {
        Slot(((pfn + 1) << 1) | u64::from(huge))
    }

    fn pfn(self) -> Option<u64> {
        (self.0 != 0).then(|| (self.0 >> 1) - 1)
    }

    fn huge(self) -> bool {
        self.0 & 1 != 0
    }
}

/// The contents of [`Stored`] device-private memory: a system page per
/// device page in use, by index; a huge device folio's in one huge folio
/// (freed with the last of its pages: the kernel may split the device
/// folio and free its pages one by one).
///
/// The core's callbacks read and change a slot without a lock (one atomic
/// each): the core never runs two for one device page at once, never frees
/// a device page (`free`) while a callback copies it, and fills only free
/// ones. The driver reads ([`DevMem::with_stored`]) under `lock` with
/// `readers` raised; a slot emptied is let go only after `lock` was taken,
/// if any reader was seen. A reader raises `readers` before it loads a
/// slot, a slot is emptied before `readers` is looked at, each with a full
/// barrier: either the reader loads the emptied slot, or the emptier sees
/// the reader and waits for it; if it sees `readers` back at 0, its acquire
/// orders the reader's use of the page before the page is let go. The
/// callbacks run in process context (the core's migrations and its
/// `page_free`), so a plain spinlock does.
///
/// # Invariants
///
/// A slot that is not empty owns its page: the page's reference, or for a
/// page of a huge folio one of the `huge_live[index >> HUGE_ORDER]` shares
/// of the folio's reference (the last share puts it); a block's count is 0
/// while none of its slots holds a share. A page is read only by a callback
/// of the core for that device page, or with `lock` held and `readers`
/// raised.
#[pin_data]
struct PageStore {
    slots: KVVec<Atomic<u64>>,
    huge_live: KVVec<Atomic<u32>>,
    readers: Atomic<u32>,
    #[pin]
    lock: SpinLock<()>,
}

impl PageStore {
    fn new(npages: usize) -> Result<impl PinInit<Self, Error>> {
        let mut slots = KVVec::with_capacity(npages, GFP_KERNEL)?;
        for _ in 0..npages {
            slots.push(Atomic::new(0), GFP_KERNEL)?;
        }
        let blocks = npages >> HUGE_ORDER;
        let mut huge_live = KVVec::with_capacity(blocks, GFP_KERNEL)?;
        for _ in 0..blocks {
            huge_live.push(Atomic::new(0), GFP_KERNEL)?;
        }
        // INVARIANT: Every slot empty, every count 0.
        Ok(try_pin_init!(PageStore {
            slots,
            huge_live,
            readers: Atomic::new(0),
            lock <- new_spinlock!(()),
        }))
    }

    fn slot(&self, index: usize) -> Result<&Atomic<u64>> {
        self.slots.get(index).ok_or(EINVAL)
    }

    /// Puts `new` in slot `index`, and lets go of what was there.
    fn replace(&self, index: usize, new: Slot) -> Result {
        let old = Slot(self.slot(index)?.xchg(new.0, Full));
        let Some(pfn) = old.pfn() else {
            return Ok(());
        };
        if self.readers.load(Acquire) != 0 {
            // A reader may have loaded `old` before it was replaced.
            drop(self.lock.lock());
        }
        if !old.huge() {
            // SAFETY: The slot owned the page's reference, and no one reads
            // the page any more (type invariant).
            unsafe { ffi::hmm_rs_drv_page_free(pfn) };
        } else if self.huge_live[index >> HUGE_ORDER].fetch_sub(1, Full) == 1 {
            // SAFETY: The last share of the folio's reference; as above.
            unsafe { ffi::hmm_rs_drv_folio_put(pfn) };
        }
        Ok(())
    }

    /// Fills slot `index` with a new page, from `src` or with zeros.
    fn fill(&self, index: usize, src: Option<PageRef<'_>>) -> Result {
        self.slot(index)?;
        let mut pfn = 0;
        // SAFETY: `pfn` is valid for a write.
        if !unsafe { ffi::hmm_rs_drv_page_alloc(&mut pfn) } {
            return Err(ENOMEM);
        }
        // INVARIANT: A new page, ours.
        let page = PageRef {
            pfn,
            writable: true,
            _life: PhantomData,
        };
        let copied = match src {
            Some(src) => page.copy_from(&src),
            None => page.zero(),
        };
        if let Err(e) = copied {
            // SAFETY: Ours, never published.
            unsafe { ffi::hmm_rs_drv_page_free(pfn) };
            return Err(e);
        }
        // INVARIANT: The slot takes the reference.
        self.replace(index, Slot::new(pfn, false))
    }

    /// Fills the slots of a huge device folio from `src` (or with zeros):
    /// from one huge folio if one comes cheaply, else page by page.
    fn fill_folio(&self, dst: &DevPages<'_>, src: Option<Pages<'_>>) -> Result {
        let (index, n) = (dst.index(), dst.npages());
        let slots = self.slots.get(index..index + n).ok_or(EINVAL)?;
        let by_pages =
            || (0..n).try_for_each(|k| self.fill(index + k, src.and_then(|s| s.page(k))));
        // A whole block whose pages hold no share of an older folio: its
        // count goes from 0 to the shares about to be made.
        let live = (dst.order() == HUGE_ORDER && index % n == 0)
            .then(|| self.huge_live.get(index >> HUGE_ORDER))
            .flatten()
            .filter(|live| {
                slots.iter().all(|s| s.load(Relaxed) == 0)
                    && live.cmpxchg(0, n as u32, Full).is_ok()
            });
        let Some(live) = live else {
            return by_pages();
        };
        let Ok(folio) = OwnedFolio::alloc(HUGE_ORDER) else {
            live.store(0, Relaxed);
            return by_pages();
        };
        let copied = match src {
            Some(src) => folio.pages().copy_from(&src),
            None => folio.pages().zero(),
        };
        if let Err(e) = copied {
            live.store(0, Relaxed);
            return Err(e);
        }
        // INVARIANT: The folio's reference becomes the `n` shares the count
        // says, one per slot (all empty: the core fills only free pages).
        let pfn = folio.into_pfn();
        (0..n).try_for_each(|k| self.replace(index + k, Slot::new(pfn + k as u64, true)))
    }

    /// The page in slot `index`, for a callback of the core: the core frees
    /// no device page while a callback copies it. (Private: the `PageRef`
    /// never leaves the callback, though its lifetime is the store's.)
    fn page(&self, index: usize) -> Result<PageRef<'_>> {
        let pfn = Slot(self.slot(index)?.load(Relaxed)).pfn().ok_or(EIO)?;
        // INVARIANT: Owned by the slot, which stays for the callback.
        Ok(PageRef {
            pfn,
            writable: false,
            _life: PhantomData,
        })
    }

    /// Copies the slots of a huge device folio into `dst`: in one call if
    /// one huge folio holds them all, in order.
    fn copy_out_folio(&self, src: &DevPages<'_>, dst: Pages<'_>) -> Result {
        let first = self.page(src.index())?;
        let whole = (0..src.npages()).all(|k| {
            self.slot(src.index() + k)
                .is_ok_and(|s| Slot(s.load(Relaxed)).pfn() == Some(first.pfn + k as u64))
        });
        if whole && src.order() == dst.order() {
            // INVARIANT: `npages` pages from `first`, owned by the slots.
            let pages = Pages {
                pfn: first.pfn,
                order: src.order(),
                writable: false,
                _life: PhantomData,
            };
            return dst.copy_from(&pages);
        }
        (0..src.npages()).try_for_each(|k| {
            dst.page(k)
                .ok_or(EINVAL)?
                .copy_from(&self.page(src.index() + k)?)
        })
    }

    /// Runs `f` on the page in slot `index`, if any, held as a reader.
    fn read<R>(&self, index: usize, f: impl FnOnce(PageRef<'_>) -> R) -> Result<R> {
        let slot = self.slot(index)?;
        let _guard = self.lock.lock();
        self.readers.fetch_add(1, Full);
        let pfn = Slot(slot.load(Relaxed)).pfn();
        // INVARIANT: Read as a reader (type invariant); the device's own
        // memory, the device's to change.
        let r = pfn.map(|pfn| {
            f(PageRef {
                pfn,
                writable: true,
                _life: PhantomData,
            })
        });
        self.readers.fetch_sub(1, Full);
        r.ok_or(EIO)
    }

    /// Empties every slot (once the memory is destroyed).
    fn clear(&self) {
        for index in 0..self.slots.len() {
            let _ = self.replace(index, Slot::EMPTY);
        }
    }
}

/// What C's devmem callbacks reach (as `devmem_priv`).
#[pin_data]
struct DevMemInner<D> {
    /// The pfn of page 0 for device-coherent memory, else `None`.
    coherent: Option<u64>,
    /// The contents, for [`Stored`] device-private memory (else empty).
    #[pin]
    store: PageStore,
    #[pin]
    ops: D,
}

impl<D: DevMemOps> DevMemInner<D> {
    fn dev_page(&self, index: c_ulong) -> DevPage<'_> {
        DevPage {
            index,
            // INVARIANT: Coherent memory is addressable, and the core hands
            // a page to its callbacks only while it is in use.
            page: self.coherent.map(|first| PageRef {
                pfn: first + index as u64,
                writable: true,
                _life: PhantomData,
            }),
        }
    }

    fn dev_pages(&self, index: c_ulong, order: c_uint) -> DevPages<'_> {
        DevPages {
            index,
            order,
            // INVARIANT: As for `dev_page`, for each page of the folio.
            pages: self.coherent.map(|first| Pages {
                pfn: first + index as u64,
                order,
                writable: true,
                _life: PhantomData,
            }),
        }
    }

    // The callbacks, by the store for [`Stored`] memory, else by `D`.

    fn copy_to_device(&self, index: c_ulong, src: Option<PageRef<'_>>) -> Result {
        let dst = self.dev_page(index);
        match (D::STORED, dst.page()) {
            (false, _) => self.ops.copy_to_device(dst, src),
            (true, Some(page)) => match src {
                Some(src) => page.copy_from(&src),
                None => page.zero(),
            },
            (true, None) => self.store.fill(index, src),
        }
    }

    fn copy_from_device(&self, index: c_ulong, dst: PageRef<'_>) -> Result {
        let src = self.dev_page(index);
        match (D::STORED, src.page()) {
            (false, _) => self.ops.copy_from_device(src, dst),
            (true, Some(page)) => dst.copy_from(&page),
            (true, None) => dst.copy_from(&self.store.page(index)?),
        }
    }

    fn copy_folio_to_device(
        &self,
        index: c_ulong,
        order: c_uint,
        src: Option<Pages<'_>>,
    ) -> Result {
        let dst = self.dev_pages(index, order);
        match (D::STORED, dst.pages()) {
            (false, _) => self.ops.copy_folio_to_device(dst, src),
            (true, Some(pages)) => match src {
                Some(src) => pages.copy_from(&src),
                None => pages.zero(),
            },
            (true, None) => self.store.fill_folio(&dst, src),
        }
    }

    fn copy_folio_from_device(&self, index: c_ulong, order: c_uint, dst: Pages<'_>) -> Result {
        let src = self.dev_pages(index, order);
        match (D::STORED, src.pages()) {
            (false, _) => self.ops.copy_folio_from_device(src, dst),
            (true, Some(pages)) => dst.copy_from(&pages),
            (true, None) => self.store.copy_out_folio(&src, dst),
        }
    }

    fn free(&self, index: c_ulong) {
        if D::STORED && self.coherent.is_none() {
            // Only indexes of this memory come here.
            let _ = self.store.replace(index, Slot::EMPTY);
        }
        self.ops.free(index);
    }
}

/// `hmm_rs_devmem_ops` callbacks for `DevMemInner<D>`.
struct DevMemVTable<D>(PhantomData<D>);

impl<D: DevMemOps> DevMemVTable<D> {
    const OPS: ffi::hmm_rs_devmem_ops = ffi::hmm_rs_devmem_ops {
        copy_to_device: Some(Self::copy_to_device),
        copy_from_device: Some(Self::copy_from_device),
        free: Some(Self::free),
        copy_folio_to_device: Some(Self::copy_folio_to_device),
        copy_folio_from_device: Some(Self::copy_folio_from_device),
    };

    /// # Safety
    ///
    /// `devmem_priv` is the `DevMemInner<D>` of a live [`DevMem`].
    unsafe fn inner<'a>(devmem_priv: *mut c_void) -> &'a DevMemInner<D> {
        // SAFETY: By the caller's guarantee.
        unsafe { &*devmem_priv.cast::<DevMemInner<D>>() }
    }

    /// # Safety
    ///
    /// `page` is NULL or a system page the core holds for the call, which the
    /// callback may change if `writable` (a migration's destination).
    unsafe fn page<'a>(page: *mut bindings::page, writable: bool) -> Option<PageRef<'a>> {
        // INVARIANT: A system page, held for the call; writable as said.
        (!page.is_null()).then(|| PageRef {
            // SAFETY: A valid page.
            pfn: unsafe { ffi::hmm_rs_drv_page_pfn(page) },
            writable,
            _life: PhantomData,
        })
    }

    /// # Safety
    ///
    /// Called by hmm_rs as `copy_to_device` of memory [`DevMem`] created.
    unsafe extern "C" fn copy_to_device(
        devmem_priv: *mut c_void,
        index: c_ulong,
        src: *mut bindings::page,
    ) -> c_int {
        // SAFETY: hmm_rs passes the registered `devmem_priv` and a held page,
        // the migration's source: read only.
        let (inner, src) = unsafe { (Self::inner(devmem_priv), Self::page(src, false)) };
        match inner.copy_to_device(index, src) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for [`Self::copy_to_device`].
    unsafe extern "C" fn copy_from_device(
        devmem_priv: *mut c_void,
        index: c_ulong,
        dst: *mut bindings::page,
    ) -> c_int {
        // SAFETY: hmm_rs passes the registered `devmem_priv` and a held page,
        // the migration's destination, to be filled.
        let (inner, dst) = unsafe { (Self::inner(devmem_priv), Self::page(dst, true)) };
        let Some(dst) = dst else {
            return EINVAL.to_errno();
        };
        match inner.copy_from_device(index, dst) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// `page` is NULL or the first of `1 << order` system pages (a folio's)
    /// the core holds for the call, which the callback may change if
    /// `writable`.
    unsafe fn pages<'a>(
        page: *mut bindings::page,
        order: c_uint,
        writable: bool,
    ) -> Option<Pages<'a>> {
        // INVARIANT: As for `page`, for each page of the folio.
        (!page.is_null()).then(|| Pages {
            // SAFETY: A valid page.
            pfn: unsafe { ffi::hmm_rs_drv_page_pfn(page) },
            order,
            writable,
            _life: PhantomData,
        })
    }

    /// # Safety
    ///
    /// Called by hmm_rs as `copy_folio_to_device` of memory [`DevMem`]
    /// created.
    unsafe extern "C" fn copy_folio_to_device(
        devmem_priv: *mut c_void,
        index: c_ulong,
        src: *mut bindings::page,
        order: c_uint,
    ) -> c_int {
        // SAFETY: hmm_rs passes the registered `devmem_priv` and a held
        // folio, the migration's source: read only.
        let (inner, src) = unsafe { (Self::inner(devmem_priv), Self::pages(src, order, false)) };
        match inner.copy_folio_to_device(index, order, src) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for [`Self::copy_folio_to_device`].
    unsafe extern "C" fn copy_folio_from_device(
        devmem_priv: *mut c_void,
        index: c_ulong,
        dst: *mut bindings::page,
        order: c_uint,
    ) -> c_int {
        // SAFETY: hmm_rs passes the registered `devmem_priv` and a held
        // folio, the migration's destination, to be filled.
        let (inner, dst) = unsafe { (Self::inner(devmem_priv), Self::pages(dst, order, true)) };
        let Some(dst) = dst else {
            return EINVAL.to_errno();
        };
        match inner.copy_folio_from_device(index, order, dst) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for [`Self::copy_to_device`].
    unsafe extern "C" fn free(devmem_priv: *mut c_void, index: c_ulong) {
        // SAFETY: hmm_rs passes the registered `devmem_priv`.
        let inner = unsafe { Self::inner(devmem_priv) };
        inner.free(index);
    }
}

/// A counter of device memory ([`DevMem::stat`]).
#[derive(Clone, Copy, Debug)]
pub enum DevMemStat {
    /// Pages in all.
    Size,
    /// Pages in use now.
    InUse,
    /// Pages moved in by migrations.
    Migrated,
    /// Pages moved back by eviction.
    Evicted,
    /// Blocks eviction could not empty.
    EvictSkipped,
    /// Pages a migration left for lack of room.
    NotPlaced,
    /// Pages not moved: their block was held by thrash control.
    ThrashHeld,
    /// Blocks that moved again too soon.
    ThrashDetected,
}

/// Device memory of a `Device<T>`, whose contents `D` moves.
///
/// # Invariants
///
/// `raw` is memory `hmm_rs_devmem_create` (or `_coherent`) returned for
/// `inner` (its `devmem_priv`), destroyed only in `drop`, before `inner`
/// is freed; no mirror's advice names it (this API never gives it).
pub struct DevMem<T: MirrorOps, D: DevMemOps> {
    raw: NonNull<ffi::hmm_rs_devmem>,
    inner: Pin<KBox<DevMemInner<D>>>,
    _device: Arc<Device<T>>,
}

// SAFETY: The C API takes device memory from any thread; `D` is `Send`.
unsafe impl<T: MirrorOps, D: DevMemOps> Send for DevMem<T, D> {}
// SAFETY: The C API's device-memory functions may run concurrently; `D` is `Sync`.
unsafe impl<T: MirrorOps, D: DevMemOps> Sync for DevMem<T, D> {}

impl<T: MirrorOps, D: DevMemOps> DevMem<T, D> {
    /// `npages` of device-private memory for `device`; with `evict`, a
    /// migration that finds it full evicts its least-recently-used 2 MiB
    /// blocks. May sleep.
    pub fn new<E>(
        device: &Arc<Device<T>>,
        npages: usize,
        evict: bool,
        ops: impl PinInit<D, E>,
    ) -> Result<Self>
    where
        Error: From<E>,
    {
        Self::create(device, None, npages, evict, ops)
    }

    /// `npages` of device-coherent memory at physical address `start` (2 MiB
    /// aligned, not System RAM). May sleep.
    pub fn new_coherent<E>(
        device: &Arc<Device<T>>,
        start: u64,
        npages: usize,
        evict: bool,
        ops: impl PinInit<D, E>,
    ) -> Result<Self>
    where
        Error: From<E>,
    {
        Self::create(device, Some(start), npages, evict, ops)
    }

    fn create<E>(
        device: &Arc<Device<T>>,
        start: Option<u64>,
        npages: usize,
        evict: bool,
        ops: impl PinInit<D, E>,
    ) -> Result<Self>
    where
        Error: From<E>,
    {
        let coherent = start.map(|s| s >> kernel::page::PAGE_SHIFT);
        // Only device-private memory has contents of its own to keep.
        let stored = if D::STORED && start.is_none() {
            npages
        } else {
            0
        };
        let store = PageStore::new(stored)?;
        let inner = KBox::try_pin_init(
            try_pin_init!(DevMemInner {
                coherent: coherent,
                store <- store,
                ops <- ops,
            }),
            GFP_KERNEL,
        )?;
        let priv_ = core::ptr::from_ref::<DevMemInner<D>>(&inner)
            .cast_mut()
            .cast::<c_void>();
        let flags = if evict { ffi::HMM_RS_DEVMEM_EVICT } else { 0 };
        let ops: &'static ffi::hmm_rs_devmem_ops = &DevMemVTable::<D>::OPS;
        // SAFETY: `device` is registered; the ops are static; `inner` is
        // pinned and outlives the memory (type invariant of `DevMem`).
        let raw = from_err_ptr(unsafe {
            match start {
                None => ffi::hmm_rs_devmem_create(
                    device.raw.as_ptr(),
                    npages as c_ulong,
                    ops,
                    priv_,
                    flags,
                ),
                Some(start) => ffi::hmm_rs_devmem_create_coherent(
                    device.raw.as_ptr(),
                    start as bindings::phys_addr_t,
                    npages as c_ulong,
                    ops,
                    priv_,
                    flags,
                ),
            }
        })?;
        // INVARIANT: Created just now for `inner`.
        let mem = DevMem {
            raw: NonNull::new(raw).ok_or(ENOMEM)?,
            inner,
            _device: device.clone(),
        };
        // The pfns `DevPage` computes are the core's.
        if let Some(first) = coherent {
            if mem.pfn(0) != Some(first) {
                return Err(EINVAL);
            }
        }
        Ok(mem)
    }

    /// The callbacks' state.
    pub fn ops(&self) -> &D {
        &self.inner.ops
    }

    /// Runs `f` on the system page that holds the contents of device page
    /// `pfn` of [`Stored`] device-private memory: `EINVAL` if `pfn` is not
    /// such a page of this memory, `EIO` if it holds nothing. The page is
    /// not freed under `f`, but its contents are consistent only within
    /// [`Mirror::access`] (a migration copies it without the lock). `f`
    /// runs under a spinlock: it must not sleep, nor call this again.
    pub fn with_stored<R>(&self, pfn: u64, f: impl FnOnce(PageRef<'_>) -> R) -> Result<R> {
        let index = self.index(pfn).ok_or(EINVAL)?;
        self.inner.store.read(index, f)
    }

    /// The pfn of page `index`, if it has one.
    pub fn pfn(&self, index: usize) -> Option<u64> {
        // SAFETY: `raw` is live.
        let pfn = unsafe { ffi::hmm_rs_devmem_pfn(self.raw.as_ptr(), index as c_ulong) };
        (pfn != 0).then_some(pfn)
    }

    /// The index of the device page `pfn` (a mirror entry's), if it is one
    /// of this memory's.
    pub fn index(&self, pfn: u64) -> Option<usize> {
        // SAFETY: `raw` is live.
        count(unsafe { ffi::hmm_rs_devmem_index(self.raw.as_ptr(), pfn) }).ok()
    }

    /// Migrates every page in use back to system memory; pages moved.
    pub fn evict(&self) -> Result<usize> {
        // SAFETY: `raw` is live.
        count(unsafe { ffi::hmm_rs_devmem_evict(self.raw.as_ptr()) })
    }

    /// Evicts least-recently-used 2 MiB blocks until `npages` moved.
    pub fn evict_lru(&self, npages: usize) -> Result<usize> {
        // SAFETY: `raw` is live.
        count(unsafe { ffi::hmm_rs_devmem_evict_lru(self.raw.as_ptr(), npages as c_ulong) })
    }

    /// Evicts the 2 MiB blocks `[index, index + npages)` overlaps.
    pub fn evict_range(&self, index: usize, npages: usize) -> Result<usize> {
        // SAFETY: `raw` is live.
        count(unsafe {
            ffi::hmm_rs_devmem_evict_range(self.raw.as_ptr(), index as c_ulong, npages as c_ulong)
        })
    }

    /// Thrash control: a block back within `window_us` of its last move is
    /// held for `backoff_us` (doubling per repeat); 0 turns it off.
    pub fn set_thrash(&self, window_us: u32, backoff_us: u32) -> Result {
        // SAFETY: `raw` is live.
        to_result(unsafe {
            ffi::hmm_rs_devmem_set_thrash(self.raw.as_ptr(), window_us, backoff_us)
        })
    }

    /// A counter.
    pub fn stat(&self, which: DevMemStat) -> u64 {
        let which = match which {
            DevMemStat::Size => ffi::HMM_RS_DEVMEM_SIZE,
            DevMemStat::InUse => ffi::HMM_RS_DEVMEM_IN_USE,
            DevMemStat::Migrated => ffi::HMM_RS_DEVMEM_MIGRATED,
            DevMemStat::Evicted => ffi::HMM_RS_DEVMEM_EVICTED,
            DevMemStat::EvictSkipped => ffi::HMM_RS_DEVMEM_EVICT_SKIPPED,
            DevMemStat::NotPlaced => ffi::HMM_RS_DEVMEM_NOT_PLACED,
            DevMemStat::ThrashHeld => ffi::HMM_RS_DEVMEM_THRASH_HELD,
            DevMemStat::ThrashDetected => ffi::HMM_RS_DEVMEM_THRASH_DETECTED,
        };
        // SAFETY: `raw` is live.
        unsafe { ffi::hmm_rs_devmem_stat(self.raw.as_ptr(), which) }
    }
}

impl<T: MirrorOps, D: DevMemOps> Drop for DevMem<T, D> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant: no advice names it, so it is gone,
        // callbacks and all, when this returns; `inner` is freed after.
        unsafe { ffi::hmm_rs_devmem_destroy(self.raw.as_ptr()) };
        // Every page was freed by now (`free`); this only guards against a
        // leak.
        self.inner.store.clear();
    }
}
