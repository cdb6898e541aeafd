"""The ``anomalens`` command: fit, analyze, score, triage, chat, serve, mcp, demo, eval.

Plain text (rich tables) for people, ``--json`` for machines. Bad input ends with one line on
stderr (``error: ...``) and a non-zero exit: 2 for bad input or usage, 1 for a failed backend
(LLM or chroma server). The LLM comes from the environment (``ANOMALENS_LLM`` ...) or from
``--llm openai --base-url ... --model ...``.

A small package: ``common.py`` (the app, options, the error guard, reading tables, loading a
model), one module per group of commands (``fit.py``, ``cases.py``, ``chat.py``, ``serve.py``).
The commands call the Investigator's verbs; what differs by kind of data is the modality's
(``Modality.from_options``, ``training_table``, ``fit_summary``; ``reads_text``, ``sequential``).
"""

from __future__ import annotations

import logging
import sys

# each registers its commands on the app, in the order `anomalens --help` lists them
from anomalens.cli import fit  # noqa: F401, I001
from anomalens.cli import cases  # noqa: F401
from anomalens.cli import chat  # noqa: F401
from anomalens.cli import serve  # noqa: F401
from anomalens.cli.common import app, print_error
from anomalens.cli.serve import EVALS

__all__ = ["EVALS", "app", "main"]


def main() -> None:
    """Entry point: usage errors and unexpected failures are one line on stderr too (set
    ANOMALENS_DEBUG=1 for the traceback of an unexpected failure)."""
    import os

    try:  # typer >= 0.22 carries its own copy of click's exceptions
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover - older typer on plain click
        from click import exceptions as click_exc

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = app(standalone_mode=False)
    except click_exc.NoArgsIsHelpError:  # "anomalens" alone: the help was printed
        sys.exit(2)
    except click_exc.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        print_error(exc.format_message().strip().split("\n")[0] + where)
        sys.exit(2)
    except (KeyboardInterrupt, getattr(click_exc, "Abort", KeyboardInterrupt)):
        print_error("aborted")
        sys.exit(130)
    except click_exc.ClickException as exc:
        print_error(exc.format_message())
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: still one line, never a traceback, unless asked for
        if os.environ.get("ANOMALENS_DEBUG"):
            raise
        print_error(f"unexpected {type(exc).__name__}: {str(exc).strip().split(chr(10))[0]} "
                     "(set ANOMALENS_DEBUG=1 for the traceback)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


