"""CPU a sender spends per message: the production app's send_task against a bare app's.

    python -m bench.send_cost [--sends 3000] [--rounds 5]

Both send a no-op by name to a Redis database of their own (``BENCH_REDIS_URL``, default
redis://127.0.0.1:6379/5, flushed at the start and the end); no worker runs, so only the
sender's work is measured: building, routing and publishing a message (and whatever else
the app's configuration adds to a send). CPU is this process's (``time.process_time``),
the median of ``--rounds`` rounds after one warm-up round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import redis

from bench.bare_app import DEFAULT_REDIS_URL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.setdefault("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    os.environ["REDIS_URL"] = url  # the production app's broker, too

    from celery import _state

    # No result subscription per send: neither app here reads a result.
    _state._set_task_join_will_block(True)

    import bench.bare_app as bare
    from worker.celery_app import app

    client = redis.Redis.from_url(url)
    client.flushdb()
    senders = {"bare": (bare.app, bare.TASK), "production": (app, "automation.ping")}
    try:
        results = {}
        for label, (sender, name) in senders.items():
            samples = []
            for round_ in range(args.rounds + 1):
                with sender.producer_or_acquire() as producer:
                    start = time.process_time()
                    for _ in range(args.sends):
                        sender.send_task(name, producer=producer)
                    if round_:  # the first round warms up
                        samples.append((time.process_time() - start) / args.sends)
                client.flushdb()
            results[label] = statistics.median(samples)
        for label, seconds in results.items():
            print(f"{label:>10}: {seconds * 1e6:.0f} us CPU per send")
        print(f"production / bare: {results['production'] / results['bare']:.2f}")
    finally:
        client.flushdb()


if __name__ == "__main__":
    main()
