// SPDX-License-Identifier: GPL-2.0

//! hmm-rs: a Heterogeneous Memory Management core in Rust.
//!
//! Lets a device mirror a process's address space: one `mmu_notifier` per mm
//! shared by every mirror of it ([`hmm_mm`]), a per-mirror page table
//! ([`hmm_pt`]), and typed events ([`hmm_event`]) handed to device drivers
//! ([`hmm_mirror`], with device memory and migration under it) before the
//! mirror table changes. C drivers reach it through `hmm_rs.h`
//! ([`c_api`]); every event, fault and migration is a tracepoint
//! ([`trace`]) and a counter ([`debugfs`]).
//!
//! Built on: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h)
//! and [`include/linux/hmm.h`](srctree/include/linux/hmm.h).

use kernel::{bindings, prelude::*, time::Delta};

// The core.
mod hmm_event;
mod hmm_mirror;
mod hmm_mm;
mod hmm_pt;

// Its edges: C drivers, observability, the C shim's declarations.
mod c_api;
mod debugfs;
mod error;
mod shim;
mod stats;
mod trace;

// Built for tests and benchmarks only.
#[cfg(hmm_rs_bench)]
#[path = "tests/core_bench.rs"]
mod core_bench;
#[cfg(CONFIG_KUNIT)]
#[path = "tests/kunit_helpers.rs"]
mod kunit_helpers;
#[cfg(hmm_rs_bench)]
#[path = "tests/pt_bench.rs"]
mod pt_bench;

module! {
    type: HmmCore,
    name: "hmm_rs",
    authors: ["hmm-rs developers"],
    description: "Heterogeneous Memory Management core in Rust",
    license: "GPL",
}

/// The loaded module; owns everything the core registers with the kernel.
struct HmmCore {
    _debugfs: debugfs::DebugFs,
}

impl kernel::Module for HmmCore {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        hmm_mirror::init();
        let debugfs = debugfs::DebugFs::new()?;
        pr_info!(
            "HMM core loaded, {} event types\n",
            hmm_event::HmmEventType::ALL.len()
        );
        Ok(HmmCore { _debugfs: debugfs })
    }
}

impl Drop for HmmCore {
    fn drop(&mut self) {
        // Notifiers and page-table directories are freed by callbacks in this
        // module after a grace period: wait for them before it goes away.
        // Once every mirror is unregistered every notifier has been put and
        // its callback comes soon. A mirror or reference leaked by a driver
        // keeps its notifier: unloading then waits, and says so, rather than
        // free the code mm would still call.
        while !hmm_mm::wait_for_freed_notifiers(0, Delta::from_secs(10)) {
            pr_warn!("unloading: still waiting for mm notifiers to be freed\n");
        }
        // SAFETY: Always safe from process context. (`bindings`, not
        // `kernel::sync::rcu::rcu_barrier`, which Linux 7.2 lacks.)
        unsafe { bindings::rcu_barrier() };
        hmm_mirror::exit();
        pr_info!("HMM core unloaded\n");
    }
}
