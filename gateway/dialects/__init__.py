"""The model APIs other than Chat Completions, translated at the edge to and from the internal
chat request: OpenAI's Responses API (responses.py) and Anthropic's Messages API (messages.py)."""
