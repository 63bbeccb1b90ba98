"""camcut as a CVAT model: cvat-sdk auto-annotation functions, nuclio handlers, tags -> masks.

Thin like backend/: the pixel work is model/'s (Segmenter, model.polygons); label names are
matched to engine classes by backend.labels.LabelMap, the same rules as for Label Studio.
"""
