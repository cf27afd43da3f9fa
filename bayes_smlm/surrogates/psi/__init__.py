"""Ψ, the conditional DDPM of the KDE given φ's estimate (and optionally the frame).

In the order data flows: :mod:`.schedule` (noise schedules, the KDE ↔ model-space map, losses),
:mod:`.conditioning` (what Ψ sees besides the noisy KDE), :mod:`.unet` (the diffusers UNet),
:mod:`.training` (train and save), :mod:`.sampling` (the reverse process), :mod:`.pipeline`
(:class:`~.pipeline.PsiPipeline`: UNet + scheduler + φ as one object), :mod:`.recalibration`
(the optional post-hoc spread recalibration).
"""
