// Non-finite training steps ([train] on_nonfinite; docs/design.md "Non-finite steps"):
// which tensors hold a NaN or an infinity, agreed over every rank, so that every rank
// names the same tensor and takes the same action.
#pragma once
#include <mpi.h>
#include <stddef.h>

#include "core/params.h"

// One line for the user, the same on every rank: the loss, how many tensors' gradients
// are non-finite and the one backward reaches first (the highest registry index: backward
// runs from the LM head down to the embedding, so that is where the NaN or overflow
// arose in the backward pass), and the first parameter (registry order) that itself
// holds a non-finite value, if any (a poisoned checkpoint, or an update that overflowed).
// Collective over comm (every rank of the run); call it only after the ranks agreed the
// step is non-finite (it scans every tensor).
void nonfinite_describe(char *out, size_t size, const param_registry *registry, const float *params,
                        const float *grads, double loss, MPI_Comm comm);
