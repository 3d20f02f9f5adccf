#!/usr/bin/env python3
"""Writes the demo corpus: the Python Language Reference topics that ship
inside every CPython installation (module pydoc_data.topics, part of the
standard library; Debian package libpython3.*-stdlib; licence PSF-2.0).
Real English technical prose with code, about 800 KB, as JSONL documents
{"text": ...} for `dms prep`. Nothing is downloaded.

    python3 scripts/make_demo_corpus.py OUT.jsonl
"""
import json, sys

from pydoc_data.topics import topics


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/dev/stdout"
    n = chars = 0
    with open(out, "w", encoding="utf-8") as f:
        for name in sorted(topics):
            text = topics[name].strip()
            if len(text) < 200:
                continue
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            n += 1
            chars += len(text)
    print("demo corpus: %d documents, %.1f KB of text -> %s" % (n, chars / 1024, out), file=sys.stderr)


if __name__ == "__main__":
    main()
