#include "train/schedule.h"

#include <math.h>

double schedule_learning_rate(const decon_config *c, long step) {
    double peak = c->learning_rate, floor = peak * c->min_learning_rate_ratio;
    if (step < c->warmup_steps) return peak * (double)(step + 1) / (double)c->warmup_steps;
    long decay_steps = c->max_steps - c->warmup_steps;
    double progress = decay_steps > 0 ? (double)(step - c->warmup_steps) / (double)decay_steps : 1.0;
    if (progress > 1.0) progress = 1.0;
    double cosine = 0.5 * (1.0 + cos(2.0 * M_PI * c->cosine_cycles * progress));
    return floor + (peak - floor) * cosine;
}
