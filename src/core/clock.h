// The one wall clock of the project (training progress, evaluation timings).
#pragma once

// Seconds on a monotonic clock: only differences mean anything.
double wall_seconds(void);
