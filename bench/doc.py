"""Writes one benchmark's section of docs/benchmarks.md, between <!-- NAME:start --> and
<!-- NAME:end -->, leaving the other sections as they are. Shared by the bench scripts."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "docs/benchmarks.md")
HEADER = "# Benchmarks\n\nEach section is written by the script it names, which runs us and the peers side by side.\n"


def judged(ok, ratio, noise):
    """A goal's verdict: met, or by how much it was missed and whether within the run's noise."""
    if ok:
        return "met"
    return f"missed by {(ratio - 1) * 100:.0f}%, " + ("within" if ratio <= noise else "beyond") + " this run's noise"


def write_section(name, body):
    section = f"<!-- {name}:start -->\n{body.strip()}\n<!-- {name}:end -->"
    doc = open(PATH).read() if os.path.exists(PATH) else HEADER
    pattern = rf"<!-- {name}:start -->.*?<!-- {name}:end -->"
    if re.search(pattern, doc, flags=re.S):
        doc = re.sub(pattern, lambda _: section, doc, flags=re.S)
    else:
        doc = doc.rstrip() + "\n\n" + section + "\n"
    open(PATH, "w").write(doc)
    print(section)


if __name__ == "__main__":
    # bench/doc.py NAME < body: used by the shell scripts.
    import sys
    write_section(sys.argv[1], sys.stdin.read())
