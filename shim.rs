// SPDX-License-Identifier: GPL-2.0

//! The C shim (`hmm_shim.c`): declarations of the inline kernel helpers
//! and constants Rust cannot reach out of tree. Only the wrapper types of
//! the core call these.

use kernel::bindings::{self, page};

/// `struct hmm_rs_pagemap` of hmm_shim.c (opaque).
#[repr(C)]
pub(crate) struct Pagemap {
    _opaque: [u8; 0],
}

/// `struct hmm_rs_migrate` of hmm_shim.c (opaque).
#[repr(C)]
pub(crate) struct Migrate {
    _opaque: [u8; 0],
}

// `struct page` ends in a zero-sized array member, which rustc cannot
// prove FFI-safe; only pointers to it cross this boundary.
#[expect(improper_ctypes)]
extern "C" {
    /// `page_address()`: the kernel address of a lowmem `page`.
    pub(crate) fn hmm_rs_page_address(page: *mut page) -> *mut core::ffi::c_void;
    /// `virt_to_page()` of a lowmem kernel address.
    pub(crate) fn hmm_rs_virt_to_page(addr: *const core::ffi::c_void) -> *mut page;
    /// Frees an order-0 `page` we own after an RCU grace period.
    pub(crate) fn hmm_rs_free_page_rcu(page: *mut page);
    /// `mmu_notifier_get()`: the notifier of `mm` with `ops`, allocated
    /// by `ops->alloc_notifier` if there is none; takes `mmap_lock`.
    pub(crate) fn hmm_rs_mmu_notifier_get(
        ops: *const bindings::mmu_notifier_ops,
        mm: *mut bindings::mm_struct,
    ) -> *mut bindings::mmu_notifier;
    /// `mmu_notifier_range_blockable()`.
    pub(crate) fn hmm_rs_range_blockable(range: *const bindings::mmu_notifier_range) -> bool;
    /// Whether `range` is a fork's write-protection (see `hmm_event`).
    pub(crate) fn hmm_rs_range_in_fork(range: *const bindings::mmu_notifier_range) -> bool;
    /// Whether a `PROTECTION_VMA` range stays readable (see `hmm_event`).
    pub(crate) fn hmm_rs_range_stays_readable(range: *const bindings::mmu_notifier_range) -> bool;
    /// `folio_mark_dirty()` of the page at `pfn`, if it has a `struct page`.
    pub(crate) fn hmm_rs_mark_pfn_dirty(pfn: kernel::ffi::c_ulong);
    /// `pfn_to_page()`, or null for a PFN without a `struct page`.
    pub(crate) fn hmm_rs_pfn_to_page(pfn: kernel::ffi::c_ulong) -> *mut page;
    /// `folio_test_dirty()` of the folio of `page`.
    #[cfg(CONFIG_KUNIT)]
    pub(crate) fn hmm_rs_page_dirty(page: *mut page) -> bool;
    /// `HMM_PFN_WRITE`.
    pub(crate) static hmm_rs_pfn_write: kernel::ffi::c_ulong;
    /// `HMM_PFN_ERROR`.
    pub(crate) static hmm_rs_pfn_error: kernel::ffi::c_ulong;
    /// `HMM_PFN_FLAGS`: the bits of an hmm pfn that are not the PFN.
    pub(crate) static hmm_rs_pfn_flags: kernel::ffi::c_ulong;
    /// Turns `n` hmm pfns of a snapshot into `HMM_RS_SNAP_*` values (see
    /// [`crate::hmm_mirror::snap`]) for a mirror of device `owner`; only
    /// PFNs in `[dev_lo, dev_hi)` may be device pages.
    pub(crate) fn hmm_rs_snap_decode(
        pfns: *const kernel::ffi::c_ulong,
        out: *mut u32,
        n: usize,
        owner: *mut core::ffi::c_void,
        dev_lo: usize,
        dev_hi: usize,
    );
    /// `hmm_pfn_to_map_order()`.
    pub(crate) fn hmm_rs_pfn_order(hmm_pfn: kernel::ffi::c_ulong) -> kernel::ffi::c_uint;
    /// Inserts `sub` over all of user space of `mm`.
    pub(crate) fn hmm_rs_interval_insert(
        sub: *mut bindings::mmu_interval_notifier,
        mm: *mut bindings::mm_struct,
        ops: *const bindings::mmu_interval_notifier_ops,
    ) -> core::ffi::c_int;
    /// Inserts `sub` over `[start, end)` of the mm of `mirror` (an
    /// inserted interval notifier); `ESRCH` if the mm has no users.
    pub(crate) fn hmm_rs_interval_insert_range(
        sub: *mut bindings::mmu_interval_notifier,
        mirror: *mut bindings::mmu_interval_notifier,
        start: usize,
        end: usize,
        ops: *const bindings::mmu_interval_notifier_ops,
    ) -> kernel::ffi::c_int;
    /// `fatal_signal_pending(current)`.
    pub(crate) fn hmm_rs_fatal_signal_pending() -> bool;
    /// `mmu_interval_read_retry()`.
    pub(crate) fn hmm_rs_interval_read_retry(
        sub: *mut bindings::mmu_interval_notifier,
        seq: kernel::ffi::c_ulong,
    ) -> bool;
    /// `mmu_interval_set_seq()`.
    pub(crate) fn hmm_rs_interval_set_seq(
        sub: *mut bindings::mmu_interval_notifier,
        cur_seq: kernel::ffi::c_ulong,
    );
    /// `hmm_range_fault()` of `[start, end)` under `mmap_lock`; see hmm_shim.c.
    pub(crate) fn hmm_rs_range_fault(
        sub: *mut bindings::mmu_interval_notifier,
        start: kernel::ffi::c_ulong,
        end: kernel::ffi::c_ulong,
        pfns: *mut kernel::ffi::c_ulong,
        how: kernel::ffi::c_uint,
        owner: *mut core::ffi::c_void,
        seq: *mut kernel::ffi::c_ulong,
    ) -> core::ffi::c_int;
    /// Address bits of user space: 47, or 56 with 5-level paging.
    pub(crate) fn hmm_rs_user_address_bits() -> kernel::ffi::c_uint;
    /// Holds the notifier's mm and its `mmap_lock` for reading.
    pub(crate) fn hmm_rs_mm_lock(sub: *mut bindings::mmu_interval_notifier) -> core::ffi::c_int;
    /// Undoes `hmm_rs_mm_lock`.
    pub(crate) fn hmm_rs_mm_unlock(sub: *mut bindings::mmu_interval_notifier);
    /// `make_device_exclusive()`: the pfn or an errno; `folio` stays locked.
    pub(crate) fn hmm_rs_make_exclusive(
        sub: *mut bindings::mmu_interval_notifier,
        addr: kernel::ffi::c_ulong,
        owner: *mut core::ffi::c_void,
        folio: *mut *mut bindings::folio,
    ) -> core::ffi::c_long;
    /// Unlocks and puts a folio from `hmm_rs_make_exclusive`.
    pub(crate) fn hmm_rs_exclusive_done(folio: *mut bindings::folio);
    /// `mmu_interval_read_begin()`.
    pub(crate) fn hmm_rs_interval_read_begin(
        sub: *mut bindings::mmu_interval_notifier,
    ) -> kernel::ffi::c_ulong;
    /// A device-private pagemap of `npages` pages: pointer or `ERR_PTR`.
    pub(crate) fn hmm_rs_pagemap_create(
        npages: kernel::ffi::c_ulong,
        owner: *mut core::ffi::c_void,
        phys: u64,
        first_pfn: *mut kernel::ffi::c_ulong,
    ) -> *mut Pagemap;
    /// Where the pagemap's page callbacks go.
    pub(crate) fn hmm_rs_pagemap_set_rust(pm: *mut Pagemap, rust: *const core::ffi::c_void);
    /// `memunmap_pages()`: waits until no page is referenced.
    pub(crate) fn hmm_rs_pagemap_destroy(pm: *mut Pagemap);
    /// `zone_device_folio_init()` of the free page at `pfn`.
    pub(crate) fn hmm_rs_devpage_init(
        pm: *mut Pagemap,
        pfn: kernel::ffi::c_ulong,
        order: kernel::ffi::c_uint,
    );
    /// Whether `pfn` is a device-private page.
    pub(crate) fn hmm_rs_pfn_is_device_private(pfn: kernel::ffi::c_ulong) -> bool;
    /// A migration step's state, or null.
    pub(crate) fn hmm_rs_migrate_alloc() -> *mut Migrate;
    pub(crate) fn hmm_rs_migrate_free(m: *mut Migrate);
    /// `migrate_vma_setup()` of one VMA's part of `[addr, end)`.
    pub(crate) fn hmm_rs_migrate_setup(
        m: *mut Migrate,
        sub: *mut bindings::mmu_interval_notifier,
        addr: kernel::ffi::c_ulong,
        end: kernel::ffi::c_ulong,
        owner: *mut core::ffi::c_void,
        to_device: bool,
    ) -> core::ffi::c_long;
    /// `migrate_vma_setup()` of the page a CPU fault hit.
    pub(crate) fn hmm_rs_migrate_setup_fault(
        m: *mut Migrate,
        vmf: *mut core::ffi::c_void,
    ) -> core::ffi::c_long;
    /// `migrate_device_range()`.
    pub(crate) fn hmm_rs_migrate_setup_device(
        m: *mut Migrate,
        pfn: kernel::ffi::c_ulong,
        npages: kernel::ffi::c_ulong,
    ) -> core::ffi::c_long;
    /// The src and dst arrays of `m`, `HMM_RS_MIGRATE_MAX` entries each.
    pub(crate) fn hmm_rs_migrate_src_pfns(m: *mut Migrate) -> *mut kernel::ffi::c_ulong;
    pub(crate) fn hmm_rs_migrate_dst_pfns(m: *mut Migrate) -> *mut kernel::ffi::c_ulong;
    /// `MIGRATE_PFN_VALID`, `_MIGRATE`, `_WRITE`, `_COMPOUND`, `_SHIFT`.
    pub(crate) static hmm_rs_migrate_pfn_bits: [kernel::ffi::c_ulong; 5];
    /// A new, locked system page for page `i`: its pfn, or 0.
    pub(crate) fn hmm_rs_migrate_alloc_system(
        m: *mut Migrate,
        i: kernel::ffi::c_ulong,
        order: kernel::ffi::c_uint,
    ) -> kernel::ffi::c_ulong;
    /// `migrate_vma_pages()` / `migrate_device_pages()`.
    pub(crate) fn hmm_rs_migrate_pages(m: *mut Migrate);
    /// How many pages of a set-up step the kernel left out although they
    /// could move (a transient reference or lock): worth another try.
    /// `mmap_lock` held.
    pub(crate) fn hmm_rs_migrate_dropped(
        m: *mut Migrate,
        sub: *mut bindings::mmu_interval_notifier,
        owner: *mut core::ffi::c_void,
        to_device: bool,
    ) -> kernel::ffi::c_long;
    /// Sleeps a millisecond or two before busy pages are tried again;
    /// returns the nanoseconds it slept.
    pub(crate) fn hmm_rs_migrate_backoff() -> u64;
    /// `ktime_get_ns()`.
    pub(crate) fn hmm_rs_now_ns() -> u64;
    /// `migrate_vma_finalize()` / `migrate_device_finalize()`.
    pub(crate) fn hmm_rs_migrate_finalize(m: *mut Migrate);
    /// Unlocks and frees an unused page of `hmm_rs_migrate_alloc_system`.
    pub(crate) fn hmm_rs_migrate_drop_page(pfn: kernel::ffi::c_ulong);
    /// The [`crate::hmm_mirror::devmem::DevMem`] of a device-private page.
    pub(crate) fn hmm_rs_pfn_devmem(pfn: kernel::ffi::c_ulong) -> *const core::ffi::c_void;
    /// Creates the DMA fault-injection knobs (module init).
    pub(crate) fn hmm_rs_shim_init();
    /// Removes them (module exit).
    pub(crate) fn hmm_rs_shim_exit();
    /// `dma_map_page()` of the `1 << order` pages at `pfn` for `dev`,
    /// bidirectional if `write`, else to the device: 0 and the address in
    /// `dma`, or -ENOMEM (injected) / -EIO (`dma_mapping_error()`).
    pub(crate) fn hmm_rs_dma_map(
        dev: *mut bindings::device,
        pfn: kernel::ffi::c_ulong,
        order: kernel::ffi::c_uint,
        write: bool,
        dma: *mut u64,
    ) -> core::ffi::c_int;
    /// `dma_unmap_page()` of a mapping `hmm_rs_dma_map` made.
    pub(crate) fn hmm_rs_dma_unmap(
        dev: *mut bindings::device,
        dma: u64,
        order: kernel::ffi::c_uint,
        write: bool,
    );
    /// `dma_iova_try_alloc()` of `size` bytes of IOVA space for `dev`;
    /// false (and `state` zeroed) without an IOMMU or with `dma_iova=N`.
    pub(crate) fn hmm_rs_dma_iova_alloc(
        dev: *mut bindings::device,
        state: *mut bindings::dma_iova_state,
        size: usize,
    ) -> bool;
    /// `dma_iova_free()`: frees what `hmm_rs_dma_iova_alloc` allocated,
    /// once nothing is linked in it.
    pub(crate) fn hmm_rs_dma_iova_free(
        dev: *mut bindings::device,
        state: *mut bindings::dma_iova_state,
    );
    /// `dma_iova_link()` of `size` bytes at `pfn` at `offset` in the range,
    /// bidirectional if `write`: 0, -ENOMEM (injected) or its error. No
    /// IOTLB sync (`hmm_rs_dma_iova_sync`).
    pub(crate) fn hmm_rs_dma_iova_link(
        dev: *mut bindings::device,
        state: *mut bindings::dma_iova_state,
        pfn: kernel::ffi::c_ulong,
        offset: usize,
        size: usize,
        write: bool,
    ) -> core::ffi::c_int;
    /// `dma_iova_sync()` of what was linked at `[offset, offset + size)`.
    pub(crate) fn hmm_rs_dma_iova_sync(
        dev: *mut bindings::device,
        state: *mut bindings::dma_iova_state,
        offset: usize,
        size: usize,
    ) -> core::ffi::c_int;
    /// `dma_iova_unlink()` of `[offset, offset + size)`, linked with the
    /// same `write`: one IOTLB flush.
    pub(crate) fn hmm_rs_dma_iova_unlink(
        dev: *mut bindings::device,
        state: *mut bindings::dma_iova_state,
        offset: usize,
        size: usize,
        write: bool,
    );
}
