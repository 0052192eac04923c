"""The graph `langgraph dev` and the LangGraph server load (see langgraph.json).

Compiled without a checkpointer or store: the server brings its own persistence.
"""

from graph import build_graph

graph = build_graph().compile(name="engram")
