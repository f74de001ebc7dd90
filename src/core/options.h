// Command-line option values shared by the programs (decon-eval, decon-generate,
// decon-lowrank): a bad value is one fatal line naming the option.
#pragma once

// The integer `text` of `option`, which must lie in [low, high]; otherwise fatal
// "<option> '<text>': expected an integer in [low, high]".
long option_integer(const char *option, const char *text, long low, long high);
