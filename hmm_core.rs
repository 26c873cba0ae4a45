// SPDX-License-Identifier: GPL-2.0

//! hmm-rs: a Heterogeneous Memory Management core in Rust.
//!
//! Lets a device mirror a process's address space: one `mmu_notifier` per mm
//! shared by every mirror of it, a per-mirror page table ([`hmm_pt`]), and
//! typed events ([`hmm_event`]) handed to device drivers ([`hmm_mirror`])
//! before the mirror table changes.
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h)

use kernel::prelude::*;

mod hmm_event;
mod hmm_mirror;
mod hmm_pt;

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
        pr_info!("HMM core unloaded\n");
    }
}
