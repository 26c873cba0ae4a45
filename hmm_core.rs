// SPDX-License-Identifier: GPL-2.0

//! hmm-rs: a Heterogeneous Memory Management core in Rust.
//!
//! Lets a device mirror a process's address space: one `mmu_notifier` per mm
//! shared by every mirror of it, a per-mirror page table ([`hmm_pt`]), and
//! typed events ([`hmm_event`]) handed to device drivers ([`hmm_mirror`])
//! before the mirror table changes.
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h)

use kernel::{
    debugfs, fmt,
    prelude::*,
    sync::{new_mutex, rcu, Mutex},
    uaccess::UserSliceReader,
};

mod hmm_event;
mod hmm_mirror;
mod hmm_pt;
#[path = "tests/pt_bench.rs"]
mod pt_bench;

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
struct HmmCore {
    _debugfs: debugfs::Dir,
    _pt_bench: Pin<KBox<debugfs::File<Mutex<KVec<u8>>>>>,
}

impl kernel::Module for HmmCore {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let dir = debugfs::Dir::new(c"hmm_rs");
        let pt_bench = KBox::pin_init(
            dir.read_write_callback_file(
                c"pt_bench",
                new_mutex!(KVec::new()),
                &show_pt_bench,
                &run_pt_bench,
            ),
            GFP_KERNEL,
        )?;
        pr_info!("HMM core loaded, {} event types\n", HmmEventType::ALL.len());
        Ok(HmmCore {
            _debugfs: dir,
            _pt_bench: pt_bench,
        })
    }
}

/// Reading `hmm_rs/pt_bench` shows the last benchmark report.
fn show_pt_bench(report: &Mutex<KVec<u8>>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let report = report.lock();
    match core::str::from_utf8(&report) {
        Ok(s) if !s.is_empty() => f.write_str(s),
        _ => f.write_str("no report yet: write 'run' to this file\n"),
    }
}

/// Writing `run` to `hmm_rs/pt_bench` runs the page-table benchmark.
fn run_pt_bench(report: &Mutex<KVec<u8>>, input: &mut UserSliceReader) -> Result {
    let mut cmd = [0u8; 4];
    let len = input.len();
    if len > cmd.len() {
        return Err(EINVAL);
    }
    input.read_slice(&mut cmd[..len])?;
    if !matches!(&cmd[..len], b"run" | b"run\n") {
        return Err(EINVAL);
    }
    let mut report = report.lock();
    pr_info!("running the page-table benchmark\n");
    *report = pt_bench::pt_bench()?.0;
    Ok(())
}

impl Drop for HmmCore {
    fn drop(&mut self) {
        // Page-table directories freed after a grace period are freed by
        // callbacks in this module: wait for them before it goes away.
        rcu::rcu_barrier();
        pr_info!("HMM core unloaded\n");
    }
}
