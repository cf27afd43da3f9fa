"""The forward model: from emitter positions θ to camera frames, and back to likelihoods.

- :mod:`.config`, :mod:`.tasks` — frozen, validated task configurations; name → task registry;
- :mod:`.physics` — the one forward model (pure ``jax.numpy``): PSF integrals, expected photons,
  camera, KDE;
- :mod:`.simulate` — seeded, vmapped simulation of (frame, θ, KDE);
- :mod:`.distributions`, :mod:`.model` — NumPyro prior and camera likelihoods, log densities for
  BlackJAX;
- :mod:`.fisher` — Fisher information and the Cramér–Rao lower bound.

Conventions (coordinates, camera, KDE scaling): ``docs/conventions.md``.
"""
