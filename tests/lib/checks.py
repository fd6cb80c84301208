"""The check vocabulary of the Python test programs, as tests/lib/checks.sh's: one
"ok - ..."/"not ok - ..." line per check on stdout (the shell side counts them with
relay), and an exit status that says whether any failed.

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
    from checks import check, failures
    ...
    sys.exit(1 if failures() else 0)

One program's checks: the count is this module's, for the process that imports it.
"""

_failures = 0


def check(cond, what):
    """Prints the check's line; returns cond, so a check can guard what follows."""
    global _failures
    if not cond:
        _failures += 1
    print("%s - %s" % ("ok" if cond else "not ok", what), flush=True)
    return cond


def failures():
    """How many checks failed so far."""
    return _failures
