"""Allocation churn for libmallard.so: threads building and dropping dicts, strings and lists,
and handing objects to a consumer thread that frees them (cross-thread frees).

Run with PYTHONMALLOC=malloc so every object goes through malloc. Everything is driven by a
64-bit LCG, so the printed totals are deterministic; crates/mallard-capi/tests/real_programs.rs
computes the same totals in Rust and compares. The script also checks itself as it goes.

usage: churn.py WORKERS ROUNDS
"""

import queue
import sys
import threading

MASK = (1 << 64) - 1
PER_ROUND = 1500


def lcg(x):
    return (x * 6364136223846793005 + 1442695040888963407) & MASK


def item(x, i):
    """The string made from LCG state x for index i: a run of one letter and the index."""
    n = (x >> 33) % 300
    if (x >> 20) % 100 == 0:
        n = 20000 + (x >> 40) % 50000
    return chr(97 + (x >> 11) % 26) * n + str(i)


def worker(t, rounds, q, results):
    x = t + 1
    keys = 0
    chars = 0
    for r in range(rounds):
        d = {}
        batch = []
        for i in range(PER_ROUND):
            x = lcg(x)
            s = item(x, i)
            d[f"{t}/{r}/{i}"] = s
            batch.append(s.encode())
        for i in range(0, PER_ROUND, 3):
            del d[f"{t}/{r}/{i}"]
        assert len(d) == PER_ROUND - (PER_ROUND + 2) // 3, len(d)
        for k, v in d.items():
            i = int(k.rsplit("/", 1)[1])
            assert i % 3 != 0 and v.endswith(str(i)), (k, len(v))
        keys += len(d)
        chars += sum(len(v) for v in d.values())
        # Rebuild a sorted copy and compare: more allocation, and a content check.
        ordered = sorted(d.items())
        assert dict(ordered) == d
        q.put(batch)
    results[t] = (keys, chars)


def consumer(q, out):
    items = 0
    total = 0
    while True:
        batch = q.get()
        if batch is None:
            break
        items += len(batch)
        total += sum(len(b) for b in batch)
        del batch
    out.append((items, total))


def main():
    workers = int(sys.argv[1])
    rounds = int(sys.argv[2])
    q = queue.Queue(maxsize=8)
    results = [None] * workers
    got = []
    c = threading.Thread(target=consumer, args=(q, got))
    c.start()
    ts = [threading.Thread(target=worker, args=(t, rounds, q, results)) for t in range(workers)]
    for t in ts:
        t.start()
    # The main thread churns too: a big dict of ints to strings, resized up and down.
    big = {}
    for i in range(300_000):
        big[i] = str(i * 7)
    for i in range(0, 300_000, 2):
        del big[i]
    main_sum = sum(len(v) for v in big.values())
    for t in ts:
        t.join()
    q.put(None)
    c.join()
    for t, (keys, chars) in enumerate(results):
        print(f"worker {t} keys {keys} chars {chars}")
    print(f"consumer items {got[0][0]} bytes {got[0][1]}")
    print(f"main {len(big)} {main_sum}")


main()
