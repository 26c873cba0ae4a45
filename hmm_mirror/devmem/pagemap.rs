// SPDX-License-Identifier: GPL-2.0

//! The C edge of [`DevMem`]: its `ZONE_DEVICE` pagemap (`memremap_pages`,
//! the shim's `struct hmm_rs_pagemap`) and the page callbacks the kernel
//! calls through it.
//!
//! C header: [`include/linux/memremap.h`](srctree/include/linux/memremap.h).

use core::ptr::NonNull;
use kernel::prelude::*;

use super::{DevMem, Owner, HUGE_PAGES};
use crate::{hmm_mirror::migrate::Migration, shim};

/// A pagemap of device memory.
///
/// # Invariants
///
/// `self.0` was returned by `hmm_rs_pagemap_create()` and is owned: it is
/// destroyed (`memunmap_pages()`, which waits for the last page reference)
/// when this is dropped.
pub(super) struct Pagemap(NonNull<shim::Pagemap>);

// SAFETY: The pagemap is used from any task.
unsafe impl Send for Pagemap {}
// SAFETY: Its shim calls may run concurrently: the kernel synchronises them.
unsafe impl Sync for Pagemap {}

impl Pagemap {
    /// `npages` pages of device-private memory over a free physical range,
    /// or of device-coherent memory at the physical address `coherent`,
    /// for device `owner`; with its first PFN. May sleep.
    pub(super) fn create(
        npages: usize,
        owner: Owner,
        coherent: Option<u64>,
    ) -> Result<(Self, u64)> {
        let mut first_pfn = 0;
        // SAFETY: No preconditions; `first_pfn` is written on success.
        let pm = unsafe {
            shim::hmm_rs_pagemap_create(
                npages,
                owner.as_ptr(),
                coherent.unwrap_or(0),
                &mut first_pfn,
            )
        };
        let pm = kernel::error::from_err_ptr(pm)?;
        // INVARIANT: created just above, ours.
        Ok((Self(NonNull::new(pm).ok_or(ENOMEM)?), first_pfn as u64))
    }

    /// Points the page callbacks at `mem`.
    ///
    /// # Safety
    ///
    /// `mem` is pinned and owns this pagemap: it outlives every callback.
    /// Called before any page is handed out.
    pub(super) unsafe fn set_devmem(&self, mem: &DevMem) {
        // SAFETY: The pagemap is live (type invariant); `mem` outlives the
        // callbacks by the caller's guarantee.
        unsafe { shim::hmm_rs_pagemap_set_rust(self.0.as_ptr(), core::ptr::from_ref(mem).cast()) };
    }

    /// Initialises the device folio of `1 << order` pages at `pfn`, now
    /// referenced once (`zone_device_folio_init()`).
    ///
    /// # Safety
    ///
    /// The pages are of this pagemap, free, and being handed out.
    pub(super) unsafe fn init_page(&self, pfn: u64, order: u32) {
        // SAFETY: The pagemap is live (type invariant); the pages are free
        // by the caller's guarantee.
        unsafe { shim::hmm_rs_devpage_init(self.0.as_ptr(), pfn as usize, order) };
    }

    /// The [`DevMem`] that device page `pfn` belongs to, if it is one of
    /// hmm-rs.
    ///
    /// # Safety
    ///
    /// `pfn` is a referenced page.
    pub(super) unsafe fn devmem_of_pfn(pfn: u64) -> Option<NonNull<DevMem>> {
        // SAFETY: Any PFN of a referenced page may be passed.
        let p = unsafe { shim::hmm_rs_pfn_devmem(pfn as usize) };
        NonNull::new(p.cast_mut().cast::<DevMem>())
    }
}

impl Drop for Pagemap {
    fn drop(&mut self) {
        // SAFETY: Live and ours (type invariant); this waits for the last
        // page reference, after which no callback comes.
        unsafe { shim::hmm_rs_pagemap_destroy(self.0.as_ptr()) };
    }
}

/// `folio_free` of the pagemap: a device page lost its last reference.
///
/// # Safety
///
/// `devmem` is the pagemap's [`DevMem`], `pfn` one of its pages.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_devmem_free(
    devmem: *const DevMem,
    pfn: kernel::ffi::c_ulong,
    order: kernel::ffi::c_uint,
) {
    // SAFETY: By the caller's guarantee; alive until the pagemap is gone.
    unsafe { &*devmem }.page_freed(pfn as u64, order);
}

/// `migrate_to_ram` of the pagemap: the CPU touched a device page, which
/// comes back to system memory. Returns 0 or a negative errno.
///
/// # Safety
///
/// `devmem` is the pagemap's [`DevMem`]; `vmf` the fault on one of its pages.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_devmem_fault(
    _devmem: *const DevMem,
    vmf: *mut core::ffi::c_void,
) -> core::ffi::c_int {
    let r = (|| -> Result {
        let mut m = Migration::new()?;
        let mut filled = KVec::with_capacity(HUGE_PAGES, GFP_KERNEL)?;
        // SAFETY: `vmf` is a fault on a device page, by the caller's guarantee.
        unsafe { m.setup_fault(vmf) }?;
        // Each page's own `DevMem` copies it (`Migration::fill_from_device`).
        let result = m.fill_all_from_device(true, &mut filled);
        m.pages();
        m.finalize();
        result
    })();
    r.map_or_else(|e| e.to_errno(), |()| 0)
}
