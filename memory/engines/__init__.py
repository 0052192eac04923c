"""The two engines the store runs on: Qdrant Edge embedded (`edge`) and a Qdrant server
through langchain-qdrant (`qdrant_server`), behind the interface in `base`."""
