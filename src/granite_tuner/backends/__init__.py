"""Backends: the engines that tune and serve. `watsonx` talks to IBM watsonx.ai over REST."""
