"""φ, the DeepSTORM estimator of the KDE: network (:mod:`.network`), training and inference
(:mod:`.estimator`), detection settings and localization metrics (:mod:`.evaluation`)."""
