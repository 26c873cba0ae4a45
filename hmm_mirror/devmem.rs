// SPDX-License-Identifier: GPL-2.0

//! Device memory: device-private `ZONE_DEVICE` pages that stand for a
//! device's own memory, which the CPU cannot address.
//!
//! A [`DevMem`] is a `MEMORY_DEVICE_PRIVATE` pagemap of a fixed number of
//! pages, owned by one device ([`Owner`]), with free lists of page indices:
//! half the memory starts as 2 MiB blocks for huge folios (transparent huge
//! pages move whole), the rest as single pages; once those run out, blocks
//! become single pages, and a huge folio that the kernel splits comes back
//! as single pages.
//! The device moves data with its [`DevMemOps`] copy callbacks (a GPU's DMA
//! engine; for a simulated device, memcpy into system pages standing in for
//! its memory). Migrations live in `migrate.rs`; this file has what the
//! kernel calls on device pages: the last reference going away
//! (`folio_free`) and a CPU fault on one (`migrate_to_ram`).

use kernel::{
    new_spinlock,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc, SpinLock,
    },
};

mod evict;
mod pagemap;

pub(crate) use evict::Policy;

use super::migrate::{thrash::Settings, HUGE_PAGES};
use crate::{
    hmm_pt::HUGE_ORDER,
    stats::{self, Counter},
};
use evict::Lru;
use pagemap::Pagemap;

/// The lowest PFN and the end of the highest of all device memory created
/// so far (never narrowed): a PFN outside cannot be a device page, which
/// lets the fault and snapshot paths leave the `struct page` of ordinary
/// pages alone. Stored (release) before any page of the memory is handed
/// out, so whoever finds one of its PFNs in a page table sees them
/// (acquire).
static DEVICE_PFN_LO: Atomic<u64> = Atomic::new(u64::MAX);
static DEVICE_PFN_HI: Atomic<u64> = Atomic::new(0);

/// A look at the bounds of device PFNs ([`DEVICE_PFN_LO`]).
#[derive(Clone, Copy)]
pub(crate) struct DevicePfns {
    pub(crate) lo: u64,
    pub(crate) hi: u64,
}

impl DevicePfns {
    pub(crate) fn now() -> Self {
        Self {
            lo: DEVICE_PFN_LO.load(Acquire),
            hi: DEVICE_PFN_HI.load(Acquire),
        }
    }

    /// Whether `pfn` may be a device page (if not, it is not one).
    pub(crate) fn may_be_device(self, pfn: u64) -> bool {
        pfn >= self.lo && pfn < self.hi
    }

    /// Widens the bounds to `[first, end)`.
    fn widen(first: u64, end: u64) {
        let mut lo = DEVICE_PFN_LO.load(Relaxed);
        while first < lo {
            match DEVICE_PFN_LO.cmpxchg(lo, first, Release) {
                Ok(_) => break,
                Err(now) => lo = now,
            }
        }
        let mut hi = DEVICE_PFN_HI.load(Relaxed);
        while end > hi {
            match DEVICE_PFN_HI.cmpxchg(hi, end, Release) {
                Ok(_) => break,
                Err(now) => hi = now,
            }
        }
    }
}

/// The device that owns device memory. A mirror's faults and snapshots see
/// the device pages of the mirror's own owner as they are; they pull those
/// of other owners back to system memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Owner(usize);

impl Owner {
    /// No device: every device page is migrated back.
    pub(crate) const NONE: Self = Self(0);

    /// The owner identified by `p`, an object of the device that outlives
    /// its mirrors and device memory.
    pub(crate) fn of<T>(p: *const T) -> Self {
        Self(p as usize)
    }

    /// The `pgmap_owner` / `dev_private_owner` the kernel compares.
    pub(crate) fn as_ptr(self) -> *mut core::ffi::c_void {
        self.0 as *mut core::ffi::c_void
    }
}

/// A system page given to the copy callbacks, by PFN.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SysPage(pub(crate) u64);

/// How a device copies between its memory and system memory.
pub(crate) trait DevMemOps: Send + Sync {
    /// Fills device page `index` from the system page `src`, or with zeros
    /// if `None` (an address with no page yet). An error leaves the page in
    /// system memory.
    fn copy_to_device(&self, index: usize, src: Option<SysPage>) -> Result;
    /// Copies device page `index` into the system page `dst`. An error
    /// leaves the page on the device (a CPU fault then gets `SIGBUS`).
    fn copy_from_device(&self, index: usize, dst: SysPage) -> Result;
    /// Device page `index` holds nothing any more. Must not sleep.
    fn free(&self, _index: usize) {}

    /// Fills the `1 << order` device pages of a huge folio from `index`
    /// from the system pages from `src` (or with zeros): one transfer for a
    /// DMA engine. By default, page by page.
    fn copy_folio_to_device(&self, index: usize, src: Option<SysPage>, order: u32) -> Result {
        copy_pages_to_device(self, index, src, order)
    }

    /// Copies the `1 << order` device pages from `index` into the system
    /// pages from `dst`. By default, page by page.
    fn copy_folio_from_device(&self, index: usize, dst: SysPage, order: u32) -> Result {
        copy_pages_from_device(self, index, dst, order)
    }
}

/// [`DevMemOps::copy_folio_to_device`] page by page.
pub(crate) fn copy_pages_to_device<T: DevMemOps + ?Sized>(
    ops: &T,
    index: usize,
    src: Option<SysPage>,
    order: u32,
) -> Result {
    (0..1usize << order)
        .try_for_each(|k| ops.copy_to_device(index + k, src.map(|p| SysPage(p.0 + k as u64))))
}

/// [`DevMemOps::copy_folio_from_device`] page by page.
pub(crate) fn copy_pages_from_device<T: DevMemOps + ?Sized>(
    ops: &T,
    index: usize,
    dst: SysPage,
    order: u32,
) -> Result {
    (0..1usize << order)
        .try_for_each(|k| ops.copy_from_device(index + k, SysPage(dst.0 + k as u64)))
}

/// Device memory: see the module documentation.
///
/// # Invariants
///
/// - `pm` is a pagemap of `npages` pages from `first_pfn` whose callbacks
///   reach this object, which is pinned in an [`Arc`];
/// - `free` and `free_huge` (first indices of free 512-page blocks) hold
///   each index of a page with no reference exactly once; each has room for
///   all the pages (blocks) there are, so freeing never allocates.
/// - `in_use` has the bit of every page handed out and not freed since.
#[pin_data(PinnedDrop)]
pub(crate) struct DevMem {
    pm: Pagemap,
    /// Number for traces.
    id: u64,
    in_use: InUse,
    coherent: bool,
    first_pfn: u64,
    npages: usize,
    owner: Owner,
    ops: KBox<dyn DevMemOps>,
    #[pin]
    free: SpinLock<KVec<u32>>,
    #[pin]
    free_huge: SpinLock<KVec<u32>>,
    policy: Policy,
    /// Destroyed by its driver: it takes no more pages (mirrors' advice may
    /// still hold the object).
    dead: Atomic<bool>,
    lru: Lru,
    thrash: ThrashSettings,
    counters: DevMemCounters,
}

/// What a device memory did, for its driver (`hmm_rs_devmem_stats`).
#[derive(Default)]
pub(crate) struct DevMemCounters {
    /// Pages moved to this memory by migrations.
    pub(crate) migrated: Counter,
    /// Pages moved back by eviction; blocks eviction could not empty.
    pub(crate) evicted: Counter,
    pub(crate) evict_skipped: Counter,
    /// Pages a migration left in system memory for lack of room.
    pub(crate) not_placed: Counter,
    /// Pages a migration did not move because their block was held back,
    /// and blocks seen moving again too soon (thrash control).
    pub(crate) thrash_held: Counter,
    pub(crate) thrash_detected: Counter,
}

/// Thrash control of a device memory (see `migrate/thrash.rs`): the window
/// and first backoff in nanoseconds; a window of 0 turns it off.
struct ThrashSettings {
    window_ns: Atomic<u64>,
    backoff_ns: Atomic<u64>,
}

/// Numbers device memory for traces.
static NEXT_DEVMEM_ID: Atomic<u64> = Atomic::new(1);

/// Which pages of a [`DevMem`] are in use, so that eviction visits those
/// and not the whole memory: one bit per page, and their count.
///
/// `core::sync::atomic` rather than `kernel::sync::atomic`, which has no
/// `fetch_or`/`fetch_and`; only the bits are shared (no ordering with other
/// memory is needed: pages are handed out and freed under the pagemap's
/// own references), see `hmm_pt.rs` on the two atomics.
struct InUse {
    words: KVec<core::sync::atomic::AtomicU64>,
    count: core::sync::atomic::AtomicUsize,
}

impl InUse {
    fn new(npages: usize) -> Result<Self> {
        let mut words = KVec::with_capacity(npages.div_ceil(64), GFP_KERNEL)?;
        for _ in 0..npages.div_ceil(64) {
            words.push(core::sync::atomic::AtomicU64::new(0), GFP_KERNEL)?;
        }
        Ok(Self {
            words,
            count: core::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Whether any page of `[a, b)` is in use.
    fn any(&self, a: usize, b: usize) -> bool {
        self.next_run(a, b).is_some()
    }

    /// Marks pages `[index, index + n)` in use (`used`) or free: one atomic
    /// operation per word they touch (8 for a huge folio's 512 pages).
    fn mark(&self, index: usize, n: usize, used: bool) {
        use core::sync::atomic::Ordering::Relaxed;
        let mut i = index;
        while i < index + n {
            let (w, b) = (i / 64, i % 64);
            let k = (64 - b).min(index + n - i);
            let bits = if k == 64 {
                u64::MAX
            } else {
                ((1u64 << k) - 1) << b
            };
            if used {
                self.words[w].fetch_or(bits, Relaxed);
            } else {
                self.words[w].fetch_and(!bits, Relaxed);
            }
            i += k;
        }
        if used {
            self.count.fetch_add(n, Relaxed);
        } else {
            self.count.fetch_sub(n, Relaxed);
        }
    }

    fn count(&self) -> usize {
        self.count.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// The first run `[a, b)` of pages in use at or after `from`, if any.
    fn next_run(&self, from: usize, npages: usize) -> Option<(usize, usize)> {
        let bit = |i: usize| {
            self.words[i / 64].load(core::sync::atomic::Ordering::Relaxed) & 1 << (i % 64) != 0
        };
        let mut a = from;
        while a < npages {
            // Whole free words are skipped at once.
            if a % 64 == 0 && self.words[a / 64].load(core::sync::atomic::Ordering::Relaxed) == 0 {
                a += 64;
                continue;
            }
            if bit(a) {
                let mut b = a + 1;
                while b < npages && bit(b) {
                    b += 1;
                }
                return Some((a, b));
            }
            a += 1;
        }
        None
    }
}

// SAFETY: The pagemap is used from any task; the rest is `Send` + `Sync`.
unsafe impl Send for DevMem {}
// SAFETY: As above.
unsafe impl Sync for DevMem {}

impl DevMem {
    /// `npages` pages of device memory of `owner`, copied by `ops`. May sleep.
    ///
    /// Errors: `EINVAL` for no pages or more than 4 Gi of them; `ENOMEM`, or
    /// what `memremap_pages` returns (no free physical address range).
    ///
    /// `coherent`: the physical address of device-coherent memory (which
    /// the CPU can address; it must not be System RAM) instead of
    /// device-private memory over a free physical range.
    pub(crate) fn new(
        owner: Owner,
        npages: usize,
        coherent: Option<u64>,
        policy: Policy,
        ops: KBox<dyn DevMemOps>,
    ) -> Result<Arc<Self>> {
        if npages == 0 || npages > u32::MAX as usize || owner == Owner::NONE {
            return Err(EINVAL);
        }
        if coherent.is_some_and(|p| p == 0 || p % crate::hmm_pt::HUGE_SIZE != 0) {
            return Err(EINVAL);
        }
        let (pm, first_pfn) = Pagemap::create(npages, owner, coherent)?;
        DevicePfns::widen(first_pfn, first_pfn + npages as u64);
        // Huge blocks need huge-aligned PFNs, and device-private memory:
        // 7.3 gives the folios it splits off a huge device-coherent folio no
        // pagemap (zone_device_private_split_cb), which then warns on free.
        let blocks = if first_pfn % HUGE_PAGES as u64 == 0 && coherent.is_none() {
            npages / 2 / HUGE_PAGES
        } else {
            0
        };
        let lists = (|| -> Result<_> {
            let mut free = KVec::with_capacity(npages, GFP_KERNEL)?;
            let mut free_huge = KVec::with_capacity(npages / HUGE_PAGES, GFP_KERNEL)?;
            // Popping from the end hands out low indices first.
            for i in (blocks * HUGE_PAGES..npages).rev() {
                free.push(i as u32, GFP_KERNEL)?;
            }
            for b in (0..blocks).rev() {
                free_huge.push((b * HUGE_PAGES) as u32, GFP_KERNEL)?;
            }
            Ok((free, free_huge))
        })();
        let lists = lists.and_then(|l| {
            Ok((
                l,
                InUse::new(npages)?,
                Lru::new(npages.div_ceil(HUGE_PAGES))?,
            ))
        });
        // On failure, no page was handed out: dropping `pm` destroys it.
        let ((free, free_huge), in_use, lru) = lists?;
        let mem = Arc::pin_init(
            pin_init!(Self {
                pm,
                id: NEXT_DEVMEM_ID.fetch_add(1, Relaxed),
                in_use,
                coherent: coherent.is_some(),
                first_pfn,
                npages,
                owner,
                ops,
                free <- new_spinlock!(free, "hmm_rs_devmem_free"),
                free_huge <- new_spinlock!(free_huge, "hmm_rs_devmem_free_huge"),
                policy,
                dead: Atomic::new(false),
                lru,
                thrash: ThrashSettings {
                    window_ns: Atomic::new(0),
                    backoff_ns: Atomic::new(0),
                },
                counters: DevMemCounters::default(),
            }),
            GFP_KERNEL,
        )?;
        // INVARIANT: before any page is handed out, the callbacks get the
        // pinned object.
        // SAFETY: `mem` is pinned in the `Arc` and owns the pagemap, which
        // it destroys (waiting for its last page) before it is freed.
        unsafe { mem.pm.set_devmem(&mem) };
        Ok(mem)
    }

    /// The device that owns this memory.
    pub(crate) fn owner(&self) -> Owner {
        self.owner
    }

    /// Pages in all.
    pub(crate) fn size(&self) -> usize {
        self.npages
    }

    /// The index of device page `pfn`, if it is one of ours.
    pub(crate) fn index(&self, pfn: u64) -> Option<usize> {
        let i = pfn.checked_sub(self.first_pfn)?;
        (i < self.npages as u64).then_some(i as usize)
    }

    /// The PFN of page `index` (for device-coherent memory, a page the CPU
    /// can address).
    pub(crate) fn pfn(&self, index: usize) -> u64 {
        self.first_pfn + index as u64
    }

    /// Whether this is device-coherent memory: the CPU addresses its pages,
    /// so mirrors map them as ordinary pages.
    pub(crate) fn is_coherent(&self) -> bool {
        self.coherent
    }

    /// Its driver destroys it: it takes no more pages, and those it has
    /// go back to system memory now (a mirror whose advice prefers it may
    /// keep the object a while). May sleep.
    pub(crate) fn retire(&self) -> Result<usize> {
        self.dead.store(true, Relaxed);
        self.evict()
    }

    /// Whether its driver destroyed it.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Relaxed)
    }

    /// What it did so far.
    pub(crate) fn counters(&self) -> &DevMemCounters {
        &self.counters
    }

    /// Sets its thrash control (`window_ns` 0: off).
    pub(crate) fn set_thrash(&self, window_ns: u64, backoff_ns: u64) {
        self.thrash.window_ns.store(window_ns, Relaxed);
        self.thrash.backoff_ns.store(backoff_ns, Relaxed);
    }

    /// Its thrash control now.
    pub(crate) fn thrash_settings(&self) -> Settings {
        Settings {
            window: self.thrash.window_ns.load(Relaxed),
            backoff: self.thrash.backoff_ns.load(Relaxed),
        }
    }

    /// What a migration does when it is full.
    pub(crate) fn policy(&self) -> Policy {
        self.policy
    }

    /// Pages in use now.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.count()
    }

    /// A device fault mapped device page `pfn` of this memory: its block
    /// is recently used.
    pub(crate) fn touch(&self, pfn: u64) {
        if let Some(i) = self.index(pfn) {
            self.lru.touch(i / HUGE_PAGES);
        }
    }

    /// The device memory `pfn` belongs to, if it is a device page of hmm-rs.
    ///
    /// # Safety
    ///
    /// `pfn` is a device page in use (referenced), which keeps its
    /// [`DevMem`] alive for the returned lifetime.
    pub(crate) unsafe fn of_pfn<'a>(pfn: u64) -> Option<&'a Self> {
        // SAFETY: Any PFN of a referenced page may be passed.
        let p = unsafe { Pagemap::devmem_of_pfn(pfn) }?;
        // SAFETY: The pagemap's callbacks pointer is a live `DevMem`
        // (type invariant) while one of its pages is referenced.
        Some(unsafe { p.as_ref() })
    }

    /// Copies `src` (`None`: zeros) into a free device page and returns its
    /// PFN, now referenced once; `None` if the memory is full or the copy
    /// failed.
    pub(crate) fn fill_page(&self, src: Option<u64>) -> Option<u64> {
        if self.is_dead() {
            return None;
        }
        let src = src.map(SysPage);
        let index = self.free_page()?;
        if self.ops.copy_to_device(index, src).is_err() {
            self.put_free(index);
            return None;
        }
        let pfn = self.pfn(index);
        stats::DEVICE_PAGES_USED.add(1);
        self.in_use.mark(index, 1, true);
        self.lru.touch(index / HUGE_PAGES);
        // SAFETY: The page was free (type invariant) and is ours now.
        unsafe { self.pm.init_page(pfn, 0) };
        Some(pfn)
    }

    /// A free page's index; when no single page is left, a free huge block
    /// becomes single pages.
    fn free_page(&self) -> Option<usize> {
        if let Some(i) = self.free.lock().pop() {
            return Some(i as usize);
        }
        let block = self.free_huge.lock().pop()? as usize;
        for k in (1..HUGE_PAGES).rev() {
            self.put_free(block + k);
        }
        Some(block)
    }

    /// Like [`Self::fill_page`] for a huge folio: 512 pages from `src` (or
    /// zeros) into a free 2 MiB block. `None` if there is no free block or
    /// a copy failed.
    pub(crate) fn fill_huge(&self, src: Option<u64>) -> Option<u64> {
        if self.is_dead() {
            return None;
        }
        let index = self.free_huge.lock().pop()? as usize;
        if self
            .ops
            .copy_folio_to_device(index, src.map(SysPage), HUGE_ORDER)
            .is_err()
        {
            // What a failed copy filled holds nothing.
            (0..HUGE_PAGES).for_each(|k| self.ops.free(index + k));
            self.put_free_huge(index);
            return None;
        }
        let pfn = self.pfn(index);
        stats::DEVICE_PAGES_USED.add(HUGE_PAGES as u64);
        self.in_use.mark(index, HUGE_PAGES, true);
        self.lru.touch(index / HUGE_PAGES);
        stats::HUGE_FILLED.add(1);
        // SAFETY: The block was free (type invariant) and is ours now.
        unsafe { self.pm.init_page(pfn, HUGE_ORDER) };
        Some(pfn)
    }

    /// Copies device page `pfn` (of this memory) into system page `dst`.
    pub(crate) fn copy_out(&self, pfn: u64, dst: SysPage) -> Result {
        let index = self.index(pfn).ok_or(EINVAL)?;
        self.ops.copy_from_device(index, dst)
    }

    /// Copies the huge folio at device page `pfn` into the system pages
    /// from `dst`.
    pub(crate) fn copy_out_huge(&self, pfn: u64, dst: SysPage) -> Result {
        let index = self.index(pfn).ok_or(EINVAL)?;
        self.ops.copy_folio_from_device(index, dst, HUGE_ORDER)
    }

    fn put_free(&self, index: usize) {
        // The list has room for every index (type invariant): no allocation.
        if self.free.lock().push_within_capacity(index as u32).is_err() {
            pr_err!("devmem: free list overflow at index {index}\n");
        }
    }

    fn put_free_huge(&self, index: usize) {
        // As above.
        if self
            .free_huge
            .lock()
            .push_within_capacity(index as u32)
            .is_err()
        {
            pr_err!("devmem: huge free list overflow at index {index}\n");
        }
    }
}

#[pinned_drop]
impl PinnedDrop for DevMem {
    fn drop(self: Pin<&mut Self>) {
        // Pages still mapped somewhere would keep memunmap_pages waiting
        // when `pm`, the first field, is dropped next.
        if let Err(e) = self.evict() {
            pr_err!("devmem: eviction failed ({e:?})\n");
        }
    }
}

impl DevMem {
    /// A page (`order` 0) or huge folio of this memory at `pfn` lost its
    /// last reference: it is free again. Called by the pagemap.
    pub(super) fn page_freed(&self, pfn: u64, order: u32) {
        let Some(index) = self.index(pfn) else {
            return;
        };
        let n = 1usize << order;
        for k in 0..n {
            self.ops.free(index + k);
        }
        stats::DEVICE_PAGES_USED.sub(n as u64);
        self.in_use.mark(index, n, false);
        if n == HUGE_PAGES {
            self.put_free_huge(index);
        } else {
            (0..n).for_each(|k| self.put_free(index + k));
        }
    }
}

#[kernel::prelude::kunit_tests(hmm_rs_devmem)]
mod tests {
    use super::*;

    #[test]
    fn in_use_marks_ranges_across_words() -> Result {
        let u = InUse::new(300)?;
        u.mark(3, 130, true);
        assert_eq!(u.count(), 130);
        assert_eq!(u.next_run(0, 300), Some((3, 133)));
        // A whole word and the parts of two others.
        u.mark(60, 70, false);
        assert_eq!(u.count(), 60);
        assert_eq!(u.next_run(0, 300), Some((3, 60)));
        assert_eq!(u.next_run(60, 300), Some((130, 133)));
        // A huge folio's 512 pages would be 8 words; here, to the end.
        u.mark(133, 167, true);
        assert_eq!(u.next_run(130, 300), Some((130, 300)));
        u.mark(0, 300, false);
        assert_eq!(u.next_run(0, 300), None);
        Ok(())
    }
}
