// SPDX-License-Identifier: GPL-2.0

//! hmm-rs: a Heterogeneous Memory Management core in Rust.
//!
//! Lets a device mirror a process's address space: one `mmu_notifier` per mm
//! shared by every mirror of it, a per-mirror page table ([`hmm_pt`]), and
//! typed events ([`hmm_event`]) handed to device drivers ([`hmm_mirror`])
//! before the mirror table changes.
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h)

use kernel::{prelude::*, sync::rcu};

mod hmm_event;
mod hmm_mirror;
mod hmm_pt;

/// The C shim (`hmm_shim.c`): inline kernel helpers Rust cannot reach.
mod shim {
    use kernel::bindings::page;

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
    }
}

use hmm_event::HmmEventType;

module! {
    type: HmmCore,
    name: "hmm_rs",
    authors: ["hmm-rs developers"],
    description: "Heterogeneous Memory Management core in Rust",
    license: "GPL",
}

/// The loaded module; owns everything the core registers with the kernel.
struct HmmCore;

impl kernel::Module for HmmCore {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("HMM core loaded, {} event types\n", HmmEventType::ALL.len());
        Ok(HmmCore)
    }
}

impl Drop for HmmCore {
    fn drop(&mut self) {
        // Page-table directories freed after a grace period are freed by
        // callbacks in this module: wait for them before it goes away.
        rcu::rcu_barrier();
        pr_info!("HMM core unloaded\n");
    }
}
