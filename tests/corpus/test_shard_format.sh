#!/usr/bin/env bash
# Fast check of the token shard format written by input/corpus/write_shards.py
# (no corpus build needed).  Prints one line: PASS test_shard_format, or
# FAIL test_shard_format: reason (exit status non-zero).
set -euo pipefail

NAME=test_shard_format
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WS="$ROOT/input/corpus/write_shards.py"
PY=/usr/bin/python3
[[ -x "$PY" ]] || PY="$(command -v python3)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

fail() { echo "FAIL $NAME: $*"; exit 1; }

[[ -f "$WS" ]] || fail "missing $WS"

# 1. default mode: blank line ends a document, EOS (3) appended after each.
printf '5 6 7\n8\n\n9 10\n' > "$TMP/ids.txt"
"$PY" "$WS" --vocab-size 100 --doc-lengths "$TMP/len.txt" "$TMP/a.bin" < "$TMP/ids.txt" 2> "$TMP/err" ||
    fail "write_shards.py exited non-zero: $(tail -1 "$TMP/err")"
[[ ! -e "$TMP/a.bin.tmp" ]] || fail "temporary file left behind"

# Header and payload, byte for byte, checked with od (independent of Python).
size=$(stat -c %s "$TMP/a.bin")
[[ "$size" -eq $((64 + 8 * 2)) ]] || fail "a.bin is $size bytes, expected 80"
magic=$(head -c 8 "$TMP/a.bin")
[[ "$magic" == "DECONTOK" ]] || fail "magic is '$magic'"
hdr=$(od -An -v -tu1 -N 64 "$TMP/a.bin" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
want="68 69 67 79 78 84 79 75 1 0 0 0 2 0 0 0 8 0 0 0 0 0 0 0 100 0 0 0$(printf ' 0%.0s' $(seq 36))"
[[ "$hdr" == "$want" ]] || fail "header bytes: got [$hdr] want [$want]"
body=$(od -An -v -tu2 --endian=little -j 64 "$TMP/a.bin" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
[[ "$body" == "5 6 7 8 3 9 10 3" ]] || fail "tokens: got [$body] want [5 6 7 8 3 9 10 3]"
[[ "$(tr '\n' ' ' < "$TMP/len.txt")" == "5 3 " ]] || fail "doc lengths: $(tr '\n' ' ' < "$TMP/len.txt")"

# 2. 4-byte tokens above 65536, --doc-per-line, --eos-id -1, reading via --input;
#    checked with an independent struct-based reader.
printf '65537 1\n\n2\n' > "$TMP/big.txt"
"$PY" "$WS" --vocab-size 70000 --doc-per-line --input "$TMP/big.txt" "$TMP/b.bin" 2> "$TMP/err" ||
    fail "4-byte case exited non-zero: $(tail -1 "$TMP/err")"
"$PY" "$WS" --vocab-size 70000 --eos-id -1 --input "$TMP/big.txt" "$TMP/c.bin" 2> "$TMP/err" ||
    fail "--eos-id -1 case exited non-zero: $(tail -1 "$TMP/err")"
msg=$("$PY" - "$TMP/b.bin" "$TMP/c.bin" <<'EOF'
import struct, sys
def read(path):
    data = open(path, "rb").read()
    magic, version, tb, count, vocab = struct.unpack_from("<8sIIQI", data, 0)
    assert magic == b"DECONTOK" and version == 1, (magic, version)
    assert data[28:64] == bytes(36), "header padding not zero"
    assert len(data) == 64 + tb * count, "size does not match token_count"
    fmt = "<%d%s" % (count, "H" if tb == 2 else "I")
    return tb, vocab, list(struct.unpack_from(fmt, data, 64))
try:
    got = read(sys.argv[1])
    assert got == (4, 70000, [65537, 1, 3, 2, 3]), "doc-per-line: %r" % (got,)
    got = read(sys.argv[2])
    assert got == (4, 70000, [65537, 1, 2]), "eos -1: %r" % (got,)
except AssertionError as e:
    print(e)
    sys.exit(1)
EOF
) || fail "$msg"

# 3. ids outside the vocabulary are refused and leave no shard behind.
if printf '1 2 100\n' | "$PY" "$WS" --vocab-size 100 "$TMP/d.bin" 2> "$TMP/err"; then
    fail "id 100 accepted with vocab 100"
fi
[[ ! -e "$TMP/d.bin" && ! -e "$TMP/d.bin.tmp" ]] || fail "output left after an invalid id"
if printf '1 x\n' | "$PY" "$WS" --vocab-size 100 "$TMP/e.bin" 2> "$TMP/err"; then
    fail "non-integer id accepted"
fi

# 4. empty input: a valid header with token_count 0.
: | "$PY" "$WS" --vocab-size 8192 "$TMP/f.bin" 2> "$TMP/err" || fail "empty input exited non-zero"
[[ "$(stat -c %s "$TMP/f.bin")" -eq 64 ]] || fail "empty shard is not 64 bytes"
[[ "$(od -An -v -tu1 -j 16 -N 8 "$TMP/f.bin" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')" == "0 0 0 0 0 0 0 0" ]] ||
    fail "empty shard token_count not 0"

echo "PASS $NAME"
