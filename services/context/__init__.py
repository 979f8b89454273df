"""The model's context window: how big it is, how many tokens a request takes, and fitting requests to it."""
