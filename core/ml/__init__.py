"""The ML filter: dataset from phantom outcomes, boosted trees + calibration, a gate that needs evidence,
registry.

    dataset.py   closed phantoms -> time-ordered rows (labels, gap exits left out)
    recipe.py    how a model is made (hyperparameters fixed a priori)
    train.py     fitting it with scikit-learn (imported only where a model is trained)
    model.py     the trained model as plain arrays: scores with numpy alone
    metrics.py   EV, Brier, AUC, EV lift, calibration curve, EV buckets
    evidence.py  is an out-of-sample advantage more than noise? (block bootstrap bounds)
    gate.py      walk-forward evaluation and the champion/challenger decision; retrain()
    artifact.py  the artifact format (arrays + JSON, no pickle), HMAC-SHA256 signing and verification
    registry.py  the ModelRegistry protocol (storage/ml_registry.py implements it) + an in-memory one
    verdict.py   which refused challengers are worth asking the operator about
    filter.py    MLScorer: the Scorer the engine consults; trainings beside a replay, or pooled (live)
    worker.py    the process that trains beside a replay
    store.py     ScorerStore: carries the scorer's state through checkpoints and restarts
    report.py    replay figures and the walk-forward report
"""
