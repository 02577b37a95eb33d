"""`granite-tuner serve`: tuned soft prompts behind the watsonx.ai REST API and an OpenAI API.

One process loads a base model once and serves any number of locally tuned runs on it, through
the same micro-batching model server that in-process `Deployment`s use, so IBM's
`ibm-watsonx-ai` SDK, `langchain-ibm` and the `openai` client keep working with a locally tuned
model when only their URL and key change:

    from granite_tuner.server import ServeConfig, serve

    serve(ServeConfig(runs=("reviews",), api_keys=(key,), port=8000))   # until SIGINT/SIGTERM

`create_app(config)` gives the ASGI app alone, for any ASGI server; `serve_in_thread` runs one
in the background (tests, benchmarks). Importing this package loads neither torch nor uvicorn.
See docs/serving.md.
"""

from granite_tuner.server._app import ServerApp, create_app
from granite_tuner.server._config import ServeConfig
from granite_tuner.server._run import RunningServer, serve, serve_in_thread

__all__ = ["RunningServer", "ServeConfig", "ServerApp", "create_app", "serve", "serve_in_thread"]
