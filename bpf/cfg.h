/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The generation's constants. The loader writes them into .rodata before the
 * load, so the verifier knows them and prunes what a rule set does not use.
 */
#ifndef BPFWALL_CFG_H
#define BPFWALL_CFG_H

#include "shared.h"

const volatile struct bpfwall_config cfg = {};

#endif
