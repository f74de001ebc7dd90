"""Where each task of a sweep stands, from the sweep directory jobs/sweep wrote (plan.json,
<run>/train.done, <run>/eval.done, logs/train-<index>.log, logs/eval-<index>.log), and, for a
failed or unfinished one, why, in the words of its Slurm log. Used by jobs/collect."""
import json
import os
import re

NOT_STARTED = "not started (pending, or never submitted)"

# What explains a failure, most telling first. Within one attempt the first kind present wins,
# and its last line is quoted.
CAUSES = [
    ("error", re.compile(r"decon: error:")),
    ("out of memory", re.compile(r"oom-kill|Out Of Memory", re.IGNORECASE)),
    ("time limit", re.compile(r"CANCELLED AT .*DUE TO TIME LIMIT")),
    ("cancelled", re.compile(r"slurmstepd.*CANCELLED")),
    ("job script", re.compile(r"^jobs: ")),
]
REQUEUED = re.compile(r"^jobs: .*requeued")


class PlanError(Exception):
    """plan.json is missing or not what jobs/sweep writes; the message is the whole error line."""


def read_plan(sweep_dir):
    path = os.path.join(sweep_dir, "plan.json")
    if not os.path.isdir(sweep_dir):
        raise PlanError("%s: not a directory (give the sweep directory jobs/sweep wrote, e.g. runs/sweeps/NAME)"
                        % sweep_dir)
    try:
        with open(path) as f:
            plan = json.load(f)
    except FileNotFoundError:
        raise PlanError("%s: not found (is %s a sweep directory written by jobs/sweep?)" % (path, sweep_dir))
    except (OSError, UnicodeDecodeError) as error:
        raise PlanError("%s: cannot be read (%s)" % (path, getattr(error, "strerror", None) or error))
    except json.JSONDecodeError as error:
        raise PlanError("%s: not JSON (line %d column %d: %s); jobs/sweep writes it: re-run jobs/sweep SPEC"
                        % (path, error.lineno, error.colno, error.msg))
    if not isinstance(plan, dict) or not isinstance(plan.get("runs"), list) or not plan["runs"]:
        raise PlanError("%s: has no \"runs\" list of tasks; jobs/sweep writes it: re-run jobs/sweep SPEC" % path)
    for number, run in enumerate(plan["runs"]):
        if not isinstance(run, dict) or not isinstance(run.get("name"), str) or not run["name"] \
                or isinstance(run.get("index"), bool) or not isinstance(run.get("index"), int):
            raise PlanError("%s: runs[%d] lacks a \"name\" string or an \"index\" integer" % (path, number))
        if not isinstance(run.get("dir"), str) or not run["dir"]:
            run["dir"] = os.path.join(sweep_dir, run["name"])
    return plan


def log_reason(path):
    """Why the task whose Slurm log is at path did not finish, or None when there is no log.
    A log is appended across requeues: only the lines after the last requeue count, and a
    requeue with nothing after it means the task waits to resume."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        return None
    except OSError as error:
        return "log %s unreadable (%s)" % (path, error.strerror)
    last_requeue = max((i for i, line in enumerate(lines) if REQUEUED.search(line)), default=-1)
    attempt = lines[last_requeue + 1:]
    for kind, pattern in CAUSES:
        found = [line.strip() for line in attempt if pattern.search(line)]
        if found:
            return "%s: %s" % (kind, shorten(found[-1]))
    if last_requeue >= 0:
        return "requeued, waiting to resume: %s" % shorten(lines[last_requeue].strip())
    text = [line.strip() for line in lines if line.strip()]
    if not text:
        return "running, or stopped before writing anything (the log is empty)"
    return "running, or stopped without a message; the log ends: %s" % shorten(text[-1])


def shorten(line, limit=240):
    return line if len(line) <= limit else line[:limit - 3] + "..."


def wants_eval(run):
    evaluation = run.get("eval")
    return isinstance(evaluation, dict) and any(bool(v) for v in evaluation.values())


class TaskStatus:
    """One plan entry: trained (train.done), evaluated (eval.done), and for a task that failed
    or has not finished, the stage (train or eval) and the reason."""

    def __init__(self, sweep_dir, run):
        self.run = run
        self.index, self.name, self.dir = run["index"], run["name"], run["dir"]
        self.trained = os.path.exists(os.path.join(self.dir, "train.done"))
        self.eval_wanted = wants_eval(run)
        self.evaluated = os.path.exists(os.path.join(self.dir, "eval.done"))
        self.stage, self.reason = None, None
        if not self.trained:
            self.stage = "train"
        elif self.eval_wanted and not self.evaluated:
            self.stage = "eval"
        if self.stage:
            log = os.path.join(sweep_dir, "logs", "%s-%d.log" % (self.stage, self.index))
            self.reason = log_reason(log) or NOT_STARTED

    @property
    def state(self):
        if self.stage:
            return "%s: %s" % (self.stage, "not started" if self.reason == NOT_STARTED else "failed or unfinished")
        return "evaluated" if self.evaluated else "trained"
