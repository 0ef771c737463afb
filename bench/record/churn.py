# Allocation-heavy CPython: tuples, strings and lists made and dropped by the million, a third
# of them kept in dicts for a while, sorting by key.
import random
random.seed(1)
d = {}
for r in range(3):
    objs = [(i, str(i), [i] * (i % 7)) for i in range(200000)]
    d[r] = {o[1]: o for o in objs[::3]}
    s = sorted(objs, key=lambda o: o[1])
    del objs, s
print(len(d))
