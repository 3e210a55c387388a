"""The chat-completions request: its protocol, the adapter to engine requests, tool calls and the response shapes."""
