// SPDX-License-Identifier: GPL-2.0

//! Mirrors: one device's view of one mm, and device faults into it.
