#!/usr/bin/env python3
"""Writes held-out evaluation text of the demo corpus's own kind (English
docstrings about Python code) that the corpus never reads, for
`dms eval --task kl --data`. The demo corpus (make_demo_corpus.py) reads
only the standard library; this reads the docstrings of Python packages
installed outside it (Debian: python3-pygments, python3-pip), so a retrofit
can be measured on its training domain without its training text.

    python3 scripts/make_heldout_text.py OUT.txt                      # pygments + pip, 23 modules
    python3 scripts/make_heldout_text.py OUT.txt --packages pip --docs 10
    python3 scripts/make_heldout_text.py OUT.txt --root DIR          # packages under DIR

Modules are the packages' .py files (tests, pygments' lexers and styles
and caches left out: lexers are mostly regular expressions) whose kept
docstrings hold at least 400 characters, one text per module as in the
corpus ("Module NAME" and its docstrings); a docstring naming a licence
("License", "LICENSE") is left out, so licence text cannot leak into it.
--docs N of them are taken at an even stride over the sorted list
(default 23, about 44 KB and 8 windows of 1024 tokens of the embedded
model's tokenizer with pygments 2.14 and pip 23.0), joined by blank lines.
"""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_demo_corpus import docstring_document  # noqa: E402

ROOT = "/usr/lib/python3/dist-packages"
SKIP_DIRS = ("__pycache__", "tests", "test", "lexers", "styles")


def package_modules(root, packages):
    """The document of every module with >= 400 characters of kept docstrings, sorted."""
    keep = lambda doc: "License" not in doc and "LICENSE" not in doc
    for pkg in packages:
        top = os.path.join(root, pkg)
        if not os.path.isdir(top):
            sys.exit("make_heldout_text.py: %s: no such package folder (install python3-%s, or pass --root)" % (top, pkg))
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for fn in sorted(filenames):
                if fn.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, fn), root)
                    doc = docstring_document(rel[:-3].replace(os.sep, "."), os.path.join(dirpath, fn), keep)
                    if doc:
                        yield doc


def option(argv, name, default, check, what):
    if name not in argv:
        return default
    i = argv.index(name)
    if i + 1 >= len(argv) or not check(argv[i + 1]):
        sys.exit("make_heldout_text.py: %s needs %s" % (name, what))
    value = argv[i + 1]
    del argv[i:i + 2]
    return value


def main():
    argv = sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return
    docs = int(option(argv, "--docs", "23", lambda v: v.isdigit() and int(v) >= 1, "a positive number of modules"))
    packages = option(argv, "--packages", "pygments,pip", lambda v: bool(v.strip(",")), "a comma-separated list").split(",")
    root = option(argv, "--root", ROOT, os.path.isdir, "an existing folder")
    unknown = [a for a in argv if a.startswith("-")]
    if unknown or len(argv) != 1:
        sys.exit("make_heldout_text.py: usage: make_heldout_text.py OUT.txt [--packages A,B] [--docs N] [--root DIR]"
                 + (" (unknown option %s)" % unknown[0] if unknown else ""))
    mods = list(package_modules(root, [p for p in packages if p]))
    if len(mods) < docs:
        sys.exit("make_heldout_text.py: %s holds %d modules with docstrings, fewer than --docs %d" % (root, len(mods), docs))
    step = len(mods) / docs
    text = "\n\n".join(mods[int(i * step)] for i in range(docs))
    with open(argv[0], "w", encoding="utf-8") as f:
        f.write(text)
    print("held-out text: %d of %d modules, %.1f KB -> %s" % (docs, len(mods), len(text) / 1024, argv[0]), file=sys.stderr)


if __name__ == "__main__":
    main()
