"""Loading what a run directory holds, tolerant of anything missing: config.ini, metrics.jsonl,
eval.json (bin/decon-eval --json), ckpt/latest.h5, and the run's group in decon-analyze's
analysis.h5. Every loader returns None (or an empty list) for what is absent or unreadable
and records why in run.notes, so the report can say "not recorded" instead of failing."""
import configparser
import json
import math
import os

import h5py
import numpy as np


class Run:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(os.path.normpath(path))
        self.notes = []
        self.config = self._config()
        self.train, self.validation = self._metrics()
        self.eval = self._eval()
        self.parameters = self._parameters()
        self.analysis = None          # AnalysisRun, attached by attach_analysis()

    def _config(self):
        path = os.path.join(self.path, "config.ini")
        if not os.path.exists(path):
            self.notes.append("no config.ini")
            return None
        parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
        try:
            parser.read(path)
        except configparser.Error as error:
            self.notes.append("config.ini unreadable (%s)" % str(error).splitlines()[0])
            return None
        return parser

    def setting(self, section, key, default=None):
        if self.config is None or not self.config.has_option(section, key):
            return default
        return self.config.get(section, key).strip()

    def _metrics(self):
        path = os.path.join(self.path, "metrics.jsonl")
        train, validation = [], []
        if not os.path.exists(path):
            self.notes.append("no metrics.jsonl")
            return train, validation
        with open(path) as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    self.notes.append("metrics.jsonl line %d is not JSON (skipped)" % number)
                    continue
                if record.get("kind") == "train" and "step" in record and "loss" in record:
                    train.append(record)
                elif record.get("kind") == "validation" and "step" in record and "loss" in record:
                    validation.append(record)
        return train, validation

    def _eval(self):
        path = os.path.join(self.path, "eval.json")
        if not os.path.exists(path):
            self.notes.append("no eval.json (run bin/decon-eval ... --json %s)" % path)
            return None
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            self.notes.append("eval.json unreadable (%s)" % error)
            return None

    def _parameters(self):
        if self.eval and self.eval.get("model", {}).get("parameters"):
            return int(self.eval["model"]["parameters"])
        path = os.path.join(self.path, "ckpt", "latest.h5")
        if os.path.exists(path):
            try:
                with h5py.File(path, "r") as f:
                    return int(f["params"].attrs["parameter_count"])
            except (OSError, KeyError):
                pass
        return None

    # ---- derived figures -------------------------------------------------------------------
    @property
    def variant(self):
        if self.eval and self.eval.get("model", {}).get("variant"):
            return self.eval["model"]["variant"]
        if self.analysis is not None:
            return self.analysis.variant
        return self.setting("attention", "variant")

    @property
    def layout(self):
        if self.eval and self.eval.get("model", {}).get("layout"):
            return self.eval["model"]["layout"]
        if self.analysis is not None:
            return self.analysis.layout
        return self.setting("attention", "layout")

    @property
    def trained_length(self):
        if self.eval and self.eval.get("model", {}).get("sequence_length"):
            return int(self.eval["model"]["sequence_length"])
        value = self.setting("train", "sequence_length")
        return int(value) if value else None

    def validation_perplexity(self):
        if not self.validation:
            return None
        last = self.validation[-1]
        return last.get("perplexity", math.exp(last["loss"]))

    def perplexity_rows(self):
        """[(mode, context, perplexity, extrapolated)] from eval.json."""
        if not self.eval or "perplexity" not in self.eval:
            return []
        return [(r.get("model", "full"), int(r["context"]), float(r["perplexity"]), bool(r.get("extrapolated")))
                for r in self.eval["perplexity"].get("results", [])]

    def heldout_perplexity(self, mode="full"):
        """Perplexity at the trained context (else the longest context not longer than it)."""
        rows = [r for r in self.perplexity_rows() if r[0] == mode]
        if not rows:
            return None, None
        trained = self.trained_length
        exact = [r for r in rows if r[1] == trained]
        if exact:
            return exact[0][2], exact[0][1]
        shorter = sorted([r for r in rows if trained is None or r[1] <= trained], key=lambda r: r[1])
        pick = shorter[-1] if shorter else sorted(rows, key=lambda r: r[1])[0]
        return pick[2], pick[1]

    def accuracy(self, task, mode="full"):
        if not self.eval or task not in self.eval:
            return None
        for r in self.eval[task].get("results", []):
            if r.get("model", "full") == mode:
                return float(r["accuracy"])
        return None

    def has_mode(self, mode):
        if not self.eval:
            return False
        for task in ("perplexity", "cloze", "choice"):
            for r in self.eval.get(task, {}).get("results", []):
                if r.get("model") == mode:
                    return True
        return False


class AnalysisRun:
    """One /runs/<name> group of analysis.h5, as numpy arrays (NaN where missing)."""

    def __init__(self, group):
        self.name = group.name.split("/")[-1]
        a = group.attrs
        text = lambda key: a[key].decode() if isinstance(a[key], bytes) else str(a[key])
        self.source = text("source")
        self.variant, self.layout, self.plan = text("variant"), text("layout"), text("layer_plan")
        self.layers, self.heads, self.length = int(a["num_layers"]), int(a["num_heads"]), int(a["length"])
        self.steps = [int(s) for s in group["steps"][()]]
        self.has_attn = group["has_attn"][()].astype(bool)
        self.has_scores = group["has_scores"][()].astype(bool)
        self.layer_variant = [(v.decode() if isinstance(v, bytes) else str(v)) or "not recorded"
                              for v in group["layer_variant"][()]]
        self.layer_values = {k: group["layers"][k][()] for k in group["layers"]} if "layers" in group else {}
        self.head_values = {k: group["heads"][k][()] for k in group["heads"]} if "heads" in group else {}
        self.spectra = group["svd"]["singular_values"][()] if "svd" in group else None
        self.svd = {k: group["svd"][k][()] for k in group["svd"] if k != "singular_values"} if "svd" in group else {}
        self.logit_stats = group["logits"]["stats"][()] if "logits" in group else None
        self.logit_fields = []
        self.histograms = {}
        if "logits" in group:
            fields = group["logits"].attrs["fields"]
            self.logit_fields = (fields.decode() if isinstance(fields, bytes) else str(fields)).split(",")
            for key in group["logits"]:
                h = group["logits"][key]
                if isinstance(h, h5py.Group):
                    self.histograms[(int(h.attrs["step"]), int(h.attrs["layer"]))] = (h["counts"][()], h["edges"][()])
        self.weights = None
        if "weights" in group:
            w = group["weights"]
            self.weights = {"qk": w["qk_singular_values"][()], "ov": w["ov_singular_values"][()],
                            "status": w["status"][()], "step": int(w.attrs["step"])}

    def step_index(self, step):
        return self.steps.index(step) if step in self.steps else None

    def layer_value(self, field, step_index, layer):
        values = self.layer_values.get(field)
        if values is None:
            return float("nan")
        return float(values[step_index, layer])


def load_analysis(path):
    """{realpath of the source recording: AnalysisRun} and the file's attributes, or ({}, None)."""
    if not path or not os.path.exists(path):
        return {}, None
    runs = {}
    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        for name in f.get("runs", {}):
            run = AnalysisRun(f["runs"][name])
            runs[os.path.realpath(run.source)] = run
    return runs, attrs


def attach_analysis(runs, analysis_runs):
    for run in runs:
        key = os.path.realpath(os.path.join(run.path, "attn.h5"))
        run.analysis = analysis_runs.get(key)
        if run.analysis is None:
            if os.path.exists(os.path.join(run.path, "attn.h5")):
                run.notes.append("attn.h5 present but not in the analysis (decon-analyze failed on it?)")
            else:
                run.notes.append("no attention recording (attn.h5; set [io] record_every)")


def finite(x):
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def nan_to_none(x):
    return None if x is None or (isinstance(x, (float, np.floating)) and np.isnan(x)) else x
