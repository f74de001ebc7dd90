#!/usr/bin/env bash
# io/tokenizer.h (the C wrapper over libsentencepiece) against sentencepiece's own command
# line tools on the shipped corpus's tokenizer: encoding held-out text gives spm_encode's
# ids (and the test shard's), decoding gives spm_decode's text, the streaming decoder
# gives the same bytes one id at a time (also for random ids: byte pieces that spell
# multi-byte characters or invalid UTF-8, control and unknown pieces); bad input is one
# line each.
source "$(dirname "$0")/common.sh"
ensure_corpus tokenizer_corpus
TOOL="$ROOT/build/tests/tools/tokenizer_tool"
MODEL="$CORPUS/tokenizer.model"

# Held-out text (the corpus recipe's split, kept in its work directory), plus lines the
# vocabulary spells in byte pieces.
[ -f "$CORPUS/work/split/test.txt" ] ||
    { fail tokenizer_corpus "$CORPUS/work/split/test.txt is missing: rebuild the corpus (make corpus)"; exit 0; }
head -n 1500 "$CORPUS/work/split/test.txt" >"$WORK/text.txt"
printf 'na\xc3\xafve caf\xc3\xa9 \xe2\x80\x94 \xe2\x80\x9cquotes\xe2\x80\x9d \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x99\x82 \xf0\x9d\x94\x98\n  two  spaces and a tab\there\n\n' >>"$WORK/text.txt"

"$TOOL" encode "$MODEL" <"$WORK/text.txt" >"$WORK/ours.ids" 2>"$WORK/err"
spm_encode --model="$MODEL" --output_format=id <"$WORK/text.txt" >"$WORK/spm.ids"
cmp -s "$WORK/ours.ids" "$WORK/spm.ids"
check tokenizer_encode_equals_spm_encode $? "$(diff "$WORK/ours.ids" "$WORK/spm.ids" | head -n 4) $(head -c 300 "$WORK/err")"
lines=$(wc -l <"$WORK/spm.ids")
tokens=$(wc -w <"$WORK/spm.ids")
echo "   $lines lines, $tokens tokens of held-out text"

# The shard holds the same ids: test.bin (EOS after each document) begins with these lines.
"$PYTHON" - "$CORPUS/test.bin" "$WORK/ours.ids" <<'PY'
import sys
raw = open(sys.argv[1], "rb").read()
width = int.from_bytes(raw[12:16], "little")
ours = [int(t) for line in open(sys.argv[2]).read().split("\n")[:200] for t in line.split()]
shard = [int.from_bytes(raw[64 + i * width:64 + (i + 1) * width], "little") for i in range(len(ours) + 400)]
shard = [t for t in shard if t != 3][:len(ours)]
sys.exit(0 if len(ours) > 1000 and ours == shard else 1)
PY
check tokenizer_ids_are_the_shards $? "the first 200 lines do not encode to test.bin's first tokens"

spm_decode --model="$MODEL" --input_format=id <"$WORK/spm.ids" >"$WORK/spm.txt"
"$TOOL" decode "$MODEL" <"$WORK/spm.ids" >"$WORK/ours.txt"
cmp -s "$WORK/ours.txt" "$WORK/spm.txt"
check tokenizer_decode_equals_spm_decode $? "$(diff "$WORK/ours.txt" "$WORK/spm.txt" | head -n 4)"
"$TOOL" stream "$MODEL" <"$WORK/spm.ids" >"$WORK/stream.txt"
cmp -s "$WORK/stream.txt" "$WORK/spm.txt"
check tokenizer_stream_equals_spm_decode $? "$(diff "$WORK/stream.txt" "$WORK/spm.txt" | head -n 4)"
# Byte fallback is exercised: the extra lines hold characters outside the vocabulary.
tail -n 3 "$WORK/spm.ids" | tr ' ' '\n' | awk '$1 >= 4 && $1 < 260 {n++} END {exit n >= 4 ? 0 : 1}'
check tokenizer_text_uses_byte_pieces $? "the non-ASCII test line was not spelt in byte pieces"

# Random ids: byte pieces (4..259) in runs that spell valid and invalid UTF-8, control and
# unknown ids (0..3), ordinary pieces; every line decoded whole and streamed.
"$PYTHON" - >"$WORK/random.ids" <<'PY'
import random
rng = random.Random(7)
for _ in range(400):
    line = []
    for _ in range(rng.randrange(0, 30)):
        r = rng.random()
        if r < 0.1:
            line.append(rng.randrange(0, 4))
        elif r < 0.45:
            line.append(rng.randrange(4, 260))
        elif r < 0.6:  # a whole UTF-8 character in byte pieces
            line.extend(4 + b for b in rng.choice(["é", "—", "日", "🙂", "\n", "a"]).encode())
        else:
            line.append(rng.randrange(260, 8192))
    print(" ".join(map(str, line)))
PY
spm_decode --model="$MODEL" --input_format=id <"$WORK/random.ids" >"$WORK/random.spm"
"$TOOL" decode "$MODEL" <"$WORK/random.ids" >"$WORK/random.ours"
cmp -s "$WORK/random.ours" "$WORK/random.spm"
check tokenizer_decode_random_ids_equals_spm_decode $? "$(cmp "$WORK/random.ours" "$WORK/random.spm")"
"$TOOL" stream "$MODEL" <"$WORK/random.ids" >"$WORK/random.stream"
cmp -s "$WORK/random.stream" "$WORK/random.spm"
check tokenizer_stream_random_ids_equals_spm_decode $? "$(cmp "$WORK/random.stream" "$WORK/random.spm")"

# The special ids are the corpus manifest's.
expected=$("$PYTHON" -c "import json,sys; s=json.load(open(sys.argv[1]))['tokenizer']; i=s['special_ids']; print('vocab %d bos %d eos %d unk %d pad %d' % (s['vocab_size'], i['bos'], i['eos'], i['unk'], i['pad']))" "$CORPUS/manifest.json")
got=$("$TOOL" info "$MODEL")
[ "$got" = "$expected" ]
check tokenizer_special_ids_match_manifest $? "'$got' vs manifest '$expected'"

# Bad input: one line each.
expect_error tokenizer_missing_file "tokenizer $WORK/missing.model: cannot load" "$TOOL" info "$WORK/missing.model"
expect_error tokenizer_not_a_model "tokenizer $ROOT/README.md: cannot load it as a sentencepiece model" \
    "$TOOL" info "$ROOT/README.md"
expect_error tokenizer_id_past_vocab "token id 8192 is outside its vocabulary [0, 8192)" \
    bash -c "echo '5 8192' | '$TOOL' decode '$MODEL'"
expect_error tokenizer_negative_id_streamed "token id -1 is outside" bash -c "echo '5 -1' | '$TOOL' stream '$MODEL'"
expect_error tokenizer_nul_in_text "the text holds a NUL byte at byte 2" \
    bash -c "printf 'ab\\0c\\n' | '$TOOL' encode '$MODEL'"
exit 0
