"""How a loaded version is called: inline, on a thread, or through a dynamic batcher."""
