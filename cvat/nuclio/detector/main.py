"""nuclio entry point of the camcut detector (function.yaml beside this file)."""

from cvat import nuclio_handlers


def init_context(context):  # type: ignore[no-untyped-def]
    nuclio_handlers.init(context, "detector")


def handler(context, event):  # type: ignore[no-untyped-def]
    u = context.user_data
    return nuclio_handlers.respond(context, nuclio_handlers.detect, u.engine, u.classes, event.body)
