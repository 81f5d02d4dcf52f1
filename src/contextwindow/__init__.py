"""contextwindow: keep LLM conversations and generations inside their token limits."""
