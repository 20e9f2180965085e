#!/usr/bin/env bash
# Fetches the hostile-PDF corpus: the PDFs shipped inside the source packages of pypdf,
# pikepdf and ocrmypdf (encrypted, malformed, scanned, CJK, ...), from the package index.
# Usage: deploy/hostile-pdfs.sh [DIR]   (default: ~/.cache/quire/hostile-pdfs)
# Prints the directory holding the extracted PDFs (DIR/files) on its last line.
set -euo pipefail
dir="${1:-$HOME/.cache/quire/hostile-pdfs}"
files="$dir/files"
stamp="$files/.complete"
if [ ! -f "$stamp" ]; then
  mkdir -p "$dir/sdists"
  for spec in pypdf==7.1.1 pikepdf==10.18.0 ocrmypdf==17.13.0; do
    name="${spec%%==*}"
    if ! ls "$dir/sdists/$name"-*.tar.gz >/dev/null 2>&1; then
      python3 -m pip download --quiet --no-deps --no-binary "$name" "$spec" -d "$dir/sdists" >&2
    fi
  done
  rm -rf "$files.tmp" && mkdir -p "$files.tmp"
  for tarball in "$dir"/sdists/*.tar.gz; do
    tar -xzf "$tarball" -C "$files.tmp" --wildcards --no-anchored '*.pdf' '*.PDF' 2>/dev/null || true
  done
  rm -rf "$files" && mv "$files.tmp" "$files" && touch "$stamp"
fi
echo "hostile PDFs: $(find "$files" -type f \( -iname '*.pdf' \) | wc -l) files" >&2
echo "$files"
