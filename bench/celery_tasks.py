"""celery_tasks.py -- the Celery peer of bench/run.sh's "throughput" benchmark.

Worker:  /usr/bin/python3 -m celery -A celery_tasks worker --concurrency 2 -P prefork
Client:  /usr/bin/python3 celery_tasks.py N OUT.json
Broker and result backend: Redis at $WP_BENCH_REDIS (redis://127.0.0.1:PORT/0).
The task is a no-op returning its argument; the client .delay()s N of them, then waits
for every result (ResultSet.get, which joins natively on the Redis backend).
"""
import json
import os
import sys
import time

from celery import Celery
from celery.result import ResultSet

REDIS = os.environ.get("WP_BENCH_REDIS", "redis://127.0.0.1:16379/0")
app = Celery("celery_tasks", broker=REDIS, backend=REDIS)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
                task_serializer="json", result_serializer="json", accept_content=["json"])


@app.task
def noop(i):
    return i


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    # warm-up: the worker is up and both pool processes answer
    ResultSet([noop.delay(-1), noop.delay(-2)]).get(timeout=60)
    t0 = time.monotonic()
    results = [noop.delay(i) for i in range(n)]
    t_sub = time.monotonic()
    values = ResultSet(results).get(timeout=300)
    t_done = time.monotonic()
    ok = values == list(range(n))
    res = {"tasks": n, "submit_s": t_sub - t0, "submit_per_s": n / (t_sub - t0),
           "e2e_s": t_done - t0, "e2e_per_s": n / (t_done - t0), "results_ok": ok,
           "celery": __import__("celery").__version__}
    with open(out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    print(json.dumps(res, sort_keys=True))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
