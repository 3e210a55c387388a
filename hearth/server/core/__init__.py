"""What the chat, completions and responses APIs share: sampling parameters and the context check."""
