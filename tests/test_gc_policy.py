"""The collector settings the daemon applies once started (see src/cti/gc_policy.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_start_up_objects_are_frozen_once_and_full_passes_made_rarer() -> None:
    # In a child interpreter: freezing is process-wide and must not leak into the test run.
    script = textwrap.dedent(
        """
        import gc, json
        from cti import gc_policy
        import phonenumbers
        phonenumbers.PhoneMetadata.load_all()
        before = gc.get_freeze_count()
        default = gc.get_threshold()
        first = gc_policy.after_startup()
        frozen = gc.get_freeze_count()
        second = gc_policy.after_startup()
        print(json.dumps([before, first, frozen, second, gc.get_freeze_count(), default, gc.get_threshold()]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    last = out.stdout.strip().splitlines()[-1]  # after the log line
    before, first, frozen, second, after, default, thresholds = json.loads(last)
    assert (before, first, second) == (0, True, False)
    assert frozen > 20_000  # phonenumbers' metadata alone is thousands of objects
    assert after == frozen  # the second call froze nothing more
    assert (tuple(default), tuple(thresholds)) == ((700, 10, 10), (700, 10, 100))
