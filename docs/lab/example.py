# The example of docs/lab.md: a cache that only grows, next to work that comes and goes.
import json, threading

cache = {}

def handle(n):
    # A request: parse a document, keep a summary of it in the cache, drop the rest.
    doc = json.loads(json.dumps({"id": n, "words": [str(i) * 4 for i in range(200)]}))
    cache[n] = " ".join(doc["words"][:20])

def worker(first, count):
    for n in range(first, first + count):
        handle(n)

threads = [threading.Thread(target=worker, args=(k * 3000, 3000)) for k in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(cache))
