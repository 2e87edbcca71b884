#!/usr/bin/env python3
"""Pretraining documents from MuSiQue-format JSONL (`reps synth` output), one {"text"} per line.

  reps_render_docs.py docs QA.jsonl...  passages only, as qa_context renders them
  reps_render_docs.py qa QA.jsonl...    passages + "Question: ...\\nAnswer: ..." (reading exercises)
"""
import json
import sys

if len(sys.argv) < 3 or sys.argv[1] not in ("docs", "qa"):
    sys.exit(__doc__)
with_qa = sys.argv[1] == "qa"
for path in sys.argv[2:]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            e = json.loads(line)
            text = "\n\n".join("Passage %d: %s\n%s" % (i + 1, p["title"], p["paragraph_text"])
                               for i, p in enumerate(e["paragraphs"]))
            if with_qa:
                text += "\n\nQuestion: %s\nAnswer: %s" % (e["question"], e["answer"])
            print(json.dumps({"text": text}))
