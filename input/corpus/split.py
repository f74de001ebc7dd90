#!/usr/bin/python3
"""Mix, cap and split the extracted documents.

  split.py --docs-dir DIR --out-dir DIR [options]

Reads DIR/<source>.jsonl for every source, then
  1. caps sources and families: no source above --max-source-frac and no
     family (e.g. all scripture and commentary) above --max-family-frac of the
     kept characters; whole documents are dropped, chosen with the seed;
  2. holds out whole documents for validation and test: about --val-frac /
     --test-frac of the characters of every family, drawn with the seed, by
     hold-out group (a Bible book's KJV, WEB and commentary documents share a
     group and so land in the same split);
  3. writes OUT/{train,val,test}.txt: documents in a seeded order, one
     sentence-like line each (at most --max-line-chars characters), a blank
     line after every document; the same train lines are the tokenizer's
     training input;
  4. writes OUT/plan.json: every document with its split (or "dropped"),
     characters and lines, in shard order, plus the parameters.
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus_common as cc  # noqa: E402


def rng_for(seed, *parts):
    return random.Random(":".join([str(seed)] + [str(p) for p in parts]))


def compute_allowed(chars_by_source, family_of, max_source_frac, max_family_frac):
    """Characters each source may keep so that, in the kept mix, no source is
    above max_source_frac and no family above max_family_frac (fixed point)."""
    allowed = dict(chars_by_source)
    for _ in range(200):
        total = sum(allowed.values())
        new = {s: min(chars_by_source[s], max_source_frac * total) for s in allowed}
        fam_tot = {}
        for s, v in new.items():
            fam_tot[family_of[s]] = fam_tot.get(family_of[s], 0) + v
        for f, v in fam_tot.items():
            lim = max_family_frac * total
            if v > lim:
                for s in new:
                    if family_of[s] == f:
                        new[s] *= lim / v
        if all(abs(new[s] - allowed[s]) < 1 for s in new):
            allowed = new
            break
        allowed = new
    return allowed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--sources", default=",".join(s["name"] for s in cc.SOURCES))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-source-frac", type=float, default=0.30)
    ap.add_argument("--max-family-frac", type=float, default=0.40)
    ap.add_argument("--val-frac", type=float, default=0.02)
    ap.add_argument("--test-frac", type=float, default=0.02)
    ap.add_argument("--max-group-frac", type=float, default=0.25,
                    help="hold-out groups larger than this share of their family are never held out")
    ap.add_argument("--max-line-chars", type=int, default=1000)
    args = ap.parse_args()

    sources = [s for s in args.sources.split(",") if s]
    family_of = {s: cc.SOURCE_BY_NAME[s]["family"] for s in sources}
    docs = []
    for s in sources:
        for d in cc.read_jsonl(os.path.join(args.docs_dir, s + ".jsonl")):
            d["chars"] = len(d["text"])
            d["family"] = family_of[s]
            docs.append(d)
    ids = [d["id"] for d in docs]
    if len(set(ids)) != len(ids):
        raise SystemExit("duplicate document ids")
    docs.sort(key=lambda d: d["id"])

    # ---- 1. caps ---------------------------------------------------------------
    chars_by_source = {s: 0 for s in sources}
    for d in docs:
        chars_by_source[d["source"]] += d["chars"]
    allowed = compute_allowed(chars_by_source, family_of, args.max_source_frac, args.max_family_frac)
    for s in sources:
        if allowed[s] >= chars_by_source[s]:
            for d in docs:
                if d["source"] == s:
                    d["split"] = "keep"
            continue
        mine = [d for d in docs if d["source"] == s]
        rng_for(args.seed, "cap", s).shuffle(mine)
        kept = 0
        for d in mine:
            if kept + d["chars"] <= allowed[s]:
                d["split"] = "keep"
                kept += d["chars"]
            else:
                d["split"] = "dropped"

    # ---- 2. hold-out -------------------------------------------------------------
    kept_docs = [d for d in docs if d["split"] == "keep"]
    groups = {}
    for d in kept_docs:
        groups.setdefault((d["family"], d["group"]), []).append(d)
    families = sorted({d["family"] for d in kept_docs})
    for fam in families:
        fam_groups = sorted(g for (f, g) in groups if f == fam)
        fam_chars = sum(d["chars"] for d in kept_docs if d["family"] == fam)
        gchars = {g: sum(d["chars"] for d in groups[(fam, g)]) for g in fam_groups}
        assigned = {}
        for split, frac in (("val", args.val_frac), ("test", args.test_frac)):
            quota = frac * fam_chars
            if quota <= 0:
                continue
            eligible = [g for g in fam_groups
                        if g not in assigned and gchars[g] <= args.max_group_frac * fam_chars]
            rng = rng_for(args.seed, "holdout", fam, split)
            rng.shuffle(eligible)
            held = 0
            for g in eligible:
                if held >= 0.9 * quota:
                    break
                if held + gchars[g] <= 1.1 * quota:
                    assigned[g] = split
                    held += gchars[g]
            if held == 0:
                # Only large documents (novels): take one if it is not too far off.
                small = sorted(g for g in eligible if gchars[g] <= 2.5 * quota)
                if small:
                    assigned[rng.choice(small)] = split
        for g, split in assigned.items():
            for d in groups[(fam, g)]:
                d["split"] = split
    for d in kept_docs:
        if d["split"] == "keep":
            d["split"] = "train"

    # ---- 3. text files -----------------------------------------------------------
    os.makedirs(args.out_dir, exist_ok=True)
    plan = {"params": {k: v for k, v in vars(args).items() if k not in ("docs_dir", "out_dir")},
            "source_chars_extracted": chars_by_source,
            "source_chars_allowed": {s: int(v) for s, v in allowed.items()},
            "splits": {}, "dropped": []}
    for split in ("train", "val", "test"):
        mine = [d for d in docs if d["split"] == split]
        rng_for(args.seed, "order", split).shuffle(mine)
        entries = []
        tmp = os.path.join(args.out_dir, split + ".txt.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for d in mine:
                nlines = 0
                for para in d["text"].split("\n"):
                    for sent in cc.split_sentences(para, args.max_line_chars):
                        f.write(sent + "\n")
                        nlines += 1
                f.write("\n")
                entries.append({"id": d["id"], "source": d["source"], "family": d["family"],
                                "group": d["group"], "title": d["title"], "chars": d["chars"],
                                "bytes": len(d["text"].encode("utf-8")), "lines": nlines})
        os.replace(tmp, os.path.join(args.out_dir, split + ".txt"))
        plan["splits"][split] = entries
    plan["dropped"] = [{"id": d["id"], "source": d["source"], "title": d["title"], "chars": d["chars"]}
                       for d in docs if d["split"] == "dropped"]
    tmp = os.path.join(args.out_dir, "plan.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(plan, f, ensure_ascii=False, indent=1)
    os.replace(tmp, os.path.join(args.out_dir, "plan.json"))

    for split in ("train", "val", "test"):
        e = plan["splits"][split]
        print("[split] %-5s %5d docs %11d chars %9d lines" % (
            split, len(e), sum(x["chars"] for x in e), sum(x["lines"] for x in e)), file=sys.stderr)
    print("[split] dropped by caps: %d docs %d chars" % (
        len(plan["dropped"]), sum(x["chars"] for x in plan["dropped"])), file=sys.stderr)


if __name__ == "__main__":
    main()
