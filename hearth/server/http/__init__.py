"""HTTP: the FastAPI app, its middleware, SSE streaming, metrics and docs."""
