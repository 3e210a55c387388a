"""hearth's HTTP server: OpenAI-style chat completions over the engine."""
