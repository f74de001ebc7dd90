#!/usr/bin/python3
"""Write OUT/manifest.json from the split plan and shard statistics, and print
the summary table.

  manifest.py --out-dir OUT --work DIR --npm-dir DIR --spm-args JSON
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus_common as cc  # noqa: E402

SPLITS = ("train", "val", "test")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spm_version():
    try:
        r = subprocess.run(["spm_train", "--version"], capture_output=True, text=True)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--npm-dir", required=True)
    ap.add_argument("--spm-args", required=True, help="JSON object of the spm_train settings")
    ap.add_argument("--sources", default=",".join(s["name"] for s in cc.SOURCES))
    args = ap.parse_args()

    with open(os.path.join(args.work, "split", "plan.json"), encoding="utf-8") as f:
        plan = json.load(f)
    spm = json.loads(args.spm_args)
    vocab_size = int(spm["vocab_size"])
    eos_id = int(spm["eos_id"])

    # Per-document token counts, in shard order.
    split_info = {}
    for split in SPLITS:
        entries = plan["splits"][split]
        with open(os.path.join(args.work, "shards", split + ".lengths")) as f:
            lengths = [int(x) for x in f.read().split()]
        if len(lengths) != len(entries):
            raise SystemExit("%s: %d documents in the shard but %d in the plan"
                             % (split, len(lengths), len(entries)))
        for e, n in zip(entries, lengths):
            e["tokens"] = n
        with open(os.path.join(args.work, "shards", split + ".stats.json")) as f:
            stats = json.load(f)
        path = os.path.join(args.out_dir, split + ".bin")
        split_info[split] = {
            "file": split + ".bin", "documents": len(entries),
            "characters": sum(e["chars"] for e in entries),
            "utf8_bytes": sum(e["bytes"] for e in entries),
            "tokens": stats["tokens"], "file_bytes": os.path.getsize(path),
            "sha256": sha256_file(path),
        }
        if stats["tokens"] != sum(lengths):
            raise SystemExit("%s: token count mismatch" % split)

    sources = []
    for name in [s for s in args.sources.split(",") if s]:
        src = cc.SOURCE_BY_NAME[name]
        pkgs = [{"registry": "debian", "name": p, "version": cc.dpkg_version(p)} for p in src.get("deb", [])]
        pkgs += [{"registry": "npm", "name": p, "version": cc.npm_version(args.npm_dir, p)}
                 for p in src.get("npm", [])]
        row = {"name": name, "family": src["family"], "description": src["desc"], "packages": pkgs,
               "extracted_characters": plan["source_chars_extracted"][name],
               "dropped_by_cap": {"documents": sum(1 for d in plan["dropped"] if d["source"] == name),
                                  "characters": sum(d["chars"] for d in plan["dropped"] if d["source"] == name)}}
        for split in SPLITS:
            es = [e for e in plan["splits"][split] if e["source"] == name]
            row[split] = {"documents": len(es), "characters": sum(e["chars"] for e in es),
                          "utf8_bytes": sum(e["bytes"] for e in es), "tokens": sum(e["tokens"] for e in es)}
        sources.append(row)

    tok_model = os.path.join(args.out_dir, "tokenizer.model")
    with open(os.path.join(args.out_dir, "tokenizer.vocab"), encoding="utf-8") as f:
        pieces = [line.split("\t")[0] for line in f]
    manifest = {
        "format": {
            "description": "64-byte little-endian header: magic 'DECONTOK' (8 bytes), uint32 version, "
                           "uint32 token_bytes, uint64 token_count, uint32 vocab_size, zero padding; "
                           "then token_count unsigned little-endian tokens of token_bytes each. "
                           "Every document is followed by the EOS id.",
            "magic": "DECONTOK", "version": 1, "header_bytes": 64,
            "token_bytes": 2 if vocab_size <= 65536 else 4, "byteorder": "little",
            "document_separator": "eos_after_each_document", "eos_id": eos_id,
            "line_breaks": "not encoded: each line is encoded separately and sentencepiece's "
                           "dummy prefix turns a line start into a leading space",
        },
        "tokenizer": {
            "files": {"model": "tokenizer.model", "vocab": "tokenizer.vocab"},
            "model_sha256": sha256_file(tok_model),
            "sentencepiece_version": spm_version(),
            "trained_on": "train split only (val/test documents unseen by the tokenizer)",
            "vocab_size": vocab_size, "vocab_pieces": len(pieces),
            "special_ids": {"pad": int(spm["pad_id"]), "unk": int(spm["unk_id"]),
                            "bos": int(spm["bos_id"]), "eos": eos_id},
            "special_pieces": {k: pieces[int(spm[k + "_id"])] for k in ("pad", "unk", "bos", "eos")},
            "byte_fallback_ids": [pieces.index("<0x00>"), pieces.index("<0xFF>")] if "<0x00>" in pieces else None,
            "spm_train_settings": spm,
        },
        "mix": plan["params"],
        "splits": split_info,
        "sources": sources,
        "held_out": {split: [{"id": e["id"], "title": e["title"], "source": e["source"], "group": e["group"],
                              "characters": e["chars"], "tokens": e["tokens"]} for e in plan["splits"][split]]
                     for split in ("val", "test")},
        "dropped_by_cap": plan["dropped"],
        "train_documents": [{"id": e["id"], "source": e["source"], "characters": e["chars"],
                             "tokens": e["tokens"]} for e in plan["splits"]["train"]],
    }
    tmp = os.path.join(args.out_dir, "manifest.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(args.out_dir, "manifest.json"))

    # ---- summary table ----------------------------------------------------------
    hdr = "%-10s %6s %8s %6s %12s %10s %10s" % ("source", "docs", "MB", "share", "train_tok", "val_tok", "test_tok")
    print(hdr)
    print("-" * len(hdr))
    tot_bytes = sum(split_info[s]["utf8_bytes"] for s in SPLITS)
    for r in sources:
        docs = sum(r[s]["documents"] for s in SPLITS)
        b = sum(r[s]["utf8_bytes"] for s in SPLITS)
        print("%-10s %6d %8.2f %5.1f%% %12d %10d %10d" % (
            r["name"], docs, b / 1e6, 100.0 * b / max(tot_bytes, 1),
            r["train"]["tokens"], r["val"]["tokens"], r["test"]["tokens"]))
    print("-" * len(hdr))
    print("%-10s %6d %8.2f %5.1f%% %12d %10d %10d" % (
        "total", sum(split_info[s]["documents"] for s in SPLITS), tot_bytes / 1e6, 100.0,
        split_info["train"]["tokens"], split_info["val"]["tokens"], split_info["test"]["tokens"]))
    print()
    for s in SPLITS:
        i = split_info[s]
        print("%-5s %5d docs %8.2f MB text %11d tokens  %s (%d bytes)" % (
            s, i["documents"], i["utf8_bytes"] / 1e6, i["tokens"], i["file"], i["file_bytes"]))
    dropped = plan["dropped"]
    print("dropped by caps: %d docs, %.2f M characters (max source %.0f%%, max family %.0f%%)" % (
        len(dropped), sum(d["chars"] for d in dropped) / 1e6,
        100 * plan["params"]["max_source_frac"], 100 * plan["params"]["max_family_frac"]))
    t = manifest["tokenizer"]
    print("tokenizer: sentencepiece BPE, vocab %d, special ids pad=%d unk=%d bos=%d eos=%d, byte fallback %s"
          % (vocab_size, t["special_ids"]["pad"], t["special_ids"]["unk"], t["special_ids"]["bos"],
             t["special_ids"]["eos"], "ids %d..%d" % tuple(t["byte_fallback_ids"]) if t["byte_fallback_ids"] else "off"))


if __name__ == "__main__":
    main()
