"""Training: labelled snapshots, LightGBM and baselines, the promotion gate, the retrain job.

Its arrows (checked by tests/test_import_graph.py): training imports `features` (the log,
the features, the labels) and `modelcontract` (the registry's names and tags, shared with
serving), and its retrain job imports serving's public modules to refresh the online store.
Serving never imports training; features imports neither.
"""
