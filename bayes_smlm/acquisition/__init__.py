"""Real acquisitions: TIFF movies in, localization tables and rendered images with uncertainty out.

``movie`` reads frames lazily, ``spots`` finds candidate emitters on whole frames, ``regions``
groups them into windows fitted jointly, ``window_fit`` computes each window's posterior (unknown
intensities and background) at the mode and ``window_sampling`` by NUTS, ``settings`` holds the
options, ``pipeline`` runs them over a movie, ``table`` writes the
ThunderSTORM-style CSV, ``render`` the super-resolution image and its per-pixel SD map, and
``sample`` simulates structured movies with sCMOS maps to check all of it against the truth.
"""
