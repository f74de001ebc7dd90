#!/usr/bin/python3
"""Build decon-eval's zero-shot task files from the corpus's HELD-OUT test text.

  build_tasks.py --corpus DIR --out DIR [--cloze N] [--choice N] [--seed S]

Reads the test split's documents (never seen in training, nor by the tokenizer):
DIR/work/split/test.txt when the corpus recipe kept it (one sentence-like line per
line, a blank line after every document; DIR/work/split/plan.json names each
document's source and hold-out group), otherwise DIR/test.bin decoded with
`spm_decode --input_format=id` and split into sentences again. Every line is encoded
with `spm_encode` and DIR/tokenizer.model exactly as the corpus recipe encodes it (one
line at a time, sentencepiece's dummy prefix making the line start a space), so a
task's token ids are the ids the model meets in held-out text.

Writes (each to a temporary name, then renamed):
  OUT/cloze.jsonl   LAMBADA-style last-word passages:
                    {"context": [ids], "target": [ids], "word": ..., "source": ..., "document": ...}
                    a passage of 50-150 tokens (whole lines) ending at a sentence-final
                    word (the line's last word before . ! or ?) that is a content word of
                    at least 4 letters and occurs earlier in the passage; the target is
                    that word's tokens, the context everything before it.
  OUT/choice.jsonl  next-sentence multiple choice:
                    {"context": [ids], "choices": [[ids] x 4], "label": k, "source": ..., "document": ...}
                    a context sentence, its true next sentence and 3 distractor sentences
                    from other held-out documents (same family of sources when possible,
                    never the same hold-out group, so never a parallel Bible translation)
                    of the same length in tokens where the pool allows (else the closest, at most
                    20% or 2 tokens off); choices in random order.
  OUT/tasks.json    settings, counts per source, the tokenizer's sha256.
Standard library only; deterministic for a given corpus and --seed.
"""

import argparse
import array
import hashlib
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus"))
import corpus_common as cc  # noqa: E402

EOS_ID = 3
CLOZE_MIN_TOKENS, CLOZE_MAX_TOKENS = 50, 150
CONTEXT_MIN_TOKENS, CONTEXT_MAX_TOKENS = 8, 80
NEXT_MIN_TOKENS, NEXT_MAX_TOKENS = 5, 40
CHOICES = 4

# Function words (and the archaic ones of the KJV) of four letters or more: a LAMBADA
# target is a content word.
STOPWORDS = set("""
about above after again against also although among another anything around away back
because been before behind being below beneath beside besides between both cannot could
didst does doest doeth doing done down during each either else enough even ever every
from further had hadst hast hath have having hence here hers herself himself however into
itself just least less like many might mine more most much must myself neither never
none nothing once only other others ought ours ourselves over perhaps quite rather said
same shall shalt should since some something still such than that their theirs them
themselves then thence there therefore these they thine this those thou
though through thus thee thyself till together toward towards under unless unto until
upon very were what whatever when whence where whereas wherefore whether which while
whilst whither whom whose will with within without would wouldst your yours
yourself yourselves
""".split())

SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
# The last word of a line that ends a sentence: prefix, word, final punctuation.
LAST_WORD = re.compile(r"^(.*\S)\s+([A-Za-z]+)([.!?][\"'\u201d\u2019)\]]*)$")
SENTENCE_START = re.compile(r"^[\"'\u201c\u2018(\[]?[A-Z]")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_shard(path):
    """Token ids of a DECONTOK shard (input/corpus/README.md)."""
    with open(path, "rb") as f:
        header = f.read(64)
        magic, version, width, count, _vocab = struct.unpack_from("<8sIIQI", header)
        if magic != b"DECONTOK" or version != 1 or width not in (2, 4):
            raise SystemExit("build_tasks.py: %s is not a version-1 token shard" % path)
        ids = array.array("H" if width == 2 else "I")
        ids.frombytes(f.read(count * width))
    if sys.byteorder != "little":
        ids.byteswap()
    return ids


def split_documents(ids):
    docs, current = [], []
    for t in ids:
        if t == EOS_ID:
            docs.append(current)
            current = []
        else:
            current.append(t)
    if current:
        docs.append(current)
    return docs


def run_spm(tool, model, lines, extra):
    """Runs spm_encode/spm_decode over lines (one output line per input line)."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        for line in lines:
            f.write(line + "\n")
        name = f.name
    try:
        r = subprocess.run([tool, "--model=" + model] + extra + ["--input=" + name],
                           capture_output=True, text=True, encoding="utf-8")
    finally:
        os.unlink(name)
    if r.returncode != 0:
        raise SystemExit("build_tasks.py: %s failed: %s" % (tool, r.stderr.strip()[:500]))
    out = r.stdout.split("\n")
    if out and out[-1] == "":
        out.pop()
    if len(out) != len(lines):
        raise SystemExit("build_tasks.py: %s returned %d lines for %d" % (tool, len(out), len(lines)))
    return out


def encode(model, lines):
    return [[int(x) for x in line.split()] for line in run_spm("spm_encode", model, lines, ["--output_format=id"])]


def load_documents(corpus, model):
    """[{"lines": [...], "source", "family", "group", "title"}], and how they were read."""
    text_path = os.path.join(corpus, "work", "split", "test.txt")
    plan_path = os.path.join(corpus, "work", "split", "plan.json")
    if os.path.exists(text_path):
        docs, lines = [], []
        with open(text_path, encoding="utf-8") as f:
            for raw in f:
                line = raw.rstrip("\n")
                if line:
                    lines.append(line)
                elif lines:
                    docs.append({"lines": lines})
                    lines = []
        if lines:
            docs.append({"lines": lines})
        how = "work/split/test.txt"
        meta = []
        if os.path.exists(plan_path):
            with open(plan_path, encoding="utf-8") as f:
                meta = json.load(f)["splits"]["test"]
        if len(meta) != len(docs):
            meta = []
    else:
        ids = read_shard(os.path.join(corpus, "test.bin"))
        decoded = run_spm("spm_decode", model, [" ".join(map(str, d)) for d in split_documents(ids)],
                          ["--input_format=id"])
        docs = [{"lines": cc.split_sentences(text)} for text in decoded]
        docs = [d for d in docs if d["lines"]]
        how = "test.bin decoded with spm_decode (work/split/test.txt absent)"
        meta = []
    for i, d in enumerate(docs):
        m = meta[i] if meta else {}
        d["source"] = m.get("source", "unknown")
        d["family"] = m.get("family", "unknown")
        d["group"] = m.get("group", "document:%d" % i)
        d["title"] = m.get("title", "test document %d" % (i + 1))
    return docs, how


def check_against_shard(corpus, docs):
    """True when the encoded documents (+ EOS after each) are exactly test.bin."""
    shard = os.path.join(corpus, "test.bin")
    if not os.path.exists(shard):
        return False
    stream = []
    for d in docs:
        for ids in d["ids"]:
            stream.extend(ids)
        stream.append(EOS_ID)
    return list(read_shard(shard)) == stream


def words_of(text):
    return set(w.lower() for w in re.findall(r"[A-Za-z]+", text))


def cloze_candidates(docs, model, seed):
    """Every valid passage of every document, as dicts (not yet sampled)."""
    wanted = []  # (doc, line index, prefix text, word)
    for di, d in enumerate(docs):
        for li, line in enumerate(d["lines"]):
            m = LAST_WORD.match(line)
            if not m:
                continue
            word = m.group(2)
            if len(word) < 4 or word.lower() in STOPWORDS:
                continue
            wanted.append((di, li, m.group(1), word))
    prefixes = encode(model, [w[2] for w in wanted])
    words = encode(model, [w[3] for w in wanted])
    out = []
    for (di, li, prefix_text, word), prefix, target in zip(wanted, prefixes, words):
        d = docs[di]
        line_ids = d["ids"][li]
        # The passage's tokens must be the line's own: prefix ++ word starts the line's ids.
        if not prefix or line_ids[:len(prefix) + len(target)] != prefix + target:
            continue
        rng = random.Random("%s:cloze:%d:%d" % (seed, di, li))
        goal = rng.randint(CLOZE_MIN_TOKENS, CLOZE_MAX_TOKENS)
        total = len(prefix) + len(target)
        first = li
        while first > 0 and total < goal and total + len(d["ids"][first - 1]) <= CLOZE_MAX_TOKENS:
            first -= 1
            total += len(d["ids"][first])
        if total < CLOZE_MIN_TOKENS or total > CLOZE_MAX_TOKENS:
            continue
        context_text = " ".join(d["lines"][first:li] + [prefix_text])
        if word.lower() not in words_of(context_text):
            continue
        context = [t for ids in d["ids"][first:li] for t in ids] + prefix
        out.append({"doc": di, "context": context, "target": target, "word": word,
                    "text": context_text + " " + word})
    return out


def sentence_like(line, ids, low, high):
    return (low <= len(ids) <= high and SENTENCE_START.match(line) is not None
            and SENTENCE_END.search(line) is not None)


def choice_candidates(docs, seed):
    """(context, true next) sentence pairs, and the pool distractors come from."""
    pairs, pool = [], []
    for di, d in enumerate(docs):
        for li, (line, ids) in enumerate(zip(d["lines"], d["ids"])):
            if sentence_like(line, ids, NEXT_MIN_TOKENS, NEXT_MAX_TOKENS):
                pool.append((di, li))
            if li + 1 < len(d["lines"]) and sentence_like(line, ids, CONTEXT_MIN_TOKENS, CONTEXT_MAX_TOKENS) and \
                    sentence_like(d["lines"][li + 1], d["ids"][li + 1], NEXT_MIN_TOKENS, NEXT_MAX_TOKENS):
                pairs.append((di, li))
    by_length = {}
    for di, li in pool:
        by_length.setdefault(len(docs[di]["ids"][li]), []).append((di, li))
    out = []
    for di, li in pairs:
        d = docs[di]
        truth = d["ids"][li + 1]
        n = len(truth)
        rng = random.Random("%s:choice:%d:%d" % (seed, di, li))
        # Distractors as close in length as the pool allows (the same length first, then
        # +-1, +-2, ... up to 20%), so that summed log-likelihoods favour no choice by length;
        # from the same family of sources when it has enough of them.
        source = []
        for slack in range(0, max(2, round(0.2 * n)) + 1):
            near = [c for length in range(n - slack, n + slack + 1) for c in by_length.get(length, [])
                    if docs[c[0]]["group"] != d["group"] and docs[c[0]]["ids"][c[1]] != truth]
            same_family = [c for c in near if docs[c[0]]["family"] == d["family"]]
            source = same_family if len(same_family) >= CHOICES - 1 else near
            if len(source) >= CHOICES - 1:
                break
        if len(source) < CHOICES - 1:
            continue
        distractors, texts = [], {d["lines"][li + 1]}
        for c in rng.sample(source, len(source)):
            text = docs[c[0]]["lines"][c[1]]
            if text not in texts:
                texts.add(text)
                distractors.append(c)
            if len(distractors) == CHOICES - 1:
                break
        if len(distractors) < CHOICES - 1:
            continue
        choices = [(truth, d["lines"][li + 1], True)] + \
                  [(docs[c[0]]["ids"][c[1]], docs[c[0]]["lines"][c[1]], False) for c in distractors]
        rng.shuffle(choices)
        out.append({"doc": di, "context": d["ids"][li], "context_text": d["lines"][li],
                    "choices": [c[0] for c in choices], "choices_text": [c[1] for c in choices],
                    "label": [c[2] for c in choices].index(True)})
    return out


def sample_round_robin(candidates, count, seed, name):
    """Up to count candidates spread over the documents: each document's candidates in a
    seeded order, then one from every document in turn."""
    per_doc = {}
    for c in candidates:
        per_doc.setdefault(c["doc"], []).append(c)
    queues = []
    for di in sorted(per_doc):
        mine = per_doc[di]
        random.Random("%s:%s:order:%d" % (seed, name, di)).shuffle(mine)
        queues.append(mine)
    chosen = []
    while len(chosen) < count and any(queues):
        for q in queues:
            if q and len(chosen) < count:
                chosen.append(q.pop())
    chosen.sort(key=lambda c: (c["doc"], c["context"]))
    random.Random("%s:%s:final" % (seed, name)).shuffle(chosen)
    return chosen


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="the corpus directory (input/corpus/build.sh's OUT_DIR)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cloze", type=int, default=400, help="cloze passages (default 400)")
    ap.add_argument("--choice", type=int, default=400, help="multiple-choice examples (default 400)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    model = os.path.join(args.corpus, "tokenizer.model")
    if not os.path.exists(model):
        raise SystemExit("build_tasks.py: %s is missing; build the corpus first (bash input/corpus/build.sh %s)"
                         % (model, args.corpus))
    docs, how = load_documents(args.corpus, model)
    if not docs:
        raise SystemExit("build_tasks.py: no held-out test documents found in %s" % args.corpus)
    all_lines = [line for d in docs for line in d["lines"]]
    all_ids = encode(model, all_lines)
    k = 0
    for d in docs:
        d["ids"] = all_ids[k:k + len(d["lines"])]
        k += len(d["lines"])
    same_as_shard = check_against_shard(args.corpus, docs)

    cloze = sample_round_robin(cloze_candidates(docs, model, args.seed), args.cloze, args.seed, "cloze")
    choice = sample_round_robin(choice_candidates(docs, args.seed), args.choice, args.seed, "choice")
    if not cloze or not choice:
        raise SystemExit("build_tasks.py: found %d cloze passages and %d choice examples; the test split is too "
                         "small" % (len(cloze), len(choice)))

    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "cloze.jsonl"),
                [{"context": c["context"], "target": c["target"], "word": c["word"],
                  "source": docs[c["doc"]]["source"], "document": docs[c["doc"]]["title"], "text": c["text"]}
                 for c in cloze])
    write_jsonl(os.path.join(args.out, "choice.jsonl"),
                [{"context": c["context"], "choices": c["choices"], "label": c["label"],
                  "source": docs[c["doc"]]["source"], "document": docs[c["doc"]]["title"],
                  "context_text": c["context_text"], "choices_text": c["choices_text"]}
                 for c in choice])

    def by_source(rows):
        counts = {}
        for r in rows:
            s = docs[r["doc"]]["source"]
            counts[s] = counts.get(s, 0) + 1
        return dict(sorted(counts.items()))

    summary = {
        "held_out_text": how,
        "documents": len(docs),
        "token_ids_match_test_bin": same_as_shard,
        "tokenizer_sha256": sha256_file(model),
        "seed": args.seed,
        "cloze": {"examples": len(cloze), "by_source": by_source(cloze),
                  "passage_tokens": [CLOZE_MIN_TOKENS, CLOZE_MAX_TOKENS],
                  "mean_passage_tokens": round(sum(len(c["context"]) + len(c["target"]) for c in cloze) / len(cloze), 1),
                  "mean_target_tokens": round(sum(len(c["target"]) for c in cloze) / len(cloze), 2)},
        "choice": {"examples": len(choice), "choices": CHOICES, "by_source": by_source(choice),
                   "labels": [sum(1 for c in choice if c["label"] == i) for i in range(CHOICES)]},
    }
    tmp = os.path.join(args.out, "tasks.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(args.out, "tasks.json"))
    print("[tasks] %d held-out documents (%s)%s" % (len(docs), how, "; ids identical to test.bin" if same_as_shard
                                                    else ""), file=sys.stderr)
    print("[tasks] cloze: %d passages, mean %.0f tokens; choice: %d examples x %d choices"
          % (len(cloze), summary["cloze"]["mean_passage_tokens"], len(choice), CHOICES), file=sys.stderr)


if __name__ == "__main__":
    main()
