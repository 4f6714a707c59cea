"""One module per advantage estimator; each defines ``ESTIMATOR`` (see ``algo.registry``). Torch-free at import."""
