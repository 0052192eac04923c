"""The graphs `langgraph dev` and the LangGraph server load (see langgraph.json): the chat
graph `engram` and the ingest graph `engram_ingest`.

Compiled without a checkpointer or store: the server brings its own persistence, and
its checkpoints hold plain data (`plain_checkpoints`, see graph.guard).
"""

from engram.graph import build_graph, build_ingest_graph

graph = build_graph(plain_checkpoints=True).compile(name="engram")
ingest = build_ingest_graph(plain_checkpoints=True).compile(name="engram_ingest")
