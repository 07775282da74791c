/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The generation's constants. The loader writes them into .rodata before the
 * load, so the verifier knows them and prunes what a rule set does not use.
 */
#ifndef BPFWALL_CFG_H
#define BPFWALL_CFG_H

#include "shared.h"

const volatile struct bpfwall_config cfg = {};

/*
 * The number the generation runs under, for log records and bans. Not in cfg: an
 * apply that keeps a loaded program's shape (cfg and the tables' sizes) rewrites
 * its tables and runs it again under a new number, without a new load. It lives
 * in .bss, which the loader writes after the load.
 */
volatile __u32 generation_no = 0;

#endif
