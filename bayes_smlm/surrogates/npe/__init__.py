"""Neural posterior estimation (NPE) of one emitter's position: the frame summary it conditions
on (:mod:`.features`), the density estimator built with ``sbi`` (:mod:`.network`), its training
(:mod:`.training`) and loading and sampling (:mod:`.estimator`)."""
