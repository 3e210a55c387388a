"""POST /v1/responses, stateless: a Responses request translated into a chat plan, its output into response items."""
