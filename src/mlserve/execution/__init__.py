"""How a loaded version is executed: inline, on a thread, or through a dynamic batcher."""
