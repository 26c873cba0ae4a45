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
//! against `hmm_rs.h`). Every `unsafe` of a driver on hmm-rs is here or in
//! the files of `rust/hmm_rs_driver/` this one includes: `pages.rs` (pages
//! by pfn), `devmem.rs` (device memory and its callbacks), `store.rs`
//! (device-memory contents the API keeps, [`Stored`]).
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

#[path = "hmm_rs_driver/devmem.rs"]
mod devmem;
#[path = "hmm_rs_driver/pages.rs"]
mod pages;
#[path = "hmm_rs_driver/store.rs"]
mod store;

pub use devmem::{
    copy_pages_from_device, copy_pages_to_device, DevMem, DevMemOps, DevMemStat, DevPage, DevPages,
};
pub use pages::{OwnedFolio, OwnedPage, PageBits, PageBuffer, PageRef, Pages};
pub use store::Stored;
use store::{PageStore, Slot};

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
        errno(inner.ops.update_finish(event, blockable))
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
    errno(f(&mapping))
}

/// A callback's result as C takes it: 0 or a negative errno.
fn errno(r: Result) -> c_int {
    match r {
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
