"""nuclio entry point of the camcut detector (function.yaml beside this file)."""

from typing import Any

from cvat import nuclio_handlers


def init_context(context: Any) -> None:
    nuclio_handlers.init(context, "detector")


def handler(context: Any, event: Any) -> Any:
    u = context.user_data
    return nuclio_handlers.respond(context, nuclio_handlers.detect, u.engine, u.classes, event.body)
