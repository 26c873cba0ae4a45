// SPDX-License-Identifier: GPL-2.0

//! The C API: the functions `hmm_rs.h` declares for C drivers, defined
//! here under their C names (`#[no_mangle]`) and exported by the
//! `EXPORT_SYMBOL_GPL` list of `hmm_rs_api.c`. They turn C callbacks into
//! [`MirrorOps`]/[`DevMemOps`] and C pointers into the core's types.
//!
//! `hmm_rs.h` is the one source of truth: each function here has its
//! prototype, in Rust types (`unsigned long` is `c_ulong`, an enum `u32`,
//! a struct pointer the core's type behind it). No compiler compares the
//! two, so the build does: modpost refuses an export this file does not
//! define, and `scripts/check-c-api.py` (run by Kbuild) a function, walk
//! callback or member of a copied structure whose Rust types are not the
//! header's. The `hmm_rs_c_header` KUnit suite checks the constants and the
//! `#[repr(C)]` layouts against what the C compiler makes of the header.

use core::ptr::NonNull;
use kernel::{
    bindings,
    device::Device,
    mm::MmWithUser,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, ArcBorrow,
    },
};

use crate::{
    error::{count_or_errno, errno},
    hmm_event::{HmmEvent, HmmEventType},
    hmm_mirror::{
        advice::Advice,
        devmem::{
            copy_pages_from_device, copy_pages_to_device, DevMem, DevMemOps, Owner, Policy, SysPage,
        },
        Access, FaultRequest, HmmMirror, MirrorOps, Update, FAULT_BATCH_MAX,
    },
    hmm_pt, shim,
};

/// `struct hmm_rs_device_ops` of hmm_rs.h.
#[repr(C)]
pub(crate) struct CDeviceOps {
    update: Option<
        unsafe extern "C" fn(
            *mut HmmMirror,
            *const CEvent,
            bool,
            *mut core::ffi::c_void,
        ) -> core::ffi::c_int,
    >,
    release: Option<unsafe extern "C" fn(*mut HmmMirror, *mut core::ffi::c_void)>,
    update_end: Option<unsafe extern "C" fn(*mut HmmMirror, *const CEvent, *mut core::ffi::c_void)>,
    update_finish: Option<
        unsafe extern "C" fn(
            *mut HmmMirror,
            *const CEvent,
            bool,
            *mut core::ffi::c_void,
        ) -> core::ffi::c_int,
    >,
}

/// `HMM_RS_UPDATE_PENDING` of hmm_rs.h: `update()` started the device's
/// invalidation; `update_finish()` waits for it.
const C_UPDATE_PENDING: core::ffi::c_int = 1;

/// `struct hmm_rs_event` of hmm_rs.h.
#[repr(C)]
pub(crate) struct CEvent {
    ty: u32,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
    keep: u64,
}

impl From<&HmmEvent> for CEvent {
    fn from(event: &HmmEvent) -> Self {
        Self {
            ty: event.ty as u32,
            start: event.start as usize,
            end: event.end as usize,
            keep: event.keep.bits(),
        }
    }
}

/// `struct hmm_rs_device`: a C driver's callbacks, and how many mirrors use
/// them.
pub(crate) struct CDevice {
    ops: *const CDeviceOps,
    mirrors: Atomic<u64>,
    devmems: Atomic<u64>,
}

/// The [`MirrorOps`] of a mirror registered from C.
///
/// # Invariants
///
/// `device` is a live [`CDevice`] whose `mirrors` counts this object.
struct CMirrorOps {
    device: NonNull<CDevice>,
    private: *mut core::ffi::c_void,
}

// SAFETY: The C API requires callbacks callable from any task.
unsafe impl Send for CMirrorOps {}
// SAFETY: As above.
unsafe impl Sync for CMirrorOps {}

impl CMirrorOps {
    fn ops(&self) -> &CDeviceOps {
        // SAFETY: The device is alive (type invariant) and its ops pointer
        // valid, which `hmm_rs_device_register` requires of the driver.
        unsafe { &*self.device.as_ref().ops }
    }
}

impl MirrorOps for CMirrorOps {
    fn update(&self, mirror: &HmmMirror, event: &HmmEvent, blockable: bool) -> Result<Update> {
        let Some(f) = self.ops().update else {
            return Ok(Update::Done);
        };
        let mirror = core::ptr::from_ref(mirror).cast_mut();
        // SAFETY: The driver's callback, with its own private pointer.
        match unsafe { f(mirror, &CEvent::from(event), blockable, self.private) } {
            // Pending without update_finish() is a driver bug: the error
            // is logged and the event stands.
            C_UPDATE_PENDING if self.ops().update_finish.is_some() => Ok(Update::Pending),
            C_UPDATE_PENDING => Err(EINVAL),
            r => kernel::error::to_result(r).map(|()| Update::Done),
        }
    }

    fn update_finish(&self, mirror: &HmmMirror, event: &HmmEvent, blockable: bool) -> Result {
        let Some(f) = self.ops().update_finish else {
            return Ok(());
        };
        let mirror = core::ptr::from_ref(mirror).cast_mut();
        // SAFETY: As above.
        kernel::error::to_result(unsafe {
            f(mirror, &CEvent::from(event), blockable, self.private)
        })
    }

    fn update_end(&self, mirror: &HmmMirror, event: &HmmEvent) {
        if let Some(f) = self.ops().update_end {
            let mirror = core::ptr::from_ref(mirror).cast_mut();
            // SAFETY: As above.
            unsafe { f(mirror, &CEvent::from(event), self.private) };
        }
    }

    fn release(&self, mirror: &HmmMirror) {
        if let Some(f) = self.ops().release {
            // SAFETY: As above.
            unsafe { f(core::ptr::from_ref(mirror).cast_mut(), self.private) };
        }
    }
}

impl Drop for CMirrorOps {
    fn drop(&mut self) {
        // SAFETY: The device is alive (type invariant).
        unsafe { self.device.as_ref() }
            .mirrors
            .fetch_sub(1, Relaxed);
    }
}

/// # Safety
///
/// `ops` must be null or valid until the device is unregistered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_device_register(ops: *const CDeviceOps) -> *mut CDevice {
    if ops.is_null() {
        return EINVAL.to_ptr();
    }
    match KBox::new(
        CDevice {
            ops,
            mirrors: Atomic::new(0),
            devmems: Atomic::new(0),
        },
        GFP_KERNEL,
    ) {
        Ok(dev) => KBox::into_raw(dev),
        Err(_) => ENOMEM.to_ptr(),
    }
}

/// # Safety
///
/// `device` came from `hmm_rs_device_register` and is unregistered once.
#[no_mangle]
unsafe extern "C" fn hmm_rs_device_unregister(device: *mut CDevice) {
    // SAFETY: A registered device, by the caller's guarantee.
    let (mirrors, devmems) = unsafe {
        (
            (*device).mirrors.load(Relaxed),
            (*device).devmems.load(Relaxed),
        )
    };
    if mirrors != 0 || devmems != 0 {
        // Freeing it would leave its mirrors with dangling callbacks.
        pr_err!(
            "hmm_rs_device_unregister: refused, the device still has {mirrors} mirror(s) and {devmems} device memory region(s)\n"
        );
        return;
    }
    // SAFETY: From `KBox::into_raw` in `hmm_rs_device_register`.
    drop(unsafe { KBox::from_raw(device) });
}

/// # Safety
///
/// `device` is registered; `mm` has users for the duration of the call.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_register(
    device: *mut CDevice,
    mm: *mut bindings::mm_struct,
    private: *mut core::ffi::c_void,
) -> *mut HmmMirror {
    // SAFETY: By the caller's guarantees.
    unsafe { mirror_register(device, mm, None, private) }
}

/// # Safety
///
/// As [`hmm_rs_mirror_register`]; `dma_dev` is a live `struct device`.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_register_dma(
    device: *mut CDevice,
    mm: *mut bindings::mm_struct,
    dma_dev: *mut bindings::device,
    private: *mut core::ffi::c_void,
) -> *mut HmmMirror {
    if dma_dev.is_null() {
        return EINVAL.to_ptr();
    }
    // SAFETY: A live device, by the caller's guarantee; this takes a
    // reference the mirror holds.
    let dma_dev = unsafe { Device::get_device(dma_dev) };
    // SAFETY: By the caller's guarantees.
    unsafe { mirror_register(device, mm, Some(dma_dev), private) }
}

/// # Safety
///
/// As [`hmm_rs_mirror_register`].
unsafe fn mirror_register(
    device: *mut CDevice,
    mm: *mut bindings::mm_struct,
    dma_dev: Option<ARef<Device>>,
    private: *mut core::ffi::c_void,
) -> *mut HmmMirror {
    let (Some(dev), false) = (NonNull::new(device), mm.is_null()) else {
        return EINVAL.to_ptr();
    };
    // SAFETY: `mm` has users, by the caller's guarantee.
    let mm = unsafe { MmWithUser::from_raw(mm) };
    // SAFETY: A registered device, by the caller's guarantee.
    unsafe { dev.as_ref() }.mirrors.add(1, Relaxed);
    // INVARIANT: counted just above; dropping the ops uncounts it.
    let ops = CMirrorOps {
        device: dev,
        private,
    };
    let ops = match KBox::new(ops, GFP_KERNEL) {
        Ok(ops) => ops,
        Err(_) => return ENOMEM.to_ptr(),
    };
    match HmmMirror::register_dma(mm, Owner::of(device), ops, dma_dev) {
        Ok(mirror) => Arc::into_raw(mirror).cast_mut(),
        Err(e) => e.to_ptr(),
    }
}

/// # Safety
///
/// `mirror` came from `hmm_rs_mirror_register` and is unregistered once.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_unregister(mirror: *mut HmmMirror) {
    // SAFETY: From `Arc::into_raw` in `hmm_rs_mirror_register`.
    drop(unsafe { Arc::from_raw(mirror) });
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_fault(
    mirror: *mut HmmMirror,
    ty: u32,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_int {
    let Some(ty) = HmmEventType::from_raw(ty) else {
        return EINVAL.to_errno();
    };
    // SAFETY: A registered mirror, by the caller's guarantee.
    errno(unsafe { &*mirror }.fault(ty, start as u64, end as u64))
}

/// # Safety
///
/// `mirror` is registered; `f` is callable with `arg` without sleeping.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_fault_walk(
    mirror: *mut HmmMirror,
    ty: u32,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
    f: Option<CWalkFn>,
    arg: *mut core::ffi::c_void,
) -> core::ffi::c_int {
    let (Some(ty), Some(f)) = (HmmEventType::from_raw(ty), f) else {
        return EINVAL.to_errno();
    };
    // SAFETY: A registered mirror, by the caller's guarantee.
    let m = unsafe { &*mirror };
    let table = m.table();
    errno(m.fault_then(ty, start as u64, end as u64, &mut |s, e| {
        let mut ret = 0;
        table.walk_until(s, e, |entry| {
            // SAFETY: The driver's callback, with its own argument; it does
            // not sleep, by the caller's guarantee.
            ret = unsafe {
                f(
                    arg,
                    entry.addr as usize,
                    entry.entry.pfn(),
                    entry.order,
                    entry.entry.flags().bits(),
                )
            };
            ret != 0
        })?;
        match ret {
            0 => Ok(()),
            r => Err(Error::from_errno(r)),
        }
    }))
}

/// `struct hmm_rs_fault_req` of hmm_rs.h.
#[repr(C)]
pub(crate) struct CFaultReq {
    addr: u64,
    npages: u32,
    flags: u32,
    result: i32,
    pad: u32,
}

/// `HMM_RS_FAULT_REQ_WRITE` of hmm_rs.h.
const C_FAULT_REQ_WRITE: u32 = 1 << 0;

/// # Safety
///
/// `mirror` is registered; `reqs` points to `n` requests the caller lets
/// this function read and write until it returns.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_fault_batch(
    mirror: *mut HmmMirror,
    reqs: *mut CFaultReq,
    n: kernel::ffi::c_uint,
) -> core::ffi::c_int {
    let n = n as usize;
    if n == 0 {
        return 0;
    }
    if reqs.is_null() || n > FAULT_BATCH_MAX {
        return EINVAL.to_errno();
    }
    // SAFETY: `n` requests, ours until we return, by the caller's guarantee.
    let reqs = unsafe { core::slice::from_raw_parts_mut(reqs, n) };
    // SAFETY: A registered mirror, by the caller's guarantee.
    errno(fault_batch(unsafe { &*mirror }, reqs))
}

/// [`hmm_rs_mirror_fault_batch`] in safe Rust: the core's batch of the
/// well-formed requests, then every request's result written back.
fn fault_batch(mirror: &HmmMirror, reqs: &mut [CFaultReq]) -> Result {
    let mut good = KVec::with_capacity(reqs.len(), GFP_KERNEL)?;
    let mut index = KVec::with_capacity(reqs.len(), GFP_KERNEL)?;
    for (i, r) in reqs.iter_mut().enumerate() {
        if r.flags & !C_FAULT_REQ_WRITE != 0 || r.pad != 0 {
            r.result = EINVAL.to_errno();
            continue;
        }
        let access = if r.flags & C_FAULT_REQ_WRITE != 0 {
            Access::Write
        } else {
            Access::Read
        };
        good.push(
            FaultRequest {
                addr: r.addr,
                access,
                npages: r.npages,
            },
            GFP_KERNEL,
        )?;
        index.push(i, GFP_KERNEL)?;
    }
    let mut results = KVec::with_capacity(good.len(), GFP_KERNEL)?;
    results.resize(good.len(), Ok(()), GFP_KERNEL)?;
    mirror.fault_batch(&good, &mut results)?;
    for (&i, r) in index.iter().zip(results.iter()) {
        reqs[i].result = errno(*r);
    }
    Ok(())
}

/// # Safety
///
/// `mirror` is registered; `out` has room for one value per page.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_snapshot(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
    out: *mut u32,
) -> core::ffi::c_int {
    if out.is_null() || start >= end || (end - start) % hmm_pt::PAGE_SIZE as usize != 0 {
        return EINVAL.to_errno();
    }
    let pages = (end - start) / hmm_pt::PAGE_SIZE as usize;
    // SAFETY: `out` has room for `pages` values, by the caller's guarantee.
    let out = unsafe { core::slice::from_raw_parts_mut(out, pages) };
    // SAFETY: A registered mirror, by the caller's guarantee.
    errno(unsafe { &*mirror }.snapshot(start as u64, end as u64, out))
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_make_exclusive(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_int {
    // SAFETY: A registered mirror, by the caller's guarantee.
    errno(unsafe { &*mirror }.make_exclusive(start as u64, end as u64))
}

/// `hmm_rs_walk_fn` of hmm_rs.h.
type CWalkFn = unsafe extern "C" fn(
    *mut core::ffi::c_void,
    kernel::ffi::c_ulong,
    u64,
    kernel::ffi::c_uint,
    u64,
) -> core::ffi::c_int;

/// # Safety
///
/// `mirror` is registered; `f` is callable with `arg` under RCU.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_walk(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
    f: Option<CWalkFn>,
    arg: *mut core::ffi::c_void,
) -> core::ffi::c_int {
    let Some(f) = f else {
        return EINVAL.to_errno();
    };
    // SAFETY: A registered mirror, by the caller's guarantee.
    let table = unsafe { &*mirror }.table();
    walk_result(|ret| {
        table.walk_until(start as u64, end as u64, |m| {
            // SAFETY: The driver's callback, with its own argument.
            *ret = unsafe {
                f(
                    arg,
                    m.addr as usize,
                    m.entry.pfn(),
                    m.order,
                    m.entry.flags().bits(),
                )
            };
            *ret != 0
        })
    })
}

/// What a C walk returns: the last value of its callback (non-zero if it
/// stopped the walk), or the walk's errno.
fn walk_result(walk: impl FnOnce(&mut core::ffi::c_int) -> Result<bool>) -> core::ffi::c_int {
    let mut ret = 0;
    match walk(&mut ret) {
        Ok(_) => ret,
        Err(e) => e.to_errno(),
    }
}

/// `hmm_rs_dma_walk_fn` of hmm_rs.h.
type CDmaWalkFn = unsafe extern "C" fn(
    *mut core::ffi::c_void,
    kernel::ffi::c_ulong,
    u64,
    u64,
    kernel::ffi::c_uint,
    u64,
) -> core::ffi::c_int;

/// `HMM_RS_DMA_NONE` of hmm_rs.h: no DMA address.
const DMA_NONE: u64 = u64::MAX;

/// # Safety
///
/// `mirror` is registered; `f` is callable with `arg` under RCU.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_walk_dma(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
    f: Option<CDmaWalkFn>,
    arg: *mut core::ffi::c_void,
) -> core::ffi::c_int {
    let Some(f) = f else {
        return EINVAL.to_errno();
    };
    // SAFETY: A registered mirror, by the caller's guarantee.
    let mirror = unsafe { &*mirror };
    walk_result(|ret| {
        mirror.walk_dma(start as u64, end as u64, |m, dma| {
            // SAFETY: The driver's callback, with its own argument.
            *ret = unsafe {
                f(
                    arg,
                    m.addr as usize,
                    m.entry.pfn(),
                    dma.unwrap_or(DMA_NONE),
                    m.order,
                    m.entry.flags().bits(),
                )
            };
            *ret != 0
        })
    })
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_unbind_dma(mirror: *mut HmmMirror) -> core::ffi::c_int {
    // SAFETY: A registered mirror, by the caller's guarantee.
    errno(unsafe { &*mirror }.unbind_dma())
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_set_dirty(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_int {
    // SAFETY: A registered mirror, by the caller's guarantee.
    match unsafe { &*mirror }
        .table()
        .lock()
        .set_dirty(start as u64, end as u64)
    {
        Ok(n) => n.try_into().unwrap_or(core::ffi::c_int::MAX),
        Err(e) => e.to_errno(),
    }
}

/// `struct hmm_rs_devmem_ops` of hmm_rs.h.
#[repr(C)]
pub(crate) struct CDevMemOps {
    copy_to_device: Option<
        unsafe extern "C" fn(
            *mut core::ffi::c_void,
            kernel::ffi::c_ulong,
            *mut bindings::page,
        ) -> core::ffi::c_int,
    >,
    copy_from_device: Option<
        unsafe extern "C" fn(
            *mut core::ffi::c_void,
            kernel::ffi::c_ulong,
            *mut bindings::page,
        ) -> core::ffi::c_int,
    >,
    free: Option<unsafe extern "C" fn(*mut core::ffi::c_void, kernel::ffi::c_ulong)>,
    copy_folio_to_device: Option<CFolioCopy>,
    copy_folio_from_device: Option<CFolioCopy>,
}

/// `copy_folio_to_device` / `copy_folio_from_device` of `struct hmm_rs_devmem_ops`.
type CFolioCopy = unsafe extern "C" fn(
    *mut core::ffi::c_void,
    kernel::ffi::c_ulong,
    *mut bindings::page,
    kernel::ffi::c_uint,
) -> core::ffi::c_int;

/// The [`DevMemOps`] of device memory created from C.
///
/// # Invariants
///
/// `ops` is valid and has both copy callbacks; `device` is a live
/// [`CDevice`] whose `devmems` counts this object.
struct CDevMem {
    device: NonNull<CDevice>,
    ops: *const CDevMemOps,
    private: *mut core::ffi::c_void,
}

// SAFETY: The C API requires callbacks callable from any task.
unsafe impl Send for CDevMem {}
// SAFETY: As above.
unsafe impl Sync for CDevMem {}

impl CDevMem {
    fn ops(&self) -> &CDevMemOps {
        // SAFETY: Valid until the device memory is destroyed (type invariant).
        unsafe { &*self.ops }
    }
}

/// The `struct page` of a system page given to a copy callback.
fn sys_page(p: SysPage) -> *mut bindings::page {
    // SAFETY: Any PFN may be passed.
    unsafe { shim::hmm_rs_pfn_to_page(p.0 as usize) }
}

impl DevMemOps for CDevMem {
    fn copy_to_device(&self, index: usize, src: Option<SysPage>) -> Result {
        let f = self.ops().copy_to_device.ok_or(EINVAL)?;
        let src = src.map_or(core::ptr::null_mut(), sys_page);
        // SAFETY: The driver's callback with its own private pointer.
        kernel::error::to_result(unsafe { f(self.private, index, src) })
    }

    fn copy_from_device(&self, index: usize, dst: SysPage) -> Result {
        let f = self.ops().copy_from_device.ok_or(EINVAL)?;
        // SAFETY: As above.
        kernel::error::to_result(unsafe { f(self.private, index, sys_page(dst)) })
    }

    fn free(&self, index: usize) {
        if let Some(f) = self.ops().free {
            // SAFETY: As above.
            unsafe { f(self.private, index) };
        }
    }

    fn copy_folio_to_device(&self, index: usize, src: Option<SysPage>, order: u32) -> Result {
        let Some(f) = self.ops().copy_folio_to_device else {
            return copy_pages_to_device(self, index, src, order);
        };
        let src = src.map_or(core::ptr::null_mut(), sys_page);
        // SAFETY: As above.
        kernel::error::to_result(unsafe { f(self.private, index, src, order) })
    }

    fn copy_folio_from_device(&self, index: usize, dst: SysPage, order: u32) -> Result {
        let Some(f) = self.ops().copy_folio_from_device else {
            return copy_pages_from_device(self, index, dst, order);
        };
        // SAFETY: As above.
        kernel::error::to_result(unsafe { f(self.private, index, sys_page(dst), order) })
    }
}

impl Drop for CDevMem {
    fn drop(&mut self) {
        // SAFETY: The device is alive (type invariant).
        unsafe { self.device.as_ref() }
            .devmems
            .fetch_sub(1, Relaxed);
    }
}

/// # Safety
///
/// `device` is registered; `ops` is null or valid until the memory is
/// destroyed.
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_create(
    device: *mut CDevice,
    npages: kernel::ffi::c_ulong,
    ops: *const CDevMemOps,
    private: *mut core::ffi::c_void,
    flags: kernel::ffi::c_uint,
) -> *const DevMem {
    // SAFETY: By the caller's guarantees.
    unsafe { devmem_create(device, None, npages, ops, private, flags) }
}

/// # Safety
///
/// As [`hmm_rs_devmem_create`].
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_create_coherent(
    device: *mut CDevice,
    start: bindings::phys_addr_t,
    npages: kernel::ffi::c_ulong,
    ops: *const CDevMemOps,
    private: *mut core::ffi::c_void,
    flags: kernel::ffi::c_uint,
) -> *const DevMem {
    if start == 0 {
        return EINVAL.to_ptr();
    }
    // SAFETY: By the caller's guarantees.
    unsafe { devmem_create(device, Some(start), npages, ops, private, flags) }
}

/// `HMM_RS_DEVMEM_EVICT` of hmm_rs.h.
const DEVMEM_EVICT: kernel::ffi::c_uint = 1;

/// Device memory of `device`: device-private, or device-coherent at
/// physical address `coherent`.
///
/// # Safety
///
/// As [`hmm_rs_devmem_create`].
unsafe fn devmem_create(
    device: *mut CDevice,
    coherent: Option<u64>,
    npages: kernel::ffi::c_ulong,
    ops: *const CDevMemOps,
    private: *mut core::ffi::c_void,
    flags: kernel::ffi::c_uint,
) -> *const DevMem {
    let Some(dev) = NonNull::new(device) else {
        return EINVAL.to_ptr();
    };
    let policy = match flags {
        0 => Policy::LeaveBehind,
        DEVMEM_EVICT => Policy::EvictLru,
        _ => return EINVAL.to_ptr(),
    };
    // SAFETY: `ops` is null or valid, by the caller's guarantee.
    match unsafe { ops.as_ref() } {
        Some(o) if o.copy_to_device.is_some() && o.copy_from_device.is_some() => {}
        _ => return EINVAL.to_ptr(),
    }
    // SAFETY: A registered device, by the caller's guarantee.
    unsafe { dev.as_ref() }.devmems.add(1, Relaxed);
    // INVARIANT: checked and counted just above.
    let ops = match KBox::new(
        CDevMem {
            device: dev,
            ops,
            private,
        },
        GFP_KERNEL,
    ) {
        Ok(ops) => ops,
        Err(_) => return ENOMEM.to_ptr(),
    };
    match DevMem::new(Owner::of(device), npages, coherent, policy, ops) {
        Ok(mem) => Arc::into_raw(mem),
        Err(e) => e.to_ptr(),
    }
}

/// # Safety
///
/// `mem` came from `hmm_rs_devmem_create` and is destroyed once.
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_destroy(mem: *const DevMem) {
    // SAFETY: From `Arc::into_raw` in `hmm_rs_devmem_create`.
    let mem = unsafe { Arc::from_raw(mem) };
    // Now, even if a mirror's advice still holds the object.
    if let Err(e) = mem.retire() {
        pr_err!("devmem: eviction failed ({e:?})\n");
    }
    drop(mem);
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_evict(mem: *const DevMem) -> core::ffi::c_long {
    // SAFETY: Live, by the caller's guarantee.
    count_or_errno(unsafe { &*mem }.evict())
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_evict_lru(
    mem: *const DevMem,
    npages: kernel::ffi::c_ulong,
) -> core::ffi::c_long {
    // SAFETY: Live, by the caller's guarantee.
    count_or_errno(unsafe { &*mem }.evict_lru(&|n| n >= npages))
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_evict_range(
    mem: *const DevMem,
    index: kernel::ffi::c_ulong,
    npages: kernel::ffi::c_ulong,
) -> core::ffi::c_long {
    // SAFETY: Live, by the caller's guarantee.
    count_or_errno(unsafe { &*mem }.evict_range(index, npages))
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_set_thrash(
    mem: *const DevMem,
    window_us: kernel::ffi::c_uint,
    backoff_us: kernel::ffi::c_uint,
) -> core::ffi::c_int {
    if window_us != 0 && backoff_us == 0 {
        return EINVAL.to_errno();
    }
    // SAFETY: Live, by the caller's guarantee.
    unsafe { &*mem }.set_thrash(u64::from(window_us) * 1000, u64::from(backoff_us) * 1000);
    0
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_stat(mem: *const DevMem, which: kernel::ffi::c_uint) -> u64 {
    // SAFETY: Live, by the caller's guarantee.
    let mem = unsafe { &*mem };
    let c = mem.counters();
    // `enum hmm_rs_devmem_stat` of hmm_rs.h.
    match which {
        0 => mem.size() as u64,
        1 => mem.in_use() as u64,
        2 => c.migrated.get(),
        3 => c.evicted.get(),
        4 => c.evict_skipped.get(),
        5 => c.not_placed.get(),
        6 => c.thrash_held.get(),
        7 => c.thrash_detected.get(),
        _ => u64::MAX,
    }
}

/// # Safety
///
/// `mirror` is registered; `mem` is null or live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_advise(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
    advice: kernel::ffi::c_uint,
    mem: *const DevMem,
) -> core::ffi::c_int {
    let Ok(advice) = Advice::from_bits(advice) else {
        return EINVAL.to_errno();
    };
    let mem = (!mem.is_null()).then(|| {
        // SAFETY: A live `Arc` of `hmm_rs_devmem_create`, by the caller's
        // guarantee: the mirror takes a reference of its own.
        Arc::from(unsafe { ArcBorrow::from_raw(mem) })
    });
    // SAFETY: Registered, by the caller's guarantee.
    errno(unsafe { &*mirror }.advise(start as u64, end as u64, advice, mem))
}

/// # Safety
///
/// `mirror` is registered; `start` and `end` are null or writable.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_advice(
    mirror: *mut HmmMirror,
    addr: kernel::ffi::c_ulong,
    start: *mut kernel::ffi::c_ulong,
    end: *mut kernel::ffi::c_ulong,
) -> core::ffi::c_int {
    // SAFETY: Registered, by the caller's guarantee.
    let span = unsafe { &*mirror }.advice_at(addr as u64);
    // SAFETY: Null or writable, by the caller's guarantee.
    unsafe {
        if let Some(s) = start.as_mut() {
            *s = span.start as kernel::ffi::c_ulong;
        }
        if let Some(e) = end.as_mut() {
            *e = span.end as kernel::ffi::c_ulong;
        }
    }
    span.advice.bits() as core::ffi::c_int
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_prefetch(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_long {
    // SAFETY: Registered, by the caller's guarantee.
    count_or_errno(unsafe { &*mirror }.prefetch(start as u64, end as u64))
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_pfn(mem: *const DevMem, index: kernel::ffi::c_ulong) -> u64 {
    // SAFETY: Live, by the caller's guarantee.
    let mem = unsafe { &*mem };
    if index < mem.size() {
        mem.pfn(index)
    } else {
        0
    }
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_devmem_index(mem: *const DevMem, pfn: u64) -> core::ffi::c_long {
    // SAFETY: Live, by the caller's guarantee.
    match unsafe { &*mem }.index(pfn) {
        Some(i) => i as core::ffi::c_long,
        None => core::ffi::c_long::from(EINVAL.to_errno()),
    }
}

/// # Safety
///
/// `mirror` is registered; `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_migrate_to_device(
    mirror: *mut HmmMirror,
    mem: *const DevMem,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_long {
    if mem.is_null() {
        return core::ffi::c_long::from(EINVAL.to_errno());
    }
    // SAFETY: Live, by the caller's guarantee (and not null, checked above).
    let mem = unsafe { &*mem };
    // SAFETY: Registered, by the caller's guarantee.
    count_or_errno(unsafe { &*mirror }.migrate_to_device(mem, start as u64, end as u64))
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_mirror_migrate_to_system(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_long {
    // SAFETY: Registered, by the caller's guarantee.
    count_or_errno(unsafe { &*mirror }.migrate_to_system(start as u64, end as u64))
}

#[kernel::prelude::kunit_tests(hmm_rs_c_header)]
mod tests {
    use super::*;
    use crate::{hmm_mirror::snap, hmm_pt::PtFlags};
    use core::mem::{align_of, offset_of, size_of};

    /// hmm_rs.h as the C compiler sees it (hmm_rs_api.c).
    mod c {
        extern "C" {
            pub(super) static hmm_rs_c_pt_flags: [u64; 5];
            pub(super) static hmm_rs_c_snap_flags: [u32; 7];
            pub(super) static hmm_rs_c_consts: [u64; 12];
            pub(super) static hmm_rs_c_layout: [[kernel::ffi::c_ulong; 2]; super::LAYOUT.len()];
            pub(super) static hmm_rs_c_layout_len: kernel::ffi::c_ulong;
        }
    }

    /// The size of the field of `T` that `field` projects to.
    const fn field_size<T, F>(_field: fn(&T) -> &F) -> usize {
        size_of::<F>()
    }

    /// For each `#[repr(C)]` copy of a struct of hmm_rs.h, in the order of
    /// `hmm_rs_c_layout`: its size and alignment, then each field's offset
    /// and size, in declaration order (the C struct's).
    macro_rules! layouts {
        ($($ty:ident { $($field:ident),* $(,)? })*) => {
            [$(
                (stringify!($ty), [size_of::<$ty>(), align_of::<$ty>()]),
                $((
                    concat!(stringify!($ty), ".", stringify!($field)),
                    [offset_of!($ty, $field), field_size(|s: &$ty| &s.$field)],
                ),)*
            )*]
        };
    }

    /// `(what, [size, alignment])` of a struct, `(what, [offset, size])` of
    /// a field.
    const LAYOUT: [(&str, [usize; 2]); 22] = layouts! {
        CEvent { ty, start, end, keep }
        CDeviceOps { update, release, update_end, update_finish }
        CDevMemOps {
            copy_to_device,
            copy_from_device,
            free,
            copy_folio_to_device,
            copy_folio_from_device,
        }
        CFaultReq { addr, npages, flags, result, pad }
    };

    #[test]
    fn c_header_flags_match_the_table() {
        // SAFETY: A constant array of hmm_rs_api.c.
        let c = unsafe { c::hmm_rs_c_pt_flags };
        let rust = [
            PtFlags::VALID,
            PtFlags::WRITE,
            PtFlags::DIRTY,
            PtFlags::DEVICE,
            PtFlags::EXCLUSIVE,
        ];
        for (c, r) in c.iter().zip(rust) {
            assert_eq!(*c, r.bits());
        }
        // SAFETY: A constant array of hmm_rs_api.c.
        let c = unsafe { c::hmm_rs_c_snap_flags };
        assert_eq!(
            c,
            [
                snap::VALID,
                snap::WRITE,
                snap::ERROR,
                snap::ZERO,
                snap::DEVICE,
                snap::COHERENT,
                snap::REMOTE
            ]
        );
    }

    #[test]
    fn c_header_constants_match() {
        // SAFETY: A constant array of hmm_rs_api.c.
        let c = unsafe { c::hmm_rs_c_consts };
        let mut rust = [0; 12];
        for (r, t) in rust.iter_mut().zip(HmmEventType::ALL) {
            *r = t as u64;
        }
        rust[6] = C_UPDATE_PENDING as u64;
        rust[7] = DMA_NONE;
        rust[8] = u64::from(PtFlags::DRIVER.bits().trailing_zeros());
        rust[9] = u64::from(u32::MAX >> snap::ORDER_SHIFT);
        rust[10] = u64::from(C_FAULT_REQ_WRITE);
        rust[11] = FAULT_BATCH_MAX as u64;
        assert_eq!(c, rust);
    }

    #[test]
    fn c_header_layouts_match() {
        // SAFETY: A constant of hmm_rs_api.c.
        let len = unsafe { c::hmm_rs_c_layout_len };
        assert_eq!(len, LAYOUT.len());
        // SAFETY: A constant array of hmm_rs_api.c, of `LAYOUT.len()`
        // entries (checked just above).
        let c = unsafe { &c::hmm_rs_c_layout };
        let mut same = true;
        for (&c, &(what, rust)) in c.iter().zip(LAYOUT.iter()) {
            if c != rust {
                pr_err!("hmm_rs.h and c_api.rs differ: {what}: C {c:?}, Rust {rust:?}\n");
                same = false;
            }
        }
        assert!(same);
    }
}
