"""The `granite-tuner` command: prompt tuning on watsonx.ai or offline, from the shell.

```
granite-tuner tune TRAINING_FILE --base-model MODEL [parameters] [--no-wait]
granite-tuner status RUN_ID | --name NAME
granite-tuner attach RUN_ID | --name NAME       wait, with progress
granite-tuner cancel RUN_ID | --name NAME
granite-tuner deploy MODEL_ID_OR_RUN
granite-tuner evaluate DATA --deployment ID | --model ID
granite-tuner compare DATA --tuned DEPLOYMENT [--base MODEL]
granite-tuner cleanup --run ID | --deployment ID | --data ID | --prefix P | --created-by-cli
granite-tuner demo [--model DIR] [--epochs N] [--out DIR]
granite-tuner serve RUN...                      tuned runs behind HTTP APIs
granite-tuner fake-server [--env-file FILE]     a fake watsonx.ai, until Ctrl-C
```

Every command takes `--json` (one JSON document on stdout, with `"ok"` and `"command"`;
messages and progress go to stderr) and the backend options: `--local` (with `--home`) for the
offline backend, otherwise watsonx.ai from `--url`, `--project-id`/`--space-id`,
`--iam-url`, `--ca-bundle` or the `WATSONX_*` environment variables. The API key is read
from `WATSONX_APIKEY` (or a bearer token from `WATSONX_TOKEN`), or asked for at a hidden
prompt when stdin is a terminal; it is never an option, so it never lands in the shell history
or the process list.

Exit codes:

```
    0  success
    1  the operation failed: a run or deployment failed, --min-gain missed
    2  bad usage or input: an option, file, data, parameter, setting, unknown id
    3  service or network error (after the retries)
    4  timeout: --timeout passed (the remote work goes on), or no answer in time
  130  interrupted (Ctrl-C); 143 for SIGTERM
```

Ctrl-C cancels the command cleanly and says what it left running remotely, e.g. "tuning run X
is still running on watsonx.ai; re-attach with `granite-tuner attach X` or cancel it with
`granite-tuner cancel X`". A local run trains in the process and stops with it.

`main(argv, console=...)` runs one command in-process and returns its exit code; the console
(for example a recording one) receives everything that would go to stdout and stderr.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """Run `granite-tuner` with `argv` (default: the process's arguments); the exit code.

    With `console`, results and messages all go to it (progress bars included); otherwise
    results go to stdout and messages and progress bars to stderr.
    """
    if importlib.util.find_spec("rich") is None:
        print("granite-tuner needs rich: pip install 'granite-tuner[cli]'", file=sys.stderr)
        return 2
    from rich.console import Console

    from granite_tuner.cli._app import run_command

    out = console or Console()
    err = console or Console(stderr=True)
    return run_command(argv, out=out, err=err)
