"""What the reference checks (scripts/test_*.py) share: counting PASS/FAIL
checks, the summary line scripts/test_ref.sh reads, and running llamac.

The scripts run as `python scripts/NAME.py`, so scripts/ is sys.path[0] and
`import refcheck` finds this file. One count per process: a script that
imports another check script (test_sft_ref takes test_chat_ref's template)
shares it, which is right because only the script run calls its main().
"""
import subprocess
import sys

passed = failed = 0


def check(name, ok, detail=""):
    """Count one check and print "PASS name" or "FAIL name: detail"; returns ok."""
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")
    sys.stdout.flush()
    return ok


def summary(script):
    """Print "SCRIPT: N passed, M failed" (what scripts/test_ref.sh counts); the exit status."""
    print(f"{script}: {passed} passed, {failed} failed")
    return 1 if failed else 0


def run(llamac, *args):
    """llamac ARGS (each through str), output captured; a failure prints the command and its stderr."""
    r = subprocess.run([llamac, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  llamac {' '.join(map(str, args))} -> exit {r.returncode}: {r.stderr.strip()}")
    return r
