#include "train/nonfinite.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/errors.h"
#include "ops/ops.h"

typedef struct {
    int first;  // registry index, -1 when none
    int count;  // tensors with a non-finite element on some rank
} nonfinite_tensors;

// The sum of squares is accumulated in double, so it is finite exactly when every float
// of the slice is (squares of floats cannot overflow a double).
static nonfinite_tensors find(const param_registry *registry, const float *buffer, bool highest, MPI_Comm comm) {
    int *bad = xcalloc((size_t)registry->count, sizeof(int));
    for (int i = 0; i < registry->count; i++)
        bad[i] = !isfinite(sum_of_squares(buffer + registry->items[i].offset, registry->items[i].local_count));
    MPI_Allreduce(MPI_IN_PLACE, bad, registry->count, MPI_INT, MPI_MAX, comm);
    nonfinite_tensors found = {-1, 0};
    for (int i = 0; i < registry->count; i++) {
        if (!bad[i]) continue;
        found.count++;
        if (found.first < 0 || highest) found.first = i;
    }
    free(bad);
    return found;
}

void nonfinite_describe(char *out, size_t size, const param_registry *registry, const float *params,
                        const float *grads, double loss, MPI_Comm comm) {
    nonfinite_tensors g = find(registry, grads, true, comm), p = find(registry, params, false, comm);
    int n = isnan(loss) ? snprintf(out, size, "loss nan; ") : snprintf(out, size, "loss %g; ", loss);
    if (n < 0 || (size_t)n >= size) return;
    if (g.count)
        n += snprintf(out + n, size - (size_t)n, "non-finite gradient in %d of %d tensors, first in backward order %s",
                      g.count, registry->count, registry->items[g.first].name);
    else
        n += snprintf(out + n, size - (size_t)n, "every gradient finite");
    if (n < 0 || (size_t)n >= size) return;
    if (p.count)
        snprintf(out + n, size - (size_t)n, "; parameter %s itself holds non-finite values (%d of %d tensors do)",
                 registry->items[p.first].name, p.count, registry->count);
}
