// SPDX-License-Identifier: GPL-2.0

//! The per-mirror page table.
