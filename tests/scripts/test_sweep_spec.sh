#!/usr/bin/env bash
# Sweep specs that are wrong in any way are refused in one line naming the spec's line,
# never with a Python traceback (jobs/sweep; docs/design.md, "Slurm jobs"). Mutants of
# the shipped specs (seeded, so every run sees the same ones: characters deleted or
# inserted, lines duplicated or dropped, values swapped between keys, words from the spec
# vocabulary and odd bytes inserted) go through the spec parser and the per-run
# validation (bin/decon-train --check) in one Python process. No Slurm needed: nothing is
# submitted. Also: --only, and the one-line refusals of the command itself.
source "$(dirname "$0")/common.sh"
cd "$ROOT" || exit 1

"$PYTHON" - "$WORK" <<'PY'
import importlib.machinery, importlib.util, io, os, random, sys, traceback
work = sys.argv[1]
loader = importlib.machinery.SourceFileLoader("sweep", "jobs/sweep")
spec_module = importlib.util.spec_from_loader("sweep", loader)
sweep = importlib.util.module_from_spec(spec_module)
loader.exec_module(sweep)
site = sweep.read_site("jobs/site.conf")
sources = [open("input/sweeps/%s.sweep" % n).read() for n in ("tiny_test", "tiny_cpu", "hybrid_layouts")]
vocabulary = ["preset", "variant", "layout", "seed", "set", "vary", "tp", "ranks", "nodes", "eval", "record",
              "=", "==", ",", "#", ":", "%", "hybrid:", "list:0", "list:1,1", "train.max_steps=0", "-1", "1e309",
              "nan", "yes", "no", "00:00", "x" * 300, "\t", "\\", "'", '"', "attention.variant=", "vary = a.b=",
              "set = =", "\u00e9", "\x00"]
rng = random.Random(20261203)

def mutate(text):
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        if kind == 0 and text:
            at = rng.randrange(len(text)); text = text[:at] + text[at + rng.randint(1, 8):]
            lines = text.splitlines()
        elif kind == 1:
            at = rng.randrange(len(text) + 1); text = text[:at] + rng.choice(vocabulary) + text[at:]
            lines = text.splitlines()
        elif kind == 2 and lines:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines)); text = "\n".join(lines)
        elif kind == 3 and lines:
            del lines[rng.randrange(len(lines))]; text = "\n".join(lines)
        elif kind == 4 and len(lines) > 1:
            a, b = rng.sample(range(len(lines)), 2)
            if "=" in lines[a] and "=" in lines[b]:
                lines[a] = lines[a].split("=")[0] + "=" + lines[b].split("=", 1)[1]; text = "\n".join(lines)
        else:
            at = rng.randrange(len(text) + 1); text = text[:at] + chr(rng.randrange(1, 0x2000)) + text[at:]
            lines = text.splitlines()
    return text

refused = accepted = crashed = 0
first_crash = ""
for number in range(150):
    text = mutate(rng.choice(sources))
    path = os.path.join(work, "mutant.sweep")
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)
    try:
        spec = sweep.Spec(path)
        spec.site = site
        sweep.build_plan(spec, os.path.join(work, "out"))
        accepted += 1
    except sweep.SpecError as error:
        message = str(error)
        if not message.startswith(path + ":") or "\n" in message:
            crashed += 1
            first_crash = first_crash or "refusal not one line naming the spec: %r" % message
        refused += 1
    except BaseException:
        crashed += 1
        if not first_crash:
            first_crash = traceback.format_exc().strip().splitlines()[-1]
            open(os.path.join(work, "crash.sweep"), "w").write(text)
print("   %d mutants: %d refused with their line, %d accepted, %d crashed" % (150, refused, accepted, crashed))
print("PASS sweep_spec_mutants_refused_in_one_line" if crashed == 0 and refused > 60 else
      "FAIL sweep_spec_mutants_refused_in_one_line: %d crashed (%s), %d refused" % (crashed, first_crash, refused))
PY

bash input/tasks/build.sh data/corpus data/tasks >"$WORK/tasks.log" 2>&1 || fail tasks_build "$(tail -n 2 "$WORK/tasks.log")"
jobs/sweep input/sweeps/tiny_cpu.sweep --only 'tiny-approx-*' tiny-standard-uniform-s1 --dry-run --out "$WORK/only" >"$WORK/only.out" 2>&1
# A run keeps its index in the whole sweep (its task files and logs are named by it).
[ $? -eq 0 ] && [ "$(grep -c '^  *[0-9]  *tiny-' "$WORK/only.out")" -eq 3 ] && grep -q -- '--array=0,3-4 ' "$WORK/only.out"
check sweep_only_selects_runs $? "$(head -c 500 "$WORK/only.out")"

one_line_refusal() {  # NAME EXPECTED ARGS...
    local name=$1 expected=$2
    shift 2
    jobs/sweep "$@" >"$WORK/$name.out" 2>&1
    local status=$?
    [ $status -ne 0 ] && [ "$(wc -l <"$WORK/$name.out")" -eq 1 ] && grep -q "^decon: error: .*$expected" "$WORK/$name.out"
    check "sweep_refuses_$name" $? "status $status: $(head -c 300 "$WORK/$name.out")"
}
one_line_refusal missing_spec "cannot read the sweep spec" "$WORK/nothing.sweep" --dry-run
one_line_refusal only_matching_nothing "matches no run" input/sweeps/tiny_cpu.sweep --only nothing-like-this --dry-run
printf 'preset = tiny\nnot a key value line\n' >"$WORK/syntax.sweep"
one_line_refusal syntax "syntax.sweep:2: 'not a key value line' is not 'key = value'" "$WORK/syntax.sweep" --dry-run
printf 'preset = tiny\nseed = 1\nseed = 2\n' >"$WORK/twice.sweep"
one_line_refusal key_twice "twice.sweep:3: seed is given twice (also on line 2)" "$WORK/twice.sweep" --dry-run
printf 'preset = tiny\nvariant = approx\nvary = train.learning_rate=1e-3,banana\n' >"$WORK/vary.sweep"
one_line_refusal vary_value "vary.sweep:3: .*learning_rate" "$WORK/vary.sweep" --dry-run
printf 'preset = tiny\n' >"$WORK/site.sweep"
one_line_refusal unreadable_site "cannot read the site settings" "$WORK/site.sweep" --site "$WORK/no-site.conf" --dry-run
mkdir -p "$WORK/no-slurm-bin"   # a PATH with bash and python but no Slurm commands
ln -s /bin/bash /usr/bin/python3 "$WORK/no-slurm-bin/"
env -i PATH="$WORK/no-slurm-bin" python3 jobs/sweep input/sweeps/tiny_test.sweep --out "$WORK/no-slurm" \
    >"$WORK/no-slurm.out" 2>&1
status=$?
[ $status -ne 0 ] && [ "$(wc -l <"$WORK/no-slurm.out")" -eq 1 ] && grep -q "sbatch/squeue not found" "$WORK/no-slurm.out"
check sweep_refuses_without_slurm $? "status $status: $(head -c 300 "$WORK/no-slurm.out")"

