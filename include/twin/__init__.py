"""LLM twin platform library."""
