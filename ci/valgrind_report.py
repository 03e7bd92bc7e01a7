#!/usr/bin/env python3
"""Summarises one valgrind memcheck XML file (for ci/valgrind.sh).

    valgrind_report.py FILE.xml            # one line: errors, gilpool's, suppressed
    valgrind_report.py --details FILE.xml  # the errors left, one per distinct stack

Exits 1 if any error is left (after suppressions), 0 otherwise. An error
"passes through gilpool" when a frame of its stack is in a function of the
gilpool or gilpool_ffi crates.
"""

import os
import sys
import xml.etree.ElementTree as ET

# The repository's own sources: inlined frames carry only a short function
# name, but their file is still ours.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = tuple(os.path.join(REPO, d) for d in ("src", "ffi/src"))
# Distinct stacks printed by --details.
MAX_STACKS = 8


def frames(stack):
    """(function, file:line, object, is gilpool's) for each frame."""
    out = []
    for f in stack.findall("frame"):
        fn = f.findtext("fn") or "???"
        obj = (f.findtext("obj") or "").rsplit("/", 1)[-1]
        where, mine = "", fn.startswith(("gilpool::", "gilpool_ffi::", "<gilpool"))
        if f.findtext("file"):
            path = os.path.join(f.findtext("dir") or "", f.findtext("file"))
            where = "%s:%s" % (path, f.findtext("line") or "?")
            mine = mine or path.startswith(SOURCES)
        out.append((fn, where, obj, mine))
    return out


def ours(stack):
    return any(mine for _, _, _, mine in stack)


def main(argv):
    details = "--details" in argv
    paths = [a for a in argv if not a.startswith("--")]
    if len(paths) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        root = ET.parse(paths[0]).getroot()
    except (ET.ParseError, OSError) as e:
        print("no valgrind output (%s)" % e)
        return 1
    errors = root.findall("error")
    kinds = {}
    gilpool = 0
    for e in errors:
        kind = e.findtext("kind")
        kinds[kind] = kinds.get(kind, 0) + 1
        stack = frames(e.find("stack"))
        if ours(stack):
            gilpool += 1
    suppressed = {}
    for p in root.findall("suppcounts/pair"):
        suppressed[p.findtext("name")] = int(p.findtext("count"))
    kind_text = ", ".join("%s %d" % kv for kv in sorted(kinds.items())) or "none"
    prefix = "cpython-subinterpreter-interned-"
    supp_text = "%d (%s)" % (
        sum(suppressed.values()),
        ", ".join(
            "%s %d" % (k[len(prefix):] if k.startswith(prefix) else k, n)
            for k, n in sorted(suppressed.items())
        )
        or "none",
    )
    print(
        "errors: %d (through gilpool: %d; %s); suppressed: %s"
        % (len(errors), gilpool, kind_text, supp_text)
    )
    if details:
        # One per distinct stack (by its first 12 functions), the most
        # frequent first; frames in gilpool's own code are starred.
        groups = {}
        for e in errors:
            stack = frames(e.find("stack"))
            key = (e.findtext("kind"),) + tuple(fn for fn, _, _, _ in stack[:12])
            groups.setdefault(key, [0, e, stack])[0] += 1
        shown = sorted(groups.values(), key=lambda g: -g[0])
        for count, e, stack in shown[:MAX_STACKS]:
            what = e.findtext("what") or e.findtext("xwhat/text") or ""
            print()
            print(
                "%s%s x%d: %s"
                % ("[gilpool] " if ours(stack) else "", e.findtext("kind"), count, what)
            )
            for fn, where, obj, mine in stack:
                print("  %s %s  %s  (%s)" % ("*" if mine else " ", fn, where, obj))
        if len(shown) > MAX_STACKS:
            print()
            print("... and %d more distinct stacks (see the XML)" % (len(shown) - MAX_STACKS))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
