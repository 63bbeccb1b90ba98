"""nuclio entry point of the camcut interactor (function.yaml beside this file)."""

from cvat import nuclio_handlers


def init_context(context):  # type: ignore[no-untyped-def]
    nuclio_handlers.init(context, "interactor")


def handler(context, event):  # type: ignore[no-untyped-def]
    return nuclio_handlers.respond(context, nuclio_handlers.interact, context.user_data.engine, event.body)
