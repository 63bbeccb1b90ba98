"""``camcut COMMAND ...``: one entry point for the tools of this repository.

Only a dispatcher: every command is implemented (and documented, ``camcut COMMAND --help``)
by the module named in COMMANDS, imported when the command runs, so ``camcut --help`` does
not load torch. The ``python -m ...`` forms keep working.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

USAGE = """usage: camcut COMMAND [ARGS...]

CPU pre-annotation for segmentation labelling (SqueezeNet CAM + OpenCV GrabCut).

commands:
{commands}

`camcut COMMAND --help` explains a command."""


def _serve(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: camcut serve [GUNICORN-OPTION ...]\n\n"
            "Serve the Label Studio ML backend under gunicorn, as `make run` does:\n"
            "  gunicorn --config backend/gunicorn_conf.py [GUNICORN-OPTION ...] backend.wsgi:app\n"
            "It binds $CAMCUT_BIND:$PORT (0.0.0.0:9090) with $WORKERS x $THREADS; every setting is an\n"
            "environment variable (`camcut config` lists them). Extra options go to gunicorn (e.g. -b 127.0.0.1:9000)."
        )
        return 0
    import backend

    conf = Path(backend.__file__).resolve().with_name("gunicorn_conf.py")
    args = [sys.executable, "-m", "gunicorn", "--config", str(conf), *argv, "backend.wsgi:app"]
    os.execv(sys.executable, args)  # gunicorn replaces this process: signals reach its master directly


def _segment(argv: list[str]) -> int:
    from model.cli import main

    # the served configuration by default (CAMCUT_CONFIG, else its default in backend/config.py)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        from backend.config import read_setting

        argv = [*argv, "--config", read_setting("CAMCUT_CONFIG")]  # CAMCUT_CONFIG or its default
    return main(argv)


def _eval(argv: list[str]) -> int:
    from evaluator.__main__ import main

    return main(argv)


def _bench(argv: list[str]) -> int:
    from bench.__main__ import main

    return main(argv)


def _bulk(argv: list[str]) -> int:
    from backend.bulk.cli import main, sigterm_as_interrupt

    signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    return main(argv)


def _config(argv: list[str]) -> int:
    from backend.config import main

    main(argv)
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "serve": (_serve, "serve the Label Studio ML backend under gunicorn (= make run)"),
    "segment": (_segment, "masks for one image from a box, a tag or the CNN's guesses (the served configuration)"),
    "eval": (_eval, "the PASCAL VOC evaluator (= python -m evaluator)"),
    "bench": (_bench, "speed, memory and quality of engine configurations (= python -m bench)"),
    "bulk": (_bulk, "pre-annotate a whole Label Studio project, resumably (= python -m backend.bulk)"),
    "config": (_config, "list the backend's settings (= python -m backend.config)"),
}


def usage() -> str:
    return USAGE.format(commands="\n".join(f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"camcut: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(COMMANDS[command][0](rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
