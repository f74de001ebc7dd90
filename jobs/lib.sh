# Shared by jobs/*.sbatch (sourced). What a decon batch job does before and around its
# one command: find the checkout, read the site settings, load modules, set threads, pick
# the MPI launcher, keep tensor-parallel groups inside a node, and pass Slurm's signals on
# to the command (docs/design.md, "Slurm jobs").

# Slurm runs a copy of the batch script from its spool directory, so the checkout comes
# from DECON_ROOT (jobs/sweep exports it) or the directory sbatch was called from.
jobs_setup() {
    DECON_ROOT=${DECON_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
    if [ ! -x "$DECON_ROOT/bin/decon-train" ]; then
        echo "jobs: error: $DECON_ROOT has no bin/decon-train: submit from the decon checkout (after make) or export DECON_ROOT" >&2
        exit 1
    fi
    cd "$DECON_ROOT" || exit 1
    local site=${DECON_SITE:-$DECON_ROOT/jobs/site.conf}
    # shellcheck source=/dev/null
    source "$site" || { echo "jobs: error: cannot read the site settings $site (DECON_SITE)" >&2; exit 1; }
    if [ -n "${DECON_MODULES:-}" ]; then
        # shellcheck disable=SC2086
        module load $DECON_MODULES || { echo "jobs: error: module load $DECON_MODULES failed (DECON_MODULES in $site)" >&2; exit 1; }
    fi
    export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${DECON_CPUS_PER_TASK:-1}}
    export OMP_WAIT_POLICY=passive     # idle OpenMP threads sleep instead of spinning against MPI
    if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
}

# LAUNCH: the command prefix that starts SLURM_NTASKS ranks, placed in blocks per node
# (ranks 0..n-1 on the first node, ...) so that the consecutive ranks of a tensor-parallel
# group share a node. One rank runs without a launcher.
jobs_launcher() {
    local tasks=${SLURM_NTASKS:-1} kind=${DECON_LAUNCHER:-auto}
    LAUNCH=()
    [ "$tasks" -le 1 ] && return 0
    if [ "$kind" = auto ]; then
        if srun --mpi=list 2>&1 | grep -qw pmix; then kind=srun; else kind=mpirun; fi
    fi
    case "$kind" in
        # srun no longer inherits --cpus-per-task from sbatch (Slurm 22.05): pass it on.
        srun) LAUNCH=(srun --mpi=pmix --distribution=block:block --cpus-per-task="$OMP_NUM_THREADS" --cpu-bind=cores) ;;
        # Open MPI binds each rank to one core by default, which would pin all of a
        # rank's OpenMP threads to that core: no binding, ranks placed per node in blocks.
        mpirun) LAUNCH=(mpirun -np "$tasks" --map-by "ppr:$(jobs_tasks_per_node):node" --bind-to none) ;;
        *) echo "jobs: error: DECON_LAUNCHER=$kind: use auto, srun or mpirun" >&2; exit 1 ;;
    esac
}

jobs_tasks_per_node() {
    local per_node=${SLURM_NTASKS_PER_NODE:-}
    per_node=${per_node%%(*}           # "4(x2)" -> 4
    per_node=${per_node%%,*}
    if [ -z "$per_node" ]; then per_node=$(( ${SLURM_NTASKS:-1} / ${SLURM_JOB_NUM_NODES:-1} )); fi
    echo "$per_node"
}

# A tensor-parallel group exchanges activations in every layer: it must not span nodes.
jobs_check_tensor_parallel() {
    local tp=$1 per_node
    per_node=$(jobs_tasks_per_node)
    if [ $(( per_node % tp )) -ne 0 ]; then
        echo "jobs: error: --tp $tp does not divide the $per_node tasks per node, so a tensor-parallel group would span nodes; use --ntasks-per-node a multiple of $tp" >&2
        exit 1
    fi
}

# Runs "$@" in the background and waits, so that bash handles Slurm's signals at once
# (a trap waits for the foreground command), and passes SIGUSR1 / SIGTERM / SIGINT on to
# it. Returns its exit status.
jobs_run() {
    "$@" &
    local child=$! status
    trap 'kill -USR1 $child 2>/dev/null' USR1
    trap 'kill -TERM $child 2>/dev/null' TERM
    trap 'kill -INT $child 2>/dev/null' INT
    while true; do
        wait "$child"
        status=$?
        kill -0 "$child" 2>/dev/null || break   # wait returned for a signal: the child runs on
    done
    trap - USR1 TERM INT
    return "$status"
}

# The step of the newest checkpoint in RUN_DIR/ckpt ("none" without one).
jobs_newest_step() {
    local newest
    newest=$(ls "$1"/ckpt/step_*.h5 2>/dev/null | tail -n 1)
    if [ -z "$newest" ]; then echo none; return; fi
    newest=${newest##*/step_}
    echo $(( 10#${newest%.h5} ))
}
