"""camcut benchmark: latency, HTTP overhead, throughput, memory and quality of engine configurations.

``python -m bench --voc ../shared/voc2012/VOC2012 --configs reference,default`` measures every
configuration side by side in one run and writes ``<out>/bench.md`` and ``<out>/bench.json``.
See ``bench/__main__.py`` (``--help``) and the module docstrings for what each figure means.
"""
