#!/usr/bin/env python3
"""Writes the demo corpus as JSONL documents {"text": ...} for `dms prep`,
from text that ships inside every CPython installation (standard library,
Debian package libpython3.*-stdlib, licence PSF-2.0). Nothing is downloaded.

    python3 scripts/make_demo_corpus.py OUT.jsonl                # topics only
    python3 scripts/make_demo_corpus.py OUT.jsonl --docstrings   # + docstrings
    python3 scripts/make_demo_corpus.py OUT.jsonl --docstrings --info   # + GNU manuals
    python3 scripts/make_demo_corpus.py OUT.jsonl --info-dir DIR        # manuals of DIR

- topics: the Python Language Reference topics of module pydoc_data.topics
  (79 documents, about 450 KB of English technical prose with code);
- --docstrings: the module, class and function docstrings of the standard
  library's own .py files (read with ast, never imported; test suites left
  out), one document per module: several MB of English prose about code,
  for retrofits that need more tokens than the topics hold;
- --info: the GNU manuals installed in /usr/share/info (coreutils, grep,
  sed, ...; Debian's own packages, licence GFDL), one document per node:
  English technical prose that is not about Python. Every node that names
  a licence (the GPL, LGPL or GFDL texts and the permission notices) is
  left out, so that the held-out GPL text does not leak in (--info-dir
  reads the *.info*.gz of another folder instead).
Held-out evaluation text (e.g. /usr/share/common-licenses) is not in it.
"""
import ast, glob, gzip, json, os, re, sys, sysconfig

from pydoc_data.topics import topics


def topic_docs():
    for name in sorted(topics):
        text = topics[name].strip()
        if len(text) >= 200:
            yield text


def docstring_docs():
    root = sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if d not in ("test", "tests", "idle_test", "site-packages", "__pycache__"))
        if rel.startswith(("test", "lib2to3/tests")):
            continue
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, fn), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
            parts = []
            for node in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]:
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 80:
                    head = "" if node is tree else ("class " if isinstance(node, ast.ClassDef) else "def ") + node.name + ":\n"
                    parts.append(head + doc.strip())
            text = "\n\n".join(parts)
            if len(text) >= 400:
                mod = os.path.join(rel, fn[:-3]).replace(os.sep, ".").lstrip(".")
                yield "Module " + mod + "\n\n" + text


INFO_DIR = "/usr/share/info"
LICENCE = re.compile(r"(General Public|Free Documentation|Lesser General|Library General) Licen[cs]e|Copyleft")
LICENCE_NODE = re.compile(r"Node: *([^,]*(Copying|Licen[cs]e|Index)[^,]*)(,|$)")


def info_docs(root):
    for path in sorted(glob.glob(os.path.join(root, "*.info*.gz"))):
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                nodes = f.read().split("\x1f")
        except OSError:
            continue
        for node in nodes[1:]:
            head, _, body = node.lstrip("\n").partition("\n")
            if not head.startswith("File:") or LICENCE_NODE.search(head) or LICENCE.search(body):
                continue
            body = body.strip()
            if len(body) >= 400:
                yield body


def main():
    argv, info = sys.argv[1:], None
    if "--info-dir" in argv:
        i = argv.index("--info-dir")
        if i + 1 >= len(argv) or not os.path.isdir(argv[i + 1]):
            sys.exit("make_demo_corpus.py: --info-dir needs an existing folder")
        info = argv[i + 1]
        del argv[i:i + 2]
    elif "--info" in argv:
        info = INFO_DIR
    args = [a for a in argv if not a.startswith("--")]
    out = args[0] if args else "/dev/stdout"
    sources = [topic_docs()] + ([docstring_docs()] if "--docstrings" in argv else [])
    sources += [info_docs(info)] if info else []
    n = chars = 0
    with open(out, "w", encoding="utf-8") as f:
        for src in sources:
            for text in src:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                n += 1
                chars += len(text)
    print("demo corpus: %d documents, %.1f KB of text -> %s" % (n, chars / 1024, out), file=sys.stderr)


if __name__ == "__main__":
    main()
