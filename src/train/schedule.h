// Learning-rate schedule: linear warm-up then cosine decay (Table 4.9: 0.5 cycles).
#pragma once
#include "core/config.h"

// LR for optimizer step `step` (0-based): warm-up lr * (step+1)/warmup for step < warmup
// (never 0, so no step is wasted), then min + (peak - min) * 0.5 * (1 + cos(2 pi cycles p))
// with p = (step - warmup) / (max_steps - warmup) in [0, 1].
double schedule_learning_rate(const decon_config *config, long step);
