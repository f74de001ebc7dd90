#!/usr/bin/python3
"""Turn a stream of token ids into a decon token shard.

  write_shards.py --vocab-size N [options] OUT.bin < ids.txt

Input (stdin, or --input FILE): token ids as decimal integers separated by
whitespace, e.g. the output of `spm_encode --output_format=id`.  By default a
blank line ends a document and the end-of-document id (--eos-id, default 3) is
appended after it; with --doc-per-line every input line is one document.
Pass --eos-id -1 to write the ids exactly as given.  Reading is streaming:
memory use does not grow with the input.

Output format (little-endian), see input/corpus/README.md:
  bytes  0..7   magic "DECONTOK" (ASCII, no NUL)
  bytes  8..11  uint32 version = 1
  bytes 12..15  uint32 token_bytes: 2 if vocab_size <= 65536 else 4
  bytes 16..23  uint64 token_count
  bytes 24..27  uint32 vocab_size
  bytes 28..63  zero
  then token_count unsigned tokens of token_bytes each.

The file is written to OUT.bin.tmp and renamed when complete.  Statistics
(tokens, documents, sha256) go to stderr, or as JSON to --stats FILE;
--doc-lengths FILE writes the token count of each document (EOS included),
one a line.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
from array import array

MAGIC = b"DECONTOK"
VERSION = 1
HEADER_BYTES = 64
HEADER_STRUCT = struct.Struct("<8sIIQI")  # 28 bytes, zero-padded to 64


def token_bytes_for(vocab_size):
    return 2 if vocab_size <= 65536 else 4


def pack_header(token_bytes, token_count, vocab_size):
    h = HEADER_STRUCT.pack(MAGIC, VERSION, token_bytes, token_count, vocab_size)
    return h + b"\0" * (HEADER_BYTES - len(h))


def read_header(buf):
    """Parse a 64-byte header; returns dict or raises ValueError."""
    if len(buf) < HEADER_BYTES:
        raise ValueError("short header")
    magic, version, tb, count, vocab = HEADER_STRUCT.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ValueError("bad magic %r" % magic)
    if version != VERSION:
        raise ValueError("unsupported version %d" % version)
    if tb not in (2, 4):
        raise ValueError("bad token_bytes %d" % tb)
    return {"version": version, "token_bytes": tb, "token_count": count, "vocab_size": vocab}


class ShardWriter:
    def __init__(self, path, vocab_size):
        if vocab_size <= 0 or vocab_size >= 2 ** 32:
            raise ValueError("vocab_size out of range")
        self.path = path
        self.tmp = path + ".tmp"
        self.vocab_size = vocab_size
        self.token_bytes = token_bytes_for(vocab_size)
        self.typecode = "H" if self.token_bytes == 2 else ("I" if array("I").itemsize == 4 else "L")
        if array(self.typecode).itemsize != self.token_bytes:
            raise RuntimeError("no %d-byte unsigned array type" % self.token_bytes)
        self.f = open(self.tmp, "wb")
        self.f.write(pack_header(self.token_bytes, 0, vocab_size))
        self.count = 0
        self.buf = array(self.typecode)

    def add(self, ids):
        """Append a sequence of ints (validated)."""
        if not ids:
            return
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError("token id %d outside [0, %d)" % (bad, self.vocab_size))
        self.buf.extend(ids)
        self.count += len(ids)
        if len(self.buf) >= 1 << 20:
            self.flush()

    def flush(self):
        if self.buf:
            if sys.byteorder != "little":
                self.buf.byteswap()
            self.buf.tofile(self.f)
            self.buf = array(self.typecode)

    def close(self):
        self.flush()
        self.f.seek(0)
        self.f.write(pack_header(self.token_bytes, self.count, self.vocab_size))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        self.f.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_stream(lines, out, vocab_size, eos_id=3, doc_per_line=False, doc_lengths=None):
    """Core loop; `lines` is an iterable of text lines.  Returns stats dict."""
    if eos_id >= vocab_size:
        raise ValueError("eos id %d outside the vocabulary" % eos_id)
    w = ShardWriter(out, vocab_size)
    docs = 0
    cur = 0  # tokens in the current document
    lengths = []
    try:
        def end_doc():
            nonlocal docs, cur
            if cur == 0:
                return
            n = cur
            if eos_id >= 0:
                w.add([eos_id])
                n += 1
            docs += 1
            lengths.append(n)
            cur = 0

        for lineno, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                if not doc_per_line:
                    end_doc()
                continue
            try:
                ids = [int(p) for p in parts]
            except ValueError:
                raise ValueError("line %d: not a list of integer ids: %r" % (lineno, line[:80]))
            try:
                w.add(ids)
            except ValueError as e:
                raise ValueError("line %d: %s" % (lineno, e))
            cur += len(ids)
            if doc_per_line:
                end_doc()
        end_doc()
        w.close()
    except BaseException:
        w.abort()
        raise
    if doc_lengths:
        with open(doc_lengths, "w") as f:
            f.write("".join("%d\n" % n for n in lengths))
    return {"path": out, "tokens": w.count, "documents": docs, "token_bytes": w.token_bytes,
            "vocab_size": vocab_size, "eos_id": eos_id, "bytes": os.path.getsize(out),
            "sha256": sha256_file(out)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output shard, e.g. train.bin")
    ap.add_argument("--vocab-size", type=int, required=True)
    ap.add_argument("--eos-id", type=int, default=3,
                    help="id appended after every document (default 3; -1: none)")
    ap.add_argument("--doc-per-line", action="store_true",
                    help="every input line is a document (default: blank lines separate documents)")
    ap.add_argument("--input", help="read ids from this file instead of stdin")
    ap.add_argument("--stats", help="write statistics as JSON to this file")
    ap.add_argument("--doc-lengths", help="write tokens per document (EOS included), one a line")
    args = ap.parse_args(argv)
    src = open(args.input, encoding="ascii") if args.input else sys.stdin
    try:
        stats = write_stream(src, args.out, args.vocab_size, args.eos_id, args.doc_per_line,
                             doc_lengths=args.doc_lengths)
    except ValueError as e:
        print("write_shards.py: error: %s" % e, file=sys.stderr)
        return 1
    finally:
        if args.input:
            src.close()
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=1)
    print("[write_shards] %s: %d tokens, %d documents, %d-byte tokens, sha256 %s"
          % (args.out, stats["tokens"], stats["documents"], stats["token_bytes"], stats["sha256"]),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
