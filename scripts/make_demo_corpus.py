#!/usr/bin/env python3
"""Writes the demo corpus as JSONL documents {"text": ...} for `dms prep`,
from text that ships inside every CPython installation (standard library,
Debian package libpython3.*-stdlib, licence PSF-2.0). Nothing is downloaded.

    python3 scripts/make_demo_corpus.py OUT.jsonl                # topics only
    python3 scripts/make_demo_corpus.py OUT.jsonl --docstrings   # + docstrings
    python3 scripts/make_demo_corpus.py OUT.jsonl --docstrings --info   # + GNU manuals
    python3 scripts/make_demo_corpus.py OUT.jsonl --info-dir DIR        # manuals of DIR
    python3 scripts/make_demo_corpus.py OUT.jsonl --docstrings --source [--source-kb 2048]  # + code
    python3 scripts/make_demo_corpus.py OUT.jsonl --docstrings --recall 0.5 # + copied lines

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
- --source: the standard library's .py files themselves (code, comments
  and docstrings; test suites left out), one document per module, files of
  4-64 KB picked at an even stride over the sorted list (more passes in
  between while it is 5% short) up to about --source-kb kilobytes
  (default 2048). Code repeats names defined far earlier, so its rows hold
  long-range copies that prose seldom asks for. A file that names a GNU
  licence is left out, as for --info.
- --recall P: each line of 16-160 characters holding a digit is, with
  probability P (choices seeded by --seed), repeated verbatim as a line of
  its own 1500-4000 characters (a few hundred tokens) further on in its
  document: long-range verbatim copies of numbers, what a needle's
  retrieval asks of the cache and prose seldom does.
Held-out evaluation text (e.g. /usr/share/common-licenses) is not in it.
"""
import argparse, ast, glob, gzip, json, math, os, random, re, sys, sysconfig

from pydoc_data.topics import topics


def topic_docs():
    for name in sorted(topics):
        text = topics[name].strip()
        if len(text) >= 200:
            yield text


def stdlib_files():
    """(module name, path) of the standard library's .py files, sorted, test suites left out."""
    root = sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if d not in ("test", "tests", "idle_test", "site-packages", "__pycache__"))
        if rel.startswith(("test", "lib2to3/tests")):
            continue
        for fn in sorted(filenames):
            if fn.endswith(".py"):
                yield os.path.join(rel, fn[:-3]).replace(os.sep, ".").lstrip("."), os.path.join(dirpath, fn)


def module_docstrings(path, keep=lambda doc: True):
    """The module, class and function docstrings of one .py file (read with
    ast, never imported) of at least 80 characters that keep() accepts, as
    one text; "" when the file does not parse."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
        return ""
    parts = []
    for node in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]:
        doc = ast.get_docstring(node)
        if doc and len(doc) >= 80 and keep(doc):
            head = "" if node is tree else ("class " if isinstance(node, ast.ClassDef) else "def ") + node.name + ":\n"
            parts.append(head + doc.strip())
    return "\n\n".join(parts)


def docstring_document(mod, path, keep=lambda doc: True):
    """Module mod's document ("Module NAME" and its docstrings), None below 400 characters of docstrings."""
    text = module_docstrings(path, keep)
    return "Module " + mod + "\n\n" + text if len(text) >= 400 else None


def docstring_docs():
    for mod, path in stdlib_files():
        doc = docstring_document(mod, path)
        if doc:
            yield doc


def source_docs(kb):
    files = [(mod, path) for mod, path in stdlib_files() if 4096 <= os.path.getsize(path) <= 65536]
    total = sum(os.path.getsize(path) for _, path in files)
    stride = max(1.0, total / (kb * 1024.0))
    seen, taken = set(), 0
    # one pass at an even stride up to kb KB; passes in between it while 5% short of that
    for start in (0.0, 0.5, 0.25, 0.75, 0.125, 0.375, 0.625, 0.875):
        pos, cap = start * stride, (1.0 if start == 0.0 else 0.95) * kb * 1024
        while math.ceil(pos) < len(files) and taken < cap:
            i, pos = math.ceil(pos), pos + stride
            if i in seen:
                continue
            seen.add(i)
            mod, path = files[i]
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read().strip()
            except (UnicodeDecodeError, OSError):
                continue
            if not LICENCE.search(text):
                taken += len(text)
                yield "# Module " + mod + "\n\n" + text


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


RECALL_LINE = re.compile(r"\d")


def with_recalls(text, p, rng, near=1500, far=4000):
    """text with verbatim copies of some of its lines further on: each line of
    16-160 characters that holds a digit is, with probability p, repeated as
    a line of its own at the first line break `near`..`far` characters
    (drawn uniformly) after it, when the document runs that far. A copy is
    what a needle's retrieval asks of the cache: a number read again a few
    hundred tokens after it went by. Copies are never copied again."""
    lines = text.split("\n")
    ends, pos = [], 0
    for line in lines:
        pos += len(line) + 1
        ends.append(pos)
    extra = {}  # line index -> copies to put after it
    for i, line in enumerate(lines):
        if not (16 <= len(line.strip()) <= 160 and RECALL_LINE.search(line)) or rng.random() >= p:
            continue
        target = ends[i] + rng.randint(near, far)
        j = next((k for k in range(i + 1, len(lines)) if ends[k] >= target), None)
        if j is not None:
            extra.setdefault(j, []).append(line.strip())
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        out.extend(extra.get(i, []))
    return "\n".join(out), sum(len(v) for v in extra.values())


def parse_args():
    ap = argparse.ArgumentParser(
        prog="make_demo_corpus.py",
        description="Write the demo corpus (JSONL {\"text\": ...}, for `dms prep`) from text that ships with "
                    "CPython and Debian; nothing is downloaded. Held-out evaluation text is not in it.")
    # one-line errors, as every dms command gives
    ap.error = lambda msg: ap.exit(2, "make_demo_corpus.py: %s (see --help)\n" % msg)
    ap.add_argument("out", nargs="?", default="/dev/stdout", help="output JSONL (default: standard output)")
    ap.add_argument("--docstrings", action="store_true", help="add the standard library's docstrings, one document per module")
    ap.add_argument("--info", action="store_true", help="add the GNU manuals of %s without licence text" % INFO_DIR)
    ap.add_argument("--info-dir", metavar="DIR", help="like --info, from the *.info*.gz of DIR")
    ap.add_argument("--source", action="store_true", help="add standard library modules as code")
    ap.add_argument("--source-kb", metavar="KB", help="about how many kilobytes of code --source adds (default 2048)")
    ap.add_argument("--recall", metavar="P", help="repeat each line that holds a digit, with probability P, verbatim "
                    "1500-4000 characters further on (an optional extension for retrieval: docs/quality.md)")
    ap.add_argument("--seed", type=int, default=1234, help="seed of --recall's choices (default 1234)")
    a = ap.parse_args()
    if a.info_dir is not None and not os.path.isdir(a.info_dir):
        ap.exit(1, "make_demo_corpus.py: --info-dir needs an existing folder\n")
    if a.source_kb is not None:
        if not a.source_kb.isdigit() or int(a.source_kb) < 1:
            ap.exit(1, "make_demo_corpus.py: --source-kb needs a positive number of kilobytes\n")
        if not a.source:
            ap.exit(1, "make_demo_corpus.py: --source-kb needs --source\n")
    if a.recall is not None:
        try:
            a.recall = float(a.recall)
        except ValueError:
            a.recall = -1.0
        if not 0.0 < a.recall <= 1.0:
            ap.exit(1, "make_demo_corpus.py: --recall needs a probability in (0, 1]\n")
    return a


def main():
    a = parse_args()
    info = a.info_dir or (INFO_DIR if a.info else None)
    sources = [topic_docs()] + ([docstring_docs()] if a.docstrings else [])
    sources += [info_docs(info)] if info else []
    sources += [source_docs(int(a.source_kb or 2048))] if a.source else []
    rng = random.Random(a.seed)
    n = chars = copies = 0
    with open(a.out, "w", encoding="utf-8") as f:
        for src in sources:
            for text in src:
                if a.recall:
                    text, k = with_recalls(text, a.recall, rng)
                    copies += k
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                n += 1
                chars += len(text)
    more = ", %d recalled lines" % copies if a.recall else ""
    print("demo corpus: %d documents, %.1f KB of text%s -> %s" % (n, chars / 1024, more, a.out), file=sys.stderr)


if __name__ == "__main__":
    main()
