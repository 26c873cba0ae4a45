// SPDX-License-Identifier: GPL-2.0

//! Pages the holder reads and writes by pfn: a page, a folio's pages, pages
//! the driver owns, and the buffer of a device access.

use super::*;

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
    pub(super) pfn: u64,
    pub(super) writable: bool,
    pub(super) _life: PhantomData<&'a ()>,
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
    pub(super) pfn: u64,
    pub(super) order: u32,
    pub(super) writable: bool,
    pub(super) _life: PhantomData<&'a ()>,
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
    pub(super) fn into_pfn(self) -> u64 {
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

/// A bit per page of a device access: in the object up to 64 pages (the
/// small accesses a GPU's faults make allocate nothing), else allocated.
///
/// # Invariants
///
/// `heap` has `n.div_ceil(64)` words if `n > 64`, else none (`inline`
/// holds the bits); bits from `n` on are clear.
pub struct PageBits {
    inline: u64,
    heap: KVVec<u64>,
    n: usize,
}

impl PageBits {
    /// `n` bits, all clear; `ENOMEM` (quietly) if there is no room.
    pub fn new(n: usize) -> Result<Self> {
        let heap = if n > 64 {
            KVVec::from_elem(0, n.div_ceil(64), GFP_KERNEL | __GFP_NOWARN)?
        } else {
            KVVec::new()
        };
        // INVARIANT: As many words as `n` needs, all clear.
        Ok(PageBits { inline: 0, heap, n })
    }

    fn words(&self) -> &[u64] {
        if self.n > 64 {
            &self.heap
        } else {
            core::slice::from_ref(&self.inline)
        }
    }

    fn words_mut(&mut self) -> &mut [u64] {
        if self.n > 64 {
            &mut self.heap
        } else {
            core::slice::from_mut(&mut self.inline)
        }
    }

    /// How many bits.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether bit `k` is set (`false` beyond the last).
    pub fn test(&self, k: usize) -> bool {
        k < self.n && self.words()[k / 64] & (1u64 << (k % 64)) != 0
    }

    /// Sets bit `k` (nothing beyond the last); whether it was set.
    pub fn test_and_set(&mut self, k: usize) -> bool {
        if k >= self.n {
            return false;
        }
        let w = &mut self.words_mut()[k / 64];
        let old = *w & (1u64 << (k % 64)) != 0;
        *w |= 1u64 << (k % 64);
        old
    }

    /// Sets every bit.
    pub fn set_all(&mut self) {
        let n = self.n;
        for (i, w) in self.words_mut().iter_mut().enumerate() {
            // INVARIANT: Bits from `n` on stay clear.
            *w = if n - i * 64 >= 64 {
                u64::MAX
            } else {
                (1u64 << (n - i * 64)) - 1
            };
        }
    }

    /// The first clear bit, or `len()` if all are set.
    pub fn first_zero(&self) -> usize {
        self.words()
            .iter()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)
            .map_or(self.n, |(i, w)| {
                (i * 64 + w.trailing_ones() as usize).min(self.n)
            })
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
/// initialised if bit `k` of `filled` (`npages` bits) is set.
pub struct PageBuffer {
    buf: VVec<u8>,
    filled: PageBits,
    npages: usize,
}

impl PageBuffer {
    /// A buffer of `npages` pages; `ENOMEM` (quietly) if there is no room.
    pub fn new(npages: usize) -> Result<Self> {
        let size = npages.checked_mul(PAGE_SIZE).ok_or(ENOMEM)?;
        let buf = VVec::with_capacity(size, GFP_KERNEL | __GFP_NOWARN)?;
        // INVARIANT: Room for `npages` pages, none filled.
        Ok(PageBuffer {
            buf,
            filled: PageBits::new(npages)?,
            npages,
        })
    }

    /// How many pages.
    pub fn npages(&self) -> usize {
        self.npages
    }

    /// Whether page `k` is filled.
    pub fn is_filled(&self, k: usize) -> bool {
        self.filled.test(k)
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
        self.filled.test_and_set(k);
        Ok(())
    }

    /// Fills every page from user space (`EFAULT` if it cannot).
    pub fn fill_from_user(&mut self, reader: &mut UserSliceReader) -> Result {
        let size = self.npages * PAGE_SIZE;
        reader.read_raw(&mut self.buf.spare_capacity_mut()[..size])?;
        // INVARIANT: `read_raw` initialised every byte.
        self.filled.set_all();
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
        if self.filled.first_zero() < self.npages {
            return Err(ENOENT);
        }
        // SAFETY: Every page of the buffer is filled, so initialised.
        let all =
            unsafe { core::slice::from_raw_parts(self.buf.as_ptr(), self.npages * PAGE_SIZE) };
        writer.write_slice(all)
    }
}
