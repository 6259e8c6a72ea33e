"""Run ``tether`` (the hub) with cProfile armed on signals: SIGUSR1 starts profiling the
event loop's thread, SIGUSR2 stops and writes the stats to the file named first.

    python benchmarks/_profiled_hub.py OUT.prof hub --data DIR --listen HOST:PORT

``benchmarks/job_barrier.py --profile OUT.prof`` uses it to profile a barrier's release
(from the last arrival to the last answer); read it with ``python -m pstats OUT.prof``.
"""

import cProfile
import signal
import sys

out = sys.argv.pop(1)
prof = cProfile.Profile()


def _stop(*_):
    prof.disable()
    prof.dump_stats(out)


signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
signal.signal(signal.SIGUSR2, _stop)

from tether.launch import main  # noqa: E402

sys.exit(main())
