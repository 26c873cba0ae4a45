// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs tracepoints: defined here, with the rust_do_trace_*() functions
 * that trace.rs calls once it has found the tracepoint enabled.
 */
#define CREATE_TRACE_POINTS
#define CREATE_RUST_TRACE_POINTS
#include "hmm_rs_events.h"
