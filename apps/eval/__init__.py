"""Measuring and improving memory quality: `engram eval run|retrieval|compare` and
`engram optimize`.

- `datasets`: LoCoMo's JSON as published and Engram's own JSONL format, one data model.
- `metrics`: every number a report shows, as small pure functions.
- `judge`: the LLM judge that grades an answer against the gold one (J, as in Mem0's paper).
- `harness`: the end-to-end run through the ingest graph and recall + respond, resumable.
- `retrieval`: recall@k of the gold evidence with no LLM, to compare embeddings and modes.
- `report`, `compare`: Markdown/HTML reports with PNG plots; two runs side by side.
- `labelled`, `optimize`: the project's labelled set as DSPy examples; GEPA over the four
  memory programs.

The application layer: it uses the graphs, nodes and store below it, never the reverse.
"""
