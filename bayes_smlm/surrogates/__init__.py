"""Learned surrogates of the posterior: the DeepSTORM estimator φ (:mod:`.phi`) and the
conditional DDPM Ψ (:mod:`.psi`), with the one training loop (:mod:`.training`) and the checkpoint
directory format they share (:mod:`.checkpoint`)."""
