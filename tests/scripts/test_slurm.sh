#!/usr/bin/env bash
# Slurm jobs and sweeps on a real Slurm (docs/design.md, "Slurm jobs"): munged, slurmctld
# and slurmd started here by jobs/local_cluster, one node = this machine. The test sweep
# input/sweeps/tiny_test.sweep (five tiny runs) goes through jobs/sweep: every array task
# trains, its evaluation runs after it (aftercorr), the analysis job after every evaluation
# (afterany), and jobs/collect's report lists every run. One task is pre-empted mid-run
# (scancel --signal=USR1 --batch): it requeues, resumes and ends with the parameters,
# optimizer state and losses of an uninterrupted run. Submitting the spec again trains
# nothing; bad specs are refused before anything is queued; a 2-rank tp=2 job runs under
# both launchers (srun --mpi=pmix and mpirun). The daemons are stopped by PID at the end,
# also on failure, and every wait has a timeout.
source "$(dirname "$0")/common.sh"
CLUSTER=$WORK/cluster
trap 'bash "$ROOT/jobs/local_cluster" stop "$CLUSTER"; rm -rf "$WORK"' EXIT
unset SLURM_JOB_ID SLURM_ARRAY_TASK_ID SLURM_NTASKS SLURM_NTASKS_PER_NODE SLURM_CPUS_PER_TASK

if ! eval "$(bash "$ROOT/jobs/local_cluster" start "$CLUSTER")"; then
    fail slurm_cluster_starts "jobs/local_cluster start failed"
    exit 1
fi
pass slurm_cluster_starts

# wait_until SECONDS COMMAND: polls COMMAND every half second; 1 on timeout.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until eval "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.5
    done
}
queue_empty() { [ -z "$(squeue -h -o %i)" ]; }
job_count() { scontrol show jobs -o 2>/dev/null | grep -c '^JobId='; }
job_field() { scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
epoch() { date -d "$1" +%s; }

# ---- A bad spec is refused before anything reaches the queue -----------------------------
SPEC="$ROOT/input/sweeps/tiny_test.sweep"
bad_spec() {  # bad_spec NAME PATTERN-ON-THE-LINE REPLACEMENT EXPECTED-IN-MESSAGE
    sed "s/$2/$3/" "$SPEC" >"$WORK/$1.sweep"
    local line
    line=$(grep -n "$3" "$WORK/$1.sweep" | head -n 1 | cut -d: -f1)
    jobs/sweep "$WORK/$1.sweep" --out "$WORK/$1" >"$WORK/$1.out" 2>&1
    local status=$?
    [ $status -ne 0 ] && [ "$(wc -l <"$WORK/$1.out")" -eq 1 ] && grep -q "$WORK/$1.sweep:$line.*$4" "$WORK/$1.out" &&
        [ ! -e "$WORK/$1" ] && [ "$(job_count)" -eq 0 ]
    check "sweep_refuses_$1" $? "status $status, $(head -c 300 "$WORK/$1.out"), jobs in Slurm: $(job_count)"
}
cd "$ROOT" || exit 1
bad_spec unknown_variant "^variant .*" "variant = standard approx nonsense" "variant = 'nonsense' is unknown"
bad_spec unknown_layout "^layout .*" "layout = uniform hybrid:sideways" "unknown hybrid pattern 'sideways'"
bad_spec unknown_key "^record .*" "recrod = yes" "unknown key 'recrod'"
bad_spec bad_value "^set .*" "set = train.max_steps=-3" "max_steps = -3 is out of range"
bad_spec impossible_tp "^tp .*" "tp = 3" "tp = 3 does not divide the 1 ranks per node"
bad_spec unknown_preset "^preset .*" "preset = tiny huge" "preset 'huge' has no input/models/huge.ini"

# The shipped sweeps are valid (their evaluations need the task files make run builds).
bash input/tasks/build.sh data/corpus data/tasks >"$WORK/tasks.log" 2>&1 || fail tasks_build "$(tail -n 2 "$WORK/tasks.log")"
for shipped in table4_1:52 hybrid_layouts:18 tiny_cpu:13; do
    jobs/sweep "input/sweeps/${shipped%%:*}.sweep" --out "$WORK/${shipped%%:*}" --dry-run >"$WORK/shipped.out" 2>&1
    [ $? -eq 0 ] && grep -q "^sweep ${shipped%%:*}: ${shipped##*:} runs" "$WORK/shipped.out" && [ ! -e "$WORK/${shipped%%:*}" ]
    check "sweep_shipped_${shipped%%:*}_is_valid" $? "$(head -c 400 "$WORK/shipped.out")"
done

jobs/sweep "$SPEC" --out "$WORK/sweep" --dry-run >"$WORK/dry.out" 2>&1
[ $? -eq 0 ] && [ "$(grep -c '^  *[0-9]  *tiny-' "$WORK/dry.out")" -eq 5 ] && grep -q '^train: sbatch .*--array=0-4' "$WORK/dry.out" &&
    grep -q '^eval: sbatch .*--dependency=aftercorr:{train}' "$WORK/dry.out" &&
    grep -q '^analyze: sbatch .*--dependency=afterany:{eval}' "$WORK/dry.out" && [ ! -e "$WORK/sweep" ] &&
    [ "$(job_count)" -eq 0 ]
check sweep_dry_run_prints_the_plan_and_submits_nothing $? "$(head -c 600 "$WORK/dry.out")"

# ---- The sweep, with one task pre-empted mid-run ------------------------------------------
jobs/sweep "$SPEC" --out "$WORK/sweep" >"$WORK/submit.out" 2>&1
check sweep_submits $? "$(cat "$WORK/submit.out")"
train_job=$(sed -n 's/^submitted train: job //p' "$WORK/submit.out")
eval_job=$(sed -n 's/^submitted eval: job //p' "$WORK/submit.out")
analyze_job=$(sed -n 's/^submitted analyze: job //p' "$WORK/submit.out")
# Pre-empt the last task once it has logged step 10 (of 60): mid-run. The last, because
# Slurm 22.05 answers a signal to a task of an array that still has pending tasks with
# "try again later" after delivering it, and scancel then sends it again for seconds, into
# the requeued task's next start (measured; job_str_signal sets that error for the pending
# part of the array). When the last task runs, no task is pending.
PREEMPTED=4
RUN="$WORK/sweep/tiny-nonapx-hybrid-even-s1"
logged_step() { grep -o '"kind":"train","step":[0-9]*' "$RUN/metrics.jsonl" 2>/dev/null | tail -n 1 | grep -o '[0-9]*$'; }
wait_until 200 '[ "$(logged_step)" -ge 10 ]'
step_at_signal=$(logged_step)
scancel --signal=USR1 --batch "${train_job}_$PREEMPTED"
[ "${step_at_signal:-0}" -ge 10 ] && [ "$step_at_signal" -lt 60 ]
check slurm_preemption_lands_mid_run $? "task $PREEMPTED had logged step '${step_at_signal}' of 60"

wait_until 280 queue_empty
check sweep_finishes_within_time $? "still queued after 280 s: $(squeue -h | head -n 5 | tr '\n' ';')"

all_trained=0
for i in 0 1 2 3 4; do
    run=$(grep -x -A 1 -- --run-dir "$WORK/sweep/tasks/$i.train" | tail -n 1)
    [ -f "$run/train.done" ] && [ -f "$run/eval.done" ] && [ -f "$run/eval.json" ] && [ -f "$run/attn.h5" ] || all_trained=1
    [ "$(job_field "${train_job}_$i" JobState)" = COMPLETED ] && [ "$(job_field "${eval_job}_$i" JobState)" = COMPLETED ] ||
        all_trained=1
done
check sweep_every_task_trained_evaluated_recorded $all_trained "$(ls "$WORK/sweep"/*/ | head -c 400); $(tail -n 3 "$WORK/sweep/logs/"*.log | head -c 800)"

# Evaluation i started after training task i ended; the analysis after every evaluation.
ordered=0 why=""
last_eval_end=0
for i in 0 1 2 3 4; do
    train_end=$(epoch "$(job_field "${train_job}_$i" EndTime)")
    eval_start=$(epoch "$(job_field "${eval_job}_$i" StartTime)")
    eval_end=$(epoch "$(job_field "${eval_job}_$i" EndTime)")
    [ "$eval_start" -ge "$train_end" ] || { ordered=1; why+="eval $i started $eval_start before train ended $train_end; "; }
    [ "$eval_end" -gt "$last_eval_end" ] && last_eval_end=$eval_end
done
analyze_start=$(epoch "$(job_field "$analyze_job" StartTime)")
[ "$analyze_start" -ge "$last_eval_end" ] || { ordered=1; why+="analysis started $analyze_start before $last_eval_end; "; }
[ "$(job_field "$analyze_job" JobState)" = COMPLETED ] || { ordered=1; why+="analysis $(job_field "$analyze_job" JobState); "; }
check sweep_dependencies_order_the_jobs $ordered "$why"

report="$WORK/sweep/report/report.md"
listed=0
for run in "$WORK/sweep"/tiny-*/; do
    grep -q "| $(basename "$run") |" "$report" 2>/dev/null || listed=1
done
grep -q '5 tasks: 5 finished training, 5 evaluated, 0 failed or unfinished' "$report" 2>/dev/null || listed=1
grep -q 'analysis.h5\|Attention' "$report" 2>/dev/null || listed=1
check sweep_report_lists_every_run $listed "$(head -c 600 "$report" 2>/dev/null) $(tail -n 3 "$WORK/sweep/logs/analyze.log")"

# The pre-empted task: requeued by its own script, resumed from its checkpoint, finished.
log="$WORK/sweep/logs/train-$PREEMPTED.log"
[ "$(grep -c '^jobs: preempted at step [0-9]*; requeued' "$log")" -eq 1 ] &&
    grep -q '^jobs: train .* start 2, from checkpoint step [0-9]' "$log" && grep -q '^jobs: trained .* (step 60)' "$log" &&
    [ "$(job_field "${train_job}_$PREEMPTED" Restarts)" = 1 ]
check slurm_preempted_task_requeued_and_resumed $? "$(grep '^jobs:\|stopped\|resumed' "$log" | tr '\n' ';')"
restarted=""
for i in 0 1 2 3; do
    [ "$(grep -c '^jobs: train ' "$WORK/sweep/logs/train-$i.log")" -eq 1 ] || restarted+="$i "
done
[ -z "$restarted" ]
check slurm_requeue_restarts_only_the_preempted_task $? "tasks restarted as well: $restarted"

# ... and equals the uninterrupted run: same arguments and threads, no Slurm, no signal.
mapfile -t args <"$WORK/sweep/tasks/$PREEMPTED.train"
args=("${args[@]/$RUN/$WORK/straight}")
"$TRAIN" "${args[@]}" --set train.threads=1 >"$WORK/straight.log" 2>&1
losses() { grep '"kind":"train"' "$1/metrics.jsonl" | sed 's/.*"step":\([0-9]*\),"loss":\([^,]*\),.*/\1 \2/' | sort -n | uniq; }
h5diff "$WORK/straight/ckpt/step_00000060.h5" "$RUN/ckpt/step_00000060.h5" /params >"$WORK/diff.log" 2>&1 &&
    h5diff "$WORK/straight/ckpt/step_00000060.h5" "$RUN/ckpt/step_00000060.h5" /optim >>"$WORK/diff.log" 2>&1 &&
    [ "$(losses "$WORK/straight")" = "$(losses "$RUN")" ] && [ "$(losses "$RUN" | wc -l)" -eq 12 ]
check slurm_preempted_run_equals_uninterrupted $? "$(head -c 300 "$WORK/diff.log"); losses $(losses "$RUN" | wc -l) lines"

# ---- Submitting the finished sweep again trains nothing -----------------------------------
jobs_before=$(job_count)
stamp=$(stat -c %Y "$RUN/metrics.jsonl")
jobs/sweep "$SPEC" --out "$WORK/sweep" >"$WORK/resubmit.out" 2>&1
status=$?
sleep 1
[ $status -eq 0 ] && grep -q '^nothing to do' "$WORK/resubmit.out" && [ "$(job_count)" -eq "$jobs_before" ] &&
    [ "$(grep -c ' done$' "$WORK/resubmit.out")" -eq 5 ] && [ "$(stat -c %Y "$RUN/metrics.jsonl")" = "$stamp" ]
check sweep_resubmitted_retrains_nothing $? "status $status: $(cat "$WORK/resubmit.out")"

# ---- Tensor-parallel groups inside a node; both launchers ---------------------------------
SLURM_NTASKS_PER_NODE=3 DECON_ROOT=$ROOT bash jobs/train.sbatch input/models/tiny.ini --run-dir "$WORK/tp_span" --tp 2 \
    >"$WORK/tp_span.out" 2>&1
status=$?
[ $status -ne 0 ] && [ "$(wc -l <"$WORK/tp_span.out")" -eq 1 ] &&
    grep -q -- '--tp 2 does not divide the 3 tasks per node' "$WORK/tp_span.out" && [ ! -e "$WORK/tp_span" ]
check slurm_tp_must_divide_tasks_per_node $? "status $status: $(cat "$WORK/tp_span.out")"

small=(--set train.max_steps=4 --set train.micro_batch_size=4 --set train.global_batch_size=4
       --set train.sequence_length=64 --set train.eval_every=0 --set train.eval_batches=1 --set io.log_every=1)
for launcher in srun mpirun; do
    # --time leaves the --signal=B:USR1@300 warning of train.sbatch out of reach (it would
    # pre-empt the job right away: measured).
    job=$(sbatch --parsable --ntasks-per-node=2 --cpus-per-task=1 --time=00:10:00 \
          --output="$WORK/tp2_$launcher.log" --export="ALL,DECON_ROOT=$ROOT,DECON_LAUNCHER=$launcher" \
          jobs/train.sbatch input/models/tiny.ini --run-dir "$WORK/tp2_$launcher" --tp 2 "${small[@]}" 2>&1)
    wait_until 120 queue_empty
    [ -f "$WORK/tp2_$launcher/train.done" ] && grep -q "launcher: $launcher " "$WORK/tp2_$launcher.log" &&
        grep -q 'dp 1 x tp 2' "$WORK/tp2_$launcher.log" &&
        [ "$(grep -c '"kind":"train"' "$WORK/tp2_$launcher/metrics.jsonl")" -eq 4 ] &&
        [ "$(grep -c '^jobs: train ' "$WORK/tp2_$launcher.log")" -eq 1 ]
    check "slurm_tp2_job_under_$launcher" $? "job $job: $(tail -n 4 "$WORK/tp2_$launcher.log" | tr '\n' ';')"
done
