// SPDX-License-Identifier: GPL-2.0

//! Device memory: [`DevMem`], the [`DevMemOps`] that move its contents, and
//! the C callbacks between them.

use super::*;

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
        // SAFETY: As the caller guarantees, for a folio of one page.
        unsafe { Self::pages(page, 0, writable) }.and_then(|p| p.page(0))
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
        errno(inner.copy_to_device(index, src))
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
        errno(inner.copy_from_device(index, dst))
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
        errno(inner.copy_folio_to_device(index, order, src))
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
        errno(inner.copy_folio_from_device(index, order, dst))
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
    pub(super) raw: NonNull<ffi::hmm_rs_devmem>,
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
