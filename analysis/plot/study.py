"""The study's published figures (input/reference/study_table4_1.csv, with its source in the
header) looked up for one of our runs: by variant, layout and mode (full or skip), at the
published model size nearest to the run's parameter count. Only published numbers; a
combination the paper does not report has no figure (the report says so)."""
import csv
import math
import os

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_TABLE = os.path.join(ROOT, "input", "reference", "study_table4_1.csv")
NOT_AVAILABLE = "study figure not available"
SIZES = {"K": 1e3, "M": 1e6, "B": 1e9}


def parameters_of(size):
    """'500M' -> 5e8; None for a size written otherwise."""
    size = size.strip()
    if len(size) < 2 or size[-1].upper() not in SIZES:
        return None
    try:
        return float(size[:-1]) * SIZES[size[-1].upper()]
    except ValueError:
        return None


def canonical_layout(variant, layout):
    """The study's names for a layout: `hybrid` alone is hybrid:even (docs/design.md), and a
    standard model is the same whatever its layout says."""
    if variant == "standard":
        return "uniform"
    if layout == "hybrid":
        return "hybrid:even"
    return layout


class StudyTable:
    def __init__(self, path=DEFAULT_TABLE):
        self.path = path
        self.rows = []
        self.error = None
        try:
            with open(path, newline="") as f:
                lines = [line for line in f if line.strip() and not line.startswith("#")]
            for row in csv.DictReader(lines):
                size = parameters_of(row.get("model_size", ""))
                if size is None or not row.get("variant") or not row.get("layout"):
                    raise ValueError("row %s has no model_size, variant or layout" % dict(row))
                row["parameters"] = size
                self.rows.append(row)
        except (OSError, ValueError, csv.Error) as error:
            self.rows, self.error = [], "%s: %s" % (path, error)

    def lookup(self, variant, layout, mode="full", parameters=None):
        """The row for (variant, layout, mode) at the published size nearest (in log scale) to
        `parameters` (the largest table's size, 500M, when unknown); None when unpublished."""
        if not variant or not layout:
            return None
        layout = canonical_layout(variant, layout)
        matches = [r for r in self.rows if r["variant"] == variant and r["layout"] == layout and r["mode"] == mode]
        if not matches:
            return None
        target = parameters if parameters else 5e8
        return min(matches, key=lambda r: abs(math.log(r["parameters"] / target)))

    def cell(self, row, column):
        """'38.1 (500M)': the figure with the model size it was published for."""
        if row is None or not row.get(column, "").strip() or row[column].strip() == "-":
            return NOT_AVAILABLE
        return "%s (%s)" % (row[column].strip(), row["model_size"])
