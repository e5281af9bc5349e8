#!/usr/bin/env bash
# The corpus of `cmem-bench retrieval`: the Git documentation's text sources from Debian's
# git-doc package (the version the judged questions were written against), in
# target/retrieval-corpus/git-doc. Needs apt-get (Debian 12).
set -euo pipefail
cd "$(dirname "$0")/.."
version="1:2.39.5-0+deb12u3"
out=target/retrieval-corpus/git-doc
if [ -d "$out" ] && [ -f "$out/.version" ] && [ "$(cat "$out/.version")" = "$version" ]; then
  echo "$out is ready"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "git-doc=$version" >/dev/null 2>&1)
dpkg-deb -x "$work"/git-doc_*.deb "$work/x"
rm -rf "$out" && mkdir -p "$out"
(cd "$work/x/usr/share/doc/git-doc" && find . -name "*.txt" -print0 | tar --null -cf - -T -) | tar -xf - -C "$out"
echo "$version" > "$out/.version"
echo "$out: $(find "$out" -name '*.txt' | wc -l) files"
