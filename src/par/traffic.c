#include "par/traffic.h"

#include <string.h>

static const char *const NAMES[TRAFFIC_KINDS] = {
    "tp all-reduce", "tp all-gather", "tp reduce-scatter", "tp loss", "tp gradients", "dp all-reduce",
    "dp all-gather",
};

const char *traffic_kind_name(traffic_kind kind) { return NAMES[kind]; }

void traffic_reset(traffic_counter *counter) { memset(counter, 0, sizeof *counter); }

void traffic_add(traffic_counter *counter, traffic_kind kind, double bytes) {
    if (!counter) return;
    counter->bytes[kind] += bytes;
    counter->calls[kind]++;
}

double traffic_all_reduce_bytes(double n, int ranks) { return 2.0 * (ranks - 1) / ranks * n; }
double traffic_all_gather_bytes(double n, int ranks) { return (double)(ranks - 1) / ranks * n; }
double traffic_reduce_scatter_bytes(double n, int ranks) { return (double)(ranks - 1) / ranks * n; }
