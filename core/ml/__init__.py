"""The ML filter: dataset from phantom outcomes, calibrated ensemble, champion/challenger, registry.

    dataset.py   closed phantoms -> time-ordered rows (labels, gap exits left out)
    model.py     the ensemble (RF + gradient boosting [+ MLP]) with isotonic calibration
    metrics.py   EV, Brier, AUC, EV lift, calibration curve, EV buckets
    gate.py      walk-forward evaluation and the champion/challenger decision; retrain()
    artifact.py  skops serialization, HMAC-SHA256 signing and verification
    registry.py  the ModelRegistry protocol (storage/ml_registry.py implements it) + an in-memory one
    verdict.py   which refused challengers are worth asking the operator about
    filter.py    MLScorer: the Scorer the engine consults; inline (replay) or pooled (live) retraining
    store.py     ScorerStore: carries the scorer's state through checkpoints and restarts
    report.py    replay figures and the walk-forward report
"""
