"""The ``camcut`` command: a dispatcher to the backend, the engine's CLI, the evaluator, the bench and bulk."""
