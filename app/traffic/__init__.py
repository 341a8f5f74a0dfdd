"""Synthetic LLM traffic: renderers from canonical events back to source log formats, and the bundled samples."""
