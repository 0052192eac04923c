"""Engram as a LangGraph server: custom auth (`engram.apps.server.auth`) and the `/memories`
routes (`engram.apps.server.routes`), both loaded by `langgraph.json`."""
