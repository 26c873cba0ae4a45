// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs C shim: only what Rust cannot do from outside the kernel tree
 * (inline helpers, EXPORT_SYMBOL_GPL, tracepoints). Keep it thin.
 */
#include <linux/kconfig.h>

/* Fail the build early and clearly on a kernel that cannot host the core. */
#if !IS_ENABLED(CONFIG_RUST)
#error "hmm-rs needs CONFIG_RUST"
#endif
#if !IS_ENABLED(CONFIG_MMU_NOTIFIER)
#error "hmm-rs needs CONFIG_MMU_NOTIFIER (select it with CONFIG_HMM_MIRROR)"
#endif
#if !IS_ENABLED(CONFIG_HMM_MIRROR)
#error "hmm-rs needs CONFIG_HMM_MIRROR"
#endif
