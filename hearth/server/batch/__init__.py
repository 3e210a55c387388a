"""Offline batch runs: OpenAI Batch API files in and out, through the server's adapter and engine, with no HTTP."""
