// SPDX-License-Identifier: GPL-2.0

//! The table's memory: directories, one 4 KiB page of slots each, and where
//! they come from. All of the table's `unsafe` about memory is here.

use core::{mem::ManuallyDrop, ptr::NonNull};
use kernel::{
    alloc::{flags, Flags},
    page::Page,
    prelude::*,
};

use super::{Mo, PtEntry, SlotWord, DIR_SLOTS, PAGE_SIZE};
use crate::shim;

/// One directory: a 4 KiB page of slots.
#[repr(C)]
pub(super) struct Dir {
    pub(super) slots: [SlotWord; DIR_SLOTS],
}

const _: () = assert!(core::mem::size_of::<Dir>() == PAGE_SIZE as usize);

/// The contents of a slot.
pub(super) enum Slot<'a> {
    Empty,
    Leaf(PtEntry),
    Dir(&'a Dir),
}

impl Dir {
    /// Decodes slot value `raw`.
    ///
    /// # Safety
    ///
    /// `raw` must have been read from a slot of a live directory of a table,
    /// and the caller must hold that table's lock or an RCU read lock, since
    /// before the read, for all of `'a`.
    pub(super) unsafe fn decode<'a>(raw: u64) -> Slot<'a> {
        if raw == 0 {
            Slot::Empty
        } else if PtEntry::is_leaf(raw) {
            Slot::Leaf(PtEntry(raw))
        } else {
            // SAFETY: A slot that is neither empty nor a leaf holds the address
            // of a directory (`DirPage::into_slot`). Writers free a directory
            // only after unlinking it, and then only once an RCU grace period
            // has passed (or while holding the lock the caller holds), so it
            // stays valid for `'a` by the caller's guarantee.
            Slot::Dir(unsafe { &*(raw as usize as *const Dir) })
        }
    }

    pub(super) fn load(&self, index: usize) -> u64 {
        self.slots[index].load(Mo::Acquire)
    }

    pub(super) fn store(&self, index: usize, raw: u64) {
        self.slots[index].store(raw, Mo::Release)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.load(Mo::Relaxed) == 0)
    }
}

/// An owned directory page.
///
/// # Invariants
///
/// `self.0` is the kernel address of an order-0 page allocated by
/// [`Page::alloc_page`] and owned by this object, zeroed when allocated.
pub(crate) struct DirPage(NonNull<Dir>);

// SAFETY: A `DirPage` owns its page; pages can be freed from any context.
unsafe impl Send for DirPage {}

// SAFETY: Through `&DirPage` one only gets `&Dir`, whose slots are atomics.
unsafe impl Sync for DirPage {}

impl DirPage {
    /// Allocates a zeroed directory page.
    pub(crate) fn alloc(gfp: Flags) -> Result<Self> {
        let page = ManuallyDrop::new(Page::alloc_page(gfp | flags::__GFP_ZERO)?);
        // SAFETY: `page` is a valid page; on 64-bit kernels every page has a
        // permanent kernel address.
        let addr = unsafe { shim::hmm_rs_page_address(page.as_ptr()) };
        // INVARIANT: ownership of the zeroed page moves from `page` (not dropped)
        // to the new object.
        Ok(Self(NonNull::new(addr.cast()).ok_or(ENOMEM)?))
    }

    pub(super) fn dir(&self) -> &Dir {
        // SAFETY: By the type invariant, `self.0` is a live page we own, and
        // `Dir` is one page of atomics, for which any bit pattern is valid.
        unsafe { self.0.as_ref() }
    }

    /// Gives up ownership, returning the slot value that links the directory.
    pub(super) fn into_slot(self) -> u64 {
        ManuallyDrop::new(self).0.as_ptr() as usize as u64
    }

    /// Takes back ownership of the directory linked by slot value `raw`.
    ///
    /// # Safety
    ///
    /// `raw` must come from [`Self::into_slot`], and ownership of that
    /// directory must not be taken back twice.
    pub(super) unsafe fn from_slot(raw: u64) -> Self {
        // SAFETY: `raw` came from `into_slot`, which returned a non-null
        // address; ownership moves back by the caller's guarantee.
        Self(unsafe { NonNull::new_unchecked(raw as usize as *mut Dir) })
    }

    pub(super) fn page(&self) -> NonNull<kernel::bindings::page> {
        // SAFETY: By the type invariant, `self.0` is the address of a page.
        let page = unsafe { shim::hmm_rs_virt_to_page(self.0.as_ptr().cast()) };
        // SAFETY: `virt_to_page` of a valid kernel address is never null.
        unsafe { NonNull::new_unchecked(page) }
    }

    /// Frees the directory after an RCU grace period, for readers that may
    /// still be looking at it.
    pub(super) fn free_after_rcu(self) {
        let page = ManuallyDrop::new(self).page();
        // SAFETY: We own the page (type invariant) and give it up here; it is
        // not on any list, so its `rcu_head` is free for the deferred free.
        unsafe { shim::hmm_rs_free_page_rcu(page.as_ptr()) };
    }
}

impl Drop for DirPage {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, we own this order-0 page, which came
        // from `Page::alloc_page`, as `Page::drop` would free it.
        unsafe { kernel::bindings::__free_pages(self.page().as_ptr(), 0) };
    }
}

/// Where a table's directories come from; tests plug in one that fails.
pub(crate) trait DirAlloc: Send + Sync {
    /// Allocates one zeroed directory.
    fn alloc(&self, gfp: Flags) -> Result<DirPage>;
}

/// Directories from the page allocator.
pub(crate) struct PageDirs;

impl DirAlloc for PageDirs {
    fn alloc(&self, gfp: Flags) -> Result<DirPage> {
        DirPage::alloc(gfp)
    }
}
