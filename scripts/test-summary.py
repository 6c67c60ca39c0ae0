#!/usr/bin/env python3
"""Sums test results from meson's testlog.json files into one line.

A Check binary reports "NN%: Checks: C, Failures: F, Errors: E" on stdout:
its C checks count one by one (C-F-E passed, F+E failed). Any other test, or
a Check binary that died before its summary, counts as one result by its
meson status. Prints "N passed, N failed[, N skipped]" and exits 1 if
anything failed or no test ran.
"""
import json
import re
import sys

CHECK_LINE = re.compile(r"\d+%: Checks: (\d+), Failures: (\d+), Errors: (\d+)")

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        print(f"test-summary: {e}", file=sys.stderr)
        failed += 1
        continue
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        result = entry.get("result", "")
        counts = CHECK_LINE.findall(entry.get("stdout", "") or "")
        if result == "SKIP":
            skipped += 1
        elif counts:
            for c, f, e in counts:
                passed += int(c) - int(f) - int(e)
                failed += int(f) + int(e)
            if result != "OK" and not any(int(f) + int(e) for _, f, e in counts):
                failed += 1  # crashed or timed out after its summary
        elif result == "OK":
            passed += 1
        else:
            failed += 1

line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(0 if failed == 0 and passed > 0 else 1)
