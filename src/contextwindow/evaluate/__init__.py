"""Evaluations on a loaded model: streaming perplexity, perplexity by position, passkey, fact recall."""
