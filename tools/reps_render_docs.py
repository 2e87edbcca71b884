#!/usr/bin/env python3
"""Documents from MuSiQue-format JSONL (`reps synth` output), one JSON object per line.

  reps_render_docs.py docs QA.jsonl...   {"text"}: passages only, as qa_context renders them
  reps_render_docs.py qa QA.jsonl...     {"text"}: passages + "Question: ...\\nAnswer: ..." (reading exercises)
  reps_render_docs.py paths QA.jsonl...  {"id", "answer", "reasoning"}: LongRePS warm-up path quoting the
                                         generator's supporting facts, "[Excerpt k] `fact` ... So the answer is A."
"""
import json
import sys

if len(sys.argv) < 3 or sys.argv[1] not in ("docs", "qa", "paths"):
    sys.exit(__doc__)
mode = sys.argv[1]
for path in sys.argv[2:]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            e = json.loads(line)
            if mode == "paths":
                quotes = " ".join("[Excerpt %d] `%s`" % (k + 1, fact["sentence"])
                                  for k, fact in enumerate(x for x in e["facts"] if x["supporting"]))
                print(json.dumps({"id": e["id"], "answer": e["answer"],
                                  "reasoning": quotes + " So the answer is %s." % e["answer"]}))
                continue
            text = "\n\n".join("Passage %d: %s\n%s" % (i + 1, p["title"], p["paragraph_text"])
                               for i, p in enumerate(e["paragraphs"]))
            if mode == "qa":
                text += "\n\nQuestion: %s\nAnswer: %s" % (e["question"], e["answer"])
            print(json.dumps({"text": text}))
