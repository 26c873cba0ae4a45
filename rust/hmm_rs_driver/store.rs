// SPDX-License-Identifier: GPL-2.0

//! [`Stored`] device memory: contents the API keeps itself, in system
//! pages, with no lock on the core's paths.

use super::*;

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
pub(super) struct Slot(u64);

impl Slot {
    pub(super) const EMPTY: Slot = Slot(0);

    pub(super) fn new(pfn: u64, huge: bool) -> Slot {
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
/// `readers` raised; a page let go (a single page when its slot is
/// emptied, a huge folio when its last share is) is let go only after
/// `lock` was taken, if any reader was seen. A reader raises `readers`
/// before it loads a slot; a slot is emptied before its block's count is
/// lowered (for a share) and before `readers` is looked at, each with a
/// full barrier: either the reader loads the emptied slot, or the emptier
/// of the page or of the folio's last share sees the reader and waits for
/// it; if it sees `readers` back at 0, its acquire orders the reader's use
/// of the page before the page is let go. So a share that is not the last
/// costs two atomics, a folio's whole count is read with one. The
/// callbacks run in process context (the core's migrations and its
/// `page_free`), so a plain spinlock does.
///
/// # Invariants
///
/// A slot that is not empty owns its page: the page's reference, or for a
/// page of a huge folio one of the `huge_live[index >> HUGE_ORDER]` shares
/// of the folio's reference (the last share puts it). A block's shares are
/// of one folio, page `k` of it in the block's slot `k`, and outside a
/// callback for the block's pages its count is how many of its slots hold
/// one (0: none). A page is read only by a callback of the core for that
/// device page, or with `lock` held and `readers` raised.
#[pin_data]
pub(super) struct PageStore {
    slots: KVVec<Atomic<u64>>,
    huge_live: KVVec<Atomic<u32>>,
    readers: Atomic<u32>,
    #[pin]
    lock: SpinLock<()>,
}

impl PageStore {
    pub(super) fn new(npages: usize) -> Result<impl PinInit<Self, Error>> {
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
    pub(super) fn replace(&self, index: usize, new: Slot) -> Result {
        let old = Slot(self.slot(index)?.xchg(new.0, Full));
        let Some(pfn) = old.pfn() else {
            return Ok(());
        };
        if !old.huge() {
            self.wait_readers();
            // SAFETY: The slot owned the page's reference, and no one reads
            // the page any more (type invariant).
            unsafe { ffi::hmm_rs_drv_page_free(pfn) };
        } else if self.huge_live[index >> HUGE_ORDER].fetch_sub(1, Full) == 1 {
            self.wait_readers();
            // SAFETY: The last share of the folio's reference; as above, for
            // each of its pages.
            unsafe { ffi::hmm_rs_drv_folio_put(pfn) };
        }
        Ok(())
    }

    /// Waits for the readers that may have loaded a slot emptied before.
    fn wait_readers(&self) {
        if self.readers.load(Acquire) != 0 {
            drop(self.lock.lock());
        }
    }

    /// Fills slot `index` with a new page, from `src` or with zeros.
    pub(super) fn fill(&self, index: usize, src: Option<PageRef<'_>>) -> Result {
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
    pub(super) fn fill_folio(&self, dst: &DevPages<'_>, src: Option<Pages<'_>>) -> Result {
        let (index, n) = (dst.index(), dst.npages());
        self.slots.get(index..index + n).ok_or(EINVAL)?;
        let by_pages =
            || (0..n).try_for_each(|k| self.fill(index + k, src.and_then(|s| s.page(k))));
        // A whole block whose slots hold no share of an older folio (count
        // 0; the core fills only free pages, whose slots `free` emptied,
        // and `replace` would let go of a page left there): its count goes
        // from 0 to the shares about to be made.
        let live = (dst.order() == HUGE_ORDER && index % n == 0)
            .then(|| self.huge_live.get(index >> HUGE_ORDER))
            .flatten()
            .filter(|live| live.cmpxchg(0, n as u32, Full).is_ok());
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
        // says, page `k` in slot `k` of the block.
        let pfn = folio.into_pfn();
        (0..n).try_for_each(|k| self.replace(index + k, Slot::new(pfn + k as u64, true)))
    }

    /// The page in slot `index`, for a callback of the core: the core frees
    /// no device page while a callback copies it. (Private: the `PageRef`
    /// never leaves the callback, though its lifetime is the store's.)
    pub(super) fn page(&self, index: usize) -> Result<PageRef<'_>> {
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
    pub(super) fn copy_out_folio(&self, src: &DevPages<'_>, dst: Pages<'_>) -> Result {
        let (index, n) = (src.index(), src.npages());
        let first = self.page(index)?;
        // A whole block whose count says every slot holds its share.
        let whole = src.order() == HUGE_ORDER
            && dst.order() == HUGE_ORDER
            && index % n == 0
            && self
                .huge_live
                .get(index >> HUGE_ORDER)
                .is_some_and(|live| live.load(Relaxed) == n as u32);
        if whole {
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
    pub(super) fn read<R>(&self, index: usize, f: impl FnOnce(PageRef<'_>) -> R) -> Result<R> {
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
    pub(super) fn clear(&self) {
        for index in 0..self.slots.len() {
            let _ = self.replace(index, Slot::EMPTY);
        }
    }
}
