#!/usr/bin/env python3
"""In-context copying probe: documents of 25 random invented words, " . ", then the same 25 words.

The second half is predictable only by reading the first (an induction / retrieval head), so the
validation loss of a model trained on these falls towards half the first half's entropy exactly
when it learns to copy from its context. Usage: induction_docs.py N_DOCS > docs.jsonl
"""
import json
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
r = random.Random(1)
syllables = ["ka", "to", "mi", "ra", "ne", "su", "lo", "pe", "di", "gu", "ba", "ze", "fo", "hi", "ju", "vy"]


def word():
    return "".join(r.choice(syllables) for _ in range(r.randint(2, 3))).capitalize()


for _ in range(n):
    s = " ".join(word() for _ in range(25))
    print(json.dumps({"text": s + " . " + s}))
