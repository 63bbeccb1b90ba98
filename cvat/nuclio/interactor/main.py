"""nuclio entry point of the camcut interactor (function.yaml beside this file)."""

from typing import Any

from cvat import nuclio_handlers


def init_context(context: Any) -> None:
    nuclio_handlers.init(context, "interactor")


def handler(context: Any, event: Any) -> Any:
    return nuclio_handlers.respond(context, nuclio_handlers.interact, context.user_data.engine, event.body)
