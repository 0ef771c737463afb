# The benchmark suite's CPython workload (bench/src/programs.rs), as a file: a dict of lists of
# strings, JSON out and back, sorting, a list of small dicts.
import json, random, sys
n = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
random.seed(1)
d = {f"k{i}": [str(random.random()) for _ in range(5)] for i in range(n)}
s = json.dumps(d)
assert json.loads(s) == d
words = sorted(s.split(","))
objs = [{"a": i, "b": (i, str(i)), "c": [i] * 3} for i in range(n)]
del d
print(sum(map(len, words)) + len(objs))
